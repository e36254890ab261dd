"""Private network namespaces for tests: the test process itself moves into a fresh one.

`unshare(CLONE_NEWNET)` gives this (single-threaded) process an empty namespace with only `lo`;
child processes (the `tcp-lld` CLI, `ss`) inherit it. `setns` brings us back afterwards. Needs root.
"""

import contextlib
import ctypes
import os
import subprocess
from typing import Iterator

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


@contextlib.contextmanager
def private_network_namespace() -> Iterator[int]:
    """Run the body in a new network namespace with `lo` up; yields the namespace's inode."""
    original = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            yield os.stat("/proc/self/ns/net").st_ino
        finally:
            _check(_libc.setns(original, CLONE_NEWNET), "setns(original)")
    finally:
        os.close(original)


class KeptNamespace:
    """A private network namespace that outlives a `with` block: sockets made inside it stay in
    it, and tests step in (`entered`) for their own duration only. A module-scoped fixture that
    moved the whole process into its namespace would leak it into every test set up after it, in
    whatever order the tests run."""

    def __init__(self) -> None:
        original = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            try:
                subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
                self.descriptor = os.open("/proc/self/ns/net", os.O_RDONLY)
                self.inode = os.fstat(self.descriptor).st_ino
            finally:
                _check(_libc.setns(original, CLONE_NEWNET), "setns(original)")
        finally:
            os.close(original)

    @contextlib.contextmanager
    def entered(self) -> Iterator[int]:
        original = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            _check(_libc.setns(self.descriptor, CLONE_NEWNET), "setns(kept)")
            try:
                yield self.inode
            finally:
                _check(_libc.setns(original, CLONE_NEWNET), "setns(original)")
        finally:
            os.close(original)

    def close(self) -> None:
        os.close(self.descriptor)
