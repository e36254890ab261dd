"""The Debian package: built from this checkout, lintian-clean, installed offline into clean Debian
12 and 13 roots next to Debian's zabbix-agent, answering the agent's keys, upgraded, removed and
purged without leaving anything behind."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from debroots import REPO, ROOT_ONLY, Root, copy_root, drop_root

pytestmark = [ROOT_ONLY, pytest.mark.deploy]

SUITES = ["bookworm", "trixie"]
CONFFILES = ["/etc/zabbix/zabbix_agentd.conf.d/tcp-lld.conf", "/etc/zabbix/zabbix_agentd.d/tcp-lld.conf",
             "/etc/zabbix/zabbix_agent2.d/tcp-lld.conf"]


def agent_test(root: Root, key: str, user: str = "zabbix") -> Tuple[str, str]:
    """(type, value) of `zabbix_agentd -t KEY` in the root, e.g. ('t', '{"ports": ...}')."""
    out = root.run("zabbix_agentd", "-t", key, user=user).stdout
    match = re.match(r"^(\S+)\s+\[(\w)\|(.*)\]\s*$", out, re.S)
    assert match and match[1] == key, out
    return match[2], match[3]


def install(root: Root, deb: Path) -> str:
    """`apt-get install ./tcp-lld_*.deb` as an admin types it, with no network; returns apt's log."""
    root.put(deb, f"/tmp/{deb.name}")
    return root.sh(f"cd /tmp && apt-get install -y -o Dpkg::Use-Pty=0 ./{deb.name} 2>&1", offline=True)


