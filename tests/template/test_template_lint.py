"""Lint of template/tcp_ports_by_zabbix_agent.yaml against the contract and the real CLI.

What a Zabbix import would only reveal on a live server (or never: a JSONPath that matches nothing
just leaves an item without data) is checked here: UUIDs, master items, macros, trigger and graph
references, dependencies, agent keys, and every JSONPath against a document from docs/contract.md
and against the document the installed `tcp-lld` really prints.
"""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_FILE = ROOT / 'template' / 'tcp_ports_by_zabbix_agent.yaml'
GENERATOR = ROOT / 'scripts' / 'gen-template'
CONTRACT = ROOT / 'docs' / 'contract.md'
AGENT_CONFS = sorted((ROOT / 'agent_conf').glob('*/tcp-lld.conf'))
INSTALLED_CLI = Path('/opt/tcp-lld/bin/tcp-lld')
AGENT_TYPES = {'ZABBIX_PASSIVE', 'ZABBIX_ACTIVE'}

# {$MACRO} or {$MACRO:context}, the context possibly quoted and holding an LLD macro.
USER_MACRO = re.compile(r'\{\$([A-Z0-9_.]+)(?::(?:"(?:[^"\\]|\\.)*"|[^}]*))?\}')
LLD_MACRO = re.compile(r'\{#([A-Z0-9_.]+)\}')
UUID4 = re.compile(r'^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$')


# ------------------------------------------------------------------------------------------------
# Reading the template.

def load_export(text: str) -> dict[str, Any]:
    return yaml.safe_load(text)['zabbix_export']


@pytest.fixture(scope='module')
def export() -> dict[str, Any]:
    return load_export(TEMPLATE_FILE.read_text(encoding='utf-8'))


@pytest.fixture(scope='module')
def template(export: dict[str, Any]) -> dict[str, Any]:
    (only,) = export['templates']
    return only


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def strings(node: Any) -> Iterator[str]:
    return (value for value in walk(node) if isinstance(value, str))


def host_triggers(export: dict[str, Any], template: dict[str, Any]) -> list[dict[str, Any]]:
    nested = [trigger for item in template.get('items', []) for trigger in item.get('triggers', [])]
    return nested + export.get('triggers', [])


def rule_triggers(rule: dict[str, Any]) -> list[dict[str, Any]]:
    nested = [trigger for item in rule.get('item_prototypes', [])
              for trigger in item.get('trigger_prototypes', [])]
    return nested + rule.get('trigger_prototypes', [])


def function_refs(expression: str) -> Iterator[tuple[str, str]]:
    """(host, key) of every `func(/host/key,...)` in a trigger expression.

    >>> list(function_refs('last(/T/a[x,"y,z"],#1)>0'))
    [('T', 'a[x,"y,z"]')]
    """
    for match in re.finditer(r'\(/([^/]+)/', expression):
        depth, quoted, index = 0, False, match.end()
        while index < len(expression):
            char = expression[index]
            if quoted:
                if char == '\\':
                    index += 1
                elif char == '"':
                    quoted = False
            elif char == '"':
                quoted = True
            elif char == '[':
                depth += 1
            elif char == ']':
                depth -= 1
            elif char in ',)' and depth == 0:
                break
            index += 1
        yield match.group(1), expression[match.end():index]


def key_base(key: str) -> str:
    return key.split('[', 1)[0]


# ------------------------------------------------------------------------------------------------
# A tiny JSONPath for the subset the template uses: $.a.b, $.a["x"].b, $['a'], $.a[0].

MISSING = object()
JSONPATH_TOKEN = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\["((?:[^"\\]|\\.)*)"\]'
                            r"|\['((?:[^'\\]|\\.)*)'\]|\[(\d+)\]")


