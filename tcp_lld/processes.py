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
    """Socket inode -> (pid, name) of the lowest-numbered process holding it (a pre-fork master).

    Processes of our own network namespace are searched first and the others only for sockets none
    of those holds: on a host with containers, or where the caller runs in a namespace of its own,
    most descriptors on the machine belong to sockets of other namespaces, and one readlink of
    `ns/net` per process saves listing all of theirs.
    """
    wanted = {f"socket:[{inode}]": inode for inode in inodes if inode}
    found: Dict[int, Tuple[int, str]] = {}
    if not wanted:
        return found
    try:
        pids = sorted((entry for entry in os.listdir(PROC) if entry.isdigit()), key=int)
        ours = os.readlink(os.path.join(PROC, "self", "ns", "net"))
    except OSError:
        return found
    elsewhere = []
    for pid in pids:
        try:
            namespace = os.readlink(os.path.join(PROC, pid, "ns", "net"))
        except OSError:
            continue  # not ours to read (its descriptors are not either), or gone
        if namespace != ours:
            elsewhere.append(pid)
        elif _search(pid, wanted, found):
            return found
    for pid in elsewhere:
        if _search(pid, wanted, found):
            return found
    return found


def _search(pid: str, wanted: Dict[str, int], found: Dict[int, Tuple[int, str]]) -> bool:
    """Record the wanted sockets process `pid` holds; True once every one is found (a database's
    100k connections come after its listeners: no need to read them)."""
    fd_directory = os.path.join(PROC, pid, "fd")
    try:
        descriptors = os.listdir(fd_directory)
    except OSError:
        return False  # not ours, or gone
    for descriptor in descriptors:
        try:
            target = os.readlink(os.path.join(fd_directory, descriptor))
        except OSError:
            continue
        inode = wanted.get(target)
        if inode is not None and inode not in found:
            found[inode] = (int(pid), process_name(int(pid)))
            if len(found) == len(wanted):
                return True
    return False
