"""The shapes users depend on (see docs/contract.md), rendered when a scan runs.

The master document holds only numbers, null and fixed ASCII names, so it is written directly:
importing a JSON library costs more than the whole document (orjson 3.13 ~30 ms, because it
imports dataclasses, inspect and uuid; stdlib json ~11 ms, because of `re`; a scan of 100k sockets
parses in ~40 ms). LLD rows carry process names from outside and go through orjson (`lld`).
"""

from __future__ import annotations

from . import __version__
from .errors import TcpLldError
from .snapshot import counts_for, ports_in
from .states import STATE_NAMES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Union

    from .snapshot import Snapshot

    Number = Union[int, float, None]

#: The agent refuses values over 512 KiB; stay clear of it, with room for the age digits.
MAX_DOCUMENT_BYTES = 480 * 1024
AGE_KEY = '"age_seconds":'

_STATE_KEYS = [f'"{name}":' for name in STATE_NAMES]


class DocumentTooLarge(TcpLldError):
    """Even without outbound entries the document would not fit the agent's limit."""


def _number(value: Number) -> str:
    return "null" if value is None else repr(value)


def _states(counts: List[int]) -> str:
    """`"ESTABLISHED":1,"SYN_SENT":0,...` for the 11 counts."""
    return ",".join(key + str(count) for key, count in zip(_STATE_KEYS, counts))


def _queue_sum(values: List[Optional[int]]) -> Optional[int]:
    return None if any(value is None for value in values) else sum(values)  # type: ignore[arg-type]


def _port_entries(snapshot: Snapshot) -> List[str]:
    """`"80":{<11 states>,"accept_queue":N,"accept_queue_max":M}` per discovered port."""
    entries = []
    for port in snapshot.ports:
        listeners = snapshot.listening.get(port, [])
        queue = _queue_sum([listener.queue for listener in listeners])
        backlog = _queue_sum([listener.backlog for listener in listeners])
        entries.append(
            f'"{port}":{{{_states(counts_for(snapshot.result.local, port))},'
            f'"accept_queue":{_number(queue)},"accept_queue_max":{_number(backlog)}}}'
        )
    return entries


def master_document(snapshot: Snapshot, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The master document, cut right after `"age_seconds":` for the reader to finish (see `record`).

    Too large for the agent: drop outbound entries with the fewest sockets first, and say how many.
    """
    result = snapshot.result
    remote = {port: counts_for(result.remote, port) for port in snapshot.remote_ports}
    remote_entries = {port: f'"{port}":{{{_states(counts)}}}' for port, counts in remote.items()}
    head = f'{{"ports":{{{",".join(_port_entries(snapshot))}}},"total":{{{_states(result.totals)}}},"remote":{{'
    meta_budget = 400
    size = len(head) + meta_budget + sum(len(entry) + 1 for entry in remote_entries.values())
    if len(head) + meta_budget > limit:
        raise DocumentTooLarge(
            f"the stats document would be over {len(head)} bytes even without outbound ports, past the "
            f"{limit}-byte budget under the agent's 512 KiB limit"
        )
    for port in sorted(remote, key=lambda port: (sum(remote[port]), port)):  # fewest sockets first
        if size <= limit:
            break
        size -= len(remote_entries.pop(port)) + 1
    meta = (
        f'"source":"{result.source}","version":"{__version__}","timestamp":{round(result.started, 3)!r},'
        f'"scan_seconds":{round(result.seconds, 6)!r},"sockets":{result.sockets},'
        f'"ports":{len(snapshot.ports)},"remote_ports":{len(remote_entries)},'
        f'"truncated":{len(remote) - len(remote_entries)},'
    )
    return f'{head}{",".join(remote_entries.values())}}},"meta":{{{meta}{AGE_KEY}'.encode()


def count_table(snapshot: Snapshot) -> bytes:
    """Plain text the `count` command reads without a parser library.

    `E low high` (the ephemeral range), `T c1 .. c11` (host totals), `L<port> c1 .. c11` per local
    port (discovered ports and every port outside the ephemeral range), `R<port> ...` per outbound
    port.
    """
    result = snapshot.result
    low, high = snapshot.ephemeral
    local_ports = set(snapshot.ports)
    local_ports.update(port for port in ports_in(result.local) if not low <= port <= high)
    lines = [f"E {low} {high}", f"T {' '.join(map(str, result.totals))}"]
    lines += [f"L{port} {' '.join(map(str, counts_for(result.local, port)))}" for port in sorted(local_ports)]
    lines += [f"R{port} {' '.join(map(str, counts_for(result.remote, port)))}" for port in snapshot.remote_ports]
    return ("\n" + "\n".join(lines) + "\n").encode("ascii")


def discovery_inputs(snapshot: Snapshot) -> bytes:
    """What discovery needs from a scan, one line per port (parsed by `discovery.StoredPort`)::

        P <port> <1 listening | 0 gone> <address,...> <family,...> <inode,...|->
        O <outbound port> <outbound port> ...
    """
    lines = []
    for port in snapshot.ports:
        sockets = snapshot.listening.get(port)
        if sockets:
            addresses = sorted({s.address for s in sockets})
            families = sorted({s.family for s in sockets})
            inodes = sorted({s.inode for s in sockets if s.inode})
        else:
            remembered = snapshot.gone[port]
            addresses, families, inodes = remembered.addresses, remembered.families, []
        inode_text = ",".join(map(str, inodes)) or "-"
        lines.append(f"P {port} {int(bool(sockets))} {','.join(addresses)} {','.join(map(str, families))} {inode_text}")
    lines.append("O " + " ".join(map(str, snapshot.remote_ports)))
    return ("\n".join(lines) + "\n").encode("ascii")


def lld(rows: List[Dict[str, str]]) -> bytes:
    """`{"data": [...]}`: the form every Zabbix version since 4.x accepts."""
    import orjson

    return orjson.dumps({"data": rows})
