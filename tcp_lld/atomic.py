"""Private files in a private directory: refuse symlinks and foreign owners, replace atomically.

The cache is shared by every poller of the agent (all running as one user). Another local user must
not be able to feed it fake counts or make it write elsewhere, and a reader must never see a
half-written file: writers create a unique temporary file and rename it over the old one.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False  # no `typing` at run time: this module is on the cached path
if TYPE_CHECKING:
    from typing import Optional

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def is_private(status: os.stat_result) -> bool:
    """Owned by us and writable by nobody else."""
    return status.st_uid == os.geteuid() and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def is_private_directory(path: str) -> bool:
    """A real directory (not a symlink) that is ours alone."""
    try:
        status = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(status.st_mode) and is_private(status)


def ensure_private_directory(path: str) -> bool:
    """Create `path` (mode 0700) if needed; True only if it is a real directory that is ours alone."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return False
    return is_private_directory(path)


def read_private_file(path: str) -> Optional[bytes]:
    """The file's bytes, or None if it is missing, a symlink, not a regular file, or not ours."""
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode) or not is_private(status):
            return None
        chunks = []
        while True:
            chunk = os.read(descriptor, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(descriptor)


def write_private_file(path: str, data: bytes) -> None:
    """Replace `path` with `data` atomically (mode 0600). Raises OSError; leaves no temp file."""
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, _CREATE_FLAGS, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.close(descriptor)
        descriptor = -1
        os.replace(temporary, path)
    except BaseException:
        if descriptor >= 0:
            os.close(descriptor)
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
