"""Shared fixtures: a private network namespace holding a `World` of known sockets, and the CLI.

Tests that need root (network namespaces, other users' files) carry the `root` marker, or use the
`world` fixture; without root they are skipped with that reason, and everything else runs.
"""

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

    def run(self, *arguments: str, env: "dict[str, str] | None" = None,
            services: "Path | None" = None) -> subprocess.CompletedProcess:
        """`services`: a file bind-mounted over /etc/services for this call only (in a private
        mount namespace), so that service names come from the test, not from the host."""
        environment = {**os.environ, "TCP_LLD_CACHE_DIR": str(self.cache_dir), **(env or {})}
        environment.pop("XDG_RUNTIME_DIR", None)
        command = [sys.executable, "-m", "tcp_lld", *arguments]
        if services is not None:
            command = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                       'mount --bind "$0" /etc/services && exec "$@"', str(services), *command]
        return subprocess.run(command, capture_output=True, text=True, env=environment, cwd=REPO, timeout=60)

    def ok(self, *arguments: str, services: "Path | None" = None) -> str:
        """stdout of a successful call; fails the test on any stderr or non-zero exit."""
        done = self.run(*arguments, services=services)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr == "", done.stderr
        return done.stdout

    def json(self, *arguments: str, services: "Path | None" = None) -> dict:
        return json.loads(self.ok(*arguments, services=services))


IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: "list[pytest.Item]") -> None:
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, other users' files)")
    for item in items:
        if "root" in item.keywords or "world" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


#: Fixtures whose value lives in a private namespace of its own (`.namespace`, a KeptNamespace).
NAMESPACED_FIXTURES = ("world", "own_world", "population")


@pytest.fixture(autouse=True)
def inside_the_test_namespace(request: pytest.FixtureRequest) -> Iterator[None]:
    """Run each test inside the namespace of the namespaced fixture it uses, and only the test."""
    used = [name for name in NAMESPACED_FIXTURES if name in request.fixturenames]
    if not used:
        yield
        return
    with request.getfixturevalue(used[0]).namespace.entered():
        yield


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """The known sockets, alive for a whole test module, inside a private network namespace."""
    with living_world() as built:
        yield built


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cache = tmp_path / "cache"
    return Cli(cache)
