"""Read the kernel's TCP socket table through netlink sock_diag (the fast path on Linux).

Three requests, each walking the kernel's tables once:

1. LISTEN only, per family (`SOCK_DIAG_BY_FAMILY`): the kernel then skips the connection table, so
   it costs ~0.1 ms even at 100k sockets. Parsed in full: addresses, accept queue, backlog, inode.
2. TIME_WAIT only, both families in ONE dump (the legacy `TCPDIAG_GETSOCK` request, which the
   kernel serves with family AF_UNSPEC). On busy hosts this is nearly every socket, and every
   record has the same length, so ports are sliced out of the buffer at C speed, never unpacked
   one by one.
3. Every other state, both families in one dump, walked record by record (few on busy hosts).

Which socket counts where is `result`'s rule: listeners come first, so the inbound ports (listening
now, or remembered by the caller) are known before any connection is read; a connection whose
local port is inbound is never tallied by its remote port. Local ports inside the ephemeral range
that are not inbound are dropped before counting (`_Sieve`): they count in the per-state totals
only. Remote ports are never sieved.

A dump is trusted only whole: a datagram larger than the buffer (MSG_TRUNC), an NLMSG_ERROR, or an
NLMSG_DONE carrying a negative error (the kernel cut the dump short) raise `ScanError`.

Kernels that refuse the legacy request get two `SOCK_DIAG_BY_FAMILY` dumps per family instead.
The ports are read little-endian and byte-swapped once per distinct port, not once per socket; on
a big-endian host (s390x) this module refuses, and the caller falls back to /proc/net/tcp.

Layouts: `include/uapi/linux/netlink.h` (nlmsghdr), `include/uapi/linux/inet_diag.h`
(inet_diag_req, inet_diag_req_v2, inet_diag_msg), `include/uapi/linux/sock_diag.h`.
"""

from __future__ import annotations

import os
import struct
import sys
import time
from itertools import compress

# The C modules under `socket` and `collections.Counter`: the Python wrappers import enum,
# selectors and friends, ~14 ms of start-up that every uncached call of the agent would pay.
import _socket as socket

try:
    from _collections import _count_elements
except ImportError:  # another interpreter: the same, in Python
    def _count_elements(mapping: Dict[int, int], iterable: Iterable[int]) -> None:
        for element in iterable:
            mapping[element] = mapping.get(element, 0) + 1

from ..errors import ScanError
from ..states import LISTEN, NEW_SYN_RECV, STATE_COUNT, SYN_RECV, TIME_WAIT
from .result import PORT_SHIFT, Listener, ScanResult

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

    Tally = Dict[int, int]  # key -> count
    OnBuffer = Callable[[memoryview, int], bool]  # (the whole buffer, bytes received) -> done?

NETLINK_SOCK_DIAG = 4
TCPDIAG_GETSOCK = 18  # legacy request: one dump covers IPv4 and IPv6
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RECORD_MIN = 16 + 72  # nlmsghdr + struct inet_diag_msg

LISTEN_MASK = 1 << LISTEN
TIME_WAIT_MASK = 1 << TIME_WAIT
#: Every state but LISTEN and TIME_WAIT, with TCP_NEW_SYN_RECV (12) for request sockets.
OTHER_MASK = sum(1 << state for state in range(1, 13) if state not in (LISTEN, TIME_WAIT))

_V2_REQUEST = struct.Struct("=IHHII BBBxI 48x")  # nlmsghdr + inet_diag_req_v2 (sockid zeroed)
_LEGACY_REQUEST = struct.Struct("=IHHII BBBB 48x II")  # nlmsghdr + inet_diag_req
# nlmsghdr.len, .type, inet_diag_msg.state, .sport, .dport (ports byte-swapped, see above).
_RECORD = struct.Struct("<IH10xxB2xHH")
# nlmsghdr.len, .type, inet_diag_msg.family, .src, .rqueue, .wqueue, .uid, .inode (sport read apart).
_LISTENER = struct.Struct("<IH10xB3x4x16s16x4x8x4xIIII")
_HEADER = struct.Struct("<IH")
_ERRNO = struct.Struct("<i")

BUFFER_SIZE = 64 * 1024  # the kernel sends at most 32 KiB of a dump per read
SOCKET_BUFFER = 4 << 20


def _swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


