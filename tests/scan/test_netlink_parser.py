"""The sock_diag parser against real captured dumps, replayed without root and without a socket.

tests/fixtures/netlink/capture.py recorded every datagram the kernel sent for each request of
`netlink.scan`, with the truth of the population it built; the failure scenarios are those
recordings with a few requests answered differently (refused, cut short, truncated).
"""

import json
import socket
import struct
import sys
from collections import Counter
from pathlib import Path

import pytest

from tcp_lld.errors import ScanError
from tcp_lld.scan import netlink, procfs, scan
from tcp_lld.scan.result import PORT_SHIFT, state_totals
from tcp_lld.states import STATE_NAMES

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "netlink"
sys.path.insert(0, str(FIXTURES))

import recording  # noqa: E402

EXPECTED = json.loads((FIXTURES / "world.expected.json").read_text())
STATE_NUMBER = {name: number for number, name in enumerate(STATE_NAMES, start=1)}
LISTEN = STATE_NUMBER["LISTEN"]
EPHEMERAL = tuple(EXPECTED["ephemeral"])  # the capture's ip_local_port_range


def truth(remembered=()):
    """local, remote and totals as `result` defines them, from the capture's (local, remote, state) rows."""
    inbound = set(EXPECTED["listening_ports"]) | set(remembered)
    local, remote = Counter(), Counter()
    for local_port, remote_port, state, count in EXPECTED["rows"]:
        local[local_port << PORT_SHIFT | STATE_NUMBER[state]] += count
        if state != "LISTEN" and local_port not in inbound:
            remote[remote_port << PORT_SHIFT | STATE_NUMBER[state]] += count
    return dict(local), dict(remote), state_totals(local)


def peer_truth(remembered=(), world=None):
    """remote port -> the most outbound sockets of one (family, local address, remote address), read
    record by record from the recorded legacy dump with a plain `struct` layout (the capture's
    truth rows have no addresses)."""
    inbound = set(EXPECTED["listening_ports"]) | set(remembered)
    world = world or recording.load(FIXTURES / "world")
    pairs = Counter()
    for _, data in world[request_named(world, f"legacy-states-{netlink.CONNECTIONS_MASK:04x}.bin")]:
        offset = 0
        while offset < len(data):
            length, message_type = struct.unpack_from("<IH", data, offset)
            if message_type != netlink.TCPDIAG_GETSOCK:
                break
            family, state, sport, dport, source, destination = struct.unpack_from("!BB2xHH16s16s", data, offset + 16)
            if state != LISTEN and sport not in inbound:
                pairs[dport, family, source, destination] += 1
            offset += length
    largest = {}
    for (port, *_), count in pairs.items():
        largest[port] = max(largest.get(port, 0), count)
    return largest


def replay(monkeypatch, *scenarios, edit=None):
    """Make `netlink.Dumper` replay world/ with `scenarios` laid over it; returns the replayer."""
    world = recording.load(FIXTURES / "world", *(FIXTURES / name for name in scenarios))
    if edit:
        edit(world)
    replayer = recording.replayer(world)
    replayer.requests = []
    monkeypatch.setattr(netlink, "Dumper", replayer)
    return replayer


def request_named(world, name):
    return next(request for request in world if recording.name_of(request) == name)


@pytest.mark.parametrize("legacy", [True, False], ids=["one-legacy-dump", "per-family-dumps"])
def test_replayed_dumps_count_every_socket_exactly(monkeypatch, legacy):
    replay(monkeypatch)
    result = netlink.scan(legacy=legacy)
    local, remote, totals = truth()
    assert result.source == "netlink"
    assert dict(result.local) == local
    assert dict(result.remote) == remote
    assert result.totals == totals
    assert result.sockets == sum(count for *_, count in EXPECTED["rows"])
    assert result.peers == peer_truth()


def test_peer_max_is_the_busiest_address_pair_of_each_remote_port(monkeypatch):
    """What the capture built: 253 clients of 8443 from 127.0.0.1 (3 of them from fixed high ports),
    400 client-side TIME_WAIT to 3307 (TIME_WAIT still holds its local port), and 8080 reached over
    IPv4 (3), IPv6 (2) and v4-mapped IPv6 (2): three address pairs, the largest counts."""
    replay(monkeypatch)
    peers = netlink.scan(remembered=[4444], ephemeral=EPHEMERAL).peers
    _, remote, _ = truth(remembered=[4444])
    assert (peers[8443], peers[3307], peers[8080]) == (253, 400, 3)
    assert remote[8080 << PORT_SHIFT | STATE_NUMBER["ESTABLISHED"]] == 7
    assert peers == peer_truth(remembered=[4444])
    assert set(peers) == {key >> PORT_SHIFT for key in remote}