def jsonpath(document: Any, path: str) -> Any:
    """The value at `path`, or MISSING. Raises ValueError on syntax outside the subset.

    >>> jsonpath({"ports": {"80": {"LISTEN": 2}}}, '$.ports["80"].LISTEN')
    2
    """
    if not path.startswith('$'):
        raise ValueError(f'JSONPath must start with $: {path}')
    position, value = 1, document
    while position < len(path):
        token = JSONPATH_TOKEN.match(path, position)
        if not token:
            raise ValueError(f'unsupported JSONPath syntax at {path[position:]!r} in {path}')
        name, double, single, index = token.groups()
        position = token.end()
        if index is not None:
            if not isinstance(value, list) or int(index) >= len(value):
                return MISSING
            value = value[int(index)]
            continue
        member = name if name is not None else (double if double is not None else single)
        if not isinstance(value, dict) or member not in value:
            return MISSING
        value = value[member]
    return value


def test_jsonpath_resolver_can_fail() -> None:
    document = {'ports': {'80': {'LISTEN': 2}}}
    assert jsonpath(document, '$.ports["80"].LISTEN') == 2
    assert jsonpath(document, "$['ports']['80'].LISTEN") == 2
    assert jsonpath(document, '$.ports["81"].LISTEN') is MISSING
    assert jsonpath(document, '$.ports.LISTEN') is MISSING
    with pytest.raises(ValueError):
        jsonpath(document, '$..LISTEN')


def test_function_refs_parse_keys_with_commas() -> None:
    expression = ('min(/T/tcp.port.state[{#PORT},LISTEN],5m)*100>{$X:"{#PORT}"}*'
                  'last(/T/b["a,)",c]) and nodata(/T/c,{$N})=1')
    assert list(function_refs(expression)) == [
        ('T', 'tcp.port.state[{#PORT},LISTEN]'), ('T', 'b["a,)",c]'), ('T', 'c')]


# ------------------------------------------------------------------------------------------------
# Documents: one built from docs/contract.md, one from the real CLI.

def contract_states() -> list[str]:
    text = CONTRACT.read_text(encoding='utf-8')
    match = re.search(r'Canonical names[^\n]*\n`([A-Z0-9_ ]+)`', text)
    assert match, 'docs/contract.md: the line of canonical state names was not found'
    return match.group(1).split()


def contract_lld_rows() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The discovery example of docs/contract.md and its outbound row, both as written there."""
    text = CONTRACT.read_text(encoding='utf-8')
    discovery = json.loads(re.search(r'## Discovery.*?```json\n(.*?)```', text, re.S).group(1))
    outbound = json.loads(re.search(r'`--outbound` rows: `(\{.*?\})`', text).group(1))
    return discovery['data'], [outbound]


def contract_document() -> dict[str, Any]:
    """The master document as docs/contract.md describes it; port 5432 as the procfs fallback
    reports it (no backlog limit)."""
    states = contract_states()
    zero = {state: 0 for state in states}
    return {
        'ports': {
            '80': {**zero, 'ESTABLISHED': 12, 'TIME_WAIT': 340, 'LISTEN': 2,
                   'accept_queue': 0, 'accept_queue_max': 511},
            '5432': {**zero, 'LISTEN': 1, 'accept_queue': 0, 'accept_queue_max': None},
        },
        'total': {**zero, 'ESTABLISHED': 20},
        'remote': {'3306': {**zero, 'ESTABLISHED': 8}},
        'meta': {'source': 'netlink', 'version': '0.1.0', 'timestamp': 1763770000.123,
                 'scan_seconds': 0.0123, 'sockets': 402, 'ports': 2, 'remote_ports': 1,
                 'truncated': 0, 'age_seconds': 1.2},
    }


def free_service_port() -> socket.socket:
    """A listener on loopback, on a port below the ephemeral range so that tcp-lld also reports
    our client's connection to it as an outbound service port."""
    low = int(Path('/proc/sys/net/ipv4/ip_local_port_range').read_text().split()[0])
    for port in range(min(low, 30000) - 1, 1024, -1):
        listener = socket.socket()
        try:
            listener.bind(('127.0.0.1', port))
        except OSError:
            listener.close()
            continue
        listener.listen(16)
        return listener
    raise RuntimeError('no free port below the ephemeral range')


def run_cli(*arguments: str) -> Any:
    result = subprocess.run([str(INSTALLED_CLI), *arguments, '--no-cache'], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, f'tcp-lld {" ".join(arguments)}: {result.stdout}{result.stderr}'
    assert result.stderr == '', result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope='module')
