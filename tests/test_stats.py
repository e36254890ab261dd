"""`tcp-lld stats`: the master document, checked against the known world for every scan method."""

import json

import pytest

from tcp_lld.scan import SOURCES
from world import STATES

pytestmark = pytest.mark.root  # real sockets in private network namespaces

METHODS = list(SOURCES)


@pytest.mark.parametrize("method", METHODS)
def test_ports_hold_exact_counts_for_every_state(world, cli, method):
    document = cli.json("stats", "--no-cache", "--source", method)
    assert document["meta"]["source"] == method
    assert sorted(document["ports"], key=int) == [str(p) for p in sorted(world.SERVICE_PORTS)]
    for port in world.SERVICE_PORTS:
        entry = document["ports"][str(port)]
        assert {state: entry[state] for state in STATES} == world.counts(port), f"port {port}"
    assert document["total"] == world.totals()


def test_every_state_is_present_and_the_order_is_netstat_s(world, cli):
    document = cli.json("stats")
    for entry in document["ports"].values():
        assert list(entry)[: len(STATES)] == list(STATES)
    assert list(document["total"]) == list(STATES)


def test_accept_queue_is_summed_over_listeners(world, cli):
    ports = cli.json("stats", "--source", "netlink")["ports"]
    assert (ports["3333"]["accept_queue"], ports["3333"]["accept_queue_max"]) == (1, 0)
    assert (ports["8080"]["accept_queue"], ports["8080"]["accept_queue_max"]) == (0, 256)  # 2 x 128
    procfs = cli.json("stats", "--no-cache", "--source", "procfs")["ports"]
    assert (procfs["3333"]["accept_queue"], procfs["3333"]["accept_queue_max"]) == (1, None)


@pytest.mark.parametrize("method", METHODS)
def test_remote_holds_the_connections_this_host_opened_by_remote_port(world, cli, method):
    document = cli.json("stats", "--no-cache", "--source", method)
    assert sorted(document["remote"], key=int) == [str(port) for port in sorted(world.remote)]
    for port in world.remote:
        expected = {**world.remote_counts(port), "peer_max": world.peer_max(port)}
        assert document["remote"][str(port)] == expected, f"remote port {port}"
    assert document["remote"]["8080"]["peer_max"] == 3 < sum(world.remote_counts(8080).values())
    client_ports = [port for port in world.local if port not in world.inbound_ports]
    assert not set(map(str, client_ports)) & set(document["remote"])  # inbound clients are not services


def test_meta_describes_the_scan(world, cli):
    meta = cli.json("stats", "--no-cache")["meta"]
    assert meta["source"] == "netlink"
    assert meta["sockets"] == sum(world.totals().values())
    assert meta["ports"] == len(world.SERVICE_PORTS)
    assert 0 <= meta["scan_seconds"] < 5
    assert 0 <= meta["age_seconds"] < 5
    assert meta["truncated"] == 0 and meta["dropped"] == {"gone": 0, "listening": 0, "remote": 0}
    assert (meta["memory"], meta["stale"]) == ("ok", 0)


def test_output_is_exactly_one_json_line(world, cli):
    out = cli.ok("stats")
    assert out.endswith("}\n") and out.count("\n") == 1
    json.loads(out)
