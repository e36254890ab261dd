"""The /proc/net/tcp{,6} parser against captured tables, good and deliberately broken."""

import json
from pathlib import Path

import pytest

from tcp_lld.errors import ParseError, ScanError
from tcp_lld.scan import procfs
from tcp_lld.scan.result import PORT_SHIFT, counts_for
from world import named

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "procfs"


def test_captured_world_parses_to_the_known_counts():
    expected = json.loads((FIXTURES / "world.expected.json").read_text())
    result = procfs.scan(str(FIXTURES / "world"))
    for port, counts in expected["local"].items():
        assert named(counts_for(result.local, int(port))) == counts, port
    for port, counts in expected["remote"].items():
        assert named(counts_for(result.remote, int(port))) == counts, port
    assert named(result.totals) == expected["totals"]


def test_addresses_are_decoded_from_host_byte_order():
    listeners = {(l.port, l.address) for l in procfs.scan(str(FIXTURES / "world")).listeners}
    assert (3306, "127.0.0.1") in listeners
    assert (6379, "::1") in listeners
    assert (8080, "::") in listeners


def test_a_missing_tcp6_means_ipv4_only():
    result = procfs.scan(str(FIXTURES / "ipv4-only"))
    assert {l.family for l in result.listeners} == {4}


@pytest.mark.parametrize(
    "tree, line, reason",
    [
        ("bad-state", 3, "malformed socket line (invalid literal for int() with base 16: 'ZZ')"),
        ("truncated-line", 4, "malformed socket line"),
        ("no-header", 1, "no 'sl local_address ...' header"),
    ],
)
def test_malformed_tables_name_the_file_and_line(tree, line, reason):
    with pytest.raises(ParseError) as raised:
        procfs.scan(str(FIXTURES / tree))
    assert raised.value.path.endswith(f"{tree}/net/tcp")
    assert raised.value.line_number == line
    assert reason in str(raised.value)
    assert isinstance(raised.value, ScanError)


def test_a_missing_table_is_a_scan_error(tmp_path):
    with pytest.raises(ScanError, match="does not exist"):
        procfs.scan(str(tmp_path))


def test_listeners_carry_the_socket_owner_and_no_pid():
    listeners = procfs.listeners(str(FIXTURES / "world"))
    assert len(listeners) == 7
    assert all(l.uid == 0 and l.pid is None and l.inode > 0 and l.backlog is None for l in listeners)


def test_connections_on_inbound_ports_never_count_by_remote_port():
    """The server sides of the world's connections: their remote ports are the clients' ports."""
    result = procfs.scan(str(FIXTURES / "world"))
    listening = {l.port for l in result.listeners}
    client_ports = {key >> PORT_SHIFT for key in result.local} - listening
    assert not client_ports & {key >> PORT_SHIFT for key in result.remote}
    assert sum(result.remote.values()) == sum(
        count for key, count in result.local.items() if key >> PORT_SHIFT not in listening
    )


def test_a_remembered_port_is_inbound_too():
    forgetting = procfs.scan(str(FIXTURES / "world"))
    client_port = min(key >> PORT_SHIFT for key in forgetting.local if key >> PORT_SHIFT > 10000)
    remembering = procfs.scan(str(FIXTURES / "world"), remembered=[client_port])
    assert remembering.local == forgetting.local
    assert sum(forgetting.remote.values()) - sum(remembering.remote.values()) == sum(
        counts_for(forgetting.local, client_port)
    )


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda fields: fields.__setitem__(1, "0100007F:XYZ"), "invalid literal"),
        (lambda fields: fields.__setitem__(1, "7F:0050"), "bad address or port"),
        (lambda fields: fields.__setitem__(7, "root"), "invalid literal"),
        (lambda fields: fields.__delitem__(slice(5, None)), "list index out of range"),
    ],
    ids=["port", "address", "uid", "short"],
)
def test_a_malformed_listen_line_names_its_line(tmp_path, edit, reason):
    lines = (FIXTURES / "world" / "net" / "tcp").read_text().splitlines()
    number = next(i for i, line in enumerate(lines) if line.split()[3:4] == ["0A"])
    fields = lines[number].split()
    edit(fields)
    lines[number] = "   " + " ".join(fields)
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text("\n".join(lines) + "\n")
    with pytest.raises(ParseError, match=reason) as raised:
        procfs.scan(str(tmp_path))
    assert raised.value.line_number == number + 1


def test_an_unreadable_table_is_a_scan_error(tmp_path):
    (tmp_path / "net" / "tcp").mkdir(parents=True)  # a directory: open() fails with EISDIR
    with pytest.raises(ScanError, match="cannot read .*tcp: Is a directory"):
        procfs.scan(str(tmp_path))


def test_lines_out_of_range_are_errors(tmp_path):
    lines = (FIXTURES / "world" / "net" / "tcp").read_text().splitlines()
    fields = lines[-1].split()
    fields[3] = "0D"  # no state 13
    lines[-1] = "   " + " ".join(fields)
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text("\n\n".join(lines) + "\n")  # blank lines are skipped
    with pytest.raises(ParseError, match="unknown state 0D"):
        procfs.scan(str(tmp_path))
