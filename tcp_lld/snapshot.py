"""What one scan of the kernel's socket table found, before and after the grace-period memory.

A scan method produces a `ScanResult`: tallies keyed by `port << 4 | state`, so that a scan of
100k sockets builds no Python object per socket, plus the few listening sockets in full (their
addresses, inode and accept queue are needed for discovery and for the queue items).

Plain classes rather than `typing.NamedTuple`: importing `typing` costs ~14 ms per process, more
than a third of a whole scan's parsing at 100k sockets.
"""

from __future__ import annotations

from .states import STATE_COUNT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

    from .memory import Memory, Remembered

    Tally = Dict[int, int]  # port << 4 | state -> sockets (a dict or a Counter)

PORT_SHIFT = 4  # tally key = port << PORT_SHIFT | kernel state number (1..11)
MEMORY_RETENTION = 86400.0  # seconds a gone port stays in the shared memory, at least


class Listener:
    """One listening socket."""

    __slots__ = ("port", "family", "address", "inode", "queue", "backlog")

    def __init__(self, port: int, family: int, address: str, inode: int,
                 queue: Optional[int], backlog: Optional[int]) -> None:
        self.port = port
        self.family = family  # 4 or 6
        self.address = address  # as `ss` prints it: 0.0.0.0, ::, 127.0.0.1, ::ffff:127.0.0.1
        self.inode = inode  # 0 when the method cannot see it
        self.queue = queue  # connections waiting for accept(); None when the method cannot see it
        self.backlog = backlog  # the listen() backlog limit; None when the method cannot see it

    def __repr__(self) -> str:
        return f"Listener({self.address}:{self.port} ipv{self.family} queue={self.queue}/{self.backlog})"


class ScanResult:
    """The raw result of one scan method: everything later steps need, nothing per socket."""

    __slots__ = ("source", "local", "remote", "listeners", "started", "seconds", "totals")

    def __init__(self, source: str, local: Tally, remote: Tally, listeners: List[Listener],
                 started: float, seconds: float, totals: List[int]) -> None:
        self.source = source  # netlink | procfs | psutil
        self.local = local  # port << 4 | state -> sockets whose LOCAL port is port
        self.remote = remote  # port << 4 | state -> sockets whose REMOTE port is port (no listeners)
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


class Snapshot:
    """A scan plus the grace-period memory: the ports that items exist for."""

    __slots__ = ("result", "listening", "gone", "remote_ports", "ephemeral")

    def __init__(self, result: ScanResult, listening: Dict[int, List[Listener]], gone: Dict[int, Remembered],
                 remote_ports: List[int], ephemeral: Tuple[int, int]) -> None:
        self.result = result
        self.listening = listening  # ports listening now -> their sockets
        self.gone = gone  # ports that stopped listening within the grace period
        self.remote_ports = remote_ports  # outbound service ports, sorted
        self.ephemeral = ephemeral

    @property
    def ports(self) -> List[int]:
        """Every discovered port, sorted."""
        return sorted({*self.listening, *self.gone})

    @classmethod
    def build(cls, result: ScanResult, memory: Memory, ephemeral: Tuple[int, int], grace: float) -> Snapshot:
        """Merge the scan into `memory` (updated in place) and keep what is still within `grace`.

        Listeners inside the ephemeral range are reported while they listen but not remembered:
        on hosts that open random ports all day they would pile up for a whole grace period.
        """
        from .memory import Remembered

        now = result.started
        low, high = ephemeral
        listening: Dict[int, List[Listener]] = {}
        for listener in result.listeners:
            listening.setdefault(listener.port, []).append(listener)
        for port, sockets in listening.items():
            if low <= port <= high:
                continue  # random ports (RPC, debuggers, test servers): not a service that can be "gone"
            memory.listening[port] = Remembered(
                now, sorted({s.address for s in sockets}), sorted({s.family for s in sockets})
            )
        for port in ports_in(result.remote):
            if port and not low <= port <= high:
                memory.remote[port] = now
        # The memory is shared by every caller: keep it for the longest grace anyone may use, and
        # apply this caller's grace only to what it reports (a `--grace 0` must not wipe it).
        memory.forget_older_than(now - max(grace, MEMORY_RETENTION))
        oldest = now - grace
        gone = {port: entry for port, entry in memory.listening.items()
                if port not in listening and entry.seen >= oldest}
        remote_ports = sorted(port for port, seen in memory.remote.items() if seen >= oldest)
        return cls(result, listening, gone, remote_ports, ephemeral)
