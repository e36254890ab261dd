"""The grace-period memory: ports seen recently, so a vanished listener stays discovered.

Without it a listener that dies disappears from discovery and from the master document at once;
Zabbix would mark its items "not discovered", and nobody would be alerted that the service is gone.
With it the port stays for `grace` seconds with LISTEN = 0, which the template's "listener gone"
trigger catches. Only the scanning process, holding the cache lock, writes it.

Stored as lines of text (no JSON library on the scan path)::

    L <port> <last seen> <address,address> <family,family>
    R <port> <last seen>
"""

from __future__ import annotations

from .atomic import read_private_file, write_private_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional


class Remembered:
    """A listening port as it was last seen."""

    __slots__ = ("seen", "addresses", "families")

    def __init__(self, seen: float, addresses: List[str], families: List[int]) -> None:
        self.seen = seen
        self.addresses = addresses
        self.families = families


class Memory:
    """Listening ports and outbound remote ports with the time they were last seen."""

    def __init__(self, listening: Optional[Dict[int, Remembered]] = None, remote: Optional[Dict[int, float]] = None) -> None:
        self.listening = listening or {}
        self.remote = remote or {}

    @classmethod
    def load(cls, path: str) -> Memory:
        """The stored memory; empty when missing, foreign or unreadable (never an error)."""
        raw = read_private_file(path)
        memory = cls()
        try:
            for line in (raw or b"").decode("ascii").splitlines():
                fields = line.split()
                if fields[0] == "L" and len(fields) == 5:
                    families = [int(family) for family in fields[4].split(",")]
                    memory.listening[int(fields[1])] = Remembered(float(fields[2]), fields[3].split(","), families)
                elif fields[0] == "R" and len(fields) == 3:
                    memory.remote[int(fields[1])] = float(fields[2])
        except (ValueError, IndexError, UnicodeDecodeError):
            return cls()
        return memory

    def forget_older_than(self, oldest: float) -> None:
        self.listening = {port: entry for port, entry in self.listening.items() if entry.seen >= oldest}
        self.remote = {port: seen for port, seen in self.remote.items() if seen >= oldest}

    def save(self, path: str) -> None:
        lines = [
            f"L {port} {entry.seen!r} {','.join(entry.addresses)} {','.join(map(str, entry.families))}\n"
            for port, entry in sorted(self.listening.items())
        ]
        lines += [f"R {port} {seen!r}\n" for port, seen in sorted(self.remote.items())]
        write_private_file(path, "".join(lines).encode("ascii"))
