"""The template in real Zabbix servers (6.0 and 7.0 LTS, see conftest.py), fed by real agents,
checked against real sockets.

The test makes its own sockets in the host's network namespace on loopback (the agents run there):
  port 80    : N_EST accepted ESTABLISHED connections + N_QUEUED never accept()ed (accept queue)
  port 3306  : N_CW server sockets in CLOSE_WAIT + N_DB ESTABLISHED connections
  a 23xxx port: the "listener gone" test's own listener, opened and closed inside that test
and asserts what Zabbix stored equals those numbers (and `ss`), through zabbix_agentd and
zabbix_agent2, each polled by the server (passive checks, template "TCP ports by Zabbix agent")
and each in active mode (its twin "TCP ports by Zabbix agent active"): four hosts, agents started
by conftest.py with its E2E_COMMAND_LINES. A fifth host, linked as a user would link it (no
macro changed), sees only idle listeners in a namespace of their own and must show no problem.

Every test passes alone and in any order: none depends on the order of API results, on another
test having run, or on a socket another test changes; waits poll a condition, never sleep blind.
"""

import collections
import contextlib
import glob
import os
import re
import socket
import tempfile
import threading
import time

import pytest

from socketlab import Lab, can_listen, free_ports, ss_count, ss_listen_queue
from zabbix_hosts import delete_hosts

pytestmark = pytest.mark.root  # runs a real Zabbix server, its database and agents


REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HOSTS = {  # host name -> (agent kind, mode); every test parametrized by host runs on each
    "tcp-lld-agentd": ("zabbix_agentd", "passive"),
    "tcp-lld-agent2": ("zabbix_agent2", "passive"),
    "tcp-lld-agentd-active": ("zabbix_agentd", "active"),
    "tcp-lld-agent2-active": ("zabbix_agent2", "active"),
}
IDLE_HOST = "tcp-lld-idle"
GROUP = "tcp-lld e2e"
N_EST, N_QUEUED, BACKLOG_80 = 4, 2, 64
N_CW, N_DB = 3, 2
LIMIT = 180  # s, for every wait on the server
POKE_EVERY = 5  # s between "check now" requests

TEMPLATES = {"passive": "TCP ports by Zabbix agent", "active": "TCP ports by Zabbix agent active"}
# "Execute now" does not exist for active checks (the agent decides when to check), so the active
# hosts get short intervals instead, on the host (an inherited item's interval may be changed
# there), as an admin would while testing; the template's own stay 1m and 15m.
ACTIVE_DELAYS = {"tcp.port.stats": "5s", "tcp.port.discovery": "10s", "tcp.port.discovery.outbound": "10s"}
# 6.0 agents refuse a RefreshActiveChecks below 60 s: the agents start once the server hands
# out the hosts' checks, so their first request already gets them.
ACTIVE_SETTINGS = ["RefreshActiveChecks=60", "BufferSend=1"]