def real_outputs() -> dict[str, Any]:
    """stats, discovery and outbound discovery from the installed CLI, with one listener and one
    outbound connection of our own so every prototype path has a port to resolve against."""
    assert INSTALLED_CLI.exists(), f'{INSTALLED_CLI} is not installed (bash scripts/install --test)'
    listener = free_service_port()
    port = str(listener.getsockname()[1])
    client = socket.create_connection(('127.0.0.1', int(port)))
    accepted, _ = listener.accept()
    try:
        return {'port': port, 'stats': run_cli('stats'),
                'discovery': run_cli('discovery')['data'],
                'outbound': run_cli('discovery', '--outbound')['data']}
    finally:
        for sock in (accepted, client, listener):
            sock.close()


def documents(real: dict[str, Any] | None) -> list[tuple[str, dict[str, Any], dict[str, list[str]]]]:
    """(label, master document, {rule key: [{#PORT} values to substitute]})."""
    local_rows, outbound_rows = contract_lld_rows()
    result = [('contract', contract_document(),
               {'tcp.port.discovery': [row['{#PORT}'] for row in local_rows],
                'tcp.port.discovery.outbound': [row['{#PORT}'] for row in outbound_rows]})]
    if real is not None:
        result.append(('real', real['stats'],
                       {'tcp.port.discovery': [real['port']],
                        'tcp.port.discovery.outbound': [real['port']]}))
    return result


# ------------------------------------------------------------------------------------------------
# The checks.

def test_generator_output_is_committed() -> None:
    generated = subprocess.run([sys.executable, str(GENERATOR), '--stdout'], capture_output=True,
                               text=True, check=True).stdout
    assert generated == TEMPLATE_FILE.read_text(encoding='utf-8'), \
        'template/tcp_ports_by_zabbix_agent.yaml is stale: run scripts/gen-template'


def test_export_header(export: dict[str, Any], template: dict[str, Any]) -> None:
    assert export['version'] == '6.0'
    assert template['template'] == template['name'] == 'TCP ports by Zabbix agent'
    assert [group['name'] for group in template['groups']] == ['Templates/Applications']
    assert [group['name'] for group in export['groups']] == ['Templates/Applications']


def test_every_scalar_is_a_string(export: dict[str, Any]) -> None:
    """The importer rejects integers and booleans ('a character string is expected')."""
    for value in walk(export):
        assert isinstance(value, (dict, list, str)), f'not a string: {value!r}'


def test_uuids_are_unique_v4(export: dict[str, Any]) -> None:
    uuids = [node['uuid'] for node in walk(export) if isinstance(node, dict) and 'uuid' in node]
    assert len(uuids) > 50
    for value in uuids:
        assert UUID4.match(value), f'not a 32-digit lowercase UUIDv4: {value}'
    assert len(set(uuids)) == len(uuids), 'duplicate UUIDs'


def test_item_keys_are_unique(template: dict[str, Any]) -> None:
    keys = [item['key'] for item in template['items']]
    keys += [rule['key'] for rule in template['discovery_rules']]
    keys += [item['key'] for rule in template['discovery_rules']
             for item in rule['item_prototypes']]
    assert len(set(keys)) == len(keys), sorted(key for key in keys if keys.count(key) > 1)


def test_dependent_items_have_a_master(template: dict[str, Any]) -> None:
    host_keys = {item['key'] for item in template['items']}
    for rule in template['discovery_rules']:
        rule_keys = host_keys | {item['key'] for item in rule['item_prototypes']}
        for item in template['items'] + rule['item_prototypes']:
            if item.get('type') == 'DEPENDENT':
                assert item['master_item']['key'] in rule_keys, item['key']
                assert item['master_item']['key'] != item['key']


