"""Which ports a caller is told about: its grace and min-age applied, then the agent's size limit.

`stats`, `discovery` and `discovery --outbound` all answer from one `Selection`, so discovery
offers exactly the ports the master document carries: a discovered port always receives data.

The agent refuses values over 512 KiB. Past the budget ports are dropped by one rule, never by
failing: gone listeners first (oldest first), then listening ports (least busy first), and
outbound ports the same way (least busy first); `meta.dropped` says how many of each.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no `typing` at run time: this module is on the cached path
if TYPE_CHECKING:
    from typing import List

    from .answers import Answers, ListenerLine, OutboundLine

#: Under the agent's 512 KiB, with room for what is added when answering.
MAX_BYTES = 480 * 1024
FIXED_BYTES = 1024  # "total", "meta" and the punctuation around them, at most
#: A port's entry at most: `"65535":{` + 11 `"NAME":count,` (123 B of names, 7-digit counts)
#: + the two queue fields. Checked against real entries by the tests.
PORT_ENTRY_BYTES = 270
REMOTE_ENTRY_BYTES = 245  # the same 11 counts + `"peer_max":count`
#: An LLD row: 138 B of keys and punctuation (with the comma between rows), + port, family,
#: scope, status and ephemeral values at their longest (32 B), + three free-text fields (user,
#: process, service) cut at ROW_TEXT_CAP characters, + the addresses.
ROW_FIXED_BYTES = 138 + 32
ROW_TEXT_CAP = 32


class Selection:
    """The listening/gone and outbound ports one caller is told about, and what did not fit."""

    __slots__ = ("listeners", "outbound", "dropped_gone", "dropped_listening", "dropped_remote")

    def __init__(self) -> None:
        self.listeners: List[ListenerLine] = []
        self.outbound: List[OutboundLine] = []
        self.dropped_gone = 0
        self.dropped_listening = 0
        self.dropped_remote = 0


def row_bytes(line: ListenerLine) -> int:
    """The most an LLD row of this port can take (see `discovery.listening_rows`)."""
    return ROW_FIXED_BYTES + 3 * ROW_TEXT_CAP + len(",".join(line.addresses))


def is_short_lived(line: ListenerLine, ephemeral: tuple, min_age: float, now: float) -> bool:
    """A listener on a port of the ephemeral range that has not listened `min_age` seconds yet:
    a random port (RPC, debugger, test server), reported while it listens, never as gone."""
    low, high = ephemeral
    return low <= line.port <= high and line.last_seen - line.first_seen < min_age


def select(answers: Answers, grace: float, min_age: float, limit: int = MAX_BYTES) -> Selection:
    """The ports within `grace`, short-lived gone listeners left out, cut to `limit` bytes."""
    selection = Selection()
    oldest = answers.started - grace
    ephemeral = answers.ephemeral
    listening: List[ListenerLine] = []
    gone: List[ListenerLine] = []
    for line in answers.listeners():
        if line.listening:
            listening.append(line)
        elif line.last_seen >= oldest and not is_short_lived(line, ephemeral, min_age, line.last_seen):
            gone.append(line)
    listening.sort(key=lambda line: (-sum(line.counts), line.port))  # busiest first
    gone.sort(key=lambda line: (-line.last_seen, line.port))  # newest first
    document = FIXED_BYTES + len(answers.kernel())
    rows = FIXED_BYTES
    for line in listening + gone:
        row = row_bytes(line)
        if document + PORT_ENTRY_BYTES > limit or rows + row > limit:
            if line.listening:
                selection.dropped_listening += 1
            else:
                selection.dropped_gone += 1
            continue
        document += PORT_ENTRY_BYTES
        rows += row
        selection.listeners.append(line)
    outbound = [line for line in answers.outbound() if line.last_seen >= oldest]
    outbound.sort(key=lambda line: (-sum(line.counts), line.port))
    for line in outbound:
        if document + REMOTE_ENTRY_BYTES > limit:
            selection.dropped_remote += 1
            continue
        document += REMOTE_ENTRY_BYTES
        selection.outbound.append(line)
    selection.listeners.sort(key=lambda line: line.port)
    selection.outbound.sort(key=lambda line: line.port)
    return selection
