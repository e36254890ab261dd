"""The JSON shapes users depend on (see docs/contract.md): the master document and LLD rows.

Only this module and `discovery` serialize JSON, and only when a scan or a discovery actually runs:
the cached path copies stored bytes out without importing a JSON library.
"""

from typing import Dict, List, Optional, TypedDict

import orjson

from . import __version__
from .errors import TcpLldError
from .snapshot import Snapshot, counts_for, ports_in
from .states import STATE_NAMES

#: The agent refuses values over 512 KiB; stay clear of it, with room for the age digits.
MAX_DOCUMENT_BYTES = 480 * 1024

StateCounts = Dict[str, int]  # every name of STATE_NAMES -> count


class PortEntry(TypedDict, total=False):
    """`ports["80"]`: the 11 state counts plus the accept queue of its listening sockets."""

    accept_queue: Optional[int]
    accept_queue_max: Optional[int]


class Meta(TypedDict):
    source: str
    version: str
    timestamp: float
    scan_seconds: float
    sockets: int
    ports: int
    remote_ports: int
    truncated: int
    age_seconds: float  # must stay the last key: the cache appends its value when printing


class MasterDocument(TypedDict):
    ports: Dict[str, PortEntry]
    total: StateCounts
    remote: Dict[str, StateCounts]
    meta: Meta


class DocumentTooLarge(TcpLldError):
    """Even without outbound entries the document would not fit the agent's limit."""


def state_counts(counts: List[int]) -> StateCounts:
    return dict(zip(STATE_NAMES, counts))


def _queue_sum(values: List[Optional[int]]) -> Optional[int]:
    return None if any(value is None for value in values) else sum(values)  # type: ignore[arg-type]


def port_entries(snapshot: Snapshot) -> Dict[str, PortEntry]:
    entries: Dict[str, PortEntry] = {}
    for port in snapshot.ports:
        entry: PortEntry = state_counts(counts_for(snapshot.result.local, port))  # type: ignore[assignment]
        listeners = snapshot.listening.get(port, [])
        if listeners:
            entry["accept_queue"] = _queue_sum([listener.queue for listener in listeners])
            entry["accept_queue_max"] = _queue_sum([listener.backlog for listener in listeners])
        else:
            entry["accept_queue"] = 0
            entry["accept_queue_max"] = 0
        entries[str(port)] = entry
    return entries


def master_document(snapshot: Snapshot, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The master document with `"age_seconds":` left open at the very end (see `cache`)."""
    result = snapshot.result
    remote = {port: counts_for(result.remote, port) for port in snapshot.remote_ports}
    document: MasterDocument = {
        "ports": port_entries(snapshot),
        "total": state_counts(result.totals),
        "remote": {str(port): state_counts(counts) for port, counts in remote.items()},
        "meta": {
            "source": result.source,
            "version": __version__,
            "timestamp": round(result.started, 3),
            "scan_seconds": round(result.seconds, 6),
            "sockets": result.sockets,
            "ports": len(snapshot.ports),
            "remote_ports": len(remote),
            "truncated": 0,
            "age_seconds": 0,
        },
    }
    rendered = orjson.dumps(document)
    if len(rendered) > limit:
        rendered = _without_smallest_remotes(document, remote, limit)
    assert rendered.endswith(b'"age_seconds":0}}')
    return rendered[: -len(b"0}}")]


def _without_smallest_remotes(document: MasterDocument, remote: Dict[int, List[int]], limit: int) -> bytes:
    """Drop outbound entries with the fewest sockets until the document fits, and say how many."""
    by_size = sorted(remote, key=lambda port: (sum(remote[port]), port))
    low, high = 0, len(by_size)  # how many to drop: the least that fits
    while low < high:
        middle = (low + high) // 2
        if len(_rendered_without(document, by_size[:middle])) <= limit:
            high = middle
        else:
            low = middle + 1
    rendered = _rendered_without(document, by_size[:low])
    if len(rendered) > limit:
        raise DocumentTooLarge(
            f"the stats document is {len(rendered)} bytes even without outbound ports, over the "
            f"{limit}-byte budget under the agent's 512 KiB limit: narrow discovery with --ports"
        )
    return rendered


def _rendered_without(document: MasterDocument, dropped: List[int]) -> bytes:
    dropped_keys = {str(port) for port in dropped}
    trimmed = dict(document)
    trimmed["remote"] = {port: counts for port, counts in document["remote"].items() if port not in dropped_keys}
    trimmed["meta"] = {**document["meta"], "remote_ports": len(trimmed["remote"]), "truncated": len(dropped)}
    trimmed["meta"]["age_seconds"] = trimmed["meta"].pop("age_seconds")
    return orjson.dumps(trimmed)


def count_table(snapshot: Snapshot) -> bytes:
    """Plain text the `count` command reads without a JSON parser.

    `E low high` (the ephemeral range), `L<port> c1 .. c11` per local port (discovered ports and every port outside the ephemeral
    range), `R<port> ...` per outbound port, `T ...` for the host totals.
    """
    result = snapshot.result
    low, high = snapshot.ephemeral
    local_ports = set(snapshot.ports)
    local_ports.update(port for port in ports_in(result.local) if not low <= port <= high)
    lines = [f"E {low} {high}", f"T {' '.join(map(str, result.totals))}"]
    lines += [f"L{port} {' '.join(map(str, counts_for(result.local, port)))}" for port in sorted(local_ports)]
    lines += [f"R{port} {' '.join(map(str, counts_for(result.remote, port)))}" for port in snapshot.remote_ports]
    return ("\n" + "\n".join(lines) + "\n").encode("ascii")


def lld(rows: List[Dict[str, str]]) -> bytes:
    """`{"data": [...]}`: the form every Zabbix version since 4.x accepts."""
    return orjson.dumps({"data": rows})

