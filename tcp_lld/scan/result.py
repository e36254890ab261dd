"""What one scan of the kernel's socket table found: the shape every scan method returns.

A scan method produces a `ScanResult`: tallies keyed by `port << 4 | state`, so that a scan of
100k sockets builds no Python object per socket, plus the few listening sockets in full (their
addresses, inode and accept queue are needed for discovery and for the queue items).

Plain classes rather than `typing.NamedTuple`: importing `typing` costs ~14 ms per process, more
than a third of a whole scan's parsing at 100k sockets.
"""

from __future__ import annotations

from ..states import STATE_COUNT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

    Tally = Dict[int, int]  # port << 4 | state -> sockets (a dict or a Counter)

PORT_SHIFT = 4  # tally key = port << PORT_SHIFT | kernel state number (1..11)


class Listener:
    """One listening socket."""

    __slots__ = ("port", "family", "address", "inode", "queue", "backlog", "uid", "pid")

    def __init__(self, port: int, family: int, address: str, inode: int,
                 queue: Optional[int], backlog: Optional[int],
                 uid: Optional[int] = None, pid: Optional[int] = None) -> None:
        self.port = port
        self.family = family  # 4 or 6
        self.address = address  # as `ss` prints it: 0.0.0.0, ::, 127.0.0.1, ::ffff:127.0.0.1
        self.inode = inode  # 0 when the method cannot see it
        self.queue = queue  # connections waiting for accept(); None when the method cannot see it
        self.backlog = backlog  # the listen() backlog limit; None when the method cannot see it
        self.uid = uid  # the socket's owner; None when the method cannot see it
        self.pid = pid  # a process holding it, where the method names one (psutil)

    def __repr__(self) -> str:
        return f"Listener({self.address}:{self.port} ipv{self.family} queue={self.queue}/{self.backlog})"


class ScanResult:
    """The raw result of one scan method: everything later steps need, nothing per socket."""

    __slots__ = ("source", "local", "remote", "listeners", "started", "seconds", "totals")

    def __init__(self, source: str, local: Tally, remote: Tally, listeners: List[Listener],
                 started: float, seconds: float, totals: List[int]) -> None:
        self.source = source  # netlink | procfs | psutil
        self.local = local  # port << 4 | state -> sockets whose LOCAL port is port
        self.remote = remote  # port << 4 | state -> OUTBOUND sockets (local port not inbound) by REMOTE port
        self.listeners = listeners
        self.started = started  # Unix time the scan started
        self.seconds = seconds  # how long it took
        self.totals = totals  # sockets per state, host-wide (tallies may leave ephemeral ports out)

    @property
    def sockets(self) -> int:
        return sum(self.totals)


def counts_for(tally: Tally, port: int) -> List[int]:
    """The 11 state counts of one port, in `STATE_NAMES` order."""
    base = port << PORT_SHIFT
    return [tally.get(base | state, 0) for state in range(1, STATE_COUNT + 1)]


def ports_in(tally: Tally) -> Dict[int, int]:
    """Port -> number of sockets, for every port with at least one socket in `tally`."""
    sockets_by_port: Dict[int, int] = {}
    for key, count in tally.items():
        port = key >> PORT_SHIFT
        sockets_by_port[port] = sockets_by_port.get(port, 0) + count
    return sockets_by_port


def state_totals(tally: Tally) -> List[int]:
    """Counts per state of a complete tally: every socket has exactly one local port."""
    per_state = [0] * STATE_COUNT
    for key, count in tally.items():
        per_state[(key & 0xF) - 1] += count
    return per_state
