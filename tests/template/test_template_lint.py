"""Lint of the templates (template/tcp_ports_by_zabbix_agent.yaml and its active twin,
tcp_ports_by_zabbix_agent_active.yaml) against the contract and the real CLI. Every check of one
template runs on both (the `export` fixture is parametrized by file).

What a Zabbix import would only reveal on a live server (or never: a JSONPath that matches nothing
just leaves an item without data) is checked here: UUIDs, master items, macros, trigger and graph
references, dependencies, agent keys, and every JSONPath against a document from docs/contract.md
and against the document the installed `tcp-lld` really prints.
"""
from __future__ import annotations

import json
import os
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
PASSIVE, ACTIVE = 'TCP ports by Zabbix agent', 'TCP ports by Zabbix agent active'
TEMPLATE_FILES = {PASSIVE: ROOT / 'template' / 'tcp_ports_by_zabbix_agent.yaml',
                  ACTIVE: ROOT / 'template' / 'tcp_ports_by_zabbix_agent_active.yaml'}
TEMPLATE_FILE = TEMPLATE_FILES[PASSIVE]
each_file = pytest.mark.parametrize('name', sorted(TEMPLATE_FILES))
GENERATOR = ROOT / 'scripts' / 'gen-template'
CONTRACT = ROOT / 'docs' / 'contract.md'
AGENT_CONFS = sorted((ROOT / 'agent_conf').glob('*/tcp-lld.conf'))
INSTALLED_CLI = Path(os.environ.get('TCP_LLD_PREFIX', '/opt/tcp-lld')) / 'bin' / 'tcp-lld'
# The installed launcher when there is one (what the agent runs), else this checkout's package.
CLI = [str(INSTALLED_CLI)] if INSTALLED_CLI.exists() else [sys.executable, '-m', 'tcp_lld']
AGENT_TYPES = {'ZABBIX_PASSIVE', 'ZABBIX_ACTIVE'}

# {$MACRO} or {$MACRO:context}, the context possibly quoted and holding an LLD macro.
USER_MACRO = re.compile(r'\{\$([A-Z0-9_.]+)(?::(?:"(?:[^"\\]|\\.)*"|[^}]*))?\}')
LLD_MACRO = re.compile(r'\{#([A-Z0-9_.]+)\}')
UUID4 = re.compile(r'^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$')


# ------------------------------------------------------------------------------------------------
# Reading the template.

def load_export(text: str) -> dict[str, Any]:
    return yaml.safe_load(text)['zabbix_export']


