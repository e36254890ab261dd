"""Discovered ports -> Zabbix LLD rows: one row per port, IPv4 and IPv6 binds merged.

A scan stores each discovered port's addresses, families and socket inodes in the cache record
(`render.discovery_inputs`); process and service names are looked up only here, when discovery
actually runs (every 15 minutes in the template), never on the scan path.
"""

from __future__ import annotations

import ipaddress

from .errors import UsageError
from .processes import owners

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterable, List, Optional, Tuple

    PortRanges = List[Tuple[int, int]]


class Filters:
    """What an admin may narrow discovery to; by default every listening port is discovered."""

    def __init__(self, ports: Optional[PortRanges] = None, skip_loopback: bool = False,
                 skip_ephemeral: bool = False) -> None:
        self.ports = ports  # only these ports
        self.skip_loopback = skip_loopback  # skip ports bound only to loopback addresses
        self.skip_ephemeral = skip_ephemeral  # skip listeners inside net.ipv4.ip_local_port_range

    def wants(self, port: int) -> bool:
        return self.ports is None or any(low <= port <= high for low, high in self.ports)


class StoredPort:
    """A discovered port as the scan stored it."""

    def __init__(self, line: str) -> None:
        _, port, listening, addresses, families, inodes = line.split()
        self.port = int(port)
        self.listening = listening == "1"
        self.addresses = addresses.split(",")
        self.families = families.split(",")
        self.inodes = [] if inodes == "-" else [int(inode) for inode in inodes.split(",")]


def parse_port_ranges(text: str) -> PortRanges:
    """`"22,80,8000-8099"` -> [(22, 22), (80, 80), (8000, 8099)].

    >>> parse_port_ranges("22, 8000-8099")
    [(22, 22), (8000, 8099)]
    """
    ranges: PortRanges = []
    for part in text.split(","):
        part = part.strip()
        low_text, _, high_text = part.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if high_text else low
        except ValueError:
            raise UsageError(f"invalid port range {part!r} (use e.g. 22,80,8000-8099)") from None
        if not 1 <= low <= high <= 65535:
            raise UsageError(f"invalid port range {part!r} (ports are 1-65535, low-high)")
        ranges.append((low, high))
    return ranges


def scope(addresses: Iterable[str]) -> str:
    """`any` for a wildcard bind, `loopback` when only loopback addresses, else `address`."""
    parsed = [ipaddress.ip_address(address) for address in addresses]
    if any(address.is_unspecified for address in parsed):
        return "any"
    if all((getattr(address, "ipv4_mapped", None) or address).is_loopback for address in parsed):
        return "loopback"
    return "address"


def service_name(port: int) -> str:
    """The /etc/services name of a TCP port, or empty."""
    import socket

    try:
        return socket.getservbyport(port, "tcp")
    except OSError:
        return ""


def listening_rows(stored: bytes, ephemeral: Tuple[int, int], filters: Filters) -> List[Dict[str, str]]:
    """LLD rows of listening (and recently gone) ports, with process and service names."""
    low, high = ephemeral
    ports = [
        StoredPort(line)
        for line in stored.decode("ascii").splitlines()
        if line.startswith("P ")
    ]
    scopes = {port.port: scope(port.addresses) for port in ports}
    ports = [
        port for port in ports
        if filters.wants(port.port)
        and not (filters.skip_ephemeral and low <= port.port <= high)
        and not (filters.skip_loopback and scopes[port.port] == "loopback")
    ]
    names = owners(inode for port in ports for inode in port.inodes)
    return [
        {
            "{#PORT}": str(port.port),
            "{#ADDRESS}": ",".join(port.addresses),
            "{#FAMILY}": ",".join(f"ipv{family}" for family in port.families),
            "{#SCOPE}": scopes[port.port],
            "{#PROCESS}": ",".join(sorted({names[inode] for inode in port.inodes if names.get(inode)})),
            "{#SERVICE}": service_name(port.port),
            "{#STATUS}": "listening" if port.listening else "gone",
            "{#EPHEMERAL}": "1" if low <= port.port <= high else "0",
        }
        for port in ports
    ]


def outbound_rows(stored: bytes, filters: Filters) -> List[Dict[str, str]]:
    """LLD rows of outbound service ports (remote ports outside the ephemeral range)."""
    line = next(line for line in stored.decode("ascii").splitlines() if line.startswith("O"))
    return [
        {"{#PORT}": port, "{#SERVICE}": service_name(int(port))}
        for port in line.split()[1:]
        if filters.wants(int(port))
    ]