@pytest.fixture(scope="module")
def listener() -> Iterator[int]:
    """A listening socket of this test process (the roots share this network namespace)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@pytest.fixture(scope="module", params=SUITES)
def installed(request, pristine, workdir, debs) -> Iterator[Tuple[Root, str]]:
    """(root, apt's log): tcp-lld installed offline into a copy of the suite's pristine root."""
    root = copy_root(pristine(request.param), workdir, request.param)
    try:
        yield root, install(root, debs["current"])
    finally:
        drop_root(root)


def test_lintian_reports_no_error(debs):
    done = subprocess.run(["lintian", "--pedantic", "--display-info", str(debs["current"])],
                          capture_output=True, text=True, timeout=300)
    findings = [line for line in done.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    print("\n".join(findings) or "lintian: no findings")
    assert not [line for line in findings if line.startswith("E: ")], findings


def test_package_holds_every_module_of_the_checkout(debs):
    listing = subprocess.run(["dpkg-deb", "-c", str(debs["current"])], capture_output=True, text=True,
                             check=True).stdout
    shipped = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    modules = {f"/usr/share/tcp-lld/{path.relative_to(REPO)}" for path in (REPO / "tcp_lld").rglob("*.py")}
    assert modules and modules <= shipped, sorted(modules - shipped)
    assert not [path for path in shipped if "__pycache__" in path or path.endswith(".pyc")]
    assert set(CONFFILES) <= shipped
    conffiles = subprocess.run(["dpkg-deb", "--info", str(debs["current"]), "conffiles"], capture_output=True,
                               text=True, check=True).stdout.split()
    assert sorted(conffiles) == sorted(CONFFILES)
    launcher = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs["current"])], capture_output=True, check=True)
    assert b"#!/usr/bin/python3 -S\n" in launcher.stdout


def test_installs_offline_from_debian_packages_only(installed):
    root, log = installed
    noise = ("Selecting", "Preparing", "Unpacking", "Adding 'diversion", "(Reading database")
    print(f"\n--- apt-get install ./tcp-lld_*.deb in {root.suite}, no network ---")
    print("\n".join(line for line in log.splitlines() if not line.startswith(noise)))
    assert "Setting up tcp-lld" in log, log
    new = re.search(r"The following NEW packages will be installed:\n((?:  .*\n)+)", log)[1].split()
    assert "tcp-lld" in new and "python3-psutil" in new
    # nothing could have come from the Python package index: there is no pip, and no network
    assert root.run("sh", "-c", "command -v pip pip3", check=False).returncode != 0
    assert root.run("python3", "-c", "import pip", check=False).returncode != 0
    assert "python3-orjson" not in new  # tcp-lld writes its JSON itself, on every release


def test_cache_directory_belongs_to_the_agent_user(installed):
    root, _ = installed
    assert root.sh("stat -c '%U %G %a' /var/cache/tcp-lld").split() == ["zabbix", "zabbix", "700"]
    status = root.sh("dpkg-query -W -f='${Status}\\n${Conffiles}\\n' tcp-lld")
    assert status.startswith("install ok installed"), status
    assert all(path in status for path in CONFFILES), status
    compiled = root.sh("ls /usr/share/tcp-lld/tcp_lld/__pycache__")
    assert "cli.cpython-" in compiled, "postinst byte-compiles the modules (py3compile)"


def test_agent_test_mode_answers_the_master_key(installed, listener):
    root, _ = installed
    kind, value = agent_test(root, "tcp.port.stats", user="root")
    document = json.loads(value)
    assert document["ports"][str(listener)]["LISTEN"] == 1
    assert document["meta"]["source"] == "netlink"


def test_keys_answer_as_user_zabbix(installed, listener, debs):
    root, _ = installed
    document = json.loads(agent_test(root, "tcp.port.stats")[1])
    assert document["ports"][str(listener)]["LISTEN"] == 1
    version = subprocess.run(["dpkg-deb", "-f", str(debs["current"]), "Version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert document["meta"]["version"] == version
    assert agent_test(root, f"tcp.port.count[{listener},LISTEN]") == ("t", "1")
    assert int(agent_test(root, "tcp.port.count[all,ALL]")[1]) >= 1
    assert int(agent_test(root, f"tcp.port.count[{listener},ESTABLISHED,in]")[1]) == 0
    # the snapshot went to the package's cache directory, as the agent's user
    assert root.sh("ls /var/cache/tcp-lld", user="zabbix").strip()
    assert root.run("tcp-lld", "--version", user="zabbix").stdout.strip() == f"tcp-lld {version}"


@pytest.mark.parametrize("key", ["tcp.port.discovery", "tcp.port.discovery.outbound"])
def test_discovery_keys_as_user_zabbix(installed, listener, key):
    root, _ = installed
    kind, value = agent_test(root, key)
    rows = json.loads(value)["data"]
    if key == "tcp.port.discovery":
        assert str(listener) in {row["{#PORT}"] for row in rows}


def test_install_over_scripts_install_then_upgrade_keeping_cache_and_edits(fresh_root, debs):
    root = fresh_root("bookworm")
    # a host set up by scripts/install before: its file sits where the package has a conffile
    root.sh(f"echo 'UserParameter=tcp.port.stats,/opt/tcp-lld/bin/tcp-lld stats' > {CONFFILES[0]}")
    install(root, debs["current"])
    assert "/opt/tcp-lld" in root.sh(f"cat {CONFFILES[0]}.scripts-install"), "preinst set it aside"
    assert "/usr/bin/tcp-lld stats" in root.sh(f"cat {CONFFILES[0]}")
    agent_test(root, "tcp.port.stats")
    before = set(root.sh("ls /var/cache/tcp-lld").split())
    assert any(name.startswith("grace-") for name in before), before  # the grace memory
    root.sh(f"echo '# edited by the admin' >> {CONFFILES[0]}")
    log = install(root, debs["upgrade"])
    assert "Unpacking tcp-lld" in log and "over (" in log, log
    assert before <= set(root.sh("ls /var/cache/tcp-lld").split())
    assert "# edited by the admin" in root.sh(f"cat {CONFFILES[0]}")
    assert root.sh("stat -c '%U %a' /var/cache/tcp-lld").split() == ["zabbix", "700"]
    assert agent_test(root, "tcp.port.count[all,ALL]")[0] == "t"


@pytest.mark.parametrize("suite", SUITES)
def test_remove_then_purge_leave_nothing_behind(fresh_root, debs, suite):
    root = fresh_root(suite)
    # Debian's packages tcp-lld depends on first: what they bring is theirs, and they stay
    root.sh("apt-get install -y python3 python3-psutil", offline=True)
    agent_config = root.sh("md5sum /etc/zabbix/zabbix_agentd.conf")
    before = root.paths()
    install(root, debs["current"])
    owned = set(root.sh("dpkg -L tcp-lld").split())
    agent_test(root, "tcp.port.stats")  # as zabbix: fills /var/cache/tcp-lld
    root.sh("apt-get remove -y tcp-lld", offline=True)
    left = root.paths()
    assert root.sh("dpkg-query -W -f='${Status}' tcp-lld") == "deinstall ok config-files"
    assert set(CONFFILES) <= left, "remove keeps the conffiles"
    assert "/var/cache/tcp-lld" in left, "remove keeps the cache (grace memory)"
    programs = {path for path in owned if path.startswith(("/usr/share/tcp-lld/", "/usr/bin/"))}
    assert not programs & left, sorted(programs & left)
    assert not [path for path in left if "__pycache__" in path and "tcp-lld" in path]

    root.sh("apt-get purge -y tcp-lld", offline=True)
    assert root.run("dpkg-query", "-W", "tcp-lld", check=False).returncode != 0, "purged: dpkg forgot it"
    after = root.paths()
    assert after == before, (sorted(after - before), sorted(before - after))
    assert root.sh("md5sum /etc/zabbix/zabbix_agentd.conf") == agent_config
