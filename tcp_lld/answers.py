"""The cached answers of one scan: the only writer and the only reader of their private format.

Every key reads this file: `count` looks up one line by bytes, `stats` and `discovery` parse the
port lines. Callers with different `--grace` or `--min-age` share it (those are applied when
answering, see `AnswerView`). ASCII lines, no JSON library on the cached path::

    tcp-lld/4 <started> <scan seconds> <source asked> <source used> <stamp> <memory> <low> <high>
    T <11 counts>                                       host totals per state
    L <port> <11 counts> <listening 1|0> <first seen> <last seen> <queue|-> <backlog|->
      <address,...> <family,...> <uid,...|-> <inode,...|-> <pid,...|->      (one line)
    O <port> <11 counts> <peer max> <last seen>        outbound, by remote port
    K <kernel JSON object>
    E <checksum of everything before this line>

Counts are in `STATE_NAMES` order. `peer max`: the most outbound sockets of one (local address,
remote address) pair to that port (`ScanResult.peers`; 0 for a remembered port with no sockets).
Each format change bumps the magic: an older file is refused (and rescanned), never misread. The
end line is written last and checked first: a torn, truncated or altered file is no answer at
all, never a wrong one.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no `typing` at run time: this module is on the cached path
if TYPE_CHECKING:
    from typing import List, Optional, Tuple

    from .grace import GraceMemory
    from .scan.result import ScanResult

MAGIC = b"tcp-lld/4"
_PRIME = (1 << 61) - 1
MAX_BYTES = 16 << 20  # a planted or runaway file is refused before it is read in full
_END = b"\nE "


def checksum(body: bytes) -> int:
    """The body read as one number, modulo a Mersenne prime: any changed, lost or moved byte
    changes it. Computed in C by `int.from_bytes`, with no module to import (zlib would be one).

    >>> checksum(b"ab") != checksum(b"ba") and checksum(b"ab") != checksum(b"ac")
    True
    """
    return int.from_bytes(body, "little") % _PRIME


def _list(values: List) -> str:
    return ",".join(map(str, values)) or "-"


def _optional(value: Optional[int]) -> str:
    return "-" if value is None else str(value)


def _queue_sum(values: List[Optional[int]]) -> Optional[int]:
    return None if any(value is None for value in values) else sum(values)  # type: ignore[arg-type]


def encode(result: ScanResult, memory: GraceMemory, source_asked: str, stamp: str,
           memory_state: str, ephemeral: Tuple[int, int], kernel: str) -> bytes:
    """Everything any key can be asked about this scan, in the format above."""
    from .scan.result import counts_for

    low, high = ephemeral
    lines = [
        f"{MAGIC.decode()} {result.started!r} {result.seconds!r} {source_asked} {result.source} "
        f"{stamp} {memory_state} {low} {high}",
        "T " + " ".join(map(str, result.totals)),
    ]
    sockets_by_port = result.listeners_by_port()
    for port, entry in sorted(memory.listeners.items()):
        sockets = sockets_by_port.get(port, [])
        counts = " ".join(map(str, counts_for(result.local, port)))
        if sockets:
            queue = _queue_sum([s.queue for s in sockets])
            backlog = _queue_sum([s.backlog for s in sockets])
            inodes = sorted({s.inode for s in sockets if s.inode})
            pids = sorted({s.pid for s in sockets if s.pid})
        else:
            queue, backlog, inodes, pids = 0, 0, [], []
        lines.append(
            f"L {port} {counts} {int(bool(sockets))} {entry.first_seen!r} {entry.last_seen!r} "
            f"{_optional(queue)} {_optional(backlog)} {','.join(entry.addresses)} "
            f"{','.join(map(str, entry.families))} {_list(entry.uids)} {_list(inodes)} {_list(pids)}"
        )
    for port, seen in sorted(memory.outbound.items()):
        lines.append(f"O {port} {' '.join(map(str, counts_for(result.remote, port)))} "
                     f"{result.peers.get(port, 0)} {seen!r}")
    lines.append("K " + kernel)
    body = ("\n".join(lines)).encode("ascii")
    return body + b"%s%x\n" % (_END, checksum(body))


class ListenerLine:
    """One `L` line: a listening or remembered port."""

    __slots__ = ("port", "counts", "listening", "first_seen", "last_seen", "queue", "backlog",
                 "addresses", "families", "uids", "inodes", "pids")

    def __init__(self, fields: List[bytes]) -> None:
        self.port = int(fields[1])
        self.counts = [int(value) for value in fields[2:13]]
        self.listening = fields[13] == b"1"
        self.first_seen = float(fields[14])
        self.last_seen = float(fields[15])
        self.queue = None if fields[16] == b"-" else int(fields[16])
        self.backlog = None if fields[17] == b"-" else int(fields[17])
        self.addresses = fields[18].decode("ascii").split(",")
        self.families = [int(family) for family in fields[19].split(b",")]
        self.uids = _ints(fields[20])
        self.inodes = _ints(fields[21])
        self.pids = _ints(fields[22])


class OutboundLine:
    """One `O` line: an outbound service port, by remote port."""

    __slots__ = ("port", "counts", "peer_max", "last_seen")

    def __init__(self, fields: List[bytes]) -> None:
        self.port = int(fields[1])
        self.counts = [int(value) for value in fields[2:13]]
        self.peer_max = int(fields[13])  # the most sockets of one address pair (`ScanResult.peers`)
        self.last_seen = float(fields[14])


def _ints(text: bytes) -> List[int]:
    return [] if text == b"-" else [int(value) for value in text.split(b",")]


class Answers:
    """A verified answers file."""

    __slots__ = ("raw", "started", "seconds", "source_asked", "source", "stamp", "memory", "ephemeral",
                 "_all_lines")

    def __init__(self, raw: bytes, header: List[bytes]) -> None:
        self.raw = raw
        self.started = float(header[1])
        self.seconds = float(header[2])
        self.source_asked = header[3].decode("ascii")
        self.source = header[4].decode("ascii")
        self.stamp = header[5].decode("ascii")
        self.memory = header[6].decode("ascii")  # ok | none | unsaved: where "gone" ports come from
        self.ephemeral = (int(header[7]), int(header[8]))
        self._all_lines: Optional[List[bytes]] = None  # split once, when a reader needs more than one line

    @classmethod
    def decode(cls, raw: Optional[bytes]) -> Optional[Answers]:
        """The answers in `raw`, or None when it is torn, altered or not this format."""
        if not raw or not raw.startswith(MAGIC + b" ") or not raw.endswith(b"\n"):
            return None
        end = raw.rfind(_END)
        if end < 0 or raw[end + len(_END):-1] != b"%x" % checksum(raw[:end]):
            return None
        header = raw[: raw.index(b"\n")].split()
        try:
            return cls(raw[: end + 1], header) if len(header) == 9 else None
        except (ValueError, UnicodeDecodeError):
            return None

    def _line(self, prefix: bytes) -> Optional[List[bytes]]:
        start = self.raw.find(b"\n" + prefix)
        if start < 0:
            return None
        return self.raw[start + 1 : self.raw.index(b"\n", start + 1)].split()

    def count(self, port: Optional[int], state_index: Optional[int], outbound: bool) -> int:
        """Sockets in one state (None: all) to listening port `port` (`outbound`: by remote port);
        `port` None: the host total. A port this scan knows nothing of has no sockets: 0."""
        if port is None:
            fields = self._line(b"T ")
            values = fields[1:12] if fields else []
        else:
            fields = self._line(b"%s %d " % (b"O" if outbound else b"L", port))
            values = fields[2:13] if fields else []
        if not values:
            return 0
        return int(values[state_index]) if state_index is not None else sum(map(int, values))

    def totals(self) -> List[int]:
        fields = self._line(b"T ") or []
        return [int(value) for value in fields[1:12]]

    def listeners(self) -> List[ListenerLine]:
        return [ListenerLine(line.split()) for line in self._lines(b"L ")]

    def outbound(self) -> List[OutboundLine]:
        return [OutboundLine(line.split()) for line in self._lines(b"O ")]

    def kernel(self) -> bytes:
        """The kernel health object as JSON text (`{}` when the scan had none)."""
        line = next(iter(self._lines(b"K ")), b"K {}")
        return line[2:] or b"{}"

    def _lines(self, prefix: bytes) -> List[bytes]:
        if self._all_lines is None:
            self._all_lines = self.raw.split(b"\n")
        return [line for line in self._all_lines if line.startswith(prefix)]
