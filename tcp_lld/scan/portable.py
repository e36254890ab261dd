"""Read TCP sockets through psutil: the method for systems without Linux's /proc or netlink.

Never used on Linux unless asked for: `psutil.net_connections` maps every socket to a process by
reading every open file descriptor of every process, which is ~10x slower than netlink.
"""

from __future__ import annotations

import socket
import time
from collections import Counter

from ..errors import ScanError
from .result import PORT_SHIFT, Listener, ScanResult, state_totals
from ..states import LISTEN, STATE_NAMES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

_STATE_NUMBERS = {name: number for number, name in enumerate(STATE_NAMES, start=1)}


def scan() -> ScanResult:
    """One scan through `psutil.net_connections('tcp')`; queues are not visible this way."""
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
    local: "Counter[int]" = Counter()
    remote: "Counter[int]" = Counter()
    listeners: List[Listener] = []
    for connection in connections:
        state = _STATE_NUMBERS.get(connection.status)
        if state is None or not connection.laddr:
            continue  # psutil's NONE: a socket with no TCP state yet
        port = connection.laddr.port
        local[port << PORT_SHIFT | state] += 1
        if state == LISTEN:
            family = 6 if connection.family == socket.AF_INET6 else 4
            listeners.append(Listener(port, family, connection.laddr.ip, 0, None, None))
        elif connection.raddr:
            remote[connection.raddr.port << PORT_SHIFT | state] += 1
    return ScanResult("psutil", local, remote, listeners, started, time.perf_counter() - clock, state_totals(local))
