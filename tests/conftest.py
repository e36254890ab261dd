"""Shared fixtures: a private network namespace holding a `World` of known sockets, and the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from world import World, living_world  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


class Cli:
    """Runs `python -m tcp_lld` as the agent would, with its own cache directory."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir

    def run(self, *arguments: str, env: "dict[str, str] | None" = None) -> subprocess.CompletedProcess:
        environment = {**os.environ, "TCP_LLD_CACHE_DIR": str(self.cache_dir), **(env or {})}
        environment.pop("XDG_RUNTIME_DIR", None)
        return subprocess.run(
            [sys.executable, "-m", "tcp_lld", *arguments],
            capture_output=True, text=True, env=environment, cwd=REPO, timeout=60,
        )

    def ok(self, *arguments: str) -> str:
        """stdout of a successful call; fails the test on any stderr or non-zero exit."""
        done = self.run(*arguments)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr == "", done.stderr
        return done.stdout

    def json(self, *arguments: str) -> dict:
        return json.loads(self.ok(*arguments))


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """The known sockets, alive for a whole test module, inside a private network namespace."""
    with living_world() as built:
        yield built


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cache = tmp_path / "cache"
    return Cli(cache)
