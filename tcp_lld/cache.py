"""One scan shared by every caller: a per-namespace snapshot file, its lock and its freshness.

The agent runs many pollers at once. Readers of a fresh snapshot only read one file (no lock, no
JSON). When it is stale, callers queue on an flock; the first one scans and replaces the file
atomically, the others wake up, find it fresh and read it, so N concurrent callers cause ONE scan.

The directory must be ours alone (see `atomic`); when no such directory can be had, or the lock
cannot be taken in time, the caller scans for itself rather than fail: a monitor that crashes
because of its cache is worse than one that scans twice.
"""

from __future__ import annotations

import os
import time

from .atomic import ensure_private_directory, is_private, is_private_directory, read_private_file, write_private_file
from .record import Record

TYPE_CHECKING = False  # no `typing` at run time: this module is on the cached path
if TYPE_CHECKING:
    from typing import Callable, Optional

    # (memory file path or None, whether to save it) -> a fresh record
    Producer = Callable[[Optional[str], bool], Record]

DEFAULT_TTL = 20.0
DEFAULT_GRACE = 86400.0
LOCK_WAIT = 2.0  # below the agent's default 3 s Timeout


SYSTEM_DIRECTORY = "/var/cache/tcp-lld"  # made by scripts/install for the agent's user


def default_directory() -> Optional[str]:
    """Where this user's snapshots live, or None (no cache: scan on every call).

    `$TCP_LLD_CACHE_DIR`; else `$XDG_RUNTIME_DIR/tcp-lld` when that runtime directory is ours;
    else /var/cache/tcp-lld when it is ours (the installer makes it for `zabbix`, whose home on
    Debian is /nonexistent); else `~/.cache/tcp-lld`, with the home directory from the password
    database. Ownership decides, not the environment: the agent drops privileges to `zabbix` but
    keeps root's `$HOME` and `$XDG_RUNTIME_DIR`.
    """
    explicit = os.environ.get("TCP_LLD_CACHE_DIR")
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    for candidate, directory in ((runtime, os.path.join(runtime, "tcp-lld")), (SYSTEM_DIRECTORY, SYSTEM_DIRECTORY)):
        try:
            if os.path.isabs(candidate) and is_private(os.lstat(candidate)):
                return directory
        except OSError:
            pass
    import pwd

    try:
        home = pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        return None
    if not home or home == "/" or not os.path.isdir(home):
        return None
    return os.path.join(home, ".cache", "tcp-lld")


class SnapshotCache:
    """The cached record of one network namespace, in `directory` (None: no cache)."""

    def __init__(self, directory: Optional[str], namespace_id: int, ttl: float, grace: float, source: str) -> None:
        self.directory = directory
        self.ttl = ttl
        self.grace = grace
        self.source = source
        if directory is not None:
            self.path = os.path.join(directory, f"snapshot-{namespace_id}")
            self.lock_path = os.path.join(directory, f"snapshot-{namespace_id}.lock")
            self.memory_path = os.path.join(directory, f"memory-{namespace_id}")

    def _fresh(self, not_before: float) -> Optional[Record]:
        """The stored record if it was scanned after `not_before`, within the TTL, as we would scan."""
        if self.directory is None or not is_private_directory(self.directory):
            return None
        raw = read_private_file(self.path)
        record = Record.from_bytes(raw) if raw else None
        if record is None or record.grace != self.grace or record.source != self.source:
            return None
        now = time.time()
        if record.started < not_before or not now - self.ttl < record.started <= now + 1:
            return None
        return record

    def get(self, produce: Producer, force: bool = False) -> Record:
        """A fresh record: the cached one, or one produced under the lock by us or a concurrent caller."""
        asked_at = time.time()
        not_before = asked_at if force else 0.0
        record = None if force else self._fresh(not_before)
        if record is not None:
            return record
        if self.directory is None or not ensure_private_directory(self.directory):
            return produce(None, False)
        lock = self._lock()
        if lock is None:  # a scan is stuck elsewhere: scan too, reading the memory but not writing it
            return produce(self.memory_path, False)
        try:
            record = self._fresh(not_before)
            if record is None:
                record = produce(self.memory_path, True)
                try:
                    write_private_file(self.path, record.to_bytes())
                except OSError:
                    pass  # a full or read-only disk: this caller still gets its answer
                self._remove_orphans(record.started)
            return record
        finally:
            os.close(lock)

    def _remove_orphans(self, now: float) -> None:
        """Temporary files of writers that were killed mid-write (the agent kills slow items)."""
        try:
            for name in os.listdir(self.directory):
                path = os.path.join(self.directory, name)
                if name.endswith(".tmp") and os.lstat(path).st_mtime < now - 60:
                    os.unlink(path)
        except OSError:
            pass

    def _lock(self) -> Optional[int]:
        """An exclusive flock on the lock file, or None if it is not ours or not had in time."""
        import fcntl

        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            descriptor = os.open(self.lock_path, flags, 0o600)
        except OSError:
            return None
        if not is_private(os.fstat(descriptor)):
            os.close(descriptor)
            return None
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return descriptor
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(descriptor)
                    return None
                time.sleep(0.005)
            except OSError:
                os.close(descriptor)
                return None
