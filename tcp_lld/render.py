"""The public shapes (docs/contract.md, `contract.py`): the master document and LLD JSON.

The master document holds only numbers, null and fixed ASCII names, so it is written directly:
importing a JSON library costs more than the whole document (orjson 3.13 ~30 ms, because it
imports dataclasses, inspect and uuid; stdlib json ~11 ms, because of `re`). LLD rows carry names
from outside (processes, users) and go through orjson (`lld`).
"""

from __future__ import annotations

from . import __version__
from .states import STATE_NAMES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional

    from .answers import Answers
    from .selection import Selection

_STATE_KEYS = [f'"{name}":' for name in STATE_NAMES]


def _number(value: Optional[float]) -> str:
    return "null" if value is None else repr(value)


def states(counts: List[int]) -> str:
    """`"ESTABLISHED":1,"SYN_SENT":0,...` for the 11 counts."""
    return ",".join(key + str(count) for key, count in zip(_STATE_KEYS, counts))


def master_document(answers: Answers, selection: Selection, now: float, stale: bool = False) -> bytes:
    """The master document of `selection`, `now` giving its age."""
    ports = ",".join(
        f'"{line.port}":{{{states(line.counts)},'
        f'"accept_queue":{_number(line.queue)},"accept_queue_max":{_number(line.backlog)}}}'
        for line in selection.listeners
    )
    remote = ",".join(f'"{line.port}":{{{states(line.counts)},"peer_max":{line.peer_max}}}'
                      for line in selection.outbound)
    totals = answers.totals()
    dropped = selection.dropped_gone + selection.dropped_listening + selection.dropped_remote
    meta = (
        f'"source":"{answers.source}","version":"{__version__}",'
        f'"timestamp":{round(answers.started, 3)!r},"scan_seconds":{round(answers.seconds, 6)!r},'
        f'"sockets":{sum(totals)},"ports":{len(selection.listeners)},'
        f'"remote_ports":{len(selection.outbound)},"truncated":{dropped},'
        f'"dropped":{{"gone":{selection.dropped_gone},"listening":{selection.dropped_listening},'
        f'"remote":{selection.dropped_remote}}},'
        f'"memory":"{answers.memory}","stale":{int(stale)},'
        f'"age_seconds":{round(max(0.0, now - answers.started), 3)!r}'
    )
    document = (
        f'{{"ports":{{{ports}}},"total":{{{states(totals)}}},"remote":{{{remote}}},'
        f'"kernel":{answers.kernel().decode("ascii")},"meta":{{{meta}}}}}'
    )
    return document.encode("ascii")


def lld(rows: List[Dict[str, str]]) -> bytes:
    """`{"data": [...]}`: the form every Zabbix version since 4.x accepts. orjson where installed;
    the standard library, byte for byte the same, where it is not (Debian 12 has no python3-orjson)."""
    try:
        import orjson
    except ImportError:
        import json

        return json.dumps({"data": rows}, ensure_ascii=False, separators=(",", ":")).encode()
    return orjson.dumps({"data": rows})