def test_agent_keys_match_agent_conf(template: dict[str, Any]) -> None:
    assert AGENT_CONFS, 'no agent_conf/*/tcp-lld.conf'
    for conf in AGENT_CONFS:
        conf_keys = {key_base(line.split('=', 1)[1].split(',', 1)[0])
                     for line in conf.read_text().splitlines()
                     if line.startswith('UserParameter=')}
        agent_objects = [item for item in template['items']
                         if item.get('type', 'ZABBIX_PASSIVE') in AGENT_TYPES]
        agent_objects += [rule for rule in template['discovery_rules']
                          if rule.get('type', 'ZABBIX_PASSIVE') in AGENT_TYPES]
        agent_objects += [item for rule in template['discovery_rules']
                          for item in rule['item_prototypes']
                          if item.get('type', 'ZABBIX_PASSIVE') in AGENT_TYPES]
        template_keys = {key_base(obj['key']) for obj in agent_objects}
        assert template_keys - conf_keys == set(), f'template calls keys missing from {conf}'
        assert conf_keys - template_keys == set(), f'keys of {conf} unused by the template'


def test_user_macros_are_defined_and_used(template: dict[str, Any]) -> None:
    defined = {macro['macro']: macro for macro in template['macros']}
    for macro in defined.values():
        assert USER_MACRO.fullmatch(macro['macro']), macro['macro']
        assert macro.get('value', '') != '', f'{macro["macro"]} has no default'
        assert len(macro.get('description', '')) > 20, f'{macro["macro"]} has no description'
    body = {name: value for name, value in template.items() if name != 'macros'}
    used = {'{$' + match.group(1) + '}' for text in strings(body)
            for match in USER_MACRO.finditer(text)}
    assert used - defined.keys() == set(), 'macros used but not defined in the template'
    assert defined.keys() - used == set(), 'macros defined but never used'


def test_readme_lists_every_macro_with_its_default(template: dict[str, Any]) -> None:
    readme = (ROOT / 'template' / 'README.md').read_text(encoding='utf-8')
    for macro in template['macros']:
        row = f'| `{macro["macro"]}` | `{macro["value"]}` |'
        assert row in readme, f'template/README.md: macros table lacks {row}'