def test_the_capture_spans_several_datagrams_per_dump():
    """Otherwise the tests above would not prove that buffers are stitched correctly."""
    world = recording.load(FIXTURES / "world")
    chunks = world[request_named(world, f"legacy-states-{netlink.CONNECTIONS_MASK:04x}.bin")]
    assert len(chunks) >= 3 and sum(length for length, _ in chunks) > 32 * 1024


def test_clients_from_high_source_ports_count_inbound_only(monkeypatch):
    """62001 and 63000 are above the ephemeral range, 1500 below it: still clients of 8443."""
    replay(monkeypatch)
    result = netlink.scan(ephemeral=EPHEMERAL)
    established = STATE_NUMBER["ESTABLISHED"]
    local, _, _ = truth()
    assert result.local[8443 << PORT_SHIFT | established] == local[8443 << PORT_SHIFT | established]
    for source in (62001, 63000, 1500):
        assert result.remote.get(source << PORT_SHIFT | established) is None, source  # the server side
        assert result.local[source << PORT_SHIFT | established] == 1, source  # the client side
    assert result.remote[8443 << PORT_SHIFT | established] == 253  # 250 + 3 client sides, outbound


def test_a_remembered_port_keeps_its_connections_out_of_the_remote_tally(monkeypatch):
    """4444 stopped listening under 3 live connections: without memory their server sides look
    outbound (to the clients' ports); remembered, they are inbound."""
    replay(monkeypatch)
    forgetting = netlink.scan()
    remembering = netlink.scan(remembered=[4444])
    local, remote, totals = truth(remembered=[4444])
    assert dict(remembering.local) == local == dict(forgetting.local)
    assert dict(remembering.remote) == remote
    assert remembering.totals == forgetting.totals == totals
    leaked = Counter(forgetting.remote)
    leaked.subtract(remembering.remote)
    assert sum(leaked.values()) == 3


def test_the_ephemeral_sieve_drops_only_local_ports_nobody_asks_for(monkeypatch):
    replay(monkeypatch)
    sieved = netlink.scan(remembered=[4444], ephemeral=EPHEMERAL)
    local, remote, totals = truth(remembered=[4444])
    inbound = set(EXPECTED["listening_ports"]) | {4444}
    low, high = EPHEMERAL
    assert sieved.totals == totals
    assert dict(sieved.remote) == remote  # never sieved
    for key, count in local.items():
        port = key >> PORT_SHIFT
        if port in inbound or not low <= port <= high:
            assert sieved.local.get(key) == count, port
    assert all(local[key] == count for key, count in sieved.local.items())
    assert len(sieved.local) < len(local)


def test_listeners_in_full(monkeypatch):
    replay(monkeypatch)
    listeners = netlink.scan().listeners
    seen = Counter((l.port, l.family, l.address) for l in listeners)
    assert seen[(9090, 6, "::ffff:127.0.0.1")] == 1  # v4-mapped, served to IPv4 clients
    assert seen[(443, 4, "127.0.0.1")] == 3  # SO_REUSEPORT: three sockets, each counted
    assert seen[(8080, 4, "0.0.0.0")] == seen[(8080, 6, "::")] == 1
    assert (4444, 4, "127.0.0.1") not in seen
    assert sorted({port for port, _, _ in seen}) == EXPECTED["listening_ports"]
    by_port = {l.port: l for l in listeners}
    assert (by_port[7070].queue, by_port[7070].backlog) == (3, 5)
    assert (by_port[3333].queue, by_port[3333].backlog) == (1, 0)
    assert all(l.uid == EXPECTED["uid"] and l.pid is None and l.inode > 0 for l in listeners)


def test_a_refused_dump_is_an_error(monkeypatch):
    replay(monkeypatch, "eperm")
    with pytest.raises(ScanError, match=r"refused the dump \(errno 1, Operation not permitted\)"):
        netlink.scan()


def test_a_legacy_dump_cut_short_falls_back_to_per_family_dumps(monkeypatch):
    replayer = replay(monkeypatch, "done-error-legacy")
    result = netlink.scan()
    local, remote, totals = truth()
    assert (dict(result.local), dict(result.remote), result.totals) == (local, remote, totals)
    assert result.peers == peer_truth()
    names = [recording.name_of(request) for request in replayer.requests]
    assert names[2:] == ["legacy-states-1bfe.bin", "v2-inet-states-1bfe.bin", "v2-inet6-states-1bfe.bin"]


