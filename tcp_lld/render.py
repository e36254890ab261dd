"""The public shapes (docs/contract.md, `contract.py`): the master document and LLD JSON.

Both are written directly, without a JSON library: importing one costs more than the whole
answer (orjson 3.13 ~16-30 ms, because it imports dataclasses, inspect and uuid; stdlib json
~11 ms, because of `re`), and discovery would pay it on every uncached call. The master document
holds only numbers, null and fixed ASCII names; LLD values are printable ASCII by construction
(`discovery` cuts every looked-up name to it), so only `"` and `\\` need escaping there.
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


def _json_string(text: str) -> str:
    r"""`text` as a JSON string. Printable ASCII (every LLD value, see `discovery`) is escaped here;
    anything else, never expected, goes through the standard library as \u escapes, so that even a
    lone surrogate gives valid ASCII JSON.

    >>> print(_json_string('say "hi" \\ bye'))
    "say \"hi\" \\ bye"
    """
    if text.isascii() and text.isprintable():
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    import json

    return json.dumps(text)


def lld(rows: List[Dict[str, str]]) -> bytes:
    """`{"data": [...]}`: the form every Zabbix version since 4.x accepts; for printable ASCII
    values byte for byte what `json.dumps(..., separators=(",", ":"))` or orjson would write."""
    body = ",".join(
        "{" + ",".join(_json_string(key) + ":" + _json_string(value) for key, value in row.items()) + "}"
        for row in rows
    )
    return ('{"data":[' + body + "]}").encode("ascii")
