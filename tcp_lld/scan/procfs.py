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
from ..states import LISTEN, NEW_SYN_RECV, STATE_COUNT, SYN_RECV
from .result import PORT_SHIFT, Listener, ScanResult, largest_per_port, state_totals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable, List, Set, Tuple

    Table = Tuple[str, int, List[str]]  # path, address family, lines

#: Where /proc is mounted; tests point it at a fixture tree, as psutil's PROCFS_PATH does.
PROCFS_PATH = "/proc"

_LISTEN_FIELD = " 0A "  # `st` of a LISTEN line; no other field can hold it (hex words touch ':')


def _address(hex_address: str, family: int) -> str:
    """`0100007F` -> `127.0.0.1`: each 32-bit word is in the kernel's byte order.

    >>> _address("0100007F", socket.AF_INET) if sys.byteorder == "little" else "127.0.0.1"
    '127.0.0.1'
    """
    raw = bytes.fromhex(hex_address)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, raw)


def _read(path: str) -> List[str]:
    with open(path, "rb") as table:
        lines = table.read().decode("ascii", "replace").splitlines()
    if not lines or not lines[0].lstrip().startswith("sl"):
        raise ParseError(path, 1, "no 'sl local_address ...' header: not a /proc/net/tcp table")
    return lines


def _malformed(path: str, line_number: int, line: str, error: Exception) -> ParseError:
    return ParseError(path, line_number, f"malformed socket line ({error}): {line.strip()[:80]!r}")


def _listeners(table: Table, listeners: List[Listener]) -> None:
    """First pass: the LISTEN lines only, so that the inbound ports are known before the rest."""
    path, family, lines = table
    text_family = 4 if family == socket.AF_INET else 6
    address_width = 8 if family == socket.AF_INET else 32
    for line_number, line in enumerate(lines[1:], start=2):
        if _LISTEN_FIELD not in line:
            continue
        fields = line.split()
        try:
            if fields[3] != "0A":
                continue
            local_address, local_port = fields[1].split(":")
            port = int(local_port, 16)
            if len(local_address) != address_width or not 0 <= port <= 0xFFFF:
                raise ValueError("bad address or port")
            accept_queue = int(fields[4].split(":")[1], 16)
            uid, inode = int(fields[7]), int(fields[9])
            address = _address(local_address, family)
        except (IndexError, ValueError) as error:
            raise _malformed(path, line_number, line, error) from None
        listeners.append(Listener(port, text_family, address, inode, accept_queue, None, uid))


def _connections(table: Table, inbound: Set[int], local: "Counter[int]", remote: "Counter[int]",
                 peers: "Counter[Tuple[int, Tuple[str, str]]]") -> None:
    """Second pass: every line by local port; the outbound ones by remote port too, and by
    (remote port, (local address, remote address)) as the file spells them (`result.peers`)."""
    path, family, lines = table
    address_width = 8 if family == socket.AF_INET else 32
    for line_number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        try:
            local_address, local_port = fields[1].split(":")
            remote_address, remote_hex_port = fields[2].split(":")
            remote_port = int(remote_hex_port, 16)
            state = int(fields[3], 16)
            port = int(local_port, 16)
            if len(local_address) != address_width or not 0 <= port <= 0xFFFF or not 0 <= remote_port <= 0xFFFF:
                raise ValueError("bad address or port")
            if state == NEW_SYN_RECV:
                state = SYN_RECV
            if not 1 <= state <= STATE_COUNT:
                raise ValueError(f"unknown state {fields[3]}")
        except (IndexError, ValueError) as error:
            raise _malformed(path, line_number, line, error) from None
        local[port << PORT_SHIFT | state] += 1
        if state != LISTEN and port not in inbound:
            remote[remote_port << PORT_SHIFT | state] += 1
            peers[remote_port, (local_address, remote_address)] += 1


def _tables(root: str) -> List[Table]:
    tables: List[Table] = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = os.path.join(root, "net", name)
        try:
            tables.append((path, family, _read(path)))
        except FileNotFoundError:
            if name == "tcp":
                raise ScanError(f"procfs: {path} does not exist") from None
        except OSError as error:
            raise ScanError(f"procfs: cannot read {path}: {error.strerror}") from None
    return tables


def listeners(procfs_path: str = "") -> List[Listener]:
    """Every LISTEN socket, one each, even when SO_REUSEPORT makes several look alike."""
    found: List[Listener] = []
    for table in _tables(procfs_path or PROCFS_PATH):
        _listeners(table, found)
    return found


def scan(procfs_path: str = "", remembered: Iterable[int] = ()) -> ScanResult:
    """One scan of every TCP socket from /proc/net/tcp{,6}. A missing tcp6 means no IPv6.

    `remembered`: ports that listened recently, inbound like this scan's listeners (see `result`).
    Both files are read before either is parsed: an IPv4 listener's clients may be IPv6 sockets.
    """
    started = time.time()
    clock = time.perf_counter()
    tables = _tables(procfs_path or PROCFS_PATH)
    found: List[Listener] = []
    for table in tables:
        _listeners(table, found)
    inbound = {listener.port for listener in found}
    inbound.update(remembered)
    local: "Counter[int]" = Counter()
    remote: "Counter[int]" = Counter()
    peers: "Counter[Tuple[int, Tuple[str, str]]]" = Counter()
    for table in tables:
        _connections(table, inbound, local, remote, peers)
    return ScanResult("procfs", local, remote, found, started, time.perf_counter() - clock, state_totals(local),
                      largest_per_port(peers))
