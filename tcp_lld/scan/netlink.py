"""Read the kernel's TCP socket table through netlink sock_diag (the fast path on Linux).

Three requests, each walking the kernel's tables once:

1. LISTEN only, per family (`SOCK_DIAG_BY_FAMILY`): the kernel then skips the connection table, so
   it costs ~0.1 ms even at 100k sockets. Parsed in full: addresses, accept queue, backlog, inode.
2. TIME_WAIT only, both families in ONE dump (the legacy `TCPDIAG_GETSOCK` request, which the
   kernel serves with family AF_UNSPEC). On busy hosts this is nearly every socket, and every
   record has the same length, so ports are sliced out of the buffer at C speed, never unpacked
   one by one.
3. Every other state, both families in one dump, walked record by record (few on busy hosts).

Ports inside the ephemeral range that nobody listens on are dropped before counting (`_Sieve`):
they count in the per-state totals only.

Kernels that refuse the legacy request get two `SOCK_DIAG_BY_FAMILY` dumps per family instead.
The ports are read little-endian and byte-swapped once per distinct port, not once per socket; on
a big-endian host (s390x) this module refuses, and the caller falls back to /proc/net/tcp.

Layouts: `include/uapi/linux/netlink.h` (nlmsghdr), `include/uapi/linux/inet_diag.h`
(inet_diag_req, inet_diag_req_v2, inet_diag_msg), `include/uapi/linux/sock_diag.h`.
"""

from __future__ import annotations

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
from .result import PORT_SHIFT, Listener, ScanResult
from ..states import LISTEN, NEW_SYN_RECV, STATE_COUNT, SYN_RECV, TIME_WAIT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, Iterable, List, Optional, Tuple

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
# nlmsghdr.len, .type, inet_diag_msg.family, .src, .rqueue, .wqueue, .inode (sport read apart).
_LISTENER = struct.Struct("<IH10xB3x4x16s16x4x8x4xII4xI")
_HEADER = struct.Struct("<IH")
_ERRNO = struct.Struct("<i")

BUFFER_SIZE = 64 * 1024  # the kernel sends at most 32 KiB of a dump per read
SOCKET_BUFFER = 4 << 20


def _swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


class _Dumper:
    """One sock_diag socket and one receive buffer, reused by every dump of a scan."""

    def __init__(self) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
        except (OSError, AttributeError) as error:
            raise ScanError(f"netlink: cannot open a sock_diag socket: {error}") from None
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        except OSError:
            pass
        self.buffer = bytearray(BUFFER_SIZE)
        self.view = memoryview(self.buffer)

    def dump(self, request: bytes, on_buffer: OnBuffer) -> None:
        """Send one dump request; feed every received buffer to `on_buffer` until it says done."""
        self.sock.send(request)
        while True:
            length = self.sock.recv_into(self.buffer)
            if length == 0:
                raise ScanError("netlink: the kernel closed the sock_diag socket mid-dump")
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


def _control(view: memoryview, offset: int, message_type: int) -> bool:
    """True at NLMSG_DONE; raises on NLMSG_ERROR (e.g. EPERM under SELinux, EINVAL on old kernels)."""
    if message_type == NLMSG_DONE:
        return True
    if message_type == NLMSG_ERROR:
        (errno,) = _ERRNO.unpack_from(view, offset + 16)
        raise ScanError(f"netlink: sock_diag refused the dump (errno {-errno})")
    raise ScanError(f"netlink: unexpected message type {message_type}")


class _Sieve:
    """Keeps ports worth counting by port: outside the ephemeral range, or listening inside it.

    Judged on the port's high byte (one C-level `bytes.translate` per sliced buffer, one table
    lookup per distinct walked key), so it passes a superset; the exact range check happens once
    per distinct port when rendering. Sockets it drops still count in the per-state totals, and
    memory stays bounded by the ports reported, not by the sockets on the host.
    """

    def __init__(self, ephemeral: Tuple[int, int], listening_ports: List[int]) -> None:
        low, high = ephemeral
        keep = bytearray(1 if not (low >> 8) < byte < (high >> 8) else 0 for byte in range(256))
        for port in listening_ports:
            keep[port >> 8] = 1
        self.table = bytes(keep)
        self.keeps_everything = all(keep)

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
    """Tallies mixed records one `unpack_from` each, folding every buffer into sieved counters."""

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
        control_type = 0
        while offset < length:
            message_length, message_type, state, sport, dport = unpack(view, offset)
            if message_type != data_type:
                control_type = message_type
                break
            add_local(sport << PORT_SHIFT | state)
            add_remote(dport << PORT_SHIFT | state)
            offset += (message_length + 3) & ~3
        _count_elements(self.states, map(_STATE_OF, local_keys))
        self.sieve.fold(local_keys, self.local)
        self.sieve.fold(remote_keys, self.remote)
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
        if self.sieve.keeps_everything:
            _count_elements(self.local, halves[10::step])
            _count_elements(self.remote, halves[11::step])
        else:
            table = self.sieve.table
            _count_elements(self.local, compress(halves[10::step], body[20::stride].tobytes().translate(table)))
            _count_elements(self.remote, compress(halves[11::step], body[22::stride].tobytes().translate(table)))
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


def _listeners(dumper: _Dumper, family: int, found: List[Listener]) -> None:
    """Every LISTEN socket of one family, in full."""
    unpack = _LISTENER.unpack_from
    text_family = 4 if family == socket.AF_INET else 6
    address_length = 4 if family == socket.AF_INET else 16

    def on_buffer(view: memoryview, length: int) -> bool:
        offset = 0
        while offset < length:
            message_length, message_type, _, raw_address, queue, backlog, inode = unpack(view, offset)
            if message_type != SOCK_DIAG_BY_FAMILY:
                return _control(view, offset, message_type)
            port = (view[offset + 20] << 8) | view[offset + 21]
            address = socket.inet_ntop(family, raw_address[:address_length])
            found.append(Listener(port, text_family, address, inode, queue, backlog))
            offset += (message_length + 3) & ~3
        return False

    dumper.dump(_v2_request(family, LISTEN_MASK), on_buffer)


def _connections(dumper: _Dumper, sieve: _Sieve, legacy: bool) -> Tuple[_TimeWaitSlicer, _Walker]:
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


def scan(ephemeral: Optional[Tuple[int, int]] = None, legacy: bool = True) -> ScanResult:
    """One scan of every TCP socket, IPv4 and IPv6.

    With `ephemeral` (low, high), sockets on ephemeral ports that are not listening are counted in
    the totals only: nobody asks for them by port, and on a busy client they are 100k distinct
    ports that would cost more time and memory to count than everything else together.
    `legacy=False` skips the one-dump legacy request, as on kernels that refuse it.
    """
    if sys.byteorder != "little":
        raise ScanError("netlink: this parser reads little-endian hosts only")
    started = time.time()
    clock = time.perf_counter()
    listeners: List[Listener] = []
    dumper = _Dumper()
    try:
        for family in (socket.AF_INET, socket.AF_INET6):
            _listeners(dumper, family, listeners)
        sieve = _Sieve(ephemeral or (65536, 65536), [listener.port for listener in listeners])
        try:
            slicer, walker = _connections(dumper, sieve, legacy)
        except ScanError:
            if not legacy:
                raise
            dumper.close()
            dumper = _Dumper()  # a refused request may leave the socket mid-dump
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
