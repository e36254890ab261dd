"""Real TCP sockets on loopback with known per-state counts, and an independent truth from `ss`.

Shared by tests/agent and tests/e2e. Everything binds 127.0.0.1 / ::1 only.
"""

import random
import socket
import subprocess
import time
from typing import Callable, List, Optional


def port_is_free(port: int) -> bool:
    """No socket of any state uses `port` as its local port (so counts start from zero)."""
    out = subprocess.run(["ss", "-Htan", f"( sport = :{port} or dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    if out.strip():
        return False
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.bind((address, port))
        except OSError:
            return False
        finally:
            probe.close()
    return True


def can_listen(port: int, address: str = "127.0.0.1") -> bool:
    """Nothing listens on `port` and we may bind it (old TIME_WAIT sockets are allowed)."""
    if ss_count("listening", f"( sport = :{port} )"):
        return False
    probe = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((address, port))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def free_ports(count: int, low: int = 20000, high: int = 29999) -> List[int]:
    """`count` distinct unused ports below the ephemeral range (so `out` tallies include them)."""
    chosen: List[int] = []
    candidates = list(range(low, high))
    random.shuffle(candidates)
    for port in candidates:
        if port_is_free(port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"no {count} free ports in {low}-{high}")


def ss_count(state: str, filter_expr: str) -> int:
    """Independent truth: sockets in `state` (ss state name) matching an ss filter."""
    out = subprocess.run(["ss", "-Htan", "state", state, filter_expr],
                         capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def ss_listen_queue(port: int) -> List[int]:
    """[Recv-Q, Send-Q] summed over the listening sockets of `port` (accept queue, backlog)."""
    out = subprocess.run(["ss", "-Htln", f"( sport = :{port} )"], capture_output=True, text=True,
                         check=True).stdout
    recv = send = 0
    for line in out.splitlines():
        fields = line.split()
        recv += int(fields[1])
        send += int(fields[2])
    return [recv, send]


class Lab:
    """Owns every socket it creates; close() releases them all."""

    def __init__(self) -> None:
        self.sockets: List[socket.socket] = []

    def _keep(self, sock: socket.socket) -> socket.socket:
        self.sockets.append(sock)
        return sock

    def listener(self, port: int, address: str = "127.0.0.1", backlog: int = 128) -> socket.socket:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = self._keep(socket.socket(family, socket.SOCK_STREAM))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.listen(backlog)
        return sock

    def connect(self, port: int, address: str = "127.0.0.1") -> socket.socket:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = self._keep(socket.socket(family, socket.SOCK_STREAM))
        sock.settimeout(5)
        sock.connect((address, port))
        return sock

    def established(self, listener: socket.socket, count: int) -> List[socket.socket]:
        """`count` accepted connections: `count` ESTABLISHED sockets with the listener's local port
        (and `count` client sockets whose remote port it is). Returns the server-side sockets."""
        address, port = listener.getsockname()[:2]
        accepted = []
        for _ in range(count):
            self.connect(port, address)
            conn, _peer = listener.accept()
            accepted.append(self._keep(conn))
        return accepted

    def close_wait(self, listener: socket.socket, count: int) -> List[socket.socket]:
        """`count` server-side sockets left in CLOSE_WAIT: the client closed, the server never does."""
        address, port = listener.getsockname()[:2]
        held = []
        for _ in range(count):
            client = self.connect(port, address)
            conn, _peer = listener.accept()
            held.append(self._keep(conn))
            self.sockets.remove(client)
            client.close()
        return held

    def unaccepted(self, listener: socket.socket, count: int) -> None:
        """`count` connections completed by the kernel but never accept()ed: the accept queue."""
        address, port = listener.getsockname()[:2]
        for _ in range(count):
            self.connect(port, address)

    def close(self, sock: Optional[socket.socket] = None) -> None:
        targets = [sock] if sock is not None else list(self.sockets)
        for target in targets:
            if target in self.sockets:
                self.sockets.remove(target)
            try:
                target.close()
            except OSError:
                pass


def eventually(probe: Callable[[], object], check: Callable[[object], bool], timeout: float,
               what: str, interval: float = 1.0):
    """Call `probe` until `check(result)` holds; fail after `timeout` s with the last result."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        last = probe()
        if check(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}")
        time.sleep(interval)
