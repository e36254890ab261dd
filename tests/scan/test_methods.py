"""Every scan method gives the exact per-port counts of sockets whose truth the test knows."""

import pytest

from tcp_lld.scan import SOURCES, scan
from tcp_lld.scan.result import counts_for
from world import named

pytestmark = pytest.mark.root  # live sockets in a private network namespace

METHODS = list(SOURCES)


@pytest.mark.parametrize("method", METHODS)
def test_local_port_counts_match_the_world(world, method):
    result = scan(method)
    assert result.source == method
    for port in world.SERVICE_PORTS:
        assert named(counts_for(result.local, port)) == world.counts(port), f"port {port}"
    assert named(result.totals) == world.totals()
    assert result.sockets == sum(world.totals().values())


@pytest.mark.parametrize("method", METHODS)
def test_remote_port_counts_match_the_world(world, method):
    result = scan(method)
    for port in world.SERVICE_PORTS:
        assert named(counts_for(result.remote, port)) == world.remote_counts(port), f"remote {port}"


@pytest.mark.parametrize("method", METHODS)
def test_listeners_are_seen_with_family_and_address(world, method):
    listeners = {(l.port, l.family, l.address) for l in scan(method).listeners}
    assert listeners == {
        (8080, 4, "0.0.0.0"), (8080, 6, "::"), (3306, 4, "127.0.0.1"), (5432, 6, "::"),
        (2222, 4, "127.0.0.1"), (3333, 4, "127.0.0.1"), (6379, 6, "::1"),
    }


def test_accept_queue_and_backlog_from_netlink(world):
    by_port = {l.port: l for l in scan("netlink").listeners}
    assert (by_port[3333].queue, by_port[3333].backlog) == (1, 0)  # backlog 0 admits one
    assert (by_port[3306].queue, by_port[3306].backlog) == (0, 128)
    assert by_port[3306].inode > 0


def test_procfs_sees_the_queue_but_not_the_backlog(world):
    by_port = {l.port: l for l in scan("procfs").listeners}
    assert (by_port[3333].queue, by_port[3333].backlog) == (1, None)


def test_all_methods_agree_on_every_port(world):
    """Including the clients' ephemeral ports: with no ephemeral range given nothing is sieved."""
    tallies = {method: scan(method) for method in METHODS}
    reference = tallies["netlink"]
    for method, result in tallies.items():
        assert result.local == reference.local, method
        assert result.remote == reference.remote, method
        assert result.totals == reference.totals, method


def test_the_ephemeral_sieve_keeps_service_ports_and_totals(world):
    """TIME_WAIT on non-listening ephemeral ports is left out of the tallies, never out of totals."""
    full = scan("netlink")
    sieved = scan("netlink", ephemeral=(1024, 65535))
    assert sieved.totals == full.totals
    for port in world.SERVICE_PORTS:
        assert counts_for(sieved.local, port) == counts_for(full.local, port), port
        assert counts_for(sieved.remote, port) == counts_for(full.remote, port), port


def test_per_family_requests_count_like_the_single_legacy_dump(world):
    """Kernels that refuse TCPDIAG_GETSOCK get two SOCK_DIAG_BY_FAMILY dumps per family instead."""
    from tcp_lld.scan import netlink

    legacy, per_family = netlink.scan(legacy=True), netlink.scan(legacy=False)
    assert per_family.local == legacy.local
    assert per_family.remote == legacy.remote
    assert per_family.totals == legacy.totals
