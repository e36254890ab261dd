"""Debian roots for the deploy tests (the fixtures that make them are in conftest.py): minbase
Debian made by mmdebstrap once per test session, with Debian's zabbix-agent installed and the
packages tcp-lld (and the Ansible test) will need sitting in apt's cache, so they install with no
network at all. Each test works on its own copy; every root is
deleted when the session ends (nothing is reused from an earlier run).

Commands run in a root through `unshare --mount` (a private /proc mount that disappears with the
command) and `chroot`; `offline=True` adds `--net`: a network namespace with no interface up, so
neither Debian's mirror nor the Python package index can be reached.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mmdebstrap, chroot, namespaces")

#: The roots: name -> (Debian suite, installed beside minbase, in apt's cache for later offline
#: installs with their recommends). Clean ones for the package; one with Ansible for the role.
ROOTS = {
    "bookworm": ("bookworm", ["zabbix-agent"], ["python3", "python3-psutil"]),
    "trixie": ("trixie", ["zabbix-agent"], ["python3", "python3-psutil"]),
    "bookworm-ansible": ("bookworm", ["zabbix-agent", "zabbix-agent2", "ansible-core", "python3-apt"],
                         ["python3-psutil"]),
}
#: Paths that change by themselves or are apt's and dpkg's own state: not a package's leftovers.
STATE = ("/var/lib/dpkg", "/var/lib/apt", "/var/cache/apt", "/var/cache/debconf", "/var/cache/ldconfig",
         "/var/log", "/tmp", "/var/tmp", "/etc/ld.so.cache", "/proc", "/dev", "/run")
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
              "DEBIAN_FRONTEND": "noninteractive"}


def say(config: pytest.Config, text: str) -> None:
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture:
        with capture.global_and_fixture_disabled():
            print(text, flush=True)


class Root:
    """A Debian tree to chroot into."""

    def __init__(self, path: Path, suite: str) -> None:
        self.path, self.suite = path, suite

    def run(self, *command: str, user: str = "root", offline: bool = False, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess:
        wrapper = ["unshare", "--mount", "--fork"] + (["--net"] if offline else [])
        script = 'mount -t proc proc "$0/proc" && root=$0 user=$1 && shift && exec chroot --userspec="$user" "$root" "$@"'
        done = subprocess.run([*wrapper, "sh", "-c", script, str(self.path), f"{user}:{user}", *command],
                              capture_output=True, text=True, env=CHROOT_ENV, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} in {self.suite} root: exit {done.returncode}\n"
                                 f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return done

    def sh(self, script: str, **options) -> str:
        return self.run("sh", "-ec", script, **options).stdout

    def put(self, source: Path, inside: str) -> str:
        """Copy a file into the root; returns its path as seen inside."""
        target = self.path / inside.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        return inside

    def paths(self) -> set:
        """Every path of the tree, apt's and dpkg's state aside (for 'leaves nothing behind')."""
        listing = self.run("find", "/", "-xdev", *[arg for path in STATE for arg in ("-path", path, "-prune", "-o")],
                           "-print").stdout.split("\n")
        return {path for path in listing if path and path != "/"}


def mounted_under(path: Path) -> List[str]:
    with open("/proc/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(str(path) + "/")]


def copy_root(source: Path, workdir: Path, name: str) -> Root:
    """A private copy of a pristine root, in this session's scratch folder."""
    target = Path(tempfile.mkdtemp(prefix=f"root-{name}-", dir=workdir))
    subprocess.run(["cp", "-a", "--reflink=auto", f"{source}/.", str(target)], check=True)
    return Root(target, ROOTS[name][0])


def drop_root(root: Root) -> None:
    if not mounted_under(root.path):
        subprocess.run(["rm", "-rf", "--one-file-system", str(root.path)], check=False)
