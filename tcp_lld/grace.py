"""The grace memory: listeners and outbound service ports seen recently, kept across scans.

Without it a listener that dies disappears from discovery and from the master document at once;
Zabbix would mark its items "not discovered" and nobody would be told the service is gone. With it
the port stays for the caller's grace period with LISTEN = 0, which the template's "listener gone"
trigger catches, and connections outliving their listener still count as inbound.

Only the scanning process, holding the namespace's lock, writes it; this module alone reads and
writes its format (ASCII lines, no JSON library on the scan path)::

    tcp-lld-grace/1 <namespace stamp>
    G <grace asked> <last asked>
    L <port> <first seen> <last seen> <1 listening now | 0> <address,...> <family,...> <uid,...|->
    O <port> <last seen>

A damaged line costs that line only. A file of another namespace (or, outside the host's own
namespace, of another boot) counts as empty.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no `typing` at run time: this module is on the scan path
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

    from .scan.result import ScanResult

FORMAT = b"tcp-lld-grace/1"
MIN_RETENTION = 86400.0  # gone ports are kept at least this long, whatever the graces asked
GRACE_ASKED_KEPT = 7 * 86400.0  # a caller's --grace keeps the memory that long after it last scanned
RESTART_GAP = 600.0  # a listener back within this is the same service (its age is kept)
MAX_LISTENERS = 10000  # entries kept per kind, newest first: the memory's own bound
MAX_OUTBOUND = 10000
MAX_BYTES = 4 << 20


class RememberedListener:
    """A listening port: when it was first and last seen listening, and how it was bound."""

    __slots__ = ("port", "first_seen", "last_seen", "listening", "addresses", "families", "uids")

    def __init__(self, port: int, first_seen: float, last_seen: float, listening: bool,
                 addresses: List[str], families: List[int], uids: List[int]) -> None:
        self.port = port
        self.first_seen = first_seen
        self.last_seen = last_seen
        self.listening = listening  # listening at the last scan
        self.addresses = addresses
        self.families = families
        self.uids = uids


def _uid_list(text: str) -> List[int]:
    return [] if text == "-" else [int(uid) for uid in text.split(",")]


class GraceMemory:
    """Listeners and outbound ports with the times they were seen, and the graces callers asked."""

    def __init__(self, stamp: str) -> None:
        self.stamp = stamp
        self.listeners: Dict[int, RememberedListener] = {}
        self.outbound: Dict[int, float] = {}  # remote port -> last seen
        self.graces: Dict[float, float] = {}  # grace asked -> when
        self.damaged_lines = 0

    @classmethod
    def from_bytes(cls, raw: Optional[bytes], stamp: str) -> GraceMemory:
        """The stored memory; empty when missing, of another namespace or of another format."""
        memory = cls(stamp)
        if not raw:
            return memory
        lines = raw.decode("ascii", "replace").splitlines()
        if not lines or lines[0].split() != [FORMAT.decode(), stamp]:
            return memory
        for line in lines[1:]:
            try:
                memory._read_line(line.split())
            except (ValueError, IndexError):
                memory.damaged_lines += 1
        return memory

    def _read_line(self, fields: List[str]) -> None:
        kind = fields[0]
        if kind == "L" and len(fields) == 8:
            port = int(fields[1])
            if not 0 < port < 65536:
                raise ValueError(port)
            families = [int(family) for family in fields[6].split(",")]
            self.listeners[port] = RememberedListener(
                port, float(fields[2]), float(fields[3]), fields[4] == "1",
                fields[5].split(","), families, _uid_list(fields[7]),
            )
        elif kind == "O" and len(fields) == 3:
            port = int(fields[1])
            if not 0 < port < 65536:
                raise ValueError(port)
            self.outbound[port] = float(fields[2])
        elif kind == "G" and len(fields) == 3:
            self.graces[float(fields[1])] = float(fields[2])
        else:
            raise ValueError("unknown line")

    def to_bytes(self) -> bytes:
        lines = [f"{FORMAT.decode()} {self.stamp}"]
        lines += [f"G {grace!r} {asked!r}" for grace, asked in sorted(self.graces.items())]
        for port, entry in sorted(self.listeners.items()):
            uids = ",".join(map(str, entry.uids)) or "-"
            lines.append(
                f"L {port} {entry.first_seen!r} {entry.last_seen!r} {int(entry.listening)} "
                f"{','.join(entry.addresses)} {','.join(map(str, entry.families))} {uids}"
            )
        lines += [f"O {port} {seen!r}" for port, seen in sorted(self.outbound.items())]
        return ("\n".join(lines) + "\n").encode("ascii")

    def retention(self, now: float) -> float:
        """How long gone ports are kept: the longest grace any caller asked for lately, at least a day."""
        recent = [grace for grace, asked in self.graces.items() if asked >= now - GRACE_ASKED_KEPT]
        return max([MIN_RETENTION, *recent])

    def remembered_ports(self) -> List[int]:
        """Ports that listened within the retention: their connections are inbound."""
        return sorted(self.listeners)

    def update(self, result: ScanResult, now: float, grace: float, ephemeral: Tuple[int, int],
               min_age: float) -> None:
        """Merge a scan taken at `now`. Listeners on the ephemeral range that listened less than
        `min_age` (random ports: RPC, debuggers, test servers) are forgotten once gone.

        Times in the future (the clock stepped back) are taken as now, so no grace is outlived.
        """
        self.graces[grace] = now
        self.graces = {g: asked for g, asked in self.graces.items() if asked >= now - GRACE_ASKED_KEPT}
        for entry in self.listeners.values():
            entry.last_seen = min(entry.last_seen, now)
            entry.first_seen = min(entry.first_seen, entry.last_seen)
        self.outbound = {port: min(seen, now) for port, seen in self.outbound.items()}
        by_port = result.listeners_by_port()
        for port, sockets in by_port.items():
            previous = self.listeners.get(port)
            first_seen = now  # new, or back after a real absence: a new service
            if previous is not None and (previous.listening or previous.last_seen >= now - RESTART_GAP):
                first_seen = previous.first_seen
            self.listeners[port] = RememberedListener(
                port, first_seen, now, True,
                sorted({s.address for s in sockets}),
                sorted({s.family for s in sockets}),
                sorted({s.uid for s in sockets if s.uid is not None}),
            )
        for entry in self.listeners.values():
            if entry.port not in by_port:
                entry.listening = False
        low, high = ephemeral
        for port, entry in list(self.listeners.items()):
            if not entry.listening and low <= port <= high and entry.last_seen - entry.first_seen < min_age:
                del self.listeners[port]
        for key in result.remote:
            self.outbound[key >> 4] = now
        self._forget(now - self.retention(now))

    def _forget(self, oldest: float) -> None:
        listeners = [entry for entry in self.listeners.values() if entry.last_seen >= oldest]
        listeners.sort(key=lambda entry: (not entry.listening, -entry.last_seen, entry.port))
        self.listeners = {entry.port: entry for entry in listeners[:MAX_LISTENERS]}
        outbound = sorted((seen, port) for port, seen in self.outbound.items() if seen >= oldest)
        self.outbound = {port: seen for seen, port in outbound[-MAX_OUTBOUND:]}