# ------------------------------------------------------------------------------------ helpers
def wait_for(what, probe, poke=None, timeout=LIMIT):
    """Call `probe()` -> (done, state) until done, then return state: at once if it already holds,
    else `poke()` (check now) and try again POKE_EVERY s later, until `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        done, state = probe()
        if done:
            return state
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}; last state: {state!r}")
        if poke:
            poke()
        time.sleep(POKE_EVERY)


def active_checks(port, host):
    """{key: delay} the server hands an agent in active mode for `host`: the agent protocol's
    "active checks" request, as the agent sends it to ServerActive."""
    import json
    import struct

    request = json.dumps({"request": "active checks", "host": host}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"ZBXD\x01" + struct.pack("<Q", len(request)) + request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer[:5] == b"ZBXD\x01", answer[:100]
    response = json.loads(answer[13:])
    return {check["key"]: seconds(check["delay"]) for check in response.get("data", [])}


def seconds(interval) -> int:
    """'5s', '1m', 5 or '5' -> seconds (the server may answer an interval in any of these forms)."""
    text = str(interval)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def check_now(api, itemids):
    """Zabbix "Execute now" (task type 6) for items / LLD rules of agent type."""
    if itemids:
        api.task.create([{"type": 6, "request": {"itemid": str(i)}} for i in itemids])


def items_by_key(api, hostid):
    items = api.item.get(hostids=hostid, output=["itemid", "key_", "lastvalue", "lastclock", "state",
                                                 "error", "status", "flags", "name", "type"],
                         webitems=False)
    return {item["key_"]: item for item in items}


def prototype_pattern(prototype_key):
    """A regex matching the keys a discovery made from an item prototype, with the port as group
    `port`: the one of 'tcp.port.accept_queue[{#PORT}]' matches 'tcp.port.accept_queue[80]', port '80'."""
    parts = [re.escape(part) for part in prototype_key.split("{#PORT}")]
    return re.compile(parts[0] + "".join(
        ("(?P<port>\\d+)" if number == 1 else "(?P=port)") + part for number, part in enumerate(parts[1:], 1)))


def discovered_ports(prototype_keys, keys):
    """Ports for which any of the prototypes made an item among `keys` (the union: API order and
    the shape of any one prototype's key do not matter)."""
    patterns = [prototype_pattern(p) for p in prototype_keys if "{#PORT}" in p]
    return {m.group("port") for pattern in patterns for key in keys for m in [pattern.fullmatch(key)] if m}


def report(api, deployment):
    """Every item Zabbix collected, with its last value (printed when the module's tests end)."""
    lines = [f"e2e setup (import, hosts, discovery, first values): {deployment['setup_seconds']:.0f} s"]
    for name, hostid in deployment["hosts"].items():
        keys = items_by_key(api, hostid)
        lines.append(f"== {name}: {len(keys)} items")
        for key in sorted(keys):
            item = keys[key]
            if item["status"] != "0":
                continue
            value = item["lastvalue"] if key != "tcp.port.stats" else "(JSON, not stored)"
            flag = " [UNSUPPORTED: %s]" % item["error"] if item["state"] == "1" else ""
            lines.append(f"  {key:45} {value}{flag}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def scene():
    for port in (80, 3306):
        if not can_listen(port):
            pytest.fail(f"port {port} is in use on this machine; the e2e needs it for its own listener")
    lab = Lab()
    try:
        l80 = lab.listener(80, backlog=BACKLOG_80)
        lab.established(l80, N_EST)
        lab.unaccepted(l80, N_QUEUED)
        l3306 = lab.listener(3306)
        lab.close_wait(l3306, N_CW)
        lab.established(l3306, N_DB)
        yield lab  # no test may change these sockets: every test relies on their counts
    finally:
        lab.close()


def import_rules(api_version) -> dict:
    """configuration.import rules for the template file. Zabbix 6.2 split the one `groups` rule
    into `host_groups` and `template_groups` (7.0 refuses `groups`); 7.0 converts the file's 6.0
    format on import itself."""
    groups = ({"groups": {"createMissing": True}} if api_version < 6.2 else
              {"host_groups": {"createMissing": True}, "template_groups": {"createMissing": True}})
    return {
        **groups,
        "templates": {"createMissing": True, "updateExisting": True},
        "items": {"createMissing": True, "updateExisting": True, "deleteMissing": True},
        "discoveryRules": {"createMissing": True, "updateExisting": True, "deleteMissing": True},
        "triggers": {"createMissing": True, "updateExisting": True, "deleteMissing": True},
        "graphs": {"createMissing": True, "updateExisting": True, "deleteMissing": True},
        "valueMaps": {"createMissing": True, "updateExisting": True},
        "templateLinkage": {"createMissing": True},
        "templateDashboards": {"createMissing": True, "updateExisting": True},
        "httptests": {"createMissing": True, "updateExisting": True},
    }


@pytest.fixture(scope="module")
def deployment(api, scene, agent_ports, e2e_agent, say, zabbix_stack):
    """Template imported, one host per agent, discovery and the first values collected."""
    t0 = time.monotonic()
    files = sorted(glob.glob(os.path.join(REPO, "template", "*.yaml")))
    assert files, "no template/*.yaml"
    rules = import_rules(api.version)
    for path in files:
        with open(path) as fh:
            assert api.configuration.import_(format="yaml", source=fh.read(), rules=rules) is True, path
    templateids = {}
    for mode, name in TEMPLATES.items():
        templates = api.template.get(filter={"host": name}, output=["templateid"])
        assert len(templates) == 1, f"template {name!r} not found after import"
        templateids[mode] = templates[0]["templateid"]

    groups = api.hostgroup.get(filter={"name": GROUP}, output=["groupid"])
    groupid = groups[0]["groupid"] if groups else api.hostgroup.create(name=GROUP)["groupids"][0]

    # fresh hosts on every run: no values or problems left from an earlier run
    old = api.host.get(filter={"host": list(HOSTS)}, output=["hostid"])
    if old:
        delete_hosts(api, [h["hostid"] for h in old])
    hosts = {}
    for name, (kind, mode) in HOSTS.items():
        # an agent in active mode needs no interface: it connects to the server itself
        interfaces = [{"type": 1, "main": 1, "useip": 1, "ip": "127.0.0.1", "dns": "",
                       "port": str(agent_ports[kind])}] if mode == "passive" else []
        hostid = api.host.create(
            host=name, groups=[{"groupid": groupid}], templates=[{"templateid": templateids[mode]}],
            interfaces=interfaces,
            macros=[
                # below the N_CW CLOSE_WAIT sockets the test holds on 3306: the trigger must fire
                {"macro": '{$TCP.CLOSE_WAIT.MAX:"3306"}', "value": str(N_CW - 1)},
                # short windows so the triggers react within the test's time
                {"macro": "{$TCP.LISTEN.GONE.PERIOD}", "value": "30s"},
                {"macro": "{$TCP.TRIGGER.PERIOD}", "value": "1m"},
            ],
        )["hostids"][0]
        hosts[name] = hostid
    polled = [hosts[name] for name, (_, mode) in HOSTS.items() if mode == "passive"]

    def rules_of(hostid):
        return {r["key_"]: r for r in api.discoveryrule.get(
            hostids=hostid, output=["itemid", "key_", "state", "error", "lastclock"])}

    def master_ids():
        """The passive hosts' master items: the ones "Execute now" can poke."""
        return [items_by_key(api, h)["tcp.port.stats"]["itemid"] for h in polled]

    rule_ids = [r["itemid"] for h in polled for r in rules_of(h).values()]

    # 0. the agents in active mode: short intervals on their hosts, then the agents themselves once
    # the server hands out those checks
    active = {name: kind for name, (kind, mode) in HOSTS.items() if mode == "active"}
    for name in active:
        api.item.update([{"itemid": items_by_key(api, hosts[name])["tcp.port.stats"]["itemid"],
                          "delay": ACTIVE_DELAYS["tcp.port.stats"]}])
        api.discoveryrule.update([{"itemid": rule["itemid"], "delay": ACTIVE_DELAYS[key]}
                                  for key, rule in rules_of(hosts[name]).items()])

    def handed_out():
        state = {name: active_checks(zabbix_stack.trapper_port, name) for name in active}
        want = {key: seconds(delay) for key, delay in ACTIVE_DELAYS.items()}
        return all(checks == want for checks in state.values()), state

    wait_for("the server to hand out the active hosts' checks at their short intervals", handed_out)
    with contextlib.ExitStack() as agents:  # stopped by PID when the module's tests end
        for name, kind in active.items():
            agents.enter_context(e2e_agent(
                kind, name, [f"ServerActive=127.0.0.1:{zabbix_stack.trapper_port}", *ACTIVE_SETTINGS]))

        # 1. discovery: re-send "check now" until the server's config cache knows the new items
        def discovered():
            state = {}
            for name, hostid in hosts.items():
                keys = items_by_key(api, hostid)
                state[name] = {k: k in keys for k in ("tcp.port.state[80,ESTABLISHED]",
                                                      "tcp.port.state[3306,CLOSE_WAIT]",
                                                      "tcp.remote.state[3306,ESTABLISHED]")}
            return all(all(v.values()) for v in state.values()), state

        wait_for("the discovery rules to create the per-port items", discovered,
                 poke=lambda: check_now(api, rule_ids))

        # 2. values: poll the master items until the discovered dependent items have values
        def collected():
            state = {}
            for name, hostid in hosts.items():
                keys = items_by_key(api, hostid)
                want = ["tcp.port.state[80,ESTABLISHED]", "tcp.port.state[3306,CLOSE_WAIT]",
                        "tcp.port.accept_queue[80]", "tcp.remote.state[3306,ESTABLISHED]",
                        "tcp.host.state[ESTABLISHED]"]
                state[name] = {k: keys[k]["lastclock"] for k in want if k in keys}
                if len(state[name]) < len(want) or "0" in state[name].values():
                    return False, state
            return True, state

        wait_for("values of the discovered items", collected, poke=lambda: check_now(api, master_ids()))
        deployed = {"hosts": hosts, "templateid": templateids["passive"], "templateids": templateids,
                    "master_ids": master_ids, "rule_ids": rule_ids, "setup_seconds": time.monotonic() - t0}
        yield deployed
        # what Zabbix collected, for the closing note: after the module's last test, whichever it was
        say("\n" + report(api, deployed))


# ------------------------------------------------------------------------------------- tests
def test_template_has_the_contract_keys(api, deployment):
    items = {i["key_"] for i in api.item.get(templateids=deployment["templateid"], output=["key_"])}
    assert "tcp.port.stats" in items
    rules = {r["key_"] for r in api.discoveryrule.get(templateids=deployment["templateid"], output=["key_"])}
    assert {"tcp.port.discovery", "tcp.port.discovery.outbound"} <= rules


def template_objects_in_file(path: str) -> dict:
    """How many of each object the template file defines (what any server must end up with)."""
    import yaml

    with open(path) as fh:
        export = yaml.safe_load(fh)["zabbix_export"]
    (template,) = export["templates"]
    rules = template.get("discovery_rules", [])
    prototypes = [p for r in rules for p in r.get("item_prototypes", [])]
    return {
        "items": len(template.get("items", [])),
        "triggers": len(export.get("triggers", [])) + sum(len(i.get("triggers", [])) for i in template.get("items", [])),
        "graphs": len(export.get("graphs", [])),
        "discovery rules": len(rules),
        "item prototypes": len(prototypes),
        "trigger prototypes": sum(len(r.get("trigger_prototypes", [])) for r in rules)
        + sum(len(p.get("trigger_prototypes", [])) for p in prototypes),
        "graph prototypes": sum(len(r.get("graph_prototypes", [])) for r in rules),
        "macros": len(template.get("macros", [])),
        "value maps": len(template.get("valuemaps", [])),
        "dashboards": len(template.get("dashboards", [])),
    }


@pytest.mark.parametrize("mode", sorted(TEMPLATES))
def test_import_keeps_every_object(api, deployment, mode):
    """Each file, imported as it is (7.0 converts the 6.0 format itself), leaves every object of
    the file in the server: nothing dropped or duplicated by a conversion."""
    import yaml

    paths = {yaml.safe_load(open(path))["zabbix_export"]["templates"][0]["name"]: path
             for path in glob.glob(os.path.join(REPO, "template", "*.yaml"))}
    assert sorted(paths) == sorted(TEMPLATES.values())
    path = paths[TEMPLATES[mode]]
    templateid = deployment["templateids"][mode]
    (template,) = api.template.get(templateids=templateid, output=["templateid"], selectMacros=["macro"],
                                   selectValueMaps=["name"], selectDashboards="count")
    ids = {"templateids": templateid}
    in_server = {
        "items": len(api.item.get(**ids, output=["itemid"])),
        "triggers": len(api.trigger.get(**ids, output=["triggerid"])),
        "graphs": len(api.graph.get(**ids, output=["graphid"])),
        "discovery rules": len(api.discoveryrule.get(**ids, output=["itemid"])),
        "item prototypes": len(api.itemprototype.get(**ids, output=["itemid"])),
        "trigger prototypes": len(api.triggerprototype.get(**ids, output=["triggerid"])),
        "graph prototypes": len(api.graphprototype.get(**ids, output=["graphid"])),
        "macros": len(template["macros"]),
        "value maps": len(template["valuemaps"]),
        "dashboards": int(template["dashboards"]),
    }
    assert in_server == template_objects_in_file(path)


def test_7_0_converts_as_the_template_readme_says(api, deployment, zabbix_stack):
    """template/README.md, "After importing into Zabbix 7.0": the 6.0 lost-resources period
    becomes "Delete lost resources" after 7d, "Disable lost resources" is Never, the template lands
    in the template group Templates/Applications, and no item gets a timeout of its own."""
    if zabbix_stack.version == "6.0":
        pytest.skip("a 7.0 conversion: nothing to convert on 6.0")
    for templateid in deployment["templateids"].values():
        check_7_0_conversion(api, templateid)


def check_7_0_conversion(api, templateid):
    rules = api.discoveryrule.get(templateids=templateid, output=["key_", "lifetime", "lifetime_type",
                                                                  "enabled_lifetime_type", "timeout"])
    # lifetime_type 0: delete after `lifetime`; enabled_lifetime_type 1: never disable
    assert {r["key_"]: (r["lifetime"], r["lifetime_type"], r["enabled_lifetime_type"], r["timeout"]) for r in rules} \
        == {key: ("7d", "0", "1", "") for key in ("tcp.port.discovery", "tcp.port.discovery.outbound")}
    (template,) = api.template.get(templateids=templateid, output=["templateid"], selectTemplateGroups=["name"])
    assert [g["name"] for g in template["templategroups"]] == ["Templates/Applications"]
    timeouts = {i["key_"]: i["timeout"] for i in api.item.get(templateids=templateid, output=["key_", "timeout"])
                if i["timeout"] not in ("", "0")}
    assert not timeouts, timeouts


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_every_discovered_port_has_its_items(api, deployment, host):
    hostid = deployment["hosts"][host]
    keys = items_by_key(api, hostid)
    for rule in api.discoveryrule.get(hostids=hostid, output=["itemid", "key_", "state", "error"]):
        assert rule["state"] == "0", f"{host}: LLD rule {rule['key_']} unsupported: {rule['error']}"
        assert rule["error"] == "", f"{host}: LLD rule {rule['key_']}: {rule['error']}"
        # prototypes made per port by default (discover "0"); NO_DISCOVER ones wait for an override
        prototypes = [p["key_"] for p in api.itemprototype.get(discoveryids=rule["itemid"], output=["key_", "discover"])
                      if p["discover"] == "0"]
        assert prototypes, rule
        ports = discovered_ports(prototypes, keys)
        # the test's own sockets: listeners on 80 and 3306, and clients of both (outbound)
        assert {"80", "3306"} <= ports, f"{host}: {rule['key_']} discovered {sorted(ports)}"
        lacking = {port: missing for port in sorted(ports)
                   for missing in [sorted(p.replace("{#PORT}", port) for p in prototypes
                                          if p.replace("{#PORT}", port) not in keys)] if missing}
        assert not lacking, f"{host}: {rule['key_']}: discovered ports lack items: {lacking}"


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_no_item_is_unsupported(api, deployment, host):
    hostid = deployment["hosts"][host]
    since = int(time.time())

    def polled_and_supported():
        """A poll after `since` was processed (a dependent item stored a value) and no enabled item
        is unsupported."""
        keys = items_by_key(api, hostid)
        fresh = int(keys.get("tcp.lld.age_seconds", {}).get("lastclock", 0)) > since
        bad = {k: i["error"] for k, i in keys.items() if i["status"] == "0" and i["state"] == "1"}
        return fresh and not bad, {"polled since the test began": fresh, "unsupported": bad}

    wait_for(f"{host}: a fresh poll with no unsupported item", polled_and_supported,
             poke=lambda: check_now(api, deployment["master_ids"]()), timeout=90)


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_values_equal_the_kernel(api, deployment, host):
    hostid = deployment["hosts"][host]
    expected = {
        "tcp.port.state[80,ESTABLISHED]": N_EST + N_QUEUED,
        "tcp.port.state[80,LISTEN]": 1,
        "tcp.port.accept_queue[80]": N_QUEUED,
        "tcp.port.accept_queue_max[80]": BACKLOG_80,
        "tcp.port.state[3306,CLOSE_WAIT]": N_CW,
        "tcp.port.state[3306,ESTABLISHED]": N_DB,
        "tcp.port.state[3306,LISTEN]": 1,
        "tcp.remote.state[80,ESTABLISHED]": N_EST + N_QUEUED,
        "tcp.remote.state[3306,ESTABLISHED]": N_DB,
        # every client of 80 is 127.0.0.1 -> 127.0.0.1: one address pair holds them all
        "tcp.remote.peer_max[80]": N_EST + N_QUEUED,
    }
    # independent truth from ss while the sockets are held
    assert ss_count("established", "( sport = :80 )") == N_EST + N_QUEUED
    assert ss_count("close-wait", "( sport = :3306 )") == N_CW
    assert ss_listen_queue(80) == [N_QUEUED, BACKLOG_80]

    def values():
        keys = items_by_key(api, hostid)
        got = {k: keys[k]["lastvalue"] if k in keys else None for k in expected}
        return got == {k: str(v) for k, v in expected.items()}, got

    wait_for(f"{host}: stored values equal to the sockets' counts {expected}", values,
             poke=lambda: check_now(api, deployment["master_ids"]()), timeout=90)


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_close_wait_trigger_fires_with_port_context_macro(api, deployment, host):
    hostid = deployment["hosts"][host]

    def fired():
        triggers = api.trigger.get(hostids=hostid, output=["description", "value", "error", "state"],
                                   expandDescription=True, search={"description": "CLOSE_WAIT"})
        on = [t for t in triggers if t["description"].startswith("Port 3306") and t["value"] == "1"]
        return bool(on), [(t["description"], t["value"], t["error"]) for t in triggers]

    wait_for(f"{host}: the CLOSE_WAIT trigger of port 3306 ({{$TCP.CLOSE_WAIT.MAX:\"3306\"}}={N_CW - 1})",
             fired, poke=lambda: check_now(api, deployment["master_ids"]()), timeout=120)
    # the context macro is per port: port 80 (no CLOSE_WAIT) must not fire
    quiet = api.trigger.get(hostids=hostid, output=["description", "value"], expandDescription=True,
                            search={"description": "Port 80"}, filter={"value": 1})
    quiet = [t for t in quiet if re.match(r"Port 80\b", t["description"])]
    assert not quiet, quiet


KNOCK_EVERY = 1  # s between knocks: more often than any host is polled (active hosts: 5 s)
KNOCKERS_KEPT = 90  # client sockets kept open at once; older ones are closed


def knock_until_fired(api, deployment, trigger: str, item_keys: list, port: int, accept=None) -> dict:
    """Knock on our listener at 127.0.0.1:`port` (three non-blocking connects every KNOCK_EVERY s,
    from a thread; with `accept`, first accept and close whatever is queued) until the trigger
    named `trigger` fires on every host. The kernel triggers want the rate above 0 in every value
    of their period, so there must be knocks between ANY two polls, not only when we poke.
    Returns each host's trigger values and the last values of `item_keys`."""
    knockers = collections.deque()
    stop = threading.Event()

    def knock():
        while accept is not None:
            try:
                accept()[0].close()
            except BlockingIOError:
                break
        for _ in range(3):
            client = socket.socket()
            client.setblocking(False)
            try:
                client.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            knockers.append(client)
        while len(knockers) > KNOCKERS_KEPT:
            knockers.popleft().close()

    def keep_knocking():
        while not stop.wait(KNOCK_EVERY):
            knock()

    def fired():
        state = {}
        for name, hostid in deployment["hosts"].items():
            triggers = api.trigger.get(hostids=hostid, output=["description", "value"],
                                       search={"description": trigger})
            keys = items_by_key(api, hostid)
            state[name] = {"trigger": [t["value"] for t in triggers],
                           **{key: keys.get(key, {}).get("lastvalue") for key in item_keys}}
        return all("1" in s["trigger"] for s in state.values()), state

    knock()
    knocking = threading.Thread(target=keep_knocking, name="knocking", daemon=True)
    knocking.start()
    try:
        return wait_for(f"the trigger {trigger!r} on every host", fired,
                        poke=lambda: check_now(api, deployment["master_ids"]()), timeout=300)
    finally:
        stop.set()
        knocking.join()
        for client in knockers:
            client.close()


def test_accept_queue_overflow_trigger_fires_on_every_host(api, deployment):
    """The kernel's ListenOverflows, provoked in the host's namespace on loopback: a listener of
    ours with backlog 0 that never accepts, and clients that keep knocking (each SYN the full
    queue drops counts). The rate item gets values and the trigger fires on every host."""
    lab = Lab()
    (port,) = free_ports(1, 24000, 24999)
    lab.listener(port, backlog=0)
    try:
        rate = "tcp.kernel.rate[ListenOverflows]"
        state = knock_until_fired(api, deployment, "Accept queue overflowing", [rate], port)
        assert all(float(s[rate]) > 0 for s in state.values()), state
    finally:
        lab.close()


def test_syn_cookie_trigger_fires_on_every_host(api, deployment):
    """The kernel's SyncookiesSent, provoked in the host's namespace on loopback with the host's own
    net.ipv4.tcp_syncookies=1 (no sysctl changed): a listener of ours with TCP_DEFER_ACCEPT and
    backlog 1 keeps its clients' requests in its SYN queue (they send nothing), so once it holds
    them every further SYN is answered with a cookie. Each knock first empties the accept queue,
    where the cookies' connections land, so that new SYNs reach the cookie path instead of being
    dropped as accept-queue overflows. (listen(0) alone no longer sends cookies on 6.x kernels,
    which call the SYN queue full only past the backlog.) The SYN cookie trigger fires on every
    host: the rate stays above 0 for {$TCP.TRIGGER.PERIOD} (1m here)."""
    with open("/proc/sys/net/ipv4/tcp_syncookies") as setting:
        if setting.read().strip() != "1":
            pytest.skip("needs the host's net.ipv4.tcp_syncookies at its default, 1")
    (port,) = free_ports(1, 24000, 24999)
    listener = socket.socket()
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 60)
    listener.bind(("127.0.0.1", port))
    listener.listen(1)
    listener.setblocking(False)
    try:
        rate, setting = "tcp.kernel.rate[SyncookiesSent]", "tcp.kernel.sysctl[net.ipv4.tcp_syncookies]"
        state = knock_until_fired(api, deployment, "SYN cookies sent", [rate, setting], port, listener.accept)
        assert all(float(s[rate]) > 0 and s[setting] == "1" for s in state.values()), state
    finally:
        listener.close()


@contextlib.contextmanager
def listener_gone(api, deployment, names):
    """A listener of the caller's own on a fresh port, discovered listening on the hosts `names`,
    then closed: tcp-lld keeps the port with LISTEN 0 and "Listener is gone" fires (the agents'
    command line for this: E2E_COMMAND_LINES in conftest.py). Yields the port once fired."""
    hostids = {name: deployment["hosts"][name] for name in names}
    lab = Lab()
    try:
        (gone,) = free_ports(1, 23000, 23999)
        listener = lab.listener(gone)
        listen_key = f"tcp.port.state[{gone},LISTEN]"

        def state_of_port():
            state = {}
            for name, hostid in hostids.items():
                item = items_by_key(api, hostid).get(listen_key)
                triggers = api.trigger.get(hostids=hostid, output=["description", "value"], expandDescription=True,
                                           search={"description": f"Port {gone}"})
                state[name] = {"LISTEN": item["lastvalue"] if item and item["lastclock"] != "0" else None,
                               "gone": [t["value"] for t in triggers if "Listener is gone" in t["description"]]}
            return state

        def listening():  # discovered, LISTEN 1 stored, no "gone" problem (tcp-lld may remember the port)
            state = state_of_port()
            return all(s["LISTEN"] == "1" and s["gone"] == ["0"] for s in state.values()), state

        def fired():
            state = state_of_port()
            return all(s["LISTEN"] == "0" and s["gone"] == ["1"] for s in state.values()), state

        wait_for(f"port {gone} discovered and listening on {sorted(names)}", listening,
                 poke=lambda: check_now(api, deployment["rule_ids"] + deployment["master_ids"]()))
        lab.close(listener)
        assert ss_count("listening", f"( sport = :{gone} )") == 0
        wait_for(f"'Listener is gone' on port {gone} (kept with LISTEN 0 by tcp-lld)", fired,
                 poke=lambda: check_now(api, deployment["master_ids"]()), timeout=150)
        yield gone
    finally:
        lab.close()


def test_listener_gone_fires_on_every_host(api, deployment):
    with listener_gone(api, deployment, sorted(HOSTS)):
        pass


@pytest.mark.parametrize("host", sorted(name for name, (_, mode) in HOSTS.items() if mode == "active"))
def test_active_hosts_are_fed_by_their_agent_alone(api, deployment, host):
    """The active hosts have no interface the server could poll: their values (checked by the
    tests above) come from the agent in active mode, through ZABBIX_ACTIVE items."""
    hostid = deployment["hosts"][host]
    (found,) = api.host.get(hostids=hostid, output=["hostid"], selectInterfaces=["interfaceid"])
    assert found["interfaces"] == []
    agent_checks = {item["key_"]: item["type"] for item in api.item.get(hostids=hostid, output=["key_", "type"])
                    if item["type"] != "18"}  # 18: dependent
    agent_checks.update({rule["key_"]: rule["type"] for rule in api.discoveryrule.get(hostids=hostid, output=["key_", "type"])})
    assert agent_checks and set(agent_checks.values()) == {"7"}, agent_checks  # 7: Zabbix agent (active)
    assert int(items_by_key(api, hostid)["tcp.lld.sockets"]["lastclock"]) > 0


# ------------------------------------------------------------------------ a fresh, idle host
@pytest.fixture(scope="module")
def idle_host(api, deployment, idle_agent_port):
    """A host linked to the template as a user links it (no macro changed), fed by an agent whose
    tcp-lld sees the idle namespace (conftest.py: idle_namespace, idle_agent_port)."""
    old = api.host.get(filter={"host": IDLE_HOST}, output=["hostid"])
    if old:
        delete_hosts(api, [h["hostid"] for h in old])
    (group,) = api.hostgroup.get(filter={"name": GROUP}, output=["groupid"])
    return api.host.create(
        host=IDLE_HOST, groups=[{"groupid": group["groupid"]}],
        templates=[{"templateid": deployment["templateids"]["passive"]}],
        interfaces=[{"type": 1, "main": 1, "useip": 1, "ip": "127.0.0.1", "dns": "", "port": str(idle_agent_port)}],
    )["hostids"][0]


def test_fresh_host_with_idle_listeners_has_no_problem(api, idle_host, idle_namespace):
    """Quiet defaults: listeners nobody talks to, discovered and collected twice with the
    template's own macros, raise no problem. Their items say 0 connections although the host's own
    namespace has N_EST on port 80: the agent really reads the idle namespace."""
    _, idle_ports = idle_namespace
    listen_keys = [f"tcp.port.state[{port},LISTEN]" for port in sorted(idle_ports)]
    rule_ids = [rule["itemid"] for rule in api.discoveryrule.get(hostids=idle_host, output=["itemid"])]

    def master_id():
        return [items_by_key(api, idle_host)["tcp.port.stats"]["itemid"]]

    def discovered():
        keys = items_by_key(api, idle_host)
        return all(key in keys for key in listen_keys), sorted(k for k in keys if k.startswith("tcp.port.state["))

    wait_for(f"{IDLE_HOST}: its idle ports discovered", discovered, poke=lambda: check_now(api, rule_ids))
    since = int(time.time())

    def two_rounds():
        """Two snapshots stored since every idle port had its items, each port's LISTEN = 1."""
        keys = items_by_key(api, idle_host)
        rounds = api.history.get(itemids=keys["tcp.lld.sockets"]["itemid"], history=3, time_from=since,
                                 output=["clock", "value"])
        listening = {key: keys[key]["lastvalue"] for key in listen_keys}
        return len(rounds) >= 2 and set(listening.values()) == {"1"}, {"rounds": rounds, "LISTEN": listening}

    wait_for(f"{IDLE_HOST}: two collection rounds", two_rounds, poke=lambda: check_now(api, master_id()))
    keys = items_by_key(api, idle_host)
    assert {port: keys[f"tcp.port.state[{port},ESTABLISHED]"]["lastvalue"] for port in idle_ports} \
        == {port: "0" for port in idle_ports}
    triggers = api.trigger.get(hostids=idle_host, output=["description", "value"], expandDescription=True)
    assert len(triggers) > 20 and any("Listener is gone" in t["description"] for t in triggers), triggers
    assert [t["description"] for t in triggers if t["value"] == "1"] == []
    assert api.problem.get(hostids=idle_host, output=["name", "severity"]) == []


def test_frontend_shows_the_items(api, deployment, zabbix_stack, capsys):
    """Log in through the form like a person, screenshot Latest data and the per-port graph."""
    from screens import Browser

    web = zabbix_stack.web

    # docs/ keeps the 6.0 frontend's pictures; 7.0's go to a temporary directory like any run's
    to_docs = os.environ.get("TCP_LLD_SCREENSHOTS") == "1" and zabbix_stack.version == "6.0"
    target = os.path.join(REPO, "docs") if to_docs else tempfile.mkdtemp(prefix=f"tcp-lld-shots-{zabbix_stack.version}-")
    hostid = deployment["hosts"]["tcp-lld-agentd"]
    graphs = api.graph.get(hostids=hostid, output=["graphid", "name"], search={"name": "Port 80"})
    graph = next((g for g in graphs if g["name"].startswith("Port 80") and "connections by state" in g["name"]), None)
    assert graph, f"no per-port graph for port 80: {graphs}"
    with Browser() as browser:
        browser.login(web, "Admin", "zabbix")
        latest = browser.latest_data(web, hostid, os.path.join(target, "latest-data.png"), name="port 80 (")
        assert "Port 80" in latest and "ESTABLISHED" in latest, latest[:2000]
        assert "tcp-lld-agentd" in latest
        assert "Zabbix server" not in latest, "the Latest data filter did not apply"
        for bad in ("locale", "Locale", "Error", "error in query"):
            assert bad not in latest, f"the page shows {bad!r}"
        # the graph's title and legend are inside the image: check the page found exactly the graphs
        # whose name has "port 80 (http" (inbound, with the owner in the label since {#USER}, and
        # outbound from the test's clients), as many as the API has
        pattern = "port 80 (http"
        expected = [g["name"] for g in api.graph.get(hostids=hostid, output=["name"]) if pattern in g["name"].lower()]
        assert len(expected) >= 2, expected
        page = browser.graph(web, hostid, pattern, os.path.join(target, "port-graph.png"))
        assert f"Displaying {len(expected)} of {len(expected)} found" in page, (expected, page[-500:])
    with capsys.disabled():
        print(f"\nscreenshots in {target}: latest-data.png, port-graph.png")


def test_frontend_shows_the_dashboard_and_problems(api, deployment, zabbix_stack, capsys):
    """The template dashboard, and Monitoring > Problems with a CLOSE_WAIT problem (the scene's
    port 3306) and a "listener gone" one (a listener of this test's own), cropped to the width of
    a README. Saved to docs/ like test_frontend_shows_the_items's pictures."""
    from screens import Browser

    web = zabbix_stack.web
    to_docs = os.environ.get("TCP_LLD_SCREENSHOTS") == "1" and zabbix_stack.version == "6.0"
    target = os.path.join(REPO, "docs") if to_docs else tempfile.mkdtemp(prefix=f"tcp-lld-shots-{zabbix_stack.version}-")
    host = "tcp-lld-agentd"
    hostid = deployment["hosts"][host]

    def close_wait_problem():
        names = [p["name"] for p in api.problem.get(hostids=hostid, output=["name"])]
        return any(name.startswith("Port 3306") and "CLOSE_WAIT" in name for name in names), names

    wait_for(f"{host}: the CLOSE_WAIT problem of port 3306", close_wait_problem,
             poke=lambda: check_now(api, deployment["master_ids"]()), timeout=120)
    with listener_gone(api, deployment, [host]) as gone:
        with Browser(width=1000, height=1300) as browser:  # the list at the width of a README
            browser.login(web, "Admin", "zabbix")
            problems = browser.problems(web, hostid, os.path.join(target, "problems.png"), ["3306", str(gone)])
        shown = [line for line in problems.splitlines() if re.search(r"Port \d+", line)]
        assert len(shown) == 2, problems[-2000:]
        assert any(re.search(r"Port 3306 .*CLOSE_WAIT over", line) for line in shown), shown
        assert any(re.search(rf"Port {gone} .*No process listens on port {gone}", line) for line in shown), shown
    # the dashboard's 24 columns need about 1280 px
    with Browser(width=1280, height=1500) as browser:
        browser.login(web, "Admin", "zabbix")
        board = browser.dashboard(web, hostid, os.path.join(target, "dashboard.png"))
    for graph in ("TCP: connections by state (host total)", "Port 80 (http", "Outbound port 3306 (mysql)"):
        assert graph in board, board[-2000:]
    with capsys.disabled():
        print(f"\nscreenshots in {target}: problems.png, dashboard.png")


def test_tcp_lld_error_lines_become_item_errors(api, deployment):
    """The agent ignores exit codes, so tcp-lld's one-line error arrives as a value. The template's
    preprocessing must turn it into the item's (and the discovery rule's) error: proven here with
    the master item's and the discovery rule's own steps on keys the agent answers with an error."""
    hostid = deployment["hosts"]["tcp-lld-agentd"]
    interface = api.hostinterface.get(hostids=hostid, output=["interfaceid"])[0]["interfaceid"]
    template = deployment["templateid"]

    def steps(objects):
        return [{k: step[k] for k in ("type", "params", "error_handler", "error_handler_params")}
                for step in objects[0]["preprocessing"]]

    master_steps = steps(api.item.get(templateids=template, filter={"key_": "tcp.port.stats"},
                                      selectPreprocessing="extend", output=["itemid"]))
    rule_steps = steps(api.discoveryrule.get(templateids=template, filter={"key_": "tcp.port.discovery"},
                                             selectPreprocessing="extend", output=["itemid"]))
    item = api.item.create(hostid=hostid, interfaceid=interface, type=0, value_type=4, delay="1h",
                           name="error line as master", key_="tcp.port.count[abc,ESTABLISHED]",
                           preprocessing=master_steps)["itemids"][0]
    rule = api.discoveryrule.create(hostid=hostid, interfaceid=interface, type=0, delay="1h",
                                    name="error line as discovery", key_="tcp.port.count[xyz,ESTABLISHED]",
                                    preprocessing=rule_steps)["itemids"][0]

    def errors():
        got = {
            "item": api.item.get(itemids=item, output=["state", "error"])[0],
            "rule": api.discoveryrule.get(itemids=rule, output=["state", "error"])[0],
        }
        done = got["item"]["state"] == "1" and got["rule"]["state"] == "1"
        return done, got

    try:  # these unsupported objects must not outlive the test (other tests check the host)
        got = wait_for("the error lines to become item errors", errors, poke=lambda: check_now(api, [item, rule]))
    finally:
        api.item.delete(item)
        api.discoveryrule.delete(rule)
    # Zabbix 6.0 shows it as "Preprocessing failed for: <value>\n1. Failed: <our line>"
    assert "Failed: tcp-lld: invalid port 'abc'" in got["item"]["error"], got
    assert "Failed: tcp-lld: invalid port 'xyz'" in got["rule"]["error"], got


def test_items_are_collected(api, deployment):
    """Zabbix stored values for the template's items on both hosts (the full list is printed when
    the module ends, see `report`)."""
    for name, hostid in deployment["hosts"].items():
        collected = [k for k, i in items_by_key(api, hostid).items()
                     if i["status"] == "0" and i["state"] == "0" and i["lastclock"] != "0"]
        assert len(collected) > 20, f"{name}: only {sorted(collected)}"
