"""Which network namespace this process runs in, and its ephemeral port range.

Cached files are per namespace: an agent in a container must never read the host's snapshot. The
namespace inode alone is not an identity: the kernel reuses a dead namespace's inode for the next
one, so a container created later would inherit a dead one's counts and "gone" listeners. The
netns cookie (`SO_NETNS_COOKIE`, Linux 5.14) is never reused within a boot; the boot id tells
boots apart. Older kernels fall back to the inode (documented in the README).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Tuple

PROC = "/proc"
DEFAULT_EPHEMERAL = (32768, 60999)  # the kernel's default net.ipv4.ip_local_port_range
SO_NETNS_COOKIE = 71  # include/uapi/asm-generic/socket.h
#: The init namespace's fixed inode (include/linux/proc_ns.h PROC_NET_INIT_INO, recent kernels).
INIT_NET_INODE = 0xEFFFFFF9


class Namespace:
    """The identity of a network namespace: inode, cookie (0 when unknown) and boot id."""

    __slots__ = ("inode", "cookie", "boot_id")

    def __init__(self, inode: int, cookie: int, boot_id: str) -> None:
        self.inode = inode
        self.cookie = cookie
        self.boot_id = boot_id

    @property
    def key(self) -> str:
        """File-name part: stable for the namespace's life, never shared with a live other one."""
        return f"c{self.cookie}" if self.cookie else f"i{self.inode}"

    @property
    def stamp(self) -> str:
        """What a stored file must carry to belong to this namespace in this boot."""
        return f"{self.boot_id}/{self.cookie}/{self.inode}"

    @property
    def lasting_key(self) -> str:
        """File-name part of what outlives a boot (the grace memory): fixed for the host's namespace."""
        return "host" if self.is_init() else self.key

    @property
    def lasting_stamp(self) -> str:
        """`stamp` for the grace memory: the host's namespace is the same one after a reboot."""
        return "host" if self.is_init() else self.stamp

    def is_init(self) -> bool:
        """The host's namespace, which survives reboots (so its grace memory may too)."""
        if self.inode == INIT_NET_INODE:
            return True
        try:  # readable by root only: the agent's user relies on the fixed inode above
            return os.stat(os.path.join(PROC, "1/ns/net")).st_ino == self.inode
        except OSError:
            return False


def _cookie() -> int:
    import _socket

    try:
        probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | getattr(_socket, "SOCK_CLOEXEC", 0))
    except (OSError, AttributeError):
        return 0
    try:
        return int.from_bytes(probe.getsockopt(_socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), sys.byteorder)
    except OSError:
        return 0  # kernels before 5.14, other systems
    finally:
        probe.close()


def _boot_id() -> str:
    try:
        with open(os.path.join(PROC, "sys/kernel/random/boot_id"), "rb") as boot:
            text = boot.read(64).decode("ascii", "replace").strip()
    except OSError:
        return "-"
    return text if text and text.replace("-", "").isalnum() else "-"


def current_namespace() -> Namespace:
    """This process's network namespace; inode 0 where there is no /proc/self/ns/net."""
    try:
        inode = os.stat(os.path.join(PROC, "self/ns/net")).st_ino
    except OSError:
        inode = 0
    return Namespace(inode, _cookie(), _boot_id())


def ephemeral_port_range() -> Tuple[int, int]:
    """`net.ipv4.ip_local_port_range` of this namespace (it also governs IPv6)."""
    try:
        with open(os.path.join(PROC, "sys/net/ipv4/ip_local_port_range")) as sysctl:
            low, high = (int(word) for word in sysctl.read().split())
        return (low, high) if 0 < low <= high <= 65535 else DEFAULT_EPHEMERAL
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