def test_a_dump_cut_short_is_an_error_not_a_partial_count(monkeypatch):
    replay(monkeypatch, "done-error")
    with pytest.raises(ScanError, match=r"cut the sock_diag dump short \(errno 105"):
        netlink.scan()
    with pytest.raises(ScanError, match="cut the sock_diag dump short"):
        netlink.scan(legacy=False)


def test_a_truncated_datagram_is_an_error(monkeypatch):
    replay(monkeypatch, "truncated")
    with pytest.raises(ScanError, match=r"a 69632-byte dump message did not fit the 65536-byte buffer"):
        netlink.scan()


def test_a_socket_closed_mid_dump_is_an_error(monkeypatch):
    def drop_the_end(world):
        request = request_named(world, "v2-inet6-states-0400.bin")
        world[request] = world[request][:-1] if len(world[request]) > 1 else []
    replay(monkeypatch, edit=drop_the_end)
    with pytest.raises(ScanError, match="closed the sock_diag socket mid-dump"):
        netlink.scan()


def test_an_unknown_message_type_is_an_error(monkeypatch):
    def odd_message(world):
        request = request_named(world, "v2-inet6-states-0400.bin")
        message = struct.pack("<IHHII", 16, 0x42, 0, 1, 0)
        world[request] = [(len(message), message)]
    replay(monkeypatch, edit=odd_message)
    with pytest.raises(ScanError, match="unexpected message type 66"):
        netlink.scan()


def test_an_old_kernel_done_without_payload_ends_the_dump(monkeypatch):
    """An NLMSG_DONE without the status int (a bare header) has no error to report."""
    def bare_done(world):
        request = request_named(world, "v2-inet6-states-0400.bin")
        message = struct.pack("<IHHII", 16, netlink.NLMSG_DONE, 2, 1, 0)
        world[request] = [(len(message), message)]
    replay(monkeypatch, edit=bare_done)
    result = netlink.scan()
    assert {l.family for l in result.listeners} == {4}


def test_records_of_mixed_headers_count_the_same(monkeypatch):
    """A header that differs (flags) makes a buffer non-uniform: gathered, it counts the same."""
    def mixed(world):
        request = request_named(world, "legacy-states-1bfe.bin")
        length, data = world[request][0]
        stride = (struct.unpack_from("<I", data, 0)[0] + 3) & ~3
        data = bytearray(data)
        struct.pack_into("<H", data, stride + 6, 0x0002 | 0x0040)  # NLM_F_MULTI | another flag
        world[request] = [(length, bytes(data))] + world[request][1:]
    replay(monkeypatch, edit=mixed)
    result = netlink.scan()
    local, remote, totals = truth()
    assert (dict(result.local), dict(result.remote), result.totals) == (local, remote, totals)
    assert result.peers == peer_truth()


def test_slicing_counts_like_walking_record_by_record(monkeypatch):
    """The capture mixes TIME_WAIT and full-socket records in the same datagrams: the columns
    (`_Slicer`) must give what the per-record walker gives, and must be what ran."""
    replay(monkeypatch)
    sliced = []
    slice_buffer = netlink._Slicer._slice
    monkeypatch.setattr(netlink._Slicer, "_slice", lambda self, *buffer: sliced.append(slice_buffer(self, *buffer)) or sliced[-1])
    columns = netlink.scan(remembered=[4444], ephemeral=EPHEMERAL)
    assert sliced and None not in sliced
    monkeypatch.setattr(netlink._Slicer, "_slice", lambda self, *buffer: None)
    walked = netlink.scan(remembered=[4444], ephemeral=EPHEMERAL)
    assert (dict(columns.local), dict(columns.remote), columns.totals) == (dict(walked.local), dict(walked.remote), walked.totals)
    local, remote, totals = truth(remembered=[4444])
    assert dict(columns.remote) == remote and columns.totals == totals
    assert columns.peers == walked.peers == peer_truth(remembered=[4444])


