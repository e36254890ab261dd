"""What every scan method returns: tallies keyed by `port << 4 | state`, plus the listeners.

A scan of 100k sockets builds no Python object per socket: only counters, and the few listening
sockets in full (addresses, inode, queue and owner are needed for discovery and the queue items).

Which socket is tallied where (the same in every method):

- `local`: by LOCAL port. Exact for every inbound port (listening now, or `remembered` by the
  caller's grace memory), every state including LISTEN. Netlink may leave other ports inside the
  ephemeral range out (they stay in `totals`).
- `remote`: by REMOTE port, only outbound connections: non-LISTEN sockets whose local port is not
  inbound. No ephemeral filter: busy proxies widen ip_local_port_range to 1024-65535, so the range
  cannot tell what a service port is. A loopback connection to a local service counts once
  inbound (server side) and once outbound (client side).
- `peers`: per REMOTE port, the largest number of those outbound sockets (every state, TIME_WAIT
  included: it still holds its local port) that share one (local address, remote address): the
  kernel gives each such pair and remote port at most one socket per local port, so this number
  against the size of the ephemeral range (`net.ipv4.ip_local_port_range`) says how close the
  host is to running out of source ports towards one server. Addresses are compared as the
  socket table shows them, family included: a v4-mapped IPv6 socket (`::ffff:10.0.0.5`) and an
  IPv4 one to the same server count apart, though the kernel draws both from one range (two
  programs on one host talking to one server over different socket families: rare). The scan
  holds one counter per distinct pair and remote port: a few for an app server and its
  databases, as many as the servers a crawler or proxy talks to (a ~35-byte key each).
- `totals`: every socket per state, host-wide.

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
    """One listening socket, with what the scan method could see of it (None: not visible)."""

    __slots__ = ("port", "family", "address", "inode", "queue", "backlog", "uid", "pid")

    def __init__(self, port: int, family: int, address: str, inode: int, queue: Optional[int],
                 backlog: Optional[int], uid: Optional[int] = None, pid: Optional[int] = None) -> None:
        self.port = port
        self.family = family  # 4 or 6
        self.address = address  # as `ss` prints it: 0.0.0.0, ::, 127.0.0.1, ::ffff:127.0.0.1
        self.inode = inode  # 0 when the method cannot see it
        self.queue = queue  # connections waiting for accept()
        self.backlog = backlog  # the listen() backlog limit (netlink only)
        self.uid = uid  # the socket's owner (netlink, procfs; psutil: the owning process's uid)
        self.pid = pid  # a process holding it (psutil only: the kernel's table has no pids)

    def __repr__(self) -> str:
        return (f"Listener({self.address}:{self.port} ipv{self.family} queue={self.queue}/{self.backlog}"
                f" uid={self.uid} pid={self.pid})")


class ScanResult:
    """The raw result of one scan method: everything later steps need, nothing per socket."""

    __slots__ = ("source", "local", "remote", "listeners", "started", "seconds", "totals", "peers")

    def __init__(self, source: str, local: Tally, remote: Tally, listeners: List[Listener],
                 started: float, seconds: float, totals: List[int], peers: Dict[int, int]) -> None:
        self.source = source  # netlink | procfs | psutil
        self.local = local  # port << 4 | state -> sockets whose LOCAL port is port
        self.remote = remote  # port << 4 | state -> outbound sockets whose REMOTE port is port
        self.listeners = listeners
        self.started = started  # Unix time the scan started
        self.seconds = seconds  # how long it took
        self.totals = totals  # sockets per state, host-wide (`local` may leave ephemeral ports out)
        self.peers = peers  # remote port -> the most outbound sockets of one (local, remote) address pair

    def listeners_by_port(self) -> Dict[int, List[Listener]]:
        """Port -> its listening sockets (IPv4, IPv6, SO_REUSEPORT siblings)."""
        by_port: Dict[int, List[Listener]] = {}
        for listener in self.listeners:
            by_port.setdefault(listener.port, []).append(listener)
        return by_port

    @property
    def sockets(self) -> int:
        return sum(self.totals)


def largest_per_port(sockets_by_peer: Dict[Tuple[int, object], int]) -> Dict[int, int]:
    """(remote port, any key of the address pair) -> sockets, to remote port -> the largest count.

    >>> largest_per_port({(5432, "a"): 3, (5432, "b"): 7, (6379, "a"): 1})
    {5432: 7, 6379: 1}
    """
    largest: Dict[int, int] = {}
    for (port, _), count in sockets_by_peer.items():
        if count > largest.get(port, 0):
            largest[port] = count
    return largest


def counts_for(tally: Tally, port: int) -> List[int]:
    """The 11 state counts of one port, in `STATE_NAMES` order.

    >>> counts_for({80 << 4 | 1: 5, 80 << 4 | 10: 1, 443 << 4 | 1: 7}, 80)
    [5, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
    """
    base = port << PORT_SHIFT
    return [tally.get(base | state, 0) for state in range(1, STATE_COUNT + 1)]


def ports_in(tally: Tally) -> Dict[int, int]:
    """Port -> number of sockets, for every port with at least one socket in `tally`.

    >>> ports_in({80 << 4 | 1: 5, 80 << 4 | 10: 1, 443 << 4 | 1: 7})
    {80: 6, 443: 7}
    """
    sockets_by_port: Dict[int, int] = {}
    for key, count in tally.items():
        port = key >> PORT_SHIFT
        sockets_by_port[port] = sockets_by_port.get(port, 0) + count
    return sockets_by_port


def state_totals(tally: Tally) -> List[int]:
    """Counts per state of a complete tally: every socket has exactly one local port.

    >>> state_totals({80 << 4 | 1: 5, 80 << 4 | 10: 1, 443 << 4 | 1: 7})
    [12, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
    """
    per_state = [0] * STATE_COUNT
    for key, count in tally.items():
        per_state[(key & 0xF) - 1] += count
    return per_state
