"""A small world of real sockets in known TCP states, and the counts they must produce.

Every state that can be held still on loopback is built on its own service port:

| port | what | server side (local port) |
|---|---|---|
| 8080 | IPv4 + IPv6 listeners (V6ONLY), clients over IPv4, IPv6 and v4-mapped IPv6 | LISTEN 2, ESTABLISHED |
| 3306 | clients closed, server never closes | CLOSE_WAIT (clients: FIN_WAIT2) |
| 5432 | server closed first, then clients | TIME_WAIT |
| 2222 | TCP_DEFER_ACCEPT listener, clients send nothing | SYN_RECV (clients: ESTABLISHED) |
| 3333 | backlog 0, never accepts | 1 in the accept queue, further clients SYN_SENT |
| 6379 | listener on ::1 only | LISTEN 1 |
"""

import contextlib
import socket
import time
from collections import Counter
from typing import Dict, Iterator, List, Tuple

from netns import KeptNamespace

from tcp_lld.states import STATE_NAMES as STATES


class World:
    """Builds the sockets and keeps the truth: `local[port][state]`, `remote[port][state]`."""

    def __init__(self, scale: int = 1) -> None:
        self.scale = scale
        self.sockets: List[socket.socket] = []
        self.local: Dict[int, Counter] = {}
        self.remote: Dict[int, Counter] = {}
        self.pairs: Counter = Counter()  # (remote port, address pair) -> outbound sockets
        self.listeners: Dict[int, socket.socket] = {}
        self.inbound_ports: set = set()  # every port that listened: connections to it are inbound

    # -- bookkeeping -------------------------------------------------------------------------
    def _expect(self, local_port: int, remote_port: int, state: str, count: int = 1,
                pair: str = "127.0.0.1") -> None:
        """One socket: counted by local port; and by remote port when outbound (local port not
        a listener's), which is how tcp-lld tells a client's socket from a server's. `pair`: the
        address both ends of a loopback connection have (they differ by family only)."""
        self.local.setdefault(local_port, Counter())[state] += count
        if remote_port and local_port not in self.inbound_ports:
            self.remote.setdefault(remote_port, Counter())[state] += count
            self.pairs[remote_port, pair] += count

    def _keep(self, sock: socket.socket) -> socket.socket:
        self.sockets.append(sock)
        return sock

    def _listen(self, family: int, address: str, port: int, backlog: int = 128, **options: int) -> socket.socket:
        listener = self._keep(socket.socket(family, socket.SOCK_STREAM))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for option, value in options.items():
            listener.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
        listener.bind((address, port))
        listener.listen(backlog)
        self.inbound_ports.add(port)
        self._expect(port, 0, "LISTEN")
        self.listeners[port] = listener
        return listener

    def _connect(self, family: int, address: str, port: int) -> Tuple[socket.socket, int]:
        client = self._keep(socket.socket(family, socket.SOCK_STREAM))
        client.connect((address, port))
        return client, client.getsockname()[1]

    # -- the population ----------------------------------------------------------------------
    def build(self) -> "World":
        n = self.scale
        ipv4 = self._listen(socket.AF_INET, "0.0.0.0", 8080)
        ipv6 = self._listen(socket.AF_INET6, "::", 8080)
        for family, address, listener, count in (
            (socket.AF_INET, "127.0.0.1", ipv4, 3 * n),
            (socket.AF_INET6, "::1", ipv6, 2 * n),
            (socket.AF_INET6, "::ffff:127.0.0.1", ipv4, 2 * n),  # v4-mapped client, IPv4 server
        ):
            for _ in range(count):
                _, client_port = self._connect(family, address, 8080)
                self._keep(listener.accept()[0])
                self._expect(8080, client_port, "ESTABLISHED")  # server side
                self._expect(client_port, 8080, "ESTABLISHED", pair=address)  # client side

        mysql = self._listen(socket.AF_INET, "127.0.0.1", 3306)
        for _ in range(4 * n):
            client, client_port = self._connect(socket.AF_INET, "127.0.0.1", 3306)
            self._keep(mysql.accept()[0])
            client.close()
            self._expect(3306, client_port, "CLOSE_WAIT")
            self._expect(client_port, 3306, "FIN_WAIT2")

        postgres = self._listen(socket.AF_INET6, "::", 5432)
        for _ in range(5 * n):
            client, client_port = self._connect(socket.AF_INET6, "::1", 5432)
            server_side = postgres.accept()[0]
            server_side.close()
            time.sleep(0.002)
            client.close()
            self._expect(5432, client_port, "TIME_WAIT")

        deferred = self._listen(socket.AF_INET, "127.0.0.1", 2222, TCP_DEFER_ACCEPT=30)
        for _ in range(2 * n):
            _, client_port = self._connect(socket.AF_INET, "127.0.0.1", 2222)
            self._expect(2222, client_port, "SYN_RECV")
            self._expect(client_port, 2222, "ESTABLISHED")
        del deferred

        self._listen(socket.AF_INET, "127.0.0.1", 3333, backlog=0)
        _, client_port = self._connect(socket.AF_INET, "127.0.0.1", 3333)  # waits in the accept queue
        self._expect(3333, client_port, "ESTABLISHED")
        self._expect(client_port, 3333, "ESTABLISHED")
        for _ in range(2):
            client = self._keep(socket.socket())
            client.setblocking(False)
            try:
                client.connect(("127.0.0.1", 3333))
            except BlockingIOError:
                pass
            time.sleep(0.05)
            self._expect(client.getsockname()[1], 3333, "SYN_SENT")

        self._listen(socket.AF_INET6, "::1", 6379)
        time.sleep(0.2)  # FIN handshakes on loopback settle in microseconds; be generous
        return self

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()

    def stop_listener(self, port: int) -> None:
        self.listeners.pop(port).close()
        self.local[port]["LISTEN"] -= 1

    # -- the truth ---------------------------------------------------------------------------
    def counts(self, port: int) -> Dict[str, int]:
        return {state: self.local.get(port, Counter())[state] for state in STATES}

    def remote_counts(self, port: int) -> Dict[str, int]:
        return {state: self.remote.get(port, Counter())[state] for state in STATES}

    def peer_max(self, port: int) -> int:
        """The most outbound sockets to `port` between one pair of addresses (8080: 3n over IPv4,
        2n over IPv6, 2n v4-mapped: three pairs)."""
        return max((count for (remote_port, _), count in self.pairs.items() if remote_port == port), default=0)

    def totals(self) -> Dict[str, int]:
        total: Counter = Counter()
        for counts in self.local.values():
            total.update(counts)
        return {state: total[state] for state in STATES}

    SERVICE_PORTS = (8080, 3306, 5432, 2222, 3333, 6379)


@contextlib.contextmanager
def living(world: World) -> Iterator[World]:
    """`world` (a World or a subclass) built in a private network namespace of its own
    (`world.namespace`), closed afterwards. The process is back in its own namespace when this
    yields: tests step into the world's for their duration (conftest's `inside_the_test_namespace`)."""
    namespace = KeptNamespace()
    try:
        with namespace.entered():
            world.build()
        world.namespace = namespace
        try:
            yield world
        finally:
            world.close()
    finally:
        namespace.close()


def living_world() -> "contextlib.AbstractContextManager[World]":
    """The test world, living in its own namespace (see `living`)."""
    return living(World())


def named(counts: List[int]) -> Dict[str, int]:
    """11 counts in kernel order -> {state name: count}, the shape `World.counts` returns."""
    return dict(zip(STATES, counts))
