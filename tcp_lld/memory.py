"""The grace-period memory: ports seen recently, so a vanished listener stays discovered.

Without it a listener that dies disappears from discovery and from the master document at once;
Zabbix would mark its items "not discovered" and unsupported, and nobody would be alerted that the
service is gone. With it the port stays for `grace` seconds with LISTEN = 0, which the template's
"listener gone" trigger catches. Only the scanning process (holding the cache lock) writes it.
"""

import os
from typing import Dict, List, NamedTuple

import orjson

from .atomic import read_private_file, write_private_file


class Remembered(NamedTuple):
    """A listening port as it was last seen."""

    seen: float
    addresses: List[str]
    families: List[int]


class Memory:
    """Listening ports and outbound remote ports with the time they were last seen."""

    def __init__(self, listening: Dict[int, Remembered], remote: Dict[int, float]) -> None:
        self.listening = listening
        self.remote = remote

    @classmethod
    def load(cls, path: str) -> "Memory":
        """The stored memory; empty when missing, foreign or unreadable (never an error)."""
        raw = read_private_file(path)
        if raw is None:
            return cls({}, {})
        try:
            stored = orjson.loads(raw)
            listening = {
                int(port): Remembered(float(entry["seen"]), list(entry["addresses"]), list(entry["families"]))
                for port, entry in stored["listening"].items()
            }
            remote = {int(port): float(seen) for port, seen in stored["remote"].items()}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return cls({}, {})
        return cls(listening, remote)

    def forget_older_than(self, oldest: float) -> None:
        self.listening = {port: entry for port, entry in self.listening.items() if entry.seen >= oldest}
        self.remote = {port: seen for port, seen in self.remote.items() if seen >= oldest}

    def save(self, path: str) -> None:
        document = {
            "listening": {str(port): entry._asdict() for port, entry in self.listening.items()},
            "remote": {str(port): seen for port, seen in self.remote.items()},
        }
        write_private_file(path, orjson.dumps(document))


def memory_path(cache_dir: str, namespace_id: int) -> str:
    return os.path.join(cache_dir, f"memory-{namespace_id}.json")
