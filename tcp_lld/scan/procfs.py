"""Read the kernel's TCP socket table from /proc/net/tcp and /proc/net/tcp6.

The fallback where netlink sock_diag is refused (SELinux policies, old or stripped kernels).
Slower (the kernel formats text), and it cannot see a listener's backlog limit.

Line format (`net/ipv4/tcp_ipv4.c: get_tcp4_sock`, `net/ipv6/tcp_ipv6.c: get_tcp6_sock`)::

    sl  local_address rem_address   st tx_queue:rx_queue tr:tm->when retrnsmt  uid timeout inode
    0: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000   0    0  12345 ...

Addresses are hex words in host byte order; ports are hex in network order; for a LISTEN socket
rx_queue is the accept queue length.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import Counter

from ..errors import ParseError, ScanError
from .result import PORT_SHIFT, Listener, ScanResult, state_totals
from ..states import LISTEN, NEW_SYN_RECV, STATE_COUNT, SYN_RECV

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

#: Where /proc is mounted; tests point it at a fixture tree, as psutil's PROCFS_PATH does.
PROCFS_PATH = "/proc"


def _address(hex_address: str, family: int) -> str:
    """`0100007F` -> `127.0.0.1`: each 32-bit word is in the kernel's byte order."""
    raw = bytes.fromhex(hex_address)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, raw)


def _parse_file(path: str, family: int, local: "Counter[int]", remote: "Counter[int]", listeners: List[Listener]) -> None:
    text_family = 4 if family == socket.AF_INET else 6
    address_width = 8 if family == socket.AF_INET else 32
    with open(path, "rb") as table:
        lines = table.read().decode("ascii", "replace").splitlines()
    if not lines or not lines[0].lstrip().startswith("sl"):
        raise ParseError(path, 1, "no 'sl local_address ...' header: not a /proc/net/tcp table")
    for line_number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        try:
            local_address, local_port = fields[1].split(":")
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            state = int(fields[3], 16)
            port = int(local_port, 16)
            if len(local_address) != address_width or not 0 <= port <= 0xFFFF or not 0 <= remote_port <= 0xFFFF:
                raise ValueError("bad address or port")
            if state == NEW_SYN_RECV:
                state = SYN_RECV
            if not 1 <= state <= STATE_COUNT:
                raise ValueError(f"unknown state {fields[3]}")
            if state == LISTEN:
                accept_queue = int(fields[4].split(":")[1], 16)
                inode = int(fields[9])
                address = _address(local_address, family)
                listeners.append(Listener(port, text_family, address, inode, accept_queue, None))
            else:
                remote[remote_port << PORT_SHIFT | state] += 1
        except (IndexError, ValueError) as error:
            raise ParseError(path, line_number, f"malformed socket line ({error}): {line.strip()[:80]!r}") from None
        local[port << PORT_SHIFT | state] += 1


def scan(procfs_path: str = "") -> ScanResult:
    """One scan of every TCP socket from /proc/net/tcp{,6}. A missing tcp6 means no IPv6."""
    root = procfs_path or PROCFS_PATH
    started = time.time()
    clock = time.perf_counter()
    local: "Counter[int]" = Counter()
    remote: "Counter[int]" = Counter()
    listeners: List[Listener] = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = os.path.join(root, "net", name)
        try:
            _parse_file(path, family, local, remote, listeners)
        except FileNotFoundError:
            if name == "tcp":
                raise ScanError(f"procfs: {path} does not exist") from None
        except OSError as error:
            raise ScanError(f"procfs: cannot read {path}: {error.strerror}") from None
    return ScanResult("procfs", local, remote, listeners, started, time.perf_counter() - clock, state_totals(local))
