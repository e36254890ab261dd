"""Private files in a private directory, reached only through the directory's own descriptor.

The cache is shared by every poller of the agent (all running as one user). Another local user must
not feed it fake counts or make it write elsewhere, and a reader must never see a half-written
file. So the directory is opened once (`O_DIRECTORY|O_NOFOLLOW`), checked (ours, writable by nobody
else), and every later open, rename and unlink is relative to that descriptor: swapping the path
for a symlink after the check changes nothing. Writers fill a temporary file and rename it over
the old one; reads are capped, because a file of any size may be planted or grow by accident.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False  # no `typing` at run time: this module is on the cached path
if TYPE_CHECKING:
    from typing import Iterable, Optional

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)  # a planted FIFO must not block
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
TEMPORARY_SUFFIX = ".tmp"


def is_private(status: os.stat_result) -> bool:
    """Owned by us and writable by nobody else."""
    return status.st_uid == os.geteuid() and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def temporary_name(name: str) -> str:
    """The name a writer of `name` uses before its rename: `<name>.<pid>.tmp`."""
    return f"{name}.{os.getpid()}{TEMPORARY_SUFFIX}"


class PrivateDirectory:
    """An open directory that is ours alone; every file operation goes through its descriptor."""

    def __init__(self, descriptor: int, path: str) -> None:
        self.descriptor = descriptor
        self.path = path

    @classmethod
    def open(cls, path: str, create: bool = False) -> Optional[PrivateDirectory]:
        """The directory at `path` (made 0700 if `create`), or None when it is not ours alone."""
        if create:
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
            except OSError:
                return None
        try:
            descriptor = os.open(path, _DIRECTORY_FLAGS)
        except OSError:
            return None  # missing, a symlink (ELOOP/ENOTDIR), or not a directory
        status = os.fstat(descriptor)
        if not stat.S_ISDIR(status.st_mode) or not is_private(status):
            os.close(descriptor)
            return None
        return cls(descriptor, path)

    def close(self) -> None:
        if self.descriptor >= 0:
            os.close(self.descriptor)
            self.descriptor = -1

    def __enter__(self) -> PrivateDirectory:
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def read(self, name: str, limit: int) -> Optional[bytes]:
        """The file's bytes; None if missing, a symlink, not regular, not ours, or over `limit`."""
        try:
            descriptor = os.open(name, _READ_FLAGS, dir_fd=self.descriptor)
        except OSError:
            return None
        try:
            status = os.fstat(descriptor)
            if not stat.S_ISREG(status.st_mode) or not is_private(status) or status.st_size > limit:
                return None
            data = os.read(descriptor, status.st_size + 1)
            while len(data) <= status.st_size:  # short reads: keep going to the end (or the cap)
                chunk = os.read(descriptor, limit + 1 - len(data))
                if not chunk:
                    break
                data += chunk
            return data if len(data) <= limit else None
        except OSError:
            return None
        finally:
            os.close(descriptor)

    def write(self, name: str, data: bytes) -> None:
        """Replace `name` with `data` atomically (mode 0600). Raises OSError; leaves no temp file."""
        temporary = temporary_name(name)
        descriptor = os.open(temporary, _CREATE_FLAGS, 0o600, dir_fd=self.descriptor)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.close(descriptor)
            descriptor = -1
            os.replace(temporary, name, src_dir_fd=self.descriptor, dst_dir_fd=self.descriptor)
        except BaseException:
            if descriptor >= 0:
                os.close(descriptor)
            self.remove(temporary)
            raise

    def open_lock_file(self, name: str) -> Optional[int]:
        """A descriptor of the lock file `name` (created if needed), or None when it is not ours."""
        try:
            descriptor = os.open(name, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600, dir_fd=self.descriptor)
        except OSError:
            return None
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode) or not is_private(status):
            os.close(descriptor)
            return None
        return descriptor

    def remove(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.descriptor)
        except OSError:
            pass

    def remove_expired(self, prefixes: Iterable[str], older_than: float, keep: Iterable[str] = (),
                       suffix: str = "") -> None:
        """Remove our own files (names starting with one of `prefixes`) last changed before
        `older_than`: temporary files of writers that were killed, and the files of namespaces
        that no longer exist. Anything else in the directory is not ours to judge."""
        prefixes = tuple(prefixes)
        kept = set(keep)
        try:
            names = os.listdir(self.descriptor)
        except OSError:
            return
        for name in names:
            if not name.startswith(prefixes) or not name.endswith(suffix) or name in kept:
                continue
            try:
                status = os.stat(name, dir_fd=self.descriptor, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(status.st_mode) and status.st_uid == os.geteuid() and status.st_mtime < older_than:
                self.remove(name)
