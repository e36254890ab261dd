"""Scan results built in memory, for the formats and rules that need no sockets (no root).

The counts are what a scan method would hand over; everything after the scan (grace memory,
answers file, selection, rendering) then runs for real.
"""

from collections import Counter
from typing import Iterable, Optional, Tuple

from tcp_lld import answers
from tcp_lld.grace import GraceMemory
from tcp_lld.scan.result import PORT_SHIFT, Listener, ScanResult, state_totals
from tcp_lld.states import ESTABLISHED, LISTEN, TIME_WAIT

EPHEMERAL = (32768, 60999)
STAMP = "boot/5/4026532000"


def scan_result(listening: Iterable[int] = (), remote: Iterable[int] = (), started: float = 1763770000.5,
                established: int = 3, backlog: Optional[int] = 128, uid: Optional[int] = 0) -> ScanResult:
    """Each listening port: one listener + `established` connections; remote port i: i+1 TIME_WAIT."""
    local: Counter = Counter()
    outbound: Counter = Counter()
    listeners = []
    for port in listening:
        local[port << PORT_SHIFT | LISTEN] += 1
        local[port << PORT_SHIFT | ESTABLISHED] += established
        listeners.append(Listener(port, 4, "0.0.0.0", 1000 + port, 0, backlog, uid))
    for index, port in enumerate(remote):
        outbound[port << PORT_SHIFT | TIME_WAIT] += index + 1
    peers = {port: index + 1 for index, port in enumerate(remote)}  # every outbound socket to one peer
    return ScanResult("netlink", local, outbound, listeners, started, 0.0123, state_totals(local), peers)


def encoded(result: ScanResult, memory: Optional[GraceMemory] = None, grace: float = 86400.0,
            min_age: float = 3600.0, ephemeral: Tuple[int, int] = EPHEMERAL, kernel: str = "{}") -> bytes:
    """The answers file a refresh with `memory` (updated in place) would write for `result`."""
    memory = memory if memory is not None else GraceMemory(STAMP)
    memory.update(result, result.started, grace, ephemeral, min_age)
    return answers.encode(result, memory, "auto", STAMP, "ok", ephemeral, kernel)


def decoded(raw: bytes) -> answers.Answers:
    parsed = answers.Answers.decode(raw)
    assert parsed is not None
    return parsed
