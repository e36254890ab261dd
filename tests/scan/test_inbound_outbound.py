"""Which socket counts where, against real sockets (root): `result`'s inbound/outbound rule.

Inbound = ports listening now or remembered; a connection on an inbound local port counts by that
port only, whatever the client's source port. Everything else non-listening counts by its remote
port too, even when the ephemeral range covers nearly every port (busy proxies widen it).
"""

import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from netns import private_network_namespace
from world import living
from tcp_lld.errors import ScanError
from tcp_lld.namespace import ephemeral_port_range
from tcp_lld.scan import SOURCES, netlink, scan
from tcp_lld.scan.result import PORT_SHIFT, counts_for, state_totals
from tcp_lld.states import parse_state

pytestmark = pytest.mark.root  # live sockets in a private network namespace

ESTABLISHED, LISTEN = 0, 9  # indexes into counts_for()
HIGH_SOURCES = (62001, 63000, 1500)  # outside the default ephemeral range, above and below


class Sockets:
    def __init__(self) -> None:
        self.kept = []

    def listen(self, address: str, port: int, reuseport: bool = False, family: int = socket.AF_INET) -> socket.socket:
        listener = self.keep(socket.socket(family, socket.SOCK_STREAM))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT if reuseport else socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        listener.listen(64)
        return listener

    def connect(self, listener: socket.socket, source: int = 0) -> int:
        client = self.keep(socket.socket())
        if source:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            client.bind(("127.0.0.1", source))
        client.connect(listener.getsockname())
        self.keep(listener.accept()[0])
        return client.getsockname()[1]

    def keep(self, sock: socket.socket) -> socket.socket:
        self.kept.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.kept:
            sock.close()


@pytest.fixture
def sockets():
    with private_network_namespace():
        made = Sockets()
        try:
            yield made
        finally:
            made.close()


@pytest.mark.parametrize("source", SOURCES)
def test_clients_from_any_source_port_count_inbound_only(sockets, source):
    server = sockets.listen("127.0.0.1", 8443)
    client_ports = [sockets.connect(server, port) for port in HIGH_SOURCES] + [sockets.connect(server)]
    low, high = ephemeral_port_range()
    assert low <= client_ports[-1] <= high
    result = scan(source, ephemeral=(low, high))
    assert counts_for(result.local, 8443)[ESTABLISHED] == 4
    assert counts_for(result.local, 8443)[LISTEN] == 1
    for port in client_ports:
        assert sum(counts_for(result.remote, port)) == 0, f"server side of {port} counted outbound"
    # the client sides are this host's own outbound connections to 8443 (loopback)
    assert counts_for(result.remote, 8443)[ESTABLISHED] == 4
    for port in HIGH_SOURCES:
        assert counts_for(result.local, port)[ESTABLISHED] == 1, port


@pytest.mark.parametrize("source", SOURCES)
def test_a_widened_ephemeral_range_still_counts_outbound_service_ports(sockets, source):
    subprocess.run(["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535"], check=True)
    assert ephemeral_port_range() == (1024, 65535)
    sockets.listen("127.0.0.1", 3306)  # this host's own MySQL
    peer = sockets.listen("127.0.0.2", 3306)  # "another host's" MySQL, reached outbound
    sockets.connect(peer)
    result = scan(source, ephemeral=(1024, 65535))
    assert counts_for(result.local, 3306)[LISTEN] == 2
    assert counts_for(result.local, 3306)[ESTABLISHED] == 1  # the peer's server side: inbound
    assert counts_for(result.remote, 3306)[ESTABLISHED] == 1  # our client side: outbound


@pytest.mark.parametrize("source", SOURCES)
def test_remembered_ports_stay_inbound_after_their_listener_closed(sockets, source):
    server = sockets.listen("127.0.0.1", 4444)
    client_ports = [sockets.connect(server) for _ in range(3)]
    server.close()
    forgetting, remembering = scan(source), scan(source, remembered=[4444])
    assert counts_for(remembering.local, 4444)[ESTABLISHED] == 3
    assert all(sum(counts_for(remembering.remote, port)) == 0 for port in client_ports)
    assert all(counts_for(forgetting.remote, port)[ESTABLISHED] == 1 for port in client_ports)


@pytest.mark.parametrize("source", SOURCES)
def test_reuseport_listeners_are_counted_one_by_one(sockets, source):
    for _ in range(3):
        sockets.listen("127.0.0.1", 443, reuseport=True)
    result = scan(source)
    assert counts_for(result.local, 443)[LISTEN] == 3
    assert sum(1 for l in result.listeners if l.port == 443) == 3


