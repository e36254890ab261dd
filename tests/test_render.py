"""The hand-written master document is valid JSON, exactly the contract's shape, and fits the agent."""

import json
from collections import Counter

import pytest

from tcp_lld import __version__
from tcp_lld.memory import Memory
from tcp_lld.record import Record
from tcp_lld.render import DocumentTooLarge, master_document
from tcp_lld.snapshot import PORT_SHIFT, Listener, ScanResult, Snapshot
from tcp_lld.states import ESTABLISHED, LISTEN, STATE_NAMES, TIME_WAIT


def snapshot_with(listening_ports, remote_ports, backlog=128):
    local, remote = Counter(), Counter()
    listeners = []
    for port in listening_ports:
        local[port << PORT_SHIFT | LISTEN] += 1
        local[port << PORT_SHIFT | ESTABLISHED] += 3
        listeners.append(Listener(port, 4, "0.0.0.0", 1000 + port, 0, backlog))
    for index, port in enumerate(remote_ports):
        remote[port << PORT_SHIFT | TIME_WAIT] += index + 1
    totals = [0] * 11
    for key, count in local.items():
        totals[(key & 0xF) - 1] += count
    result = ScanResult("netlink", local, remote, listeners, 1763770000.5, 0.0123, totals)
    return Snapshot.build(result, Memory(), (32768, 60999), 86400)


def parse(prefix: bytes) -> dict:
    return json.loads(Record(0, 0, "auto", prefix, b"", b"").stats_document(1.25))


def test_the_document_parses_with_every_field():
    document = parse(master_document(snapshot_with([80, 443], [3306])))
    assert list(document) == ["ports", "total", "remote", "meta"]
    assert list(document["ports"]["80"]) == [*STATE_NAMES, "accept_queue", "accept_queue_max"]
    assert document["ports"]["443"]["ESTABLISHED"] == 3
    assert document["ports"]["443"]["accept_queue_max"] == 128
    assert document["remote"]["3306"]["TIME_WAIT"] == 1
    assert document["total"]["LISTEN"] == 2
    assert document["meta"] == {
        "source": "netlink", "version": __version__, "timestamp": 1763770000.5,
        "scan_seconds": 0.0123, "sockets": 8, "ports": 2, "remote_ports": 1, "truncated": 0, "age_seconds": 1.25,
    }


def test_an_unknown_backlog_is_null():
    assert parse(master_document(snapshot_with([80], [], backlog=None)))["ports"]["80"]["accept_queue_max"] is None


def test_hundreds_of_ports_stay_far_under_the_agent_limit():
    document = master_document(snapshot_with(range(1000, 1500), range(2000, 2500)))
    assert len(document) < 200 * 1024  # 500 listening + 500 outbound ports
    assert len(parse(document)["ports"]) == 500


def test_outbound_ports_with_fewest_sockets_are_dropped_first_to_fit():
    limit = 60 * 1024
    document = master_document(snapshot_with(range(1000, 1100), range(2000, 2400)), limit=limit)
    parsed = parse(document)
    assert len(document) <= limit
    assert parsed["meta"]["truncated"] == 400 - len(parsed["remote"]) > 0
    kept = sorted(int(port) for port in parsed["remote"])
    assert kept == list(range(2400 - len(kept), 2400))  # the busiest (highest counts here) survive
    assert len(parsed["ports"]) == 100


def test_a_document_that_cannot_fit_is_an_error_not_a_truncated_lie():
    with pytest.raises(DocumentTooLarge, match="512 KiB"):
        master_document(snapshot_with(range(1000, 1400), []), limit=20 * 1024)