class Dumper:
    """One sock_diag socket and one receive buffer, reused by every dump of a scan.

    The socket is touched only by `open`, `send`, `receive_into` and `close`: tests replace the
    class (`netlink.Dumper = ...`) with one that replays recorded buffers, without root or sockets.
    """

    def __init__(self) -> None:
        self.buffer = bytearray(BUFFER_SIZE)
        self.view = memoryview(self.buffer)
        self.open()

    def open(self) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
        except (OSError, AttributeError) as error:
            raise ScanError(f"netlink: cannot open a sock_diag socket: {error}") from None
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        except OSError:
            pass

    def send(self, request: bytes) -> None:
        self.sock.send(request)

    def receive_into(self, buffer: bytearray) -> int:
        """One datagram into `buffer`; its FULL length (MSG_TRUNC), even when it did not fit."""
        return self.sock.recv_into(buffer, 0, socket.MSG_TRUNC)

    def dump(self, request: bytes, on_buffer: OnBuffer) -> None:
        """Send one dump request; feed every received buffer to `on_buffer` until it says done."""
        self.send(request)
        while True:
            length = self.receive_into(self.buffer)
            if length == 0:
                raise ScanError("netlink: the kernel closed the sock_diag socket mid-dump")
            if length > len(self.buffer):  # counting the part that fitted would undercount
                raise ScanError(f"netlink: a {length}-byte dump message did not fit the {len(self.buffer)}-byte buffer")
            if on_buffer(self.view, length):  # the whole buffer: a short last message still unpacks
                return

    def close(self) -> None:
        self.view.release()
        self.sock.close()


def _v2_request(family: int, states: int) -> bytes:
    return _V2_REQUEST.pack(
        _V2_REQUEST.size, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0,
        family, socket.IPPROTO_TCP, 0, states,
    )


def _legacy_request(states: int) -> bytes:
    return _LEGACY_REQUEST.pack(
        _LEGACY_REQUEST.size, TCPDIAG_GETSOCK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0, 0, 0, 0, 0, states, 0
    )


def _errno_text(errno: int) -> str:
    return f"errno {errno}, {os.strerror(errno)}"


def _control(view: memoryview, offset: int, message_type: int) -> bool:
    """True at a clean NLMSG_DONE; raises on NLMSG_ERROR (EPERM under SELinux, EINVAL on old
    kernels) and on an NLMSG_DONE whose payload (an int) is negative: the dump was cut short."""
    if message_type == NLMSG_DONE:
        message_length, _ = _HEADER.unpack_from(view, offset)
        if message_length >= 20:  # the dump's status, an int after the header; a bare header is clean
            (errno,) = _ERRNO.unpack_from(view, offset + 16)
            if errno < 0:
                raise ScanError(f"netlink: the kernel cut the sock_diag dump short ({_errno_text(-errno)})")
        return True
    if message_type == NLMSG_ERROR:
        (errno,) = _ERRNO.unpack_from(view, offset + 16)
        raise ScanError(f"netlink: sock_diag refused the dump ({_errno_text(-errno)})")
    raise ScanError(f"netlink: unexpected message type {message_type}")


class _Sieve:
    """Which ports count where: local ports worth counting, and which sockets are outbound.

    Local: kept when outside the ephemeral range or inbound. Judged on the port's high byte (one
    C-level `bytes.translate` per sliced buffer, one table lookup per distinct walked key), so it
    passes a superset; the exact range check happens once per distinct port when rendering.
    Sockets it drops still count in the per-state totals, and memory stays bounded by the ports
    reported, not by the sockets on the host.

    Remote: a socket is outbound when its local port is not inbound. `inbound` holds the inbound
    ports byte-swapped (as records carry them); `outbound` maps a swapped local port to 1 or 0 at
    C speed (`bytes.__getitem__`), or is None when nothing is inbound.
    """

    def __init__(self, ephemeral: Tuple[int, int], inbound_ports: Set[int]) -> None:
        low, high = ephemeral
        keep = bytearray(1 if not (low >> 8) < byte < (high >> 8) else 0 for byte in range(256))
        for port in inbound_ports:
            keep[port >> 8] = 1
        self.table = bytes(keep)
        self.keeps_everything = all(keep)
        self.inbound = {_swap16(port) for port in inbound_ports}
        self.outbound: Optional[Callable[[int], int]] = None
        if self.inbound:
            outbound = bytearray(b"\x01") * 65536
            for swapped in self.inbound:
                outbound[swapped] = 0
            self.outbound = bytes(outbound).__getitem__

    def fold(self, keys: List[int], into: Tally) -> None:
        """Count `keys` (byte-swapped `port << 4 | state`) into `into`, dropping sieved ports."""
        keep = self.table
        counted: Tally = {}
        _count_elements(counted, keys)
        for key, count in counted.items():
            if keep[(key >> PORT_SHIFT) & 0xFF]:  # the low byte of a swapped port is its high byte
                into[key] = into.get(key, 0) + count