@pytest.fixture(scope='module', params=sorted(TEMPLATE_FILES))
def export(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_export(TEMPLATE_FILES[request.param].read_text(encoding='utf-8'))


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


# The kernel object as docs/kernel.md shows it (tcp-lld's test host, initial namespace).
KERNEL_EXAMPLE = json.loads('''
{"TcpExt":{"ListenOverflows":0,"ListenDrops":0,"SyncookiesSent":0,"SyncookiesRecv":0,
  "SyncookiesFailed":0,"TCPReqQFullDoCookies":0,"TCPReqQFullDrop":0,"TCPBacklogDrop":0,
  "TCPTimeWaitOverflow":0,"TW":823,"TWRecycled":0,"TWKilled":0,"TCPAbortOnData":20,
  "TCPAbortOnClose":0,"TCPAbortOnMemory":0,"TCPAbortOnTimeout":0,"TCPAbortOnLinger":0,
  "TCPAbortFailed":0,"TCPMemoryPressures":0,"TCPRetransFail":0,"TCPTimeouts":2,"TCPSynRetrans":0},
 "Tcp":{"ActiveOpens":898,"PassiveOpens":858,"AttemptFails":14,"EstabResets":23,"CurrEstab":67,
  "InSegs":389168,"OutSegs":386853,"RetransSegs":49,"InErrs":0,"OutRsts":67},
 "sockstat":{"inuse":77,"orphan":0,"tw":216,"alloc":108,"mem":208},
 "sockstat6":{"inuse":0},
 "sysctl":{"net.core.somaxconn":4096,"net.ipv4.tcp_max_syn_backlog":2048,"net.ipv4.tcp_syncookies":1,
  "net.ipv4.tcp_max_tw_buckets":131072,"net.ipv4.tcp_fin_timeout":60,"net.ipv4.tcp_tw_reuse":2,
  "net.ipv4.ip_local_port_range":[32768,60999],"net.ipv4.tcp_max_orphans":131072,
  "net.ipv4.tcp_mem":[287892,383858,575784]},
 "derived":{"ephemeral_ports":28232,"tw_pct":0.2,"orphan_pct":0.0,"mem_pct":0.0,"mem_pressure_pct":0.1},
 "errors":0}
''')


def container_kernel() -> dict[str, Any]:
    """The same in a container: host-wide limits unreadable, so they and their percentages are
    null (docs/kernel.md)."""
    kernel = json.loads(json.dumps(KERNEL_EXAMPLE))
    kernel['sysctl']['net.ipv4.tcp_max_orphans'] = kernel['sysctl']['net.ipv4.tcp_mem'] = None
    for field in ('orphan_pct', 'mem_pct', 'mem_pressure_pct'):
        kernel['derived'][field] = None
    return kernel


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
        'remote': {'3306': {**zero, 'ESTABLISHED': 8, 'peer_max': 6}},
        'kernel': KERNEL_EXAMPLE,
        'meta': {'source': 'netlink', 'version': '0.1.0', 'timestamp': 1763770000.123,
                 'scan_seconds': 0.0123, 'sockets': 402, 'ports': 2, 'remote_ports': 1,
                 'truncated': 0, 'dropped': {'gone': 0, 'listening': 0, 'remote': 0},
                 'memory': 'ok', 'stale': 0, 'age_seconds': 1.2},
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
    result = subprocess.run([*CLI, *arguments, '--no-cache'], capture_output=True, cwd=ROOT,
                            text=True, timeout=60)
    assert result.returncode == 0, f'tcp-lld {" ".join(arguments)}: {result.stdout}{result.stderr}'
    assert result.stderr == '', result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope='module')
def real_outputs() -> dict[str, Any]:
    """stats, discovery and outbound discovery from the installed CLI, with one listener and one
    outbound connection of our own so every prototype path has a port to resolve against."""
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

@each_file
def test_generator_output_is_committed(name: str) -> None:
    path = TEMPLATE_FILES[name]
    generated = subprocess.run([sys.executable, str(GENERATOR), '--stdout', path.name],
                               capture_output=True, text=True, check=True).stdout
    assert generated == path.read_text(encoding='utf-8'), \
        f'template/{path.name} is stale: run scripts/gen-template'


def test_the_generator_writes_only_the_two_templates() -> None:
    assert sorted((ROOT / 'template').glob('*.yaml')) == sorted(TEMPLATE_FILES.values())


def test_export_header(export: dict[str, Any], template: dict[str, Any]) -> None:
    assert export['version'] == '6.0'
    assert template['template'] == template['name'] in TEMPLATE_FILES
    assert load_export(TEMPLATE_FILES[template['name']].read_text())['templates'] == [template]
    assert [group['name'] for group in template['groups']] == ['Templates/Applications']
    assert [group['name'] for group in export['groups']] == ['Templates/Applications']


@each_file
def test_no_yaml_anchors(name: str) -> None:
    """Zabbix never exports anchors or aliases; keep the file in the shape it imports and diffs."""
    assert not re.search(r'(^|\s)[&*]id\d+', TEMPLATE_FILES[name].read_text(encoding='utf-8'), re.M)


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


def test_user_macros_are_defined_and_used(export: dict[str, Any],
                                          template: dict[str, Any]) -> None:
    defined = {macro['macro']: macro for macro in template['macros']}
    for macro in defined.values():
        assert USER_MACRO.fullmatch(macro['macro']), macro['macro']
        assert macro.get('value', '') != '', f'{macro["macro"]} has no default'
        assert len(macro.get('description', '')) > 20, f'{macro["macro"]} has no description'
    body = {name: value for name, value in template.items() if name != 'macros'}
    body['template-level triggers'] = export.get('triggers', [])
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
    real = request.getfixturevalue('real_outputs')
    return {'tcp.port.discovery': local_rows + real['discovery'],
            'tcp.port.discovery.outbound': outbound_rows + real['outbound']}


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
    # (dashboards name graph prototypes, whose names hold LLD macros)
    host_side = {name: value for name, value in template.items()
                 if name not in ('discovery_rules', 'macros', 'dashboards')}
    assert not any(LLD_MACRO.search(text) for text in strings(host_side)), \
        'an LLD macro outside a discovery rule'


