"""One scan shared by every caller: a per-namespace answers file, its lock and its freshness.

The agent runs many pollers at once. Readers of a fresh file only read it (no lock, no JSON). When
it is stale, callers queue on an flock; the first one scans and replaces the file atomically, the
others wake up, find it fresh and read it, so N concurrent callers cause ONE scan.

A caller never waits past the agent's Timeout for a stuck scan: after `LOCK_WAIT` it answers from
the last file (marked stale) when one younger than `MAX_STALE` exists, else it scans for itself
without touching the memory. When no private directory can be had at all, it scans every time:
a monitor that fails because of its cache is worse than one that scans twice.
"""

from __future__ import annotations

import os
import time

from .answers import MAX_BYTES, Answers
from .private_files import TEMPORARY_SUFFIX, PrivateDirectory, is_private

TYPE_CHECKING = False  # no `typing` at run time: this module is on the cached path
if TYPE_CHECKING:
    from typing import Callable, Optional, Tuple

    from .namespace import Namespace

    # (the directory or None, whether to save the memory) -> a fresh answers file
    Refresh = Callable[[Optional[PrivateDirectory], bool], bytes]

DEFAULT_TTL = 20.0
LOCK_WAIT = 1.0  # then the last answers, marked stale: well inside the agent's default 3 s Timeout
MAX_STALE = 600.0  # older answers are not served, even marked stale
ORPHAN_AGE = 60.0  # a temporary file this old belongs to a writer that was killed
EXPIRY = 2 * 86400.0  # files of a namespace nobody asked about this long are removed
PREFIXES = ("answers-", "grace-", "lock-")
SYSTEM_DIRECTORY = "/var/cache/tcp-lld"  # made by scripts/install for the agent's user


def default_directory() -> Optional[str]:
    """Where this user's files live, or None (no cache: scan on every call).

    `$TCP_LLD_CACHE_DIR`; else `$XDG_RUNTIME_DIR/tcp-lld` when that runtime directory is ours;
    else /var/cache/tcp-lld when it is ours (the installer makes it for `zabbix`); else
    `~/.cache/tcp-lld` when the home directory exists; else `/var/tmp/tcp-lld-<uid>`, which a plain
    `pip install` run by the agent (home /nonexistent) gets without an admin step, and which
    survives reboots. Ownership decides, not the environment: the agent drops privileges to
    `zabbix` but keeps root's `$HOME` and `$XDG_RUNTIME_DIR`. Every candidate is checked again
    when opened (`PrivateDirectory.open`): one planted by another user is refused.
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
        home = ""
    if home and home != "/" and os.path.isdir(home):
        return os.path.join(home, ".cache", "tcp-lld")
    return f"/var/tmp/tcp-lld-{os.geteuid()}"


class AnswerCache:
    """The answers file of one namespace and scan source, in `path` (None: no cache)."""

    def __init__(self, path: Optional[str], namespace: Namespace, source: str, ttl: float) -> None:
        self.path = path
        self.namespace = namespace
        self.source = source
        self.ttl = ttl
        self.name = f"answers-{namespace.key}-{source}"
        self.lock_name = f"lock-{namespace.key}"

    def _stored(self, directory: PrivateDirectory) -> Optional[Answers]:
        """The stored answers if they are this namespace's (this boot) and this source's."""
        stored = Answers.decode(directory.read(self.name, MAX_BYTES))
        if stored is None or stored.stamp != self.namespace.stamp or stored.source_asked != self.source:
            return None
        return stored

    def _fresh(self, directory: PrivateDirectory, not_before: float) -> Optional[Answers]:
        stored = self._stored(directory)
        now = time.time()
        if stored is None or stored.started < not_before or not now - self.ttl < stored.started <= now + 1:
            return None
        return stored

    def get(self, refresh: Refresh, force: bool = False) -> Tuple[Answers, bool]:
        """(answers, stale): the cached ones, or fresh ones made under the lock by us or another."""
        not_before = time.time() if force else 0.0
        if self.path is None:
            return self._decode(refresh(None, False)), False
        if not force:
            directory = PrivateDirectory.open(self.path)
            if directory is not None:
                with directory:
                    fresh = self._fresh(directory, not_before)
                if fresh is not None:
                    return fresh, False
        directory = PrivateDirectory.open(self.path, create=True)
        if directory is None:
            return self._decode(refresh(None, False)), False
        with directory:
            lock = self._lock(directory)
            if lock is None:  # a scan is stuck elsewhere: the last answers, else a scan of our own
                last = None if force else self._stored(directory)
                if last is not None and last.started > time.time() - MAX_STALE:
                    return last, True
                return self._decode(refresh(directory, False)), False
            try:
                fresh = self._fresh(directory, not_before)
                if fresh is not None:
                    return fresh, False
                raw = refresh(directory, True)
                try:
                    directory.write(self.name, raw)
                except OSError:
                    pass  # a full or read-only disk: this caller still gets its answer
                self._tidy(directory)
                return self._decode(raw), False
            finally:
                os.close(lock)

    @staticmethod
    def _decode(raw: bytes) -> Answers:
        answers = Answers.decode(raw)
        assert answers is not None, "refresh produced an unreadable answers file"
        return answers

    def _tidy(self, directory: PrivateDirectory) -> None:
        """Remove temporary files of killed writers and the files of namespaces long gone; only
        names of our own making, nothing else in the directory."""
        now = time.time()
        directory.remove_expired(PREFIXES, now - ORPHAN_AGE, suffix=TEMPORARY_SUFFIX)
        directory.remove_expired(PREFIXES, now - EXPIRY, keep=("grace-host",))

    def _lock(self, directory: PrivateDirectory) -> Optional[int]:
        """An exclusive flock on the namespace's lock file, or None if not had within LOCK_WAIT."""
        import fcntl

        descriptor = directory.open_lock_file(self.lock_name)
        if descriptor is None:
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
