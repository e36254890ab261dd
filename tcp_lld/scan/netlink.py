"""Read the kernel's TCP socket table through netlink sock_diag (the fast path on Linux).

Two requests per address family: a LISTEN-only dump (the kernel then skips the connection table,
so it costs ~1 ms even at 100k sockets) parsed in full for discovery and accept queues, and one
dump of every other state that is only tallied. Records are not turned into objects: each one
costs a single `struct.unpack_from` and two list appends, and `Counter` does the counting in C.

Layouts: `include/uapi/linux/netlink.h` (nlmsghdr), `include/uapi/linux/inet_diag.h`
(inet_diag_req_v2, inet_diag_msg), `include/uapi/linux/sock_diag.h` (SOCK_DIAG_BY_FAMILY).
"""

import socket
import struct
import time
from collections import Counter
from typing import Callable, Iterator, List

from ..errors import ScanError
from ..snapshot import PORT_SHIFT, Listener, ScanResult
from ..states import LISTEN, NEW_SYN_RECV, SYN_RECV

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_MSG_LEN = 72  # struct inet_diag_msg

LISTEN_MASK = 1 << LISTEN
#: Every state but LISTEN, with TCP_NEW_SYN_RECV (12) so request sockets are dumped as SYN_RECV.
CONNECTION_MASK = sum(1 << state for state in range(1, 13) if state != LISTEN)

_REQUEST = struct.Struct("=IHHII BBBxI 48x")  # nlmsghdr + inet_diag_req_v2 (sockid zeroed)
# nlmsghdr.len, nlmsghdr.type, inet_diag_msg.state, .sport, .dport. Ports are big-endian on the
# wire; they are read little-endian here and swapped once per distinct key, not once per socket.
_RECORD = struct.Struct("<IH10xxB2xHH")
# nlmsghdr.len, .type, inet_diag_msg.family, .src, .rqueue, .wqueue, .inode (sport read separately).
_LISTENER = struct.Struct("<IH10xB3x4x16s16x4x8x4xII4xI")
_ERRNO = struct.Struct("<i")

RECV_BUFFER = 1 << 20
SOCKET_BUFFER = 4 << 20


def _swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


def _dump(sock: socket.socket, family: int, states: int, on_buffer: Callable[[bytearray, int], bool]) -> None:
    """Send one dump request and feed every received buffer to `on_buffer` until NLMSG_DONE."""
    request = _REQUEST.pack(
        _REQUEST.size, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0,
        family, socket.IPPROTO_TCP, 0, states,
    )
    sock.send(request)
    buffer = bytearray(RECV_BUFFER)
    while True:
        length = sock.recv_into(buffer)
        if length == 0:
            raise ScanError("netlink: the kernel closed the sock_diag socket mid-dump")
        if on_buffer(buffer, length):
            return


def _check_control(buffer: bytearray, offset: int, message_type: int) -> bool:
    """True at NLMSG_DONE; raises on NLMSG_ERROR (e.g. EPERM under SELinux, ENOENT without inet_diag)."""
    if message_type == NLMSG_DONE:
        return True
    if message_type == NLMSG_ERROR:
        (errno,) = _ERRNO.unpack_from(buffer, offset + 16)
        raise ScanError(f"netlink: sock_diag refused the dump (errno {-errno})")
    raise ScanError(f"netlink: unexpected message type {message_type}")


def _connections(sock: socket.socket, family: int, local_keys: List[int], remote_keys: List[int]) -> None:
    """Append `port << 4 | state` keys (ports byte-swapped) for every non-listening socket."""
    unpack = _RECORD.unpack_from
    add_local = local_keys.append
    add_remote = remote_keys.append

    def on_buffer(buffer: bytearray, length: int) -> bool:
        offset = 0
        while offset < length:
            message_length, message_type, state, sport, dport = unpack(buffer, offset)
            if message_type != SOCK_DIAG_BY_FAMILY:
                return _check_control(buffer, offset, message_type)
            add_local(sport << PORT_SHIFT | state)
            add_remote(dport << PORT_SHIFT | state)
            offset += (message_length + 3) & ~3
        return False

    _dump(sock, family, CONNECTION_MASK, on_buffer)


def _listeners(sock: socket.socket, family: int, found: List[Listener]) -> None:
    """Parse every LISTEN socket of one family in full."""
    unpack = _LISTENER.unpack_from
    text_family = 4 if family == socket.AF_INET else 6
    address_length = 4 if family == socket.AF_INET else 16

    def on_buffer(buffer: bytearray, length: int) -> bool:
        offset = 0
        while offset < length:
            message_length, message_type, _, raw_address, queue, backlog, inode = unpack(buffer, offset)
            if message_type != SOCK_DIAG_BY_FAMILY:
                return _check_control(buffer, offset, message_type)
            port = (buffer[offset + 20] << 8) | buffer[offset + 21]
            address = socket.inet_ntop(family, raw_address[:address_length])
            found.append(Listener(port, text_family, address, inode, queue, backlog))
            offset += (message_length + 3) & ~3
        return False

    _dump(sock, family, LISTEN_MASK, on_buffer)


def _untangle(keys: List[int]) -> "Counter[int]":
    """Count swapped keys in C, then fix byte order and fold NEW_SYN_RECV once per distinct key."""
    tally: "Counter[int]" = Counter()
    for key, count in Counter(keys).items():
        state = key & 0xF
        if state == NEW_SYN_RECV:
            state = SYN_RECV
        tally[_swap16(key >> PORT_SHIFT) << PORT_SHIFT | state] += count
    return tally


def open_socket() -> socket.socket:
    """A sock_diag socket with a large receive buffer, so dumps come in few large reads."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    except (OSError, AttributeError) as error:
        raise ScanError(f"netlink: cannot open a sock_diag socket: {error}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    except OSError:
        pass
    return sock


def families() -> Iterator[int]:
    yield socket.AF_INET
    if socket.has_ipv6:
        yield socket.AF_INET6


def scan() -> ScanResult:
    """One scan of every TCP socket, IPv4 and IPv6, through sock_diag."""
    started = time.time()
    clock = time.perf_counter()
    local_keys: List[int] = []
    remote_keys: List[int] = []
    listeners: List[Listener] = []
    sock = open_socket()
    try:
        for family in families():
            _listeners(sock, family, listeners)
            _connections(sock, family, local_keys, remote_keys)
    except OSError as error:
        raise ScanError(f"netlink: {error}") from None
    finally:
        sock.close()
    local = _untangle(local_keys)
    for listener in listeners:
        local[listener.port << PORT_SHIFT | LISTEN] += 1
    remote = _untangle(remote_keys)
    return ScanResult("netlink", local, remote, listeners, started, time.perf_counter() - clock)