_STATE_OF = (0xF).__and__  # key -> kernel state, mapped in C


class _Walker:
    """Tallies mixed records one `unpack_from` each, folding every buffer into counters."""

    def __init__(self, data_type: int, sieve: _Sieve) -> None:
        self.data_type = data_type
        self.sieve = sieve
        self.local: Tally = {}  # byte-swapped port << 4 | state -> count
        self.remote: Tally = {}
        self.states: Tally = {}  # kernel state -> count, every socket walked

    def walk(self, view: memoryview, length: int, offset: int = 0) -> bool:
        unpack = _RECORD.unpack_from
        local_keys: List[int] = []
        remote_keys: List[int] = []
        add_local = local_keys.append
        add_remote = remote_keys.append
        data_type = self.data_type
        inbound = self.sieve.inbound
        control_type = 0
        while offset < length:
            message_length, message_type, state, sport, dport = unpack(view, offset)
            if message_type != data_type:
                control_type = message_type
                break
            add_local(sport << PORT_SHIFT | state)
            if sport not in inbound:  # outbound: tallied by the service port it talks to
                add_remote(dport << PORT_SHIFT | state)
            offset += (message_length + 3) & ~3
        _count_elements(self.states, map(_STATE_OF, local_keys))
        self.sieve.fold(local_keys, self.local)
        _count_elements(self.remote, remote_keys)
        return bool(control_type) and _control(view, offset, control_type)


