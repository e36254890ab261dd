"""Which process owns a socket: walk /proc/<pid>/fd for the inodes of listening sockets.

Only for discovery (every 15 minutes in the template), only for the few listening sockets. As an unprivileged user (the
agent's `zabbix`) only our own processes' descriptors are readable; others stay unnamed, which is
what `ss -p` shows too without root.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterable, Tuple

PROC = "/proc"


def _psutil_name(pid: int) -> str:
    """Where there is no /proc (psutil is the scan source off Linux)."""
    import psutil

    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return ""


def process_name(pid: int) -> str:
    """`comm`, or the executable's base name when `comm` was cut at the kernel's 15 characters."""
    try:
        with open(os.path.join(PROC, str(pid), "comm"), "rb") as comm_file:
            name = comm_file.read().decode("utf-8", "replace").strip()
    except OSError:
        return "" if os.path.isdir(PROC) else _psutil_name(pid)
    if len(name) >= 15:
        try:
            with open(os.path.join(PROC, str(pid), "cmdline"), "rb") as cmdline_file:
                argv0 = cmdline_file.read().split(b"\0", 1)[0].decode("utf-8", "replace")
            base = os.path.basename(argv0.split()[0]) if argv0.strip() else ""
            if base.startswith(name):
                return base
        except OSError:
            pass
    return name


def owners(inodes: Iterable[int]) -> Dict[int, Tuple[int, str]]:
    """Socket inode -> (pid, name) of the lowest-numbered process holding it (a pre-fork master)."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes if inode}
    found: Dict[int, Tuple[int, str]] = {}
    if not wanted:
        return found
    try:
        pids = sorted((entry for entry in os.listdir(PROC) if entry.isdigit()), key=int)
    except OSError:
        return found
    for pid in pids:
        fd_directory = os.path.join(PROC, pid, "fd")
        try:
            descriptors = os.listdir(fd_directory)
        except OSError:
            continue  # not ours, or gone
        for descriptor in descriptors:
            try:
                target = os.readlink(os.path.join(fd_directory, descriptor))
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None and inode not in found:
                found[inode] = (int(pid), process_name(int(pid)))
                if len(found) == len(wanted):
                    return found  # a database's 100k connections come after its listeners
    return found