@pytest.mark.parametrize("sliced", [True, False], ids=["columns", "record-by-record"])
def test_an_ipv6_pair_is_never_merged_with_the_ipv4_pair_of_the_same_bytes(monkeypatch, sliced):
    """IPv4 addresses sit in the first 4 of 16 address bytes, the rest zero: `7f00:1::` is
    127.0.0.1's bytes. One client-side record to 8443 (127.0.0.1 -> 127.0.0.1) relabelled IPv6
    is another address pair, so 8443's busiest pair loses it: 252, not 253."""
    def relabelled(world):
        request = request_named(world, "legacy-states-1bfe.bin")
        inbound = set(EXPECTED["listening_ports"])
        for index, (length, data) in enumerate(world[request]):
            offset = 0
            while offset < length:
                message_length, message_type = struct.unpack_from("<IH", data, offset)
                if message_type != netlink.TCPDIAG_GETSOCK:
                    break
                family, _, sport, dport = struct.unpack_from("!BB2xHH", data, offset + 16)
                if dport == 8443 and sport not in inbound:
                    data = bytearray(data)
                    data[offset + 16] = socket.AF_INET6
                    world[request][index] = (length, bytes(data))
                    return
                offset += message_length
        pytest.fail("no client side of 8443 in the capture")
    replay(monkeypatch, edit=relabelled)
    if not sliced:
        monkeypatch.setattr(netlink._Slicer, "_slice", lambda self, *buffer: None)
    result = netlink.scan()
    assert result.peers[8443] == 252
    assert result.remote[8443 << PORT_SHIFT | STATE_NUMBER["ESTABLISHED"]] == 253


def test_a_record_header_inside_a_payload_is_walked_not_miscounted(monkeypatch):
    """A peer picks its IPv6 address: written as a short record's header prefix into a full
    record's destination address, it must not shift the columns (the buffer is walked instead)."""
    def forged(world):
        request = request_named(world, "legacy-states-1bfe.bin")
        chunks = list(world[request])
        for index, (length, data) in enumerate(chunks):
            lengths, offset = set(), 0
            while offset < length:
                message_length, message_type = struct.unpack_from("<IH", data, offset)
                if message_type != netlink.TCPDIAG_GETSOCK:
                    break
                lengths.add(message_length)
                offset += message_length
            if len(lengths) > 1:
                break
        else:
            pytest.fail("no datagram with records of two lengths in the capture")
        short, long = min(lengths), max(lengths)
        data = bytearray(data)
        offset = 0
        while struct.unpack_from("<I", data, offset)[0] != long:
            offset += struct.unpack_from("<I", data, offset)[0]
        prefix = struct.pack("<I", short) + bytes(data[4:12])
        data[offset + 40 : offset + 52] = prefix  # inside id.idiag_dst
        chunks[index] = (length, bytes(data))
        world[request] = chunks
    replayer = replay(monkeypatch, edit=forged)
    walked = []
    walk = netlink._Walker.walk
    monkeypatch.setattr(netlink._Walker, "walk", lambda self, view, length, offset=0:
                        walked.append((length, offset)) or walk(self, view, length, offset))
    result = netlink.scan()
    local, remote, totals = truth()
    assert (dict(result.local), dict(result.remote), result.totals) == (local, remote, totals)
    assert result.peers == peer_truth(world=replayer.recorded)
    assert any(length > 1000 and offset == 0 for length, offset in walked)  # the forged datagram, whole


def test_big_endian_hosts_are_refused(monkeypatch):
    monkeypatch.setattr(netlink.sys, "byteorder", "big")
    with pytest.raises(ScanError, match="little-endian"):
        netlink.scan()


def test_no_sock_diag_socket_is_an_error(monkeypatch):
    def refuse(*arguments):
        raise OSError(93, "Protocol not supported")
    monkeypatch.setattr(netlink.socket, "socket", refuse)
    with pytest.raises(ScanError, match="cannot open a sock_diag socket"):
        netlink.scan()


def test_an_os_error_mid_scan_is_a_scan_error(monkeypatch):
    replayer = replay(monkeypatch)

    def fail(self, request):
        raise OSError(105, "No buffer space available")
    monkeypatch.setattr(replayer, "send", fail)
    with pytest.raises(ScanError, match="netlink: .*No buffer space"):
        netlink.scan()


def test_the_chooser_uses_netlink_then_falls_back_to_procfs(monkeypatch):
    replay(monkeypatch)
    assert scan(source="netlink", remembered=[4444]).remote == netlink.scan(remembered=[4444]).remote
    replay(monkeypatch, "eperm")
    monkeypatch.setattr(procfs, "PROCFS_PATH", str(FIXTURES.parent / "procfs" / "world"))
    assert scan().source == "procfs"
    with pytest.raises(ScanError, match="refused"):
        scan("netlink")
