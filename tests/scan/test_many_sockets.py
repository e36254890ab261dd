"""Thousands of TIME_WAIT sockets: the sliced netlink path across many dump buffers (each holds ~340
records) must count exactly what the test made, like procfs, with the ephemeral sieve on."""

import socket
import time

import pytest

from netns import private_network_namespace
from tcp_lld.namespace import ephemeral_port_range
from tcp_lld.scan import scan
from tcp_lld.scan.result import counts_for

pytestmark = pytest.mark.root  # live sockets in a private network namespace

SERVER_CLOSES, CLIENT_CLOSES = 1500, 700  # server-side TIME_WAIT on 80 / client-side on ephemeral ports


def make_time_wait(family: int, address: str, port: int, count: int, server_closes_first: bool) -> None:
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(1024)
    for _ in range(count):
        client = socket.create_connection((address, port))
        server_side, _ = listener.accept()
        first, second = (server_side, client) if server_closes_first else (client, server_side)
        first.close()
        second.recv(1)  # wait for the FIN before closing the other end
        second.close()
    listener.close()


@pytest.fixture(scope="module")
def crowd():
    with private_network_namespace():
        make_time_wait(socket.AF_INET, "127.0.0.1", 80, SERVER_CLOSES, server_closes_first=True)
        make_time_wait(socket.AF_INET6, "::1", 443, SERVER_CLOSES // 3, server_closes_first=True)
        make_time_wait(socket.AF_INET, "127.0.0.1", 3306, CLIENT_CLOSES, server_closes_first=False)
        time.sleep(0.2)  # the last FINs on loopback, on a busy machine (seen flaky without)
        yield ephemeral_port_range()


@pytest.mark.parametrize("method", ["netlink", "procfs"])
def test_time_wait_counts_per_port_are_exact(crowd, method):
    result = scan(method, ephemeral=crowd)
    time_wait = 5  # index of TIME_WAIT in the counts
    assert counts_for(result.local, 80)[time_wait] == SERVER_CLOSES
    assert counts_for(result.local, 443)[time_wait] == SERVER_CLOSES // 3
    assert counts_for(result.local, 3306)[time_wait] == 0  # the clients closed first
    assert counts_for(result.remote, 3306)[time_wait] == CLIENT_CLOSES
    assert result.totals[time_wait] == SERVER_CLOSES + SERVER_CLOSES // 3 + CLIENT_CLOSES


def test_the_sieve_leaves_ephemeral_ports_out_of_the_tally_only(crowd):
    low, high = crowd
    sieved = scan("netlink", ephemeral=crowd)
    full = scan("procfs")
    assert sieved.totals == full.totals
    client_ports = {key >> 4 for key in full.local if low <= key >> 4 <= high}
    assert len(client_ports) >= CLIENT_CLOSES
    sieved_client_ports = {key >> 4 for key in sieved.local if low <= key >> 4 <= high}
    # only ports sharing a high byte with the range's ends pass the byte-wise sieve
    assert all(port >> 8 in (low >> 8, high >> 8) for port in sieved_client_ports)
    inner = {port for port in client_ports if (low >> 8) < port >> 8 < (high >> 8)}
    assert inner and not inner & sieved_client_ports


def test_a_dump_received_by_a_forked_child_counts_the_same(crowd, monkeypatch, forks):
    """The kernel's own datagrams through `pipeline` (batches of one datagram, so the child takes
    all but the first), ending as a real dump ends: a short datagram, then NLMSG_DONE alone."""
    piped = scan("netlink", ephemeral=crowd)
    assert forks  # the connections dump (~2,900 records) spans several datagrams
    monkeypatch.undo()
    alone = scan("netlink", ephemeral=crowd)
    assert (dict(piped.local), dict(piped.remote), piped.totals, piped.peers) == \
        (dict(alone.local), dict(alone.remote), alone.totals, alone.peers)
    assert piped.totals == scan("procfs").totals
