"""Read TCP sockets through psutil: the method for systems without Linux's /proc or netlink.

Never used on Linux unless asked for: `psutil.net_connections` maps every socket to a process by
reading every open file descriptor of every process, which is ~10x slower than netlink.

psutil returns a set: sockets it cannot map to a process (pid None, fd -1) and that look alike
collapse into one. Only listeners can look alike (SO_REUSEPORT: 3 sockets on one port may show
as 2); connections differ by their address pairs. On Linux the listeners therefore come from
/proc/net/tcp{,6} (exact, with inode, queue and uid) and psutil only adds their pids; elsewhere
listeners that share port, family and address while no pid tells them apart are counted once.
"""

from __future__ import annotations

import socket
import sys
import time
from collections import Counter

from ..errors import ScanError
from ..states import LISTEN, STATE_NAMES
from .result import PORT_SHIFT, Listener, ScanResult, largest_per_port, state_totals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterable, List, Optional, Tuple

_STATE_NUMBERS = {name: number for number, name in enumerate(STATE_NAMES, start=1)}


def _owner(psutil: object, pid: Optional[int], cache: Dict[int, Optional[int]]) -> Optional[int]:
    """The real uid of process `pid`, None when it is gone or not readable."""
    if pid is None:
        return None
    if pid not in cache:
        try:
            cache[pid] = psutil.Process(pid).uids().real  # type: ignore[attr-defined]
        except (psutil.Error, OSError):  # type: ignore[attr-defined]
            cache[pid] = None
    return cache[pid]


def _exact_listeners(from_psutil: List[Listener]) -> List[Listener]:
    """Linux: the listeners of /proc/net/tcp{,6}, with a pid from psutil where one matches."""
    from . import procfs

    pids: Dict[Tuple[int, int, str], List[Listener]] = {}
    for listener in from_psutil:
        if listener.pid is not None:
            pids.setdefault((listener.port, listener.family, listener.address), []).append(listener)
    exact = procfs.listeners()
    for listener in exact:
        owners = pids.get((listener.port, listener.family, listener.address))
        if owners:  # one pid per look-alike socket, in order; sockets left over get none (no guess)
            listener.pid = owners.pop(0).pid
    return exact


def scan(remembered: Iterable[int] = ()) -> ScanResult:
    """One scan through `psutil.net_connections('tcp')`; queues are not visible this way.

    `remembered`: ports that listened recently, inbound like this scan's listeners (see `result`).
    """
    try:
        import psutil
    except ImportError:
        raise ScanError("psutil: not installed (pip install psutil)") from None

    started = time.time()
    clock = time.perf_counter()
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError) as error:
        raise ScanError(f"psutil: cannot list connections: {error}") from None
    uids: Dict[int, Optional[int]] = {}
    listeners: List[Listener] = []
    others = []
    for connection in connections:
        state = _STATE_NUMBERS.get(connection.status)
        if state is None or not connection.laddr:
            continue  # psutil's NONE: a socket with no TCP state yet
        if state == LISTEN:
            family = 6 if connection.family == socket.AF_INET6 else 4
            pid = connection.pid
            listeners.append(Listener(connection.laddr.port, family, connection.laddr.ip, 0, None, None,
                                      _owner(psutil, pid, uids), pid))
        else:
            remote_address = connection.raddr.ip if connection.raddr else ""
            others.append((connection.laddr.port, connection.raddr.port if connection.raddr else 0, state,
                           (connection.laddr.ip, remote_address)))
    if sys.platform.startswith("linux"):
        listeners = _exact_listeners(listeners)
        for listener in listeners:  # this method's uid is the process's, as on other systems
            listener.uid = _owner(psutil, listener.pid, uids)
    inbound = {listener.port for listener in listeners}
    inbound.update(remembered)
    local: "Counter[int]" = Counter(listener.port << PORT_SHIFT | LISTEN for listener in listeners)
    remote: "Counter[int]" = Counter()
    peers: "Counter[Tuple[int, Tuple[str, str]]]" = Counter()  # see `result.peers`
    for port, remote_port, state, addresses in others:
        local[port << PORT_SHIFT | state] += 1
        if port not in inbound and remote_port:
            remote[remote_port << PORT_SHIFT | state] += 1
            peers[remote_port, addresses] += 1
    return ScanResult("psutil", local, remote, listeners, started, time.perf_counter() - clock, state_totals(local),
                      largest_per_port(peers))
