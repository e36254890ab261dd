"""Selected ports -> Zabbix LLD rows: one row per port, IPv4 and IPv6 binds merged.

Process, user and service names are looked up only here, when discovery runs (every 15 minutes in
the template), never on the scan path. Each lookup is optional: whatever goes wrong in one (a
non-UTF-8 /etc/services, a process that exits mid-read) costs that field, never the key.
"""

from __future__ import annotations

from .errors import UsageError
from .selection import ROW_TEXT_CAP, is_short_lived

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, Iterable, List, Optional, Tuple

    from .answers import Answers, ListenerLine
    from .selection import Selection

    PortRanges = List[Tuple[int, int]]

MAX_RANGES_TEXT = 4096


class Filters:
    """What an admin may narrow discovery to; by default every selected port is discovered."""

    def __init__(self, ports: Optional[PortRanges] = None, skip_loopback: bool = False,
                 skip_ephemeral: bool = False) -> None:
        self.ports = ports  # only these ports
        self.skip_loopback = skip_loopback  # skip ports bound only to loopback addresses
        self.skip_ephemeral = skip_ephemeral  # skip short-lived listeners of the ephemeral range

    def wants(self, port: int) -> bool:
        return self.ports is None or any(low <= port <= high for low, high in self.ports)


def _port_number(text: str, part: str) -> int:
    if not text or len(text) > 5 or not all("0" <= character <= "9" for character in text):
        raise UsageError(f"invalid port range {part[:40]!r} (use e.g. 22,80,8000-8099)")
    return int(text)


def parse_port_ranges(text: str) -> PortRanges:
    """`"22,80,8000-8099"` -> [(22, 22), (80, 80), (8000, 8099)]; ASCII digits only.

    >>> parse_port_ranges("22, 8000-8099")
    [(22, 22), (8000, 8099)]
    """
    if len(text) > MAX_RANGES_TEXT:
        raise UsageError(f"--ports is too long ({len(text)} characters, at most {MAX_RANGES_TEXT})")
    ranges: PortRanges = []
    for part in text.split(","):
        part = part.strip()
        low_text, dash, high_text = part.partition("-")
        low = _port_number(low_text, part)
        high = _port_number(high_text, part) if dash else low
        if not 1 <= low <= high <= 65535:
            raise UsageError(f"invalid port range {part!r} (ports are 1-65535, low-high)")
        ranges.append((low, high))
    return ranges


def scope(addresses: Iterable[str]) -> str:
    """`any` for a wildcard bind (`::ffff:0.0.0.0` too), `loopback` when only loopback, else `address`.

    Addresses come as inet_ntop writes them, so plain string tests decide (the `ipaddress` module
    would cost discovery a third of its run on a small host, in imports alone).

    >>> scope(["127.0.0.1", "::1"]), scope(["::ffff:0.0.0.0"]), scope(["10.0.0.1%eth0"])
    ('loopback', 'any', 'address')
    """
    plain = [_unmapped(text) for text in addresses]
    if any(text in ("0.0.0.0", "::") for text in plain):
        return "any"
    if plain and all(text.startswith("127.") or text == "::1" for text in plain):
        return "loopback"
    return "address"


def _unmapped(text: str) -> str:
    """The address without its zone (`%eth0`), an IPv4-mapped one as its IPv4 form."""
    text = text.split("%", 1)[0].lower()
    return text[7:] if text.startswith("::ffff:") and "." in text else text


def _optional(lookup: Callable[[], str]) -> str:
    """A looked-up name, printable ASCII only and cut to ROW_TEXT_CAP (so a row's size is
    bounded), or empty when the lookup fails in any way."""
    try:
        name = lookup()
    except Exception:  # an optional field must never cost the key
        return ""
    return "".join(character if " " <= character <= "~" else "?" for character in name[:ROW_TEXT_CAP])


def service_name(port: int) -> str:
    """The /etc/services name of a TCP port, or empty. The C module: `socket`'s Python wrapper
    imports enum, selectors and friends (~4 ms) for this one call."""
    import _socket

    return _optional(lambda: _socket.getservbyport(port, "tcp"))


def user_name(uids: List[int]) -> str:
    """The socket owner's user name (the lowest uid when several), its uid when unnamed."""
    if not uids:
        return ""
    uid = min(uids)

    def lookup() -> str:
        import pwd

        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)

    return _optional(lookup) or str(uid)


def _process_names(lines: List[ListenerLine]) -> Dict[int, str]:
    """Port -> name of the lowest-numbered process holding one of its listeners, where readable."""
    from .processes import owners, process_name

    try:
        holders = owners(inode for line in lines for inode in line.inodes)
    except Exception:
        holders = {}
    names: Dict[int, str] = {}
    for line in lines:
        candidates = [holders[inode] for inode in line.inodes if inode in holders]
        candidates += [(pid, "") for pid in line.pids]
        if candidates:
            pid, name = min(candidates)
            names[line.port] = _optional(lambda: name or process_name(pid))
    return names


def listening_rows(answers: Answers, selection: Selection, min_age: float, filters: Filters) -> List[Dict[str, str]]:
    """LLD rows of the selected listening and gone ports."""
    lines = []
    for line in selection.listeners:
        short_lived = line.listening and is_short_lived(line, answers.ephemeral, min_age, line.last_seen)
        port_scope = _optional(lambda: scope(line.addresses))
        if not filters.wants(line.port) or (filters.skip_ephemeral and short_lived):
            continue
        if filters.skip_loopback and port_scope == "loopback":
            continue
        lines.append((line, port_scope, short_lived))
    processes = _process_names([line for line, _, _ in lines])
    return [
        {
            "{#PORT}": str(line.port),
            "{#ADDRESS}": ",".join(line.addresses),
            "{#FAMILY}": ",".join(f"ipv{family}" for family in line.families),
            "{#SCOPE}": port_scope,
            "{#USER}": user_name(line.uids),
            "{#PROCESS}": processes.get(line.port, ""),
            "{#SERVICE}": service_name(line.port),
            "{#STATUS}": "listening" if line.listening else "gone",
            "{#EPHEMERAL}": "1" if short_lived else "0",
        }
        for line, port_scope, short_lived in lines
    ]


def outbound_rows(selection: Selection, filters: Filters) -> List[Dict[str, str]]:
    """LLD rows of the selected outbound service ports."""
    return [
        {"{#PORT}": str(line.port), "{#SERVICE}": service_name(line.port)}
        for line in selection.outbound
        if filters.wants(line.port)
    ]