def run_rule_javascript(rule: dict[str, Any], rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows after the rule's JavaScript preprocessing, run by node as Zabbix runs it (the
    script body gets the LLD JSON as `value`). Without node, the macros the script assigns
    (row['{#X}'] = ...) are added empty, so the macro check still works."""
    scripts = [step['parameters'][0] for step in rule.get('preprocessing', [])
               if step['type'] == 'JAVASCRIPT']
    value = json.dumps({'data': rows})
    for script in scripts:
        if shutil.which('node'):
            program = ('const f = function (value) {\n' + script + '\n};\n'
                       'process.stdout.write(f(' + json.dumps(value) + '));')
            value = subprocess.run(['node', '-e', program], capture_output=True, text=True,
                                   check=True, timeout=30).stdout
        else:
            assigned = re.findall(r"row\['(\{#[A-Z0-9_.]+\})'\]\s*=", script)
            value = json.dumps({'data': [{**row, **{macro: '' for macro in assigned}}
                                         for row in json.loads(value)['data']]})
    return json.loads(value)['data']


def discovery_rows(request: pytest.FixtureRequest) -> dict[str, list[dict[str, str]]]:
    local_rows, outbound_rows = contract_lld_rows()
    rows = {'tcp.port.discovery': local_rows, 'tcp.port.discovery.outbound': outbound_rows}
    if INSTALLED_CLI.exists():
        real = request.getfixturevalue('real_outputs')
        rows['tcp.port.discovery'] = local_rows + real['discovery']
        rows['tcp.port.discovery.outbound'] = outbound_rows + real['outbound']
    return rows


def test_lld_macros_exist_in_discovery_rows(template: dict[str, Any],
                                            request: pytest.FixtureRequest) -> None:
    rows = discovery_rows(request)
    assert {rule['key'] for rule in template['discovery_rules']} == rows.keys()
    for rule in template['discovery_rules']:
        body = {name: value for name, value in rule.items() if name != 'preprocessing'}
        used = {match.group(0) for text in strings(body) for match in LLD_MACRO.finditer(text)}
        assert used, rule['key']
        for row in run_rule_javascript(rule, rows[rule['key']]):
            assert used - row.keys() == set(), f'{rule["key"]}: macros missing from row {row}'
    host_side = {name: value for name, value in template.items()
                 if name not in ('discovery_rules', 'macros')}
    assert not any(LLD_MACRO.search(text) for text in strings(host_side)), \
        'an LLD macro outside a discovery rule'


def test_label_javascript(template: dict[str, Any]) -> None:
    assert shutil.which('node'), 'node runs the LLD JavaScript (scripts/zabbix-stack install)'
    local, outbound = template['discovery_rules']
    rows = [{'{#PORT}': '80', '{#SERVICE}': 'http', '{#PROCESS}': 'nginx'},
            {'{#PORT}': '2024', '{#SERVICE}': '', '{#PROCESS}': ''},
            {'{#PORT}': '5432', '{#SERVICE}': 'postgresql', '{#PROCESS}': ''},
            {'{#PORT}': '6379', '{#SERVICE}': 'redis', '{#PROCESS}': 'redis'}]
    assert [row['{#LABEL}'] for row in run_rule_javascript(local, rows)] == \
        [' (http, nginx)', '', ' (postgresql)', ' (redis)']
    assert [row['{#LABEL}'] for row in run_rule_javascript(
        outbound, [{'{#PORT}': '3306', '{#SERVICE}': 'mysql'}, {'{#PORT}': '9', '{#SERVICE}': ''}])
    ] == [' (mysql)', '']


def check_expression(expression: str, known_keys: set[str], where: str) -> None:
    refs = list(function_refs(expression))
    assert refs, f'{where}: no item referenced in {expression}'
    for host, key in refs:
        assert host == 'TCP ports by Zabbix agent', f'{where}: foreign host {host}'
        assert key in known_keys, f'{where}: unknown item key {key}'


def test_triggers_reference_items_of_the_template(export: dict[str, Any],
                                                  template: dict[str, Any]) -> None:
    host_keys = {item['key'] for item in template['items']}
    for trigger in host_triggers(export, template):
        for field in ('expression', 'recovery_expression'):
            if trigger.get(field):
                check_expression(trigger[field], host_keys, trigger['name'])
    for item in template['items']:
        for trigger in item.get('triggers', []):
            keys = {key for _, key in function_refs(trigger['expression'])}
            assert keys == {item['key']}, f'{trigger["name"]}: nested under the wrong item'
    for rule in template['discovery_rules']:
        rule_keys = host_keys | {item['key'] for item in rule['item_prototypes']}
        for trigger in rule_triggers(rule):
            for field in ('expression', 'recovery_expression'):
                if trigger.get(field):
                    check_expression(trigger[field], rule_keys, trigger['name'])
            assert '{#' in trigger['expression'], f'{trigger["name"]}: prototype without LLD macro'
        for item in rule['item_prototypes']:
            for trigger in item.get('trigger_prototypes', []):
                keys = {key for _, key in function_refs(trigger['expression'])}
                assert keys == {item['key']}, f'{trigger["name"]}: nested under the wrong item'


def test_trigger_dependencies_resolve(export: dict[str, Any], template: dict[str, Any]) -> None:
    host_side = {(t['name'], t['expression']) for t in host_triggers(export, template)}
    checked = 0
    for trigger in host_triggers(export, template):
        for dependency in trigger.get('dependencies', []):
            assert (dependency['name'], dependency['expression']) in host_side, dependency
            checked += 1
    for rule in template['discovery_rules']:
        reachable = host_side | {(t['name'], t['expression']) for t in rule_triggers(rule)}
        for trigger in rule_triggers(rule):
            for dependency in trigger.get('dependencies', []):
                assert (dependency['name'], dependency['expression']) in reachable, dependency
                assert dependency['name'] != trigger['name']
                checked += 1
    assert checked >= 2


def test_graphs_reference_items_of_the_template(export: dict[str, Any],
                                                template: dict[str, Any]) -> None:
    host_keys = {item['key'] for item in template['items']}
    graphs = [(graph, host_keys) for graph in export.get('graphs', [])]
    for rule in template['discovery_rules']:
        rule_keys = host_keys | {item['key'] for item in rule['item_prototypes']}
        graphs += [(graph, rule_keys) for graph in rule.get('graph_prototypes', [])]
    assert len(graphs) >= 4
    enabled = {item['key'] for rule in template['discovery_rules']
               for item in rule['item_prototypes'] if item.get('status') != 'DISABLED'}
    enabled |= {item['key'] for item in template['items'] if item.get('status') != 'DISABLED'}
    for graph, keys in graphs:
        for graph_item in graph['graph_items']:
            assert graph_item['item']['host'] == 'TCP ports by Zabbix agent'
            assert graph_item['item']['key'] in keys, f'{graph["name"]}: {graph_item}'
            assert graph_item['item']['key'] in enabled, f'{graph["name"]}: disabled item'


def test_every_state_is_covered(template: dict[str, Any]) -> None:
    states = contract_states()
    totals = [item for item in template['items'] if item['key'].startswith('tcp.host.state[')]
    assert [item['key'] for item in totals] == [f'tcp.host.state[{state}]' for state in states]
    for rule, prefix in (('tcp.port.discovery', '$.ports["{#PORT}"].'),
                         ('tcp.port.discovery.outbound', '$.remote["{#PORT}"].')):
        (prototypes,) = [r['item_prototypes'] for r in template['discovery_rules']
                         if r['key'] == rule]
        paths = {step['parameters'][0] for item in prototypes for step in item['preprocessing']
                 if step['type'] == 'JSONPATH'}
        assert {prefix + state for state in states} <= paths, rule


def test_prototype_jsonpath_steps_tolerate_a_vanished_port(template: dict[str, Any]) -> None:
    for rule in template['discovery_rules']:
        for item in rule['item_prototypes']:
            for step in item.get('preprocessing', []):
                assert step.get('error_handler') in ('DISCARD_VALUE', 'CUSTOM_VALUE'), \
                    f'{item["key"]}: {step["type"]} without an error handler'


def value_fits(item: dict[str, Any], value: Any) -> bool:
    value_type = item.get('value_type', 'UNSIGNED')
    if value is None:
        # A null (e.g. accept_queue_max from procfs) must be replaced by a later step.
        later = item['preprocessing'][1:]
        return any(step.get('error_handler') == 'CUSTOM_VALUE' for step in later)
    if value_type == 'UNSIGNED':
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if value_type == 'FLOAT':
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def check_jsonpaths(template: dict[str, Any], label: str, document: dict[str, Any],
                    ports: dict[str, list[str]]) -> int:
    resolved = 0
    targets = [(item, None) for item in template['items']]
    for rule in template['discovery_rules']:
        assert ports[rule['key']], f'{label}: no discovered port for {rule["key"]}'
        targets += [(item, port) for item in rule['item_prototypes'] for port in ports[rule['key']]]
    for item, port in targets:
        for step in item.get('preprocessing', []):
            if step['type'] != 'JSONPATH':
                continue
            path = step['parameters'][0]
            if port is not None:
                path = path.replace('{#PORT}', port)
            assert '{#' not in path, f'{item["key"]}: unresolved LLD macro in {path}'
            value = jsonpath(document, path)
            assert value is not MISSING, f'{label} document: {path} ({item["key"]}) matches nothing'
            assert value_fits(item, value), \
                f'{label} document: {path} = {value!r} does not fit {item.get("value_type")}'
            resolved += 1
    return resolved


def test_jsonpaths_resolve_in_the_contract_document(template: dict[str, Any]) -> None:
    ((label, document, ports),) = documents(None)
    assert check_jsonpaths(template, label, document, ports) >= 43


def test_jsonpaths_resolve_in_the_real_document(template: dict[str, Any],
                                                real_outputs: dict[str, Any]) -> None:
    port = real_outputs['port']
    assert port in {row['{#PORT}'] for row in real_outputs['discovery']}, \
        f'our listener on {port} was not discovered'
    assert port in {row['{#PORT}'] for row in real_outputs['outbound']}, \
        f'our connection to {port} was not discovered as outbound'
    (_, (label, document, ports)) = documents(real_outputs)
    assert check_jsonpaths(template, label, document, ports) >= 43


def test_lint_catches_a_broken_template(template: dict[str, Any]) -> None:
    """The checks above must be able to fail: break a copy and run them on it."""
    broken = yaml.safe_load(yaml.safe_dump(template))
    item = broken['discovery_rules'][0]['item_prototypes'][0]
    item['preprocessing'][0]['parameters'][0] = '$.ports["{#PORT}"].ESTABLISHD'
    ((label, document, ports),) = documents(None)
    with pytest.raises(AssertionError, match='matches nothing'):
        check_jsonpaths(broken, label, document, ports)
    broken['discovery_rules'][0]['trigger_prototypes'][0]['expression'] += \
        ' and last(/TCP ports by Zabbix agent/no.such.key)=0'
    with pytest.raises(AssertionError, match='unknown item key'):
        for trigger in rule_triggers(broken['discovery_rules'][0]):
            check_expression(trigger['expression'],
                             {i['key'] for i in broken['items']}
                             | {i['key'] for i in broken['discovery_rules'][0]['item_prototypes']},
                             trigger['name'])


# ------------------------------------------------------------------------------------------------
# The Zabbix frontend's own import validator, offline, when a 6.0 frontend is installed here.

ZABBIX_UI = Path('/usr/share/zabbix')
FRONTEND_CHECK = r'''<?php
$root = $argv[1];
require_once $root.'/include/classes/core/CAutoloader.php';
$paths = [$root.'/include/classes'];
$tree = new RecursiveIteratorIterator(new RecursiveDirectoryIterator($root.'/include/classes',
	FilesystemIterator::SKIP_DOTS), RecursiveIteratorIterator::SELF_FIRST);
foreach ($tree as $file) {
	if ($file->isDir()) $paths[] = $file->getPathname();
}
$autoloader = new CAutoloader;
$autoloader->addNamespace('', $paths);
$autoloader->register();
require_once $root.'/vendor/autoload.php';
require_once $root.'/include/defines.inc.php';
require_once $root.'/include/gettextwrapper.inc.php';
require_once $root.'/include/func.inc.php';
require_once $root.'/include/validate.inc.php';

$data = (new CYamlImportReader())->read(file_get_contents($argv[2]));
$data = (new CXmlValidator(new CImportValidatorFactory('yaml'), 'yaml'))
	->setStrict(true)
	->validate($data, '/');
$errors = [];
array_walk_recursive($data, function ($value, $tag) use (&$errors) {
	if (in_array($tag, ['expression', 'recovery_expression'], true) && $value !== '') {
		$parser = new CExpressionParser(['usermacros' => true, 'lldmacros' => true]);
		if ($parser->parse($value) != CParser::PARSE_SUCCESS) {
			$errors[] = $value.': '.$parser->getError();
			return;
		}
		$validator = new CExpressionValidator(['usermacros' => true, 'lldmacros' => true]);
		if (!$validator->validate($parser->getResult()->getTokens())) {
			$errors[] = $value.': '.$validator->getError();
		}
	}
	if ($tag === 'key' && (new CItemKey())->parse($value) != CParser::PARSE_SUCCESS) {
		$errors[] = 'item key '.$value;
	}
});
echo $errors ? implode("\n", $errors)."\n" : "OK\n";
'''


def test_zabbix_frontend_accepts_the_template(tmp_path: Path) -> None:
    """Schema (strict: no unknown tags), trigger expressions and item keys as the 6.0 import
    checks them, without a server or credentials."""
    assert shutil.which('php') and (ZABBIX_UI / 'include/classes/import/validators/C60XmlValidator.php').exists(), \
        'needs php and the Zabbix 6.0 frontend in /usr/share/zabbix (scripts/zabbix-stack install)'
    script = tmp_path / 'check.php'
    script.write_text(FRONTEND_CHECK)
    good = subprocess.run(['php', str(script), str(ZABBIX_UI), str(TEMPLATE_FILE)],
                          capture_output=True, text=True, timeout=120)
    assert good.stdout == 'OK\n', good.stdout + good.stderr
    broken = tmp_path / 'broken.yaml'
    broken.write_text(TEMPLATE_FILE.read_text().replace("lifetime: '7d'",
                                                        "lifetime_type: DELETE_NEVER", 1))
    bad = subprocess.run(['php', str(script), str(ZABBIX_UI), str(broken)], capture_output=True,
                         text=True, timeout=120)
    assert 'unexpected tag "lifetime_type"' in bad.stdout + bad.stderr