def test_label_javascript(template: dict[str, Any]) -> None:
    assert shutil.which('node'), 'node runs the LLD JavaScript (scripts/zabbix-stack install)'
    local, outbound = template['discovery_rules']
    rows = [{'{#PORT}': '80', '{#SERVICE}': 'http', '{#PROCESS}': 'nginx'},
            {'{#PORT}': '2024', '{#SERVICE}': '', '{#PROCESS}': '', '{#USER}': ''},
            {'{#PORT}': '5432', '{#SERVICE}': 'postgresql', '{#PROCESS}': '',
             '{#USER}': 'postgres'},
            {'{#PORT}': '6379', '{#SERVICE}': 'redis', '{#PROCESS}': 'redis', '{#USER}': 'redis'},
            {'{#PORT}': '8080', '{#SERVICE}': 'http-alt', '{#PROCESS}': 'java', '{#USER}': '1001'}]
    out = run_rule_javascript(local, rows)
    assert [row['{#LABEL}'] for row in out] == \
        [' (http, nginx)', '', ' (postgresql, postgres)', ' (redis)', ' (http-alt, java, 1001)']
    # a tcp-lld without {#USER}: the rule's {#USER} filter must still see a value
    assert out[0]['{#USER}'] == '' and out[3]['{#USER}'] == 'redis'
    assert [row['{#LABEL}'] for row in run_rule_javascript(
        outbound, [{'{#PORT}': '3306', '{#SERVICE}': 'mysql'}, {'{#PORT}': '9', '{#SERVICE}': ''}])
    ] == [' (mysql)', '']


def check_expression(expression: str, known_keys: set[str], where: str, template_name: str) -> None:
    refs = list(function_refs(expression))
    assert refs, f'{where}: no item referenced in {expression}'
    for host, key in refs:
        assert host == template_name, f'{where}: foreign host {host}'
        assert key in known_keys, f'{where}: unknown item key {key}'


def test_triggers_reference_items_of_the_template(export: dict[str, Any],
                                                  template: dict[str, Any]) -> None:
    host_keys = {item['key'] for item in template['items']}
    for trigger in host_triggers(export, template):
        for field in ('expression', 'recovery_expression'):
            if trigger.get(field):
                check_expression(trigger[field], host_keys, trigger['name'], template['name'])
    for item in template['items']:
        for trigger in item.get('triggers', []):
            keys = {key for _, key in function_refs(trigger['expression'])}
            assert keys == {item['key']}, f'{trigger["name"]}: nested under the wrong item'
    for rule in template['discovery_rules']:
        rule_keys = host_keys | {item['key'] for item in rule['item_prototypes']}
        for trigger in rule_triggers(rule):
            for field in ('expression', 'recovery_expression'):
                if trigger.get(field):
                    check_expression(trigger[field], rule_keys, trigger['name'], template['name'])
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
               for item in rule['item_prototypes']
               if item.get('status') != 'DISABLED' and item.get('discover') != 'NO_DISCOVER'}
    enabled |= {item['key'] for item in template['items'] if item.get('status') != 'DISABLED'}
    for graph, keys in graphs:
        for graph_item in graph['graph_items']:
            assert graph_item['item']['host'] == template['name']
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


def test_prototype_items_turn_unsupported_when_their_port_vanishes(template: dict[str, Any]) -> None:
    """Issue 10.2: a port missing from the master document makes its items unsupported (the
    JSONPath error shows), never a kept or made-up value: no error handler on the JSONPath, and
    no "custom value" that a later step could store for a missing port."""
    for rule in template['discovery_rules']:
        for item in rule['item_prototypes']:
            first, *later = item['preprocessing']
            assert first['type'] == 'JSONPATH' and 'error_handler' not in first, item['key']
            for step in later:
                if step.get('error_handler') == 'CUSTOM_VALUE':
                    # only a null's replacement, after the JSONPath found the port
                    assert step['type'] == 'MATCHES_REGEX', item['key']


