"""One snapshot as the cache stores it: every answer pre-rendered, so readers only copy bytes.

    tcp-lld/2 <scan start> <grace> <source asked> <len stats> <len counts> <len discovery>\\n<stats>...

`stats` is the master document cut just before the value of `meta.age_seconds`, which a reader
appends; `counts` is `render.count_table`; `discovery` is `render.discovery_inputs`, the
discovered ports' addresses and socket inodes (process names are resolved only when discovery
runs). A torn or foreign file fails the header check and counts as no cache at all.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no `typing` at run time: this module is on the cached path
if TYPE_CHECKING:
    from typing import Optional, Tuple

MAGIC = b"tcp-lld/2"


class Record:
    """A scan's pre-rendered answers."""

    __slots__ = ("started", "grace", "source", "stats", "counts", "discovery")

    def __init__(self, started: float, grace: float, source: str, stats: bytes, counts: bytes, discovery: bytes) -> None:
        self.started = started  # Unix time the scan started
        self.grace = grace  # the grace period it was made with
        self.source = source  # the scan source asked for: auto, netlink, procfs or psutil
        self.stats = stats
        self.counts = counts
        self.discovery = discovery

    def to_bytes(self) -> bytes:
        header = b"%s %r %r %s %d %d %d\n" % (
            MAGIC, self.started, self.grace, self.source.encode("ascii"),
            len(self.stats), len(self.counts), len(self.discovery),
        )
        return header + self.stats + self.counts + self.discovery

    @classmethod
    def from_bytes(cls, raw: bytes) -> Optional[Record]:
        end = raw.find(b"\n", 0, 200)
        fields = raw[:end].split()
        if end < 0 or len(fields) != 7 or fields[0] != MAGIC:
            return None
        try:
            started, grace, source = float(fields[1]), float(fields[2]), fields[3].decode("ascii")
            stats_length, counts_length, discovery_length = int(fields[4]), int(fields[5]), int(fields[6])
        except ValueError:
            return None
        body = end + 1
        if len(raw) != body + stats_length + counts_length + discovery_length:
            return None
        counts_start = body + stats_length
        discovery_start = counts_start + counts_length
        return cls(started, grace, source, raw[body:counts_start], raw[counts_start:discovery_start], raw[discovery_start:])

    def stats_document(self, now: float) -> bytes:
        """The master document with its age filled in."""
        return self.stats + b"%.3f}}" % max(0.0, now - self.started)

    def ephemeral_range(self) -> Tuple[int, int]:
        """The `E low high` line of the count table: the namespace's ephemeral port range."""
        line = self.counts.split(b"\nE ", 1)[1].split(b"\n", 1)[0]
        low, high = line.split()
        return int(low), int(high)

    def count(self, line_key: bytes, state_index: Optional[int]) -> Optional[int]:
        """One count from the table (`b"L80"`, `b"R3306"`, `b"T"`); None if the port is not in it.

        `state_index` is 0..10 in STATE_NAMES order, or None for the sum of every state.
        """
        start = self.counts.find(b"\n" + line_key + b" ")
        if start < 0:
            return None
        start += len(line_key) + 2
        values = self.counts[start : self.counts.index(b"\n", start)].split()
        if state_index is None:
            return sum(int(value) for value in values)
        return int(values[state_index])