class _TimeWaitSlicer:
    """Tallies a TIME_WAIT-only dump by slicing fixed-size records (see the module docstring)."""

    def __init__(self, data_type: int, sieve: _Sieve) -> None:
        self.data_type = data_type
        self.sieve = sieve
        self.local: Tally = {}  # byte-swapped port -> count
        self.remote: Tally = {}
        self.records = 0  # sliced records; walked ones are in walker.states
        self.walker = _Walker(data_type, sieve)  # for what slicing cannot take

    def on_buffer(self, view: memoryview, length: int) -> bool:
        message_length, message_type = _HEADER.unpack_from(view, 0)
        if message_type != self.data_type:
            return _control(view, 0, message_type)
        stride = (message_length + 3) & ~3
        count = length // stride
        body = view[: count * stride]
        if stride < RECORD_MIN or not self._uniform(body, stride):
            return self.walker.walk(view, length)
        halves = body.cast("H")
        step = stride // 2
        local_halves, remote_halves = halves[10::step], halves[11::step]
        sieve = self.sieve
        if sieve.keeps_everything:
            _count_elements(self.local, local_halves)
        else:
            _count_elements(self.local, compress(local_halves, body[20::stride].tobytes().translate(sieve.table)))
        if sieve.outbound is None:
            _count_elements(self.remote, remote_halves)
        else:
            _count_elements(self.remote, compress(remote_halves, map(sieve.outbound, local_halves)))
        self.records += count
        # What is left is a trailing NLMSG_DONE (or records of another length: walked).
        return len(body) < length and self.walker.walk(view, length, len(body))

    @staticmethod
    def _uniform(body: memoryview, stride: int) -> bool:
        """Every record in `body` has the first one's length, type and flags: checked in C.

        Those are the first 8 bytes of each record's nlmsghdr; compared as one byte string.
        """
        if stride % 8:
            lengths = body.cast("I")[0 :: stride // 4]
            types = body.cast("H")[2 :: stride // 2]
            return min(lengths) == max(lengths) and min(types) == max(types)
        headers = body.cast("Q")[0 :: stride // 8].tobytes()
        return headers == headers[:8] * (len(headers) // 8)


def _listeners(dumper: Dumper, family: int, found: List[Listener]) -> None:
    """Every LISTEN socket of one family, in full."""
    unpack = _LISTENER.unpack_from
    text_family = 4 if family == socket.AF_INET else 6
    address_length = 4 if family == socket.AF_INET else 16

    def on_buffer(view: memoryview, length: int) -> bool:
        offset = 0
        while offset < length:
            message_length, message_type, _, raw_address, queue, backlog, uid, inode = unpack(view, offset)
            if message_type != SOCK_DIAG_BY_FAMILY:
                return _control(view, offset, message_type)
            port = (view[offset + 20] << 8) | view[offset + 21]
            address = socket.inet_ntop(family, raw_address[:address_length])
            found.append(Listener(port, text_family, address, inode, queue, backlog, uid))
            offset += (message_length + 3) & ~3
        return False

    dumper.dump(_v2_request(family, LISTEN_MASK), on_buffer)


def _connections(dumper: Dumper, sieve: _Sieve, legacy: bool) -> Tuple[_TimeWaitSlicer, _Walker]:
    """TIME_WAIT (sliced) and every other non-listening state (walked), both families."""
    data_type = TCPDIAG_GETSOCK if legacy else SOCK_DIAG_BY_FAMILY
    slicer = _TimeWaitSlicer(data_type, sieve)
    walker = _Walker(data_type, sieve)
    if legacy:
        dumper.dump(_legacy_request(TIME_WAIT_MASK), slicer.on_buffer)
        dumper.dump(_legacy_request(OTHER_MASK), walker.walk)
    else:
        for family in (socket.AF_INET, socket.AF_INET6):
            dumper.dump(_v2_request(family, TIME_WAIT_MASK), slicer.on_buffer)
            dumper.dump(_v2_request(family, OTHER_MASK), walker.walk)
    return slicer, walker


def _tally(sliced_ports: Tally, *walked: Tally) -> Tally:
    """Merge into `port << 4 | state` keys in host byte order, swapping once per distinct key."""
    tally: Tally = {_swap16(port) << PORT_SHIFT | TIME_WAIT: count for port, count in sliced_ports.items()}
    for counter in walked:
        for key, count in counter.items():
            state = key & 0xF
            key = _swap16(key >> PORT_SHIFT) << PORT_SHIFT | (SYN_RECV if state == NEW_SYN_RECV else state)
            tally[key] = tally.get(key, 0) + count
    return tally


def scan(remembered: Iterable[int] = (), ephemeral: Optional[Tuple[int, int]] = None,
         legacy: bool = True) -> ScanResult:
    """One scan of every TCP socket, IPv4 and IPv6.

    `remembered`: ports that listened recently (the grace memory); with this scan's listeners they
    are the inbound ports, whose connections never count by remote port (see `result`).
    With `ephemeral` (low, high), sockets on ephemeral local ports that are not inbound are counted
    in the totals only: nobody asks for them by port, and on a busy client they are 100k distinct
    ports that would cost more time and memory to count than everything else together.
    `legacy=False` skips the one-dump legacy request, as on kernels that refuse it.
    """
    if sys.byteorder != "little":
        raise ScanError("netlink: this parser reads little-endian hosts only")
    started = time.time()
    clock = time.perf_counter()
    listeners: List[Listener] = []
    dumper = Dumper()
    try:
        for family in (socket.AF_INET, socket.AF_INET6):
            _listeners(dumper, family, listeners)
        inbound = {listener.port for listener in listeners}
        inbound.update(port for port in remembered if 0 < port <= 0xFFFF)
        sieve = _Sieve(ephemeral or (65536, 65536), inbound)
        try:
            slicer, walker = _connections(dumper, sieve, legacy)
        except ScanError:
            if not legacy:
                raise
            dumper.close()
            dumper = Dumper()  # a refused request may leave the socket mid-dump
            slicer, walker = _connections(dumper, sieve, legacy=False)
    except OSError as error:
        raise ScanError(f"netlink: {error}") from None
    finally:
        dumper.close()
    local = _tally(slicer.local, walker.local, slicer.walker.local)
    remote = _tally(slicer.remote, walker.remote, slicer.walker.remote)
    totals = [0] * STATE_COUNT
    for states in (walker.states, slicer.walker.states):
        for state, count in states.items():
            totals[(SYN_RECV if state == NEW_SYN_RECV else state) - 1] += count
    totals[TIME_WAIT - 1] += slicer.records
    for listener in listeners:
        key = listener.port << PORT_SHIFT | LISTEN
        local[key] = local.get(key, 0) + 1
    totals[LISTEN - 1] += len(listeners)
    return ScanResult("netlink", local, remote, listeners, started, time.perf_counter() - clock, totals)