def test_kernel_items_store_nothing_for_null(template: dict[str, Any]) -> None:
    """A kernel value may be null (a container, an unreadable file): the item stores nothing
    instead of turning unsupported or storing a made-up number."""
    kernel = [item for item in template['items'] if item['key'].startswith('tcp.kernel.')]
    assert len(kernel) >= 25
    for item in kernel:
        first, second, *_ = item['preprocessing']
        assert first['type'] == 'JSONPATH' and first['parameters'][0].startswith('$.kernel.')
        assert first.get('error_handler') == 'DISCARD_VALUE', item['key']
        assert second['type'] == 'MATCHES_REGEX' and second['error_handler'] == 'DISCARD_VALUE'
        assert not re.fullmatch(second['parameters'][0], ''), item['key']
        for text in ('0', '42', '0.2', '-1'):
            assert re.fullmatch(second['parameters'][0], text), (item['key'], text)
        rate = any(step['type'] == 'CHANGE_PER_SECOND' for step in item['preprocessing'])
        assert rate == item['key'].startswith('tcp.kernel.rate['), item['key']


def value_fits(item: dict[str, Any], value: Any) -> bool:
    value_type = item.get('value_type', 'UNSIGNED')
    if value is None:
        # A null (accept_queue_max from procfs, a kernel limit in a container) must be replaced
        # or discarded by a later step.
        later = item['preprocessing'][1:]
        return any(step.get('error_handler') in ('CUSTOM_VALUE', 'DISCARD_VALUE')
                   for step in later)
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
            if value is MISSING and step.get('error_handler') == 'DISCARD_VALUE' \
                    and label == 'container':
                continue  # e.g. net.ipv4.tcp_mem is null, so [2] matches nothing: no value
            assert value is not MISSING, f'{label} document: {path} ({item["key"]}) matches nothing'
            assert value_fits(item, value), \
                f'{label} document: {path} = {value!r} does not fit {item.get("value_type")}'
            resolved += 1
    return resolved


def test_jsonpaths_resolve_in_the_contract_document(template: dict[str, Any]) -> None:
    ((label, document, ports),) = documents(None)
    assert check_jsonpaths(template, label, document, ports) >= 80


def test_jsonpaths_resolve_in_a_container_document(template: dict[str, Any]) -> None:
    """Host-wide limits are null in a container: their items must store nothing, not fail."""
    ((_, document, ports),) = documents(None)
    document = {**document, 'kernel': container_kernel()}
    assert check_jsonpaths(template, 'container', document, ports) >= 80
    with pytest.raises(AssertionError, match='does not fit'):
        broken = yaml.safe_load(yaml.safe_dump(template))
        for item in broken['items']:
            if item['key'] == 'tcp.kernel.pct[mem_pct]':
                del item['preprocessing'][1:]
        check_jsonpaths(broken, 'container', document, ports)


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
        f' and last(/{template["name"]}/no.such.key)=0'
    with pytest.raises(AssertionError, match='unknown item key'):
        for trigger in rule_triggers(broken['discovery_rules'][0]):
            check_expression(trigger['expression'],
                             {i['key'] for i in broken['items']}
                             | {i['key'] for i in broken['discovery_rules'][0]['item_prototypes']},
                             trigger['name'], template['name'])


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


@each_file
def test_zabbix_frontend_accepts_the_template(tmp_path: Path, name: str) -> None:
    """Schema (strict: no unknown tags), trigger expressions and item keys as the 6.0 import
    checks them, without a server or credentials."""
    assert shutil.which('php') and (ZABBIX_UI / 'include/classes/import/validators/C60XmlValidator.php').exists(), \
        'needs php and the Zabbix 6.0 frontend in /usr/share/zabbix (scripts/zabbix-stack install)'
    script = tmp_path / 'check.php'
    script.write_text(FRONTEND_CHECK)
    good = subprocess.run(['php', str(script), str(ZABBIX_UI), str(TEMPLATE_FILES[name])],
                          capture_output=True, text=True, timeout=120)
    assert good.stdout == 'OK\n', good.stdout + good.stderr
    broken = tmp_path / 'broken.yaml'
    broken.write_text(TEMPLATE_FILES[name].read_text().replace("lifetime: '7d'",
                                                        "lifetime_type: DELETE_NEVER", 1))
    bad = subprocess.run(['php', str(script), str(ZABBIX_UI), str(broken)], capture_output=True,
                         text=True, timeout=120)
    assert 'unexpected tag "lifetime_type"' in bad.stdout + bad.stderr


