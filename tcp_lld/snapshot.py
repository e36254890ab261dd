"""What one scan of the kernel's socket table found, before and after the grace-period memory.

A scan method produces a `ScanResult`: tallies keyed by `port << 4 | state`, so that a scan of
100k sockets builds no Python object per socket, plus the few listening sockets in full (their
addresses, inode and accept queue are needed for discovery and for the queue items).
"""

from collections import Counter
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Tuple

from .states import STATE_COUNT

if TYPE_CHECKING:
    from .memory import Memory, Remembered

PORT_SHIFT = 4  # tally key = port << PORT_SHIFT | kernel state number (1..11)

class Listener(NamedTuple):
    """One listening socket."""

    port: int
    family: int  # 4 or 6
    address: str  # as `ss` prints it: 0.0.0.0, ::, 127.0.0.1, ::ffff:127.0.0.1
    inode: int  # 0 when the method cannot see it
    queue: Optional[int]  # connections waiting for accept(); None when the method cannot see it
    backlog: Optional[int]  # the listen() backlog limit; None when the method cannot see it

class ScanResult(NamedTuple):
    """The raw result of one scan method: everything later steps need, nothing per socket."""

    source: str  # netlink | procfs | psutil
    local: "Counter[int]"  # port << 4 | state -> sockets whose LOCAL port is port
    remote: "Counter[int]"  # port << 4 | state -> sockets whose REMOTE port is port (no listeners)
    listeners: List[Listener]
    started: float  # Unix time the scan started
    seconds: float  # how long it took
    totals: List[int]  # sockets per state, host-wide (the tallies may leave ephemeral ports out)

    @property
    def sockets(self) -> int:
        return sum(self.totals)

def counts_for(tally: "Counter[int]", port: int) -> List[int]:
    """The 11 state counts of one port, in `STATE_NAMES` order."""
    base = port << PORT_SHIFT
    return [tally.get(base | state, 0) for state in range(1, STATE_COUNT + 1)]

def ports_in(tally: "Counter[int]") -> Dict[int, int]:
    """Port -> number of sockets, for every port with at least one socket in `tally`."""
    sockets_by_port: Dict[int, int] = {}
    for key, count in tally.items():
        port = key >> PORT_SHIFT
        sockets_by_port[port] = sockets_by_port.get(port, 0) + count
    return sockets_by_port

def listening_ports(result: ScanResult) -> Dict[int, List[Listener]]:
    """Port -> its listening sockets (a port bound on IPv4 and IPv6 has two)."""
    by_port: Dict[int, List[Listener]] = {}
    for listener in result.listeners:
        by_port.setdefault(listener.port, []).append(listener)
    return by_port

def state_totals(tally: "Counter[int]") -> List[int]:
    """Counts per state of a complete tally: every socket has exactly one local port."""
    per_state = [0] * STATE_COUNT
    for key, count in tally.items():
        per_state[(key & 0xF) - 1] += count
    return per_state


class Snapshot(NamedTuple):
    """A scan plus the grace-period memory: the ports that items exist for."""

    result: ScanResult
    listening: Dict[int, List[Listener]]  # ports listening now
    gone: Dict[int, "Remembered"]  # ports that stopped listening within the grace period
    remote_ports: List[int]  # outbound service ports, sorted
    ephemeral: Tuple[int, int]

    @property
    def ports(self) -> List[int]:
        """Every discovered port, sorted."""
        return sorted({*self.listening, *self.gone})

    @classmethod
    def build(cls, result: ScanResult, memory: "Memory", ephemeral: Tuple[int, int], grace: float) -> "Snapshot":
        """Merge the scan into `memory` (updated in place) and keep what is still within `grace`."""
        from .memory import Remembered

        now = result.started
        low, high = ephemeral
        listening = listening_ports(result)
        for port, sockets in listening.items():
            memory.listening[port] = Remembered(
                now, sorted({s.address for s in sockets}), sorted({s.family for s in sockets})
            )
        for port in ports_in(result.remote):
            if port and not low <= port <= high:
                memory.remote[port] = now
        memory.forget_older_than(now - grace)
        gone = {port: entry for port, entry in memory.listening.items() if port not in listening}
        return cls(result, listening, gone, sorted(memory.remote), ephemeral)
