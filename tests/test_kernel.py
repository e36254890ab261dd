"""tcp_lld.kernel on captured /proc trees (tests/fixtures/kernel/, see capture.py there): no root.

The expected values come from a second, deliberately naive reading of the same files
(`dict(zip(header, values))`), so the tests check the parser against the files, not against itself.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tcp_lld import kernel

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kernel"
SECTIONS = ["TcpExt", "Tcp", "sockstat", "sockstat6", "sysctl", "derived", "errors"]


def document(tree: "Path | str") -> dict:
    text = kernel.kernel_json(str(tree))
    assert text.isascii() and " " not in text, text  # compact, fixed ASCII keys
    return json.loads(text)


def naive_pairs(path: Path, prefix: str) -> dict:
    lines = [line.split() for line in path.read_text().splitlines() if line.startswith(prefix + ":")]
    return {name: int(value) for name, value in zip(lines[0][1:], lines[1][1:])}


def naive_sockstat(path: Path, prefix: str) -> dict:
    words = next(line.split() for line in path.read_text().splitlines() if line.startswith(prefix + ":"))
    return {name: int(value) for name, value in zip(words[1::2], words[2::2])}


def naive_sysctl(tree: Path, name: str):
    numbers = [int(word) for word in (tree / "sys" / Path(*name.split("."))).read_text().split()]
    return numbers[0] if len(numbers) == 1 else numbers


def test_host_capture_every_field_equals_the_files():
    tree = FIXTURES / "host"
    found = document(tree)
    assert list(found) == SECTIONS
    assert found["errors"] == 0
    netstat = naive_pairs(tree / "net/netstat", "TcpExt")
    assert found["TcpExt"] == {name: netstat[name] for name in kernel.TCPEXT_FIELDS}
    snmp = naive_pairs(tree / "net/snmp", "Tcp")
    assert found["Tcp"] == {name: snmp[name] for name in kernel.TCP_FIELDS}
    assert found["sockstat"] == naive_sockstat(tree / "net/sockstat", "TCP")
    assert found["sockstat6"] == naive_sockstat(tree / "net/sockstat6", "TCP6")
    assert found["sysctl"] == {name: naive_sysctl(tree, name) for name, _ in kernel.SYSCTLS}


def test_host_capture_derived_values():
    found = document(FIXTURES / "host")
    low, high = found["sysctl"]["net.ipv4.ip_local_port_range"]
    derived = found["derived"]
    assert derived["ephemeral_ports"] == high - low + 1
    tw, limit = found["sockstat"]["tw"], found["sysctl"]["net.ipv4.tcp_max_tw_buckets"]
    assert derived["tw_pct"] == round(100 * tw / limit, 1)
    assert derived["mem_pct"] == round(100 * found["sockstat"]["mem"] / found["sysctl"]["net.ipv4.tcp_mem"][2], 1)
    assert derived["orphan_pct"] is not None and derived["mem_pressure_pct"] is not None


def test_private_namespace_has_no_host_only_limits():
    """tcp_mem and tcp_max_orphans exist only in the initial namespace: null, and not an error."""
    found = document(FIXTURES / "namespace")
    assert found["errors"] == 0
    assert found["sysctl"]["net.ipv4.tcp_mem"] is None
    assert found["sysctl"]["net.ipv4.tcp_max_orphans"] is None
    assert found["derived"]["mem_pct"] is None and found["derived"]["orphan_pct"] is None
    assert found["derived"]["tw_pct"] == 0.0
    # a fresh namespace: its own counters are zero, but alloc and mem are the host's
    assert set(found["TcpExt"].values()) == {0} and found["Tcp"]["ActiveOpens"] == 0
    assert found["sockstat"]["inuse"] == 0 and found["sockstat"]["tw"] == 0
    assert found["sockstat"]["alloc"] > 0


def test_missing_files_leave_their_fields_null():
    found = document(FIXTURES / "missing")
    host = document(FIXTURES / "host")
    assert set(found["TcpExt"].values()) == {None}
    assert found["sockstat6"] == {"inuse": None}
    assert found["sysctl"]["net.core.somaxconn"] is None
    assert found["errors"] == 2  # netstat and sockstat6; a missing sysctl is not an error
    assert found["Tcp"] == host["Tcp"] and found["sockstat"] == host["sockstat"]


def test_malformed_lines_cost_only_their_fields():
    found = document(FIXTURES / "malformed")
    host = document(FIXTURES / "host")
    assert found["TcpExt"]["ListenOverflows"] is None  # the values line was cut before it
    assert found["TcpExt"]["SyncookiesSent"] == host["TcpExt"]["SyncookiesSent"]
    assert found["Tcp"]["RetransSegs"] is None and found["Tcp"]["OutSegs"] == host["Tcp"]["OutSegs"]
    assert found["sockstat"]["mem"] is None and found["sockstat"]["tw"] == host["sockstat"]["tw"]
    assert found["sysctl"]["net.ipv4.ip_local_port_range"] is None
    assert found["derived"]["ephemeral_ports"] is None and found["derived"]["mem_pct"] is None
    assert found["errors"] == 4  # one per broken file


def test_no_proc_at_all_still_gives_every_key(tmp_path):
    found = document(tmp_path / "nothing-here")
    host = document(FIXTURES / "host")
    assert {section: list(found[section]) for section in SECTIONS[:-1]} == \
        {section: list(host[section]) for section in SECTIONS[:-1]}
    assert all(value is None for section in SECTIONS[:-1] for value in found[section].values())
    assert found["errors"] == 4  # the four /proc/net files


def test_fields_are_found_by_name_not_position(tmp_path):
    """A kernel that reorders counters or adds new ones is read right; keys never come from files."""
    tree = tmp_path / "proc"
    shutil.copytree(FIXTURES / "host", tree)
    netstat = tree / "net/netstat"
    lines = [line.split() for line in netstat.read_text().splitlines()]
    header, values = lines[0], lines[1]
    pairs = list(zip(header[1:], values[1:]))[::-1] + [("SomeFutureCounter", "5"), ("Bad Key\"", "1")]
    lines[0] = ["TcpExt:"] + [name for name, _ in pairs]
    lines[1] = ["TcpExt:"] + [value for _, value in pairs]
    netstat.write_text("\n".join(" ".join(words) for words in lines) + "\n")
    found = document(tree)
    assert found["TcpExt"] == document(FIXTURES / "host")["TcpExt"]
    assert "SomeFutureCounter" not in found["TcpExt"]


@pytest.mark.parametrize("content", [b"", b"\xff\xfe garbage\n", b"TcpExt:\n", b"TcpExt: A\nTcpExt: 1 2 3\n"])
def test_garbage_never_raises(tmp_path, content):
    tree = tmp_path / "proc"
    shutil.copytree(FIXTURES / "host", tree)
    for name in ("net/netstat", "net/snmp", "net/sockstat", "sys/net/ipv4/tcp_mem"):
        (tree / name).write_bytes(content)
    found = document(tree)
    assert found["TcpExt"]["ListenOverflows"] is None and found["sysctl"]["net.ipv4.tcp_mem"] is None


def test_a_directory_where_a_file_should_be(tmp_path):
    tree = tmp_path / "proc"
    shutil.copytree(FIXTURES / "host", tree)
    (tree / "net/snmp").unlink()
    (tree / "net/snmp").mkdir()
    found = document(tree)
    assert set(found["Tcp"].values()) == {None} and found["errors"] == 1


def test_limits_drive_the_percentages(tmp_path):
    tree = tmp_path / "proc"
    shutil.copytree(FIXTURES / "host", tree)
    (tree / "net/sockstat").write_text("TCP: inuse 9 orphan 3 tw 150 alloc 9 mem 750\n")
    (tree / "sys/net/ipv4/tcp_max_tw_buckets").write_text("200\n")
    (tree / "sys/net/ipv4/tcp_max_orphans").write_text("0\n")  # a zero limit: no percentage
    (tree / "sys/net/ipv4/tcp_mem").write_text("100\t500\t1000\n")
    (tree / "sys/net/ipv4/ip_local_port_range").write_text("40000\t40009\n")
    derived = document(tree)["derived"]
    assert derived == {"ephemeral_ports": 10, "tw_pct": 75.0, "orphan_pct": None,
                       "mem_pct": 75.0, "mem_pressure_pct": 150.0}


def test_procfs_path_default_is_the_module_constant(monkeypatch):
    monkeypatch.setattr(kernel, "PROCFS_PATH", str(FIXTURES / "namespace"))
    assert kernel.kernel_json() == kernel.kernel_json(str(FIXTURES / "namespace"))


def test_a_bug_gives_the_null_shape_not_an_exception(monkeypatch):
    host = document(FIXTURES / "host")

    def broken(procfs_path=""):
        raise RuntimeError("bug")

    monkeypatch.setattr(kernel, "collect", broken)
    found = json.loads(kernel.kernel_json(str(FIXTURES / "host")))
    assert found["errors"] == -1 and found["sysctl"]["net.core.somaxconn"] is None
    # the same keys as a good reading, every value null
    assert {section: list(found[section]) for section in SECTIONS[:-1]} == \
        {section: list(host[section]) for section in SECTIONS[:-1]}
    assert all(value is None for section in SECTIONS[:-1] for value in found[section].values())


def test_embeds_as_a_member_of_the_master_document():
    master = '{"ports":{},"kernel":' + kernel.kernel_json(str(FIXTURES / "host")) + "}"
    assert json.loads(master)["kernel"]["Tcp"]["CurrEstab"] >= 0


def test_imports_nothing_but_itself_at_run_time():
    """No json, no typing on the scan path: the module adds only itself to sys.modules."""
    code = (
        "import sys, os, tcp_lld; before = set(sys.modules); import tcp_lld.kernel as k; "
        f"k.kernel_json({str(FIXTURES / 'host')!r}); print(sorted(set(sys.modules) - before - {{'__future__'}}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['tcp_lld.kernel']", done.stdout


def test_a_file_without_our_table_is_an_error(tmp_path):
    tree = tmp_path / "proc"
    shutil.copytree(FIXTURES / "host", tree)
    netstat = tree / "net/netstat"
    netstat.write_text("".join(line for line in netstat.read_text().splitlines(True) if not line.startswith("TcpExt:")))
    found = document(tree)
    assert set(found["TcpExt"].values()) == {None} and found["errors"] == 1
