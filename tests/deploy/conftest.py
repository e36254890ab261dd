"""Fixtures of the deploy tests: the packages built from this checkout and the Debian roots of
debroots.py, made once per session in a scratch folder that is deleted at its end."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from debroots import REPO, ROOTS, Root, copy_root, drop_root, mounted_under, say  # noqa: E402


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """One scratch folder for this session's roots and packages, deleted at the end."""
    path = Path(tempfile.mkdtemp(prefix="tcp-lld-deploy-", dir="/var/tmp"))
    yield path
    stuck = mounted_under(path)
    if stuck:  # never rm -rf through a mount
        raise RuntimeError(f"still mounted, {path} kept: {stuck}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


@pytest.fixture(scope="session")
def debs(workdir: Path, pytestconfig: pytest.Config) -> Dict[str, Path]:
    """The package as scripts/build-deb makes it from this checkout, and a newer one for upgrades."""
    out = workdir / "debs"
    built: Dict[str, Path] = {}
    version = re.search(r'^__version__ = "([^"]+)"$', (REPO / "tcp_lld" / "__init__.py").read_text(), re.M)[1]
    for name, extra in (("current", []), ("upgrade", ["--version", f"{version}+upgrade1"])):
        t0 = time.monotonic()
        done = subprocess.run(["bash", str(REPO / "scripts" / "build-deb"), "--out", str(out), *extra],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        built[name] = Path(done.stdout.split()[0])
        assert built[name].is_file(), done.stdout
        say(pytestconfig, f"\nbuild-deb ({name}): {built[name].name}, {built[name].stat().st_size} bytes, "
                           f"{time.monotonic() - t0:.1f} s")
    return built


@pytest.fixture(scope="session")
def pristine(workdir: Path, pytestconfig: pytest.Config) -> Iterator[Callable[[str], Path]]:
    """name -> a minbase root (ROOTS) made by mmdebstrap this session. The first call starts every
    root's mmdebstrap at once (they mostly wait on downloads and dpkg), later calls wait for one."""
    if not shutil.which("mmdebstrap"):
        pytest.fail("mmdebstrap missing: run `bash scripts/test` (it installs it) or apt-get install mmdebstrap")
    running: Dict[str, Tuple[subprocess.Popen, float]] = {}
    made: Dict[str, Path] = {}

    def start(name: str) -> None:
        suite, include, later = ROOTS[name]
        log = open(workdir / f"mmdebstrap-{name}.log", "w")
        command = [
            "mmdebstrap", "--variant=minbase", f"--include={','.join(include)}",
            "--skip=cleanup/apt/lists,cleanup/apt/cache",
            # no maintainer script starts a daemon in these roots
            "--customize-hook=printf '#!/bin/sh\\nexit 101\\n' > \"$1/usr/sbin/policy-rc.d\"; "
            "chmod 755 \"$1/usr/sbin/policy-rc.d\"",
            # apt's cache: only what the tests install later (with recommends, as an admin's apt would)
            "--customize-hook=chroot \"$1\" apt-get clean",
            "--customize-hook=chroot \"$1\" apt-get install --download-only -y -q "
            f"-o APT::Install-Recommends=true {' '.join(later)}",
            suite, str(workdir / f"pristine-{name}")]
        running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL),
                          time.monotonic())

    def make(name: str) -> Path:
        if name in made:
            return made[name]
        if not running:
            for each in ROOTS:
                start(each)
        process, t0 = running[name]
        status = process.wait(timeout=600)
        log = (workdir / f"mmdebstrap-{name}.log").read_text()
        if status != 0:
            pytest.fail(f"mmdebstrap {name} failed (exit {status}):\n{log[-4000:]}")
        say(pytestconfig, f"\nmmdebstrap {name}: done {time.monotonic() - t0:.1f} s after its start")
        made[name] = workdir / f"pristine-{name}"
        return made[name]

    yield make
    for process, _ in running.values():  # one no test asked for: let it finish and unmount
        process.wait(timeout=600)


@pytest.fixture
def fresh_root(pristine: Callable[[str], Path], workdir: Path) -> Iterator[Callable[[str], Root]]:
    """name -> a private copy of that pristine root (deleted after the test)."""
    copies: List[Root] = []

    def copy(name: str) -> Root:
        copies.append(copy_root(pristine(name), workdir, name))
        return copies[-1]

    yield copy
    for root in copies:
        drop_root(root)