def ss_tallies(remembered=()):
    """local, remote, totals and peers by `result`'s rule, from `ss -tanH` in this namespace;
    peers: remote port -> the most outbound sockets of one (local address, peer address)."""
    rows = []
    for line in subprocess.run(["ss", "-tanH"], check=True, capture_output=True, text=True).stdout.splitlines():
        state, _, _, local, peer = line.split()[:5]
        local_address, local_port = local.rsplit(":", 1)
        peer_address, remote_port = peer.rsplit(":", 1)
        rows.append((int(local_port), 0 if remote_port == "*" else int(remote_port), parse_state(state),
                     (local_address, peer_address)))
    inbound = {port for port, _, state, _ in rows if state == 10} | set(remembered)
    local, remote, pairs = Counter(), Counter(), Counter()
    for port, remote_port, state, addresses in rows:
        local[port << PORT_SHIFT | state] += 1
        if state != 10 and port not in inbound:
            remote[remote_port << PORT_SHIFT | state] += 1
            pairs[remote_port, addresses] += 1
    peers = {}
    for (remote_port, _), count in pairs.items():
        peers[remote_port] = max(peers.get(remote_port, 0), count)
    return dict(local), dict(remote), state_totals(local), peers


@pytest.mark.parametrize("source", SOURCES)
def test_every_source_agrees_with_ss(world, source):
    result = scan(source)
    local, remote, totals, peers = ss_tallies()
    assert result.totals == totals
    assert dict(result.local) == local
    assert dict(result.remote) == remote
    assert result.peers == peers
    assert peers[8080] == 3  # over IPv4, IPv6 and v4-mapped IPv6: three address pairs (3, 2, 2)


def _client_closes_first(listener: socket.socket, client: socket.socket) -> None:
    """The client's side ends in TIME_WAIT, still holding its source port."""
    server_side = listener.accept()[0]
    client.shutdown(socket.SHUT_WR)
    server_side.recv(1)  # the client's FIN arrived
    server_side.close()
    client.recv(1)  # and the server's: the client is in TIME_WAIT


@pytest.mark.parametrize("source", SOURCES)
def test_peer_max_is_the_busiest_address_pair_of_an_outbound_port(sockets, source):
    """Three servers on 5432 as this host sees them (127.0.0.2, 127.0.0.3, ::1) and a second local
    address (127.0.0.4): the busiest pair, 127.0.0.1 -> 127.0.0.2, holds 5 ESTABLISHED and 4
    TIME_WAIT sockets (TIME_WAIT keeps its source port): 9, while 5432 has 26 outbound sockets."""
    subprocess.run(["ip", "addr", "add", "fd00::5/128", "dev", "lo", "nodad"], check=True)
    servers = {address: sockets.listen(address, 5432, family=family) for address, family in
               (("127.0.0.2", socket.AF_INET), ("127.0.0.3", socket.AF_INET), ("::1", socket.AF_INET6))}
    plan = [("127.0.0.2", "127.0.0.1", 5, 4), ("127.0.0.3", "127.0.0.1", 7, 0),
            ("127.0.0.2", "127.0.0.4", 3, 1), ("::1", "::1", 2, 2), ("::1", "fd00::5", 2, 0)]
    for server, source_address, established, time_wait in plan:
        family = servers[server].family
        for index in range(established + time_wait):
            client = sockets.keep(socket.socket(family, socket.SOCK_STREAM))
            client.bind((source_address, 0))
            client.connect((server, 5432))
            if index < time_wait:
                _client_closes_first(servers[server], client)
            else:
                sockets.keep(servers[server].accept()[0])
    result = scan(source)
    local, remote, totals, peers = ss_tallies()
    assert dict(result.remote) == remote and result.totals == totals
    assert sum(counts_for(result.remote, 5432)) == 26
    assert counts_for(result.remote, 5432)[parse_state("TIME_WAIT") - 1] == 7
    assert result.peers == peers
    assert result.peers[5432] == 9


@pytest.fixture(scope="module")
def population():
    """The netlink capture's population: TIME_WAIT by the thousand, v4-mapped and SO_REUSEPORT
    listeners, clients from high source ports, a listener closed under live connections."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fixtures" / "netlink"))
    from capture import Population

    with living(Population()) as built:
        yield built


@pytest.mark.parametrize("remembered", [(), (4444,)], ids=["now", "remembering-4444"])
@pytest.mark.parametrize("source", SOURCES)
def test_every_source_agrees_with_ss_and_the_truth_at_scale(population, source, remembered):
    result = scan(source, remembered)
    local, remote, totals, peers = ss_tallies(remembered)
    assert result.totals == totals
    assert dict(result.local) == local
    assert dict(result.remote) == remote
    assert result.peers == peers
    assert sum(totals) == sum(population.rows.values()) > 1500


def test_a_real_datagram_larger_than_the_buffer_is_refused(sockets):
    """MSG_TRUNC on a live socket: after a first dump grew the kernel's datagrams to ~32 KiB, a
    small buffer gets the first bytes and the full length, which must be an error."""
    server = sockets.listen("127.0.0.1", 8080)
    for _ in range(200):
        sockets.connect(server)
    dumper = netlink.Dumper()
    walker = netlink._Walker(netlink.TCPDIAG_GETSOCK, netlink._Sieve((65536, 65536), set()))
    dumper.dump(netlink._legacy_request(netlink.CONNECTIONS_MASK), walker.walk)
    assert sum(walker.states.values()) == 400
    dumper.view.release()
    dumper.buffer = bytearray(1024)
    dumper.view = memoryview(dumper.buffer)
    with pytest.raises(ScanError, match="did not fit the 1024-byte buffer"):
        dumper.dump(netlink._legacy_request(netlink.CONNECTIONS_MASK), walker.walk)
    dumper.close()