# ------------------------------------------------------------------------------------------------
# Server cost (issue 10.1): scripts/template-cost on the committed YAML.

COST_SCRIPT = ROOT / 'scripts' / 'template-cost'


def template_cost(path: Path = TEMPLATE_FILE) -> dict[str, Any]:
    result = subprocess.run([sys.executable, str(COST_SCRIPT), '--json', str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)[path.name]


@each_file
def test_reference_host_stays_within_one_value_per_second(name: str) -> None:
    """50 listening + 10 outbound ports, 5 + 3 of them busy: at most 1 stored value/s."""
    figures = template_cost(TEMPLATE_FILES[name])
    assert figures['total']['values_per_second'] <= 1.0, figures
    # what a problem needs is still there: the e2e-checked items of every port exist
    assert figures['listening_port']['enabled'] >= 5 and figures['outbound_port']['enabled'] >= 3


def test_the_twins_cost_the_same() -> None:
    """scripts/template-cost on the committed files reports both, with the same figures."""
    result = subprocess.run([sys.executable, str(COST_SCRIPT), '--json'], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures.keys() == {path.name for path in TEMPLATE_FILES.values()}
    passive, active = (figures[TEMPLATE_FILES[name].name] for name in (PASSIVE, ACTIVE))
    assert passive == active
    assert passive['total']['items'] > 300


def test_readme_publishes_the_cost_figures() -> None:
    figures = template_cost()
    readme = (ROOT / 'template' / 'README.md').read_text(encoding='utf-8')
    total = figures['total']
    assert f'{total["values_per_second"]:.3f} stored values/s' in readme, \
        'template/README.md: update the cost figures (scripts/template-cost)'
    assert f'{total["items"]} items ({total["enabled"]} enabled)' in readme


def test_cost_script_counts_what_it_should(tmp_path: Path) -> None:
    """The count fails without discard-unchanged: idle ports then cost as much as busy ones."""
    figures = template_cost()
    assert figures['listening_port']['idle_values_per_second'] < \
        figures['listening_port']['busy_values_per_second'] / 10
    export = yaml.safe_load(TEMPLATE_FILE.read_text(encoding='utf-8'))
    for rule in export['zabbix_export']['templates'][0]['discovery_rules']:
        for item in rule['item_prototypes']:
            item['preprocessing'] = [step for step in item['preprocessing']
                                     if step['type'] != 'DISCARD_UNCHANGED_HEARTBEAT']
            item.pop('discover', None)
    heavier = tmp_path / 'heavier.yaml'
    heavier.write_text(yaml.safe_dump(export))
    assert template_cost(heavier)['total']['values_per_second'] > 1.0
    # a host item nobody classified stops the script instead of being counted as free
    export['zabbix_export']['templates'][0]['items'].append(
        {**export['zabbix_export']['templates'][0]['items'][1], 'key': 'tcp.new.item'})
    heavier.write_text(yaml.safe_dump(export))
    result = subprocess.run([sys.executable, str(COST_SCRIPT), str(heavier)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and 'classify it' in result.stderr


# ------------------------------------------------------------------------------------------------
# Triggers on items that discard unchanged values (issue 10.1): a window shorter than the
# heartbeat may hold only older values, so it must come with nodata() on the same item and period
# (the value did not change for that long) or not be used at all (last()).

# every function call with an item: the same matches as function_refs(), in the same order
TIME_FUNCTION = re.compile(r'(\w+)\(/([^/]+)/')


def function_calls(expression: str) -> Iterator[tuple[str, str, str]]:
    """(function, key, first parameter after the key) of every call in a trigger expression.

    >>> list(function_calls('min(/T/a[x,"y"],5m)>0 and last(/T/b)=1'))
    [('min', 'a[x,"y"]', '5m'), ('last', 'b', '')]
    """
    for match, (_, key) in zip(TIME_FUNCTION.finditer(expression), function_refs(expression)):
        rest = expression[match.end() + len(key):]
        parameter = re.match(r',([^,)]*)', rest)
        yield match.group(1), key, parameter.group(1) if parameter else ''


def heartbeats(template: dict[str, Any]) -> dict[str, str]:
    items = list(template['items']) + [item for rule in template['discovery_rules']
                                       for item in rule['item_prototypes']]
    return {item['key']: step['parameters'][0] for item in items
            for step in item.get('preprocessing', [])
            if step['type'] == 'DISCARD_UNCHANGED_HEARTBEAT'}


def check_windows(expression: str, heartbeat_of: dict[str, str], where: str) -> None:
    calls = list(function_calls(expression))
    guarded = {(key, period) for function, key, period in calls if function == 'nodata'}
    for function, key, period in calls:
        if key not in heartbeat_of or function in ('last', 'nodata', 'change'):
            continue
        assert not period.startswith('#'), f'{where}: {function}(#N) on {key} counts stored values'
        assert (key, period) in guarded, \
            f'{where}: {function}({key},{period}) without nodata({key},{period}): the heartbeat ' \
            f'is {heartbeat_of[key]}, so an unchanged value leaves the window empty'


def all_triggers(export: dict[str, Any], template: dict[str, Any]) -> list[dict[str, Any]]:
    return host_triggers(export, template) + [trigger for rule in template['discovery_rules']
                                              for trigger in rule_triggers(rule)]


def test_windows_on_discarding_items_are_guarded_by_nodata(export: dict[str, Any],
                                                           template: dict[str, Any]) -> None:
    heartbeat_of = heartbeats(template)
    assert len(heartbeat_of) > 40
    triggers = all_triggers(export, template)
    for trigger in triggers:
        for field in ('expression', 'recovery_expression'):
            if trigger.get(field):
                check_windows(trigger[field], heartbeat_of, trigger['name'])
    with pytest.raises(AssertionError, match='without nodata'):
        check_windows('min(/T/tcp.port.state[{#PORT},CLOSE_WAIT],5m)>100', heartbeat_of, 'test')


def test_listener_gone_waits_for_the_period(template: dict[str, Any]) -> None:
    """LISTEN stores its 0 once; "gone" must still wait {$TCP.LISTEN.GONE.PERIOD} (nodata) and
    stay open on the hourly heartbeat (recovery only when a listener is back)."""
    (local,) = [rule for rule in template['discovery_rules'] if rule['key'] == 'tcp.port.discovery']
    (gone,) = [trigger for trigger in rule_triggers(local) if trigger['name'].endswith('gone')]
    assert f'nodata(/{template["name"]}/tcp.port.state[{{#PORT}},LISTEN],' \
           '{$TCP.LISTEN.GONE.PERIOD})=1' in gone['expression']
    assert gone['recovery_mode'] == 'RECOVERY_EXPRESSION'
    assert f'last(/{template["name"]}/tcp.port.state[{{#PORT}},LISTEN])>0' in \
        gone['recovery_expression']


def test_dashboard_widgets_show_graphs_of_the_template(export: dict[str, Any],
                                                      template: dict[str, Any]) -> None:
    graphs = {graph['name'] for graph in export.get('graphs', [])}
    prototypes = {graph['name'] for rule in template['discovery_rules']
                  for graph in rule.get('graph_prototypes', [])}
    (board,) = template['dashboards']
    widgets = [widget for page in board['pages'] for widget in page['widgets']]
    assert len(widgets) >= 5
    cells = set()
    for widget in widgets:
        (shown,) = [field for field in widget['fields'] if field['name'] == 'graphid']
        assert shown['value']['host'] == template['name']
        known = prototypes if shown['type'] == 'GRAPH_PROTOTYPE' else graphs
        assert shown['value']['name'] in known, shown
        x, y = int(widget.get('x', '0')), int(widget.get('y', '0'))
        width, height = int(widget['width']), int(widget['height'])
        assert x + width <= 24, widget  # 6.0 dashboards are 24 columns wide
        mine = {(column, row) for column in range(x, x + width) for row in range(y, y + height)}
        assert not mine & cells, f'widgets overlap: {widget}'
        cells |= mine


def test_capacity_thresholds_per_port_are_off_until_set(template: dict[str, Any]) -> None:
    """Issue 10.2: no connection count fits every service, so the per-port capacity thresholds
    default to 0 and their triggers only run once a (context) macro sets them."""
    defaults = {macro['macro']: macro['value'] for macro in template['macros']}
    for macro in ('{$TCP.ESTABLISHED.MAX.WARN}', '{$TCP.ESTABLISHED.MAX.CRIT}',
                  '{$TCP.TIME_WAIT.MAX}'):
        assert defaults[macro] == '0', macro
        guarded = macro[:-1] + ':"{#PORT}"}>0 and '
        users = [trigger for rule in template['discovery_rules'] for trigger in rule_triggers(rule)
                 if macro[:-1] in trigger['expression']]
        assert users, macro
        for trigger in users:
            assert trigger['expression'].startswith(guarded), trigger['name']


# ------------------------------------------------------------------------------------------------
# The active twin (issue 10): Zabbix's "... by Zabbix agent active" convention.

def agent_objects(template: dict[str, Any]) -> list[dict[str, Any]]:
    """The items, discovery rules and item prototypes the agent answers (not dependent ones)."""
    objects = template['items'] + template['discovery_rules'] + [
        item for rule in template['discovery_rules'] for item in rule['item_prototypes']]
    return [obj for obj in objects if obj.get('type', 'ZABBIX_PASSIVE') in AGENT_TYPES]


def as_passive(export: dict[str, Any]) -> dict[str, Any]:
    """The active twin with its differences undone: no UUIDs, the passive template's name in every
    reference, agent objects without a type (passive is the default), no description."""
    def undo(node: Any) -> Any:
        if isinstance(node, dict):
            return {field: undo(value) for field, value in node.items()
                    if field != 'uuid' and (field, value) != ('type', 'ZABBIX_ACTIVE')}
        if isinstance(node, list):
            return [undo(value) for value in node]
        return PASSIVE if node == ACTIVE else node.replace(f'/{ACTIVE}/', f'/{PASSIVE}/')

    undone = undo(export)
    for template in undone['templates']:
        template['template'] = template['name'] = PASSIVE
        template.pop('description')
    return undone


def test_active_twin_has_the_same_objects_with_active_checks() -> None:
    passive = load_export(TEMPLATE_FILES[PASSIVE].read_text(encoding='utf-8'))
    active = load_export(TEMPLATE_FILES[ACTIVE].read_text(encoding='utf-8'))
    (passive_template,), (active_template,) = passive['templates'], active['templates']
    assert {obj.get('type', 'ZABBIX_PASSIVE') for obj in agent_objects(passive_template)} == \
        {'ZABBIX_PASSIVE'}
    active_keys = {obj['key'] for obj in agent_objects(active_template)}
    assert {obj.get('type') for obj in agent_objects(active_template)} == {'ZABBIX_ACTIVE'}
    # the master item and both discovery rules; every dependent item stays dependent
    assert {'tcp.port.stats', 'tcp.port.discovery', 'tcp.port.discovery.outbound'} <= active_keys
    assert as_passive(active) == as_passive(passive)
    # and the comparison can fail: a dependent item made active is a difference
    active_template['items'][1]['type'] = 'ZABBIX_ACTIVE'
    assert as_passive(active) != as_passive(passive)


def test_twins_have_distinct_uuids_but_share_the_group() -> None:
    """Both templates can live in one server: no object of one is taken for the other's."""
    passive, active = (load_export(TEMPLATE_FILES[name].read_text(encoding='utf-8'))
                       for name in (PASSIVE, ACTIVE))

    def uuids(export: dict[str, Any]) -> set[str]:
        body = {field: value for field, value in export.items() if field != 'groups'}
        return {node['uuid'] for node in walk(body) if isinstance(node, dict) and 'uuid' in node}

    assert len(uuids(passive)) == len(uuids(active)) > 100
    assert not uuids(passive) & uuids(active)
    assert passive['groups'] == active['groups']
