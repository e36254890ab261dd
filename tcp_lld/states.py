"""The TCP state table: kernel numbers, canonical names and the spellings users type.

Numbers are the kernel's (`include/net/tcp_states.h`); they are also what sock_diag and
/proc/net/tcp report. Canonical names are netstat's, which the classic `tcp.status[STATE]`
recipes and the master document use.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no `typing` at run time: `count` is on the cached path
if TYPE_CHECKING:
    from typing import Dict, Optional, Tuple

#: Canonical state names, indexed by kernel state number - 1 (TCP_ESTABLISHED = 1 ... TCP_CLOSING = 11).
STATE_NAMES: Tuple[str, ...] = (
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
)

STATE_COUNT = len(STATE_NAMES)
ESTABLISHED, SYN_SENT, SYN_RECV, TIME_WAIT, LISTEN = 1, 2, 3, 6, 10
#: Kernel-internal states that are reported as another one (request sockets are SYN_RECV).
NEW_SYN_RECV = 12

#: Every spelling accepted on the command line, upper-cased with '-' and ' ' turned into '_'.
_ALIASES: Dict[str, int] = {name: number for number, name in enumerate(STATE_NAMES, start=1)}
_ALIASES.update(
    {
        "ESTAB": ESTABLISHED,  # ss
        "SYN_RCVD": SYN_RECV,  # BSD, RFC 793 "SYN-RECEIVED"
        "SYN_RECEIVED": SYN_RECV,
        "FIN_WAIT_1": 4,  # ss "FIN-WAIT-1", RFC "FIN-WAIT-1"
        "FIN_WAIT_2": 5,
        "CLOSED": 7,  # RFC
        "UNCONN": 7,  # ss
        "LISTENING": LISTEN,
    }
)
ALL_STATES = 0
_ALIASES["ALL"] = ALL_STATES


def parse_state(text: str) -> Optional[int]:
    """Kernel state number for a user's spelling, 0 for ALL, None when unknown.

    >>> parse_state("syn-recv"), parse_state("ESTAB"), parse_state("time_wait"), parse_state("x")
    (3, 1, 6, None)
    """
    return _ALIASES.get(text.strip().upper().replace("-", "_").replace(" ", "_"))
