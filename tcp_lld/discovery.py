"""Listening ports -> Zabbix LLD rows: one row per port, IPv4 and IPv6 binds merged.

The scan stores `inputs` (addresses, families and socket inodes of every discovered port) in the
cache; process names and service names are looked up only here, when discovery actually runs.
"""

import ipaddress
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import orjson

from .errors import UsageError
from .snapshot import Snapshot

PortRanges = List[Tuple[int, int]]


class Filters(NamedTuple):
    """What an admin may narrow discovery to; by default every listening port is discovered."""

    ports: Optional[PortRanges] = None  # only these ports
    skip_loopback: bool = False  # skip ports bound only to loopback addresses
    skip_ephemeral: bool = False  # skip listeners inside net.ipv4.ip_local_port_range


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


def inputs(snapshot: Snapshot) -> bytes:
    """What discovery needs from a scan, stored in the cache record."""
    listening = []
    for port in snapshot.ports:
        sockets = snapshot.listening.get(port)
        if sockets:
            addresses = sorted({s.address for s in sockets})
            families = sorted({s.family for s in sockets})
            inodes = sorted({s.inode for s in sockets if s.inode})
        else:
            remembered = snapshot.gone[port]
            addresses, families, inodes = remembered.addresses, remembered.families, []
        listening.append(
            {"port": port, "addresses": addresses, "families": families, "inodes": inodes, "listening": bool(sockets)}
        )
    return orjson.dumps({"listening": listening, "outbound": snapshot.remote_ports, "ephemeral": snapshot.ephemeral})


def scope(addresses: Iterable[str]) -> str:
    """`any` for a wildcard bind, `loopback` when only loopback addresses, else `address`."""
    parsed = [ipaddress.ip_address(address) for address in addresses]
    if any(address.is_unspecified for address in parsed):
        return "any"
    if all(_is_loopback(address) for address in parsed):
        return "loopback"
    return "address"


def _is_loopback(address: "ipaddress.IPv4Address | ipaddress.IPv6Address") -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def service_name(port: int) -> str:
    """The /etc/services name of a TCP port, or empty."""
    import socket

    try:
        return socket.getservbyport(port, "tcp")
    except OSError:
        return ""


def _wanted(port: int, ranges: Optional[PortRanges]) -> bool:
    return ranges is None or any(low <= port <= high for low, high in ranges)


def listening_rows(stored: bytes, filters: Filters) -> List[Dict[str, str]]:
    """LLD rows of listening (and recently gone) ports, with process and service names."""
    from .processes import owners

    document = orjson.loads(stored)
    low, high = document["ephemeral"]
    ports = [
        entry
        for entry in document["listening"]
        if _wanted(entry["port"], filters.ports)
        and not (filters.skip_ephemeral and low <= entry["port"] <= high)
        and not (filters.skip_loopback and scope(entry["addresses"]) == "loopback")
    ]
    names = owners(inode for entry in ports for inode in entry["inodes"])
    rows = []
    for entry in ports:
        processes = sorted({names[inode] for inode in entry["inodes"] if names.get(inode)})
        rows.append(
            {
                "{#PORT}": str(entry["port"]),
                "{#ADDRESS}": ",".join(entry["addresses"]),
                "{#FAMILY}": ",".join(f"ipv{family}" for family in entry["families"]),
                "{#SCOPE}": scope(entry["addresses"]),
                "{#PROCESS}": ",".join(processes),
                "{#SERVICE}": service_name(entry["port"]),
                "{#STATUS}": "listening" if entry["listening"] else "gone",
            }
        )
    return rows


def outbound_rows(stored: bytes, filters: Filters) -> List[Dict[str, str]]:
    """LLD rows of outbound service ports (remote ports outside the ephemeral range)."""
    document = orjson.loads(stored)
    return [
        {"{#PORT}": str(port), "{#SERVICE}": service_name(port)}
        for port in document["outbound"]
        if _wanted(port, filters.ports)
    ]
