"""The hand-written master document: valid JSON, the contract's shape, and always under the
agent's 512 KiB, whatever the number of ports (no root: the scan is built in memory)."""

import json

from synthetic import decoded, encoded, scan_result

from tcp_lld import __version__
from tcp_lld.discovery import Filters, listening_rows, outbound_rows
from tcp_lld.grace import GraceMemory
from tcp_lld.render import master_document
from tcp_lld.scan.result import PORT_SHIFT
from tcp_lld.selection import FIXED_BYTES, MAX_BYTES, PORT_ENTRY_BYTES, REMOTE_ENTRY_BYTES, row_bytes, select
from tcp_lld.states import STATE_NAMES

AGENT_LIMIT = 512 * 1024


def document_of(raw: bytes, grace: float = 86400.0, min_age: float = 3600.0, limit: int = MAX_BYTES) -> dict:
    answers = decoded(raw)
    return json.loads(master_document(answers, select(answers, grace, min_age, limit), answers.started + 1.25))


def cost(answers) -> int:
    """What one port takes of the budget (the larger of its document entry and its LLD row)."""
    return max(PORT_ENTRY_BYTES, max(row_bytes(line) for line in answers.listeners()))


def test_the_document_parses_with_every_field():
    document = document_of(encoded(scan_result([80, 443], [3306]), kernel='{"ListenOverflows":3}'))
    assert list(document) == ["ports", "total", "remote", "kernel", "meta"]
    assert list(document["ports"]["80"]) == [*STATE_NAMES, "accept_queue", "accept_queue_max"]
    assert document["ports"]["443"]["ESTABLISHED"] == 3
    assert document["ports"]["443"]["accept_queue_max"] == 128
    assert document["remote"]["3306"]["TIME_WAIT"] == 1
    assert list(document["remote"]["3306"]) == [*STATE_NAMES, "peer_max"]
    assert document["remote"]["3306"]["peer_max"] == 1
    assert document["total"]["LISTEN"] == 2
    assert document["kernel"] == {"ListenOverflows": 3}
    assert document["meta"] == {
        "source": "netlink", "version": __version__, "timestamp": 1763770000.5,
        "scan_seconds": 0.0123, "sockets": 8, "ports": 2, "remote_ports": 1, "truncated": 0,
        "dropped": {"gone": 0, "listening": 0, "remote": 0}, "memory": "ok", "stale": 0,
        "age_seconds": 1.25,
    }


def test_an_unknown_backlog_is_null():
    assert document_of(encoded(scan_result([80], backlog=None)))["ports"]["80"]["accept_queue_max"] is None


def test_the_size_bounds_hold_for_the_largest_counts():
    """The budget counts entries at their largest: 7-digit counts on 5-digit ports."""
    result = scan_result([65535], [65534], established=9_999_999)
    result.remote = {65534 << PORT_SHIFT | state: 9_999_999 for state in range(1, len(STATE_NAMES) + 1)}
    result.peers = {65534: 9_999_999}
    answers = decoded(encoded(result))
    selection = select(answers, 86400, 3600)
    document = json.loads(master_document(answers, selection, answers.started))
    port_entry = json.dumps({"65535": document["ports"]["65535"]}, separators=(",", ":"))
    assert len(port_entry) - 2 <= PORT_ENTRY_BYTES
    assert document["remote"]["65534"]["peer_max"] == document["remote"]["65534"]["CLOSING"] == 9_999_999
    remote = json.dumps({"65534": document["remote"]["65534"]}, separators=(",", ":"))
    assert len(remote) - 2 <= REMOTE_ENTRY_BYTES


def test_thousands_of_ports_degrade_by_the_rule_and_never_fail():
    """3,500 listening ports, 1,000 gone and 2,000 outbound: nothing raises, the document and the
    discovery stay under the agent's limit, gone ports go first, and discovery offers exactly
    the ports the document carries."""
    memory = GraceMemory("boot/5/4026532000")
    gone = list(range(20000, 21000))
    encoded(scan_result(gone, started=1763760000.0), memory)  # they listened once, 10,000 s ago
    raw = encoded(scan_result(range(1000, 4500), range(5000, 7000)), memory, min_age=0)
    answers = decoded(raw)
    selection = select(answers, 86400, 0)
    document = master_document(answers, selection, answers.started)
    parsed = json.loads(document)
    rows = listening_rows(answers, selection, 0, Filters())
    outbound = outbound_rows(selection, Filters())
    discovery = json.dumps({"data": rows}, separators=(",", ":"))
    assert len(document) <= AGENT_LIMIT and len(discovery) <= AGENT_LIMIT
    assert parsed["meta"]["dropped"]["gone"] == 1000  # every gone port went before any listening one
    assert 0 < parsed["meta"]["dropped"]["listening"] < 3500
    dropped_remote = parsed["meta"]["dropped"]["remote"]
    assert dropped_remote == 2000 - len(parsed["remote"]) > 0
    assert sorted(map(int, parsed["remote"])) == list(range(7000 - len(parsed["remote"]), 7000))  # busiest
    assert parsed["meta"]["truncated"] == 1000 + parsed["meta"]["dropped"]["listening"] + dropped_remote
    assert sorted(int(row["{#PORT}"]) for row in rows) == sorted(int(port) for port in parsed["ports"])
    assert sorted(row["{#PORT}"] for row in outbound) == sorted(parsed["remote"])
    assert answers.count(4499, 0, False) == 3  # a port the document dropped still answers `count`


def test_gone_ports_are_dropped_oldest_first():
    memory = GraceMemory("boot/5/4026532000")
    for age, port in ((3000, 7001), (2000, 7002), (1000, 7003)):
        encoded(scan_result([port], started=1763770000.5 - age), memory)
    raw = encoded(scan_result(range(1000, 1010)), memory)
    answers = decoded(raw)
    room = FIXED_BYTES + 2 + 12 * cost(answers)  # the listening ports and two more
    kept = select(answers, 86400, 3600, limit=room)
    assert [line.port for line in kept.listeners if not line.listening] == [7002, 7003]
    assert kept.dropped_gone == 1 and kept.dropped_listening == 0


def test_least_busy_listening_ports_are_dropped_first():
    result = scan_result(range(1000, 1010))
    for port in range(1000, 1010):  # port 1000+i has 3+i connections
        result.local[port << 4 | 1] += port - 1000
    answers = decoded(encoded(result))
    kept = select(answers, 86400, 3600, limit=FIXED_BYTES + 2 + 4 * cost(answers))
    assert [line.port for line in kept.listeners] == [1006, 1007, 1008, 1009]
    assert kept.dropped_listening == 6


def test_lld_json_is_what_json_libraries_write():
    """LLD JSON is written without a library (importing orjson costs an uncached discovery call
    ~16-30 ms): printable ASCII, quotes and backslashes included, must give orjson's very bytes,
    and anything else must still be valid JSON that reads back the same."""
    import json

    import orjson

    from tcp_lld.render import lld

    rows = [{"{#PORT}": "80", "{#PROCESS}": 'nginx: "master"', "{#USER}": "C:\\web ~"},
            {"{#PORT}": "22", "{#SERVICE}": "ssh"}, {}]
    assert lld(rows) == orjson.dumps({"data": rows})
    assert lld([]) == orjson.dumps({"data": []})
    odd = [{"{#PROCESS}": "wwwé\t\udcff\x7f"}]
    assert json.loads(lld(odd)) == {"data": odd}
    assert lld(odd).isascii()
