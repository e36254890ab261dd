"""Facts about the network namespace this process runs in."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Tuple

PROC = "/proc"
DEFAULT_EPHEMERAL = (32768, 60999)  # the kernel's default net.ipv4.ip_local_port_range


def network_namespace_id() -> int:
    """Inode of our network namespace: two processes see the same sockets iff they share it.

    0 where there is no /proc/self/ns/net (other systems, old kernels): one namespace only.
    """
    try:
        return os.stat(os.path.join(PROC, "self/ns/net")).st_ino
    except OSError:
        return 0


def ephemeral_port_range() -> Tuple[int, int]:
    """`net.ipv4.ip_local_port_range` of this namespace (it also governs IPv6)."""
    try:
        with open(os.path.join(PROC, "sys/net/ipv4/ip_local_port_range")) as sysctl:
            low, high = (int(word) for word in sysctl.read().split())
        return (low, high) if 0 < low <= high <= 65535 else DEFAULT_EPHEMERAL
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
