"""The /proc/net/tcp{,6} parser against captured tables, good and deliberately broken."""

import json
from pathlib import Path

import pytest

from tcp_lld.errors import ParseError, ScanError
from tcp_lld.scan import procfs
from tcp_lld.snapshot import counts_for
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
