"""Read the kernel's TCP socket table through netlink sock_diag (the fast path on Linux).

Two kinds of request:

1. LISTEN only, per family (`SOCK_DIAG_BY_FAMILY`): the kernel then skips the connection table, so
   it costs ~0.1 ms even at 100k sockets. Parsed in full: addresses, accept queue, backlog, inode.
2. Every other state, both families, in ONE dump (the legacy `TCPDIAG_GETSOCK` request, which the
   kernel serves with family AF_UNSPEC). Each dump walks the kernel's whole connection hash table
   (every namespace's sockets), which costs about as much as the records it sends: at 100k
   sockets, one dump of every state takes ~60 ms where a TIME_WAIT dump plus an other-states dump
   took ~85 ms. The records come in a few lengths (TIME_WAIT and request sockets are shorter than
   full sockets), interleaved; `_Slicer` regroups each buffer to one length and counts it in
   columns at C speed, whatever the mix of states (see there), with `_Walker` (one record at a
   time) for any buffer it cannot prove regular.

Which socket counts where is `result`'s rule: listeners come first, so the inbound ports (listening
now, or remembered by the caller) are known before any connection is read; a connection whose
local port is inbound is never tallied by its remote port. Local ports inside the ephemeral range
that are not inbound are dropped before counting (`_Sieve`): they count in the per-state totals
only. Remote ports are never sieved. Outbound sockets are also counted per (family, remote port,
local address, remote address), for `ScanResult.peers`: one bytes slice per OUTBOUND socket, picked
at C speed, so a server whose sockets are nearly all inbound pays almost nothing for it.

A connections dump larger than one batch (~2,500 sockets) is received by a forked child while
this process parses what came (`pipeline`): the kernel's work, done inside each `recv`, and the
parsing then overlap on two CPUs instead of taking turns.

A dump is trusted only whole: a datagram larger than the buffer (MSG_TRUNC), an NLMSG_ERROR, or an
NLMSG_DONE carrying a negative error (the kernel cut the dump short) raise `ScanError`.

Kernels that refuse the legacy request get one `SOCK_DIAG_BY_FAMILY` dump per family instead.
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
from ..states import LISTEN, NEW_SYN_RECV, STATE_COUNT, SYN_RECV
from . import pipeline
from .result import PORT_SHIFT, Listener, ScanResult, largest_per_port

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
#: nlmsg_seq of every request, echoed in every record: its last byte (0xA5) is rare in socket data,
#: so `bytes.replace` looking for a record header (see `_Slicer`) skips ahead fast.
SEQUENCE = 0xA5C3E17B

LISTEN_MASK = 1 << LISTEN
#: Every state but LISTEN, with TCP_NEW_SYN_RECV (12) for request sockets.
CONNECTIONS_MASK = sum(1 << state for state in range(1, 13) if state != LISTEN)

_V2_REQUEST = struct.Struct("=IHHII BBBxI 48x")  # nlmsghdr + inet_diag_req_v2 (sockid zeroed)
_LEGACY_REQUEST = struct.Struct("=IHHII BBBB 48x II")  # nlmsghdr + inet_diag_req
# nlmsghdr.len, .type, inet_diag_msg.family, .state, .sport, .dport (ports byte-swapped, see above).
_RECORD = struct.Struct("<IH10xBB2xHH")
# nlmsghdr.len, .type, inet_diag_msg.family, .src, .rqueue, .wqueue, .uid, .inode (sport read apart).
_LISTENER = struct.Struct("<IH10xB3x4x16s16x4x8x4xIIII")
_HEADER = struct.Struct("<IH")
_ERRNO = struct.Struct("<i")

BUFFER_SIZE = 64 * 1024  # the kernel sends at most 32 KiB of a dump per read
BATCH_SIZE = 256 * 1024  # datagrams parsed together (see `Dumper.dump_batched`)
SHORT_DATAGRAM = 16 * 1024  # shorter than the kernel's full dump datagrams: maybe the last one
RECEIVE_TIMEOUT = 10  # seconds
_TIMEVAL = struct.Struct("@ll")
SOCKET_BUFFER = 4 << 20


def _swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


class Dumper:
    """One sock_diag socket and one receive buffer, reused by every dump of a scan.

    The socket is touched only by `open`, `send`, `receive_into` and `close`: tests replace the
    class (`netlink.Dumper = ...`) with one that replays recorded buffers, without root or sockets.
    """

    #: Large dumps may be received by a forked child (`pipeline`); a dumper that must see every
    #: datagram in this process (a recorder) says False, and so does one whose fork was refused.
    receives_in_child = True

    def __init__(self) -> None:
        self.buffer = bytearray(BUFFER_SIZE)  # room for one datagram
        self.view = memoryview(self.buffer)
        self.open()

    def open(self) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
        except (OSError, AttributeError) as error:
            raise ScanError(f"netlink: cannot open a sock_diag socket: {error}") from None
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            # A kernel that never ends a dump must not hang the agent: recv fails instead (EAGAIN).
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(RECEIVE_TIMEOUT, 0))
        except OSError:
            pass

    def send(self, request: bytes) -> None:
        self.sock.send(request)

    def receive_into(self, buffer: memoryview) -> int:
        """One datagram into `buffer`; its FULL length (MSG_TRUNC), even when it did not fit."""
        return self.sock.recv_into(buffer, 0, socket.MSG_TRUNC)

    def _received(self, buffer: memoryview) -> int:
        length = self.receive_into(buffer)
        if length == 0:
            raise ScanError("netlink: the kernel closed the sock_diag socket mid-dump")
        if length > len(buffer):  # counting the part that fitted would undercount
            raise ScanError(f"netlink: a {length}-byte dump message did not fit the {len(buffer)}-byte buffer")
        return length

    def dump(self, request: bytes, on_buffer: OnBuffer) -> None:
        """Send one dump request; feed every received buffer to `on_buffer` until it says done."""
        self.send(request)
        while not on_buffer(self.view, self._received(self.view)):  # the whole buffer: a short
            pass  # last message still unpacks

    def dump_batched(self, request: bytes, on_buffer: OnBuffer) -> None:
        """`dump`, with datagrams received back to back into one BATCH_SIZE buffer and handed over
        together (records never straddle datagrams): what `on_buffer` pays per call, it pays once
        per ~7 datagrams. A dump that outgrows its first batch is received on by a forked child
        while this process parses (`pipeline`), where there is a second CPU to overlap them."""
        self.send(request)
        batch = bytearray(BATCH_SIZE + 64)  # slack: the walker reads 24 bytes even at a 20-byte DONE
        with memoryview(batch) as view:
            while True:
                filled, maybe_last = self.fill_batch(view)
                if not maybe_last and self.receives_in_child and pipeline.worthwhile():
                    if pipeline.receive_rest(self, view, filled, len(batch), on_buffer):
                        return
                    self.receives_in_child = False  # refused: not once more per batch of this scan
                if on_buffer(view, filled):
                    return

    def fill_batch(self, batch: memoryview) -> Tuple[int, bool]:
        """Receive datagrams into `batch` until BATCH_SIZE would overflow or one may be the dump's
        last (short, or ending like NLMSG_DONE, or starting with another message type): receiving
        again after the last one would wait for nothing. Returns (bytes filled, maybe the last)."""
        room = len(self.buffer)
        filled = 0
        while True:
            start = filled
            length = self._received(batch[start : start + room])
            filled += length
            message_type = _HEADER.unpack_from(batch, start)[1]
            maybe_last = (length < SHORT_DATAGRAM or message_type in (NLMSG_ERROR, NLMSG_DONE)
                          or (length >= 20 and _HEADER.unpack_from(batch, filled - 20) == (20, NLMSG_DONE))
                          or _HEADER.unpack_from(batch, filled - 16) == (16, NLMSG_DONE))
            if maybe_last or filled + room > BATCH_SIZE:
                return filled, maybe_last

    def close(self) -> None:
        self.view.release()
        self.sock.close()


def _v2_request(family: int, states: int) -> bytes:
    return _V2_REQUEST.pack(
        _V2_REQUEST.size, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, SEQUENCE, 0,
        family, socket.IPPROTO_TCP, 0, states,
    )


def _legacy_request(states: int) -> bytes:
    return _LEGACY_REQUEST.pack(
        _LEGACY_REQUEST.size, TCPDIAG_GETSOCK, NLM_F_REQUEST | NLM_F_DUMP, SEQUENCE, 0, 0, 0, 0, 0, states, 0
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
    C-level `bytes.translate` per buffer, one table lookup per distinct walked key), so it passes
    a superset; the exact range check happens once per distinct port when rendering. Sockets it
    drops still count in the per-state totals, and memory stays bounded by the ports reported,
    not by the sockets on the host.

    Remote: a socket is outbound when its local port is not inbound. `inbound` holds the inbound
    ports byte-swapped (as records carry them), for the walker. For whole columns of ports,
    `inbound_tables` answer in C: inbound high bytes are numbered in groups of 8; per group, one
    table maps a high byte to its bit and another a low byte to the bits of the high bytes it
    makes an inbound port with, so `hi.translate(his) & lo.translate(los)` (as integers) is
    non-zero exactly at inbound ports. Port 80 (0x00 0x50) alone gives his[0x00] = 1,
    los[0x50] = 1: port 0x0050 -> 1 & 1, port 0x0051 -> 1 & 0, port 0x0150 -> 0 & 1.
    """

    def __init__(self, ephemeral: Tuple[int, int], inbound_ports: Set[int]) -> None:
        low, high = ephemeral
        keep = bytearray(1 if not (low >> 8) < byte < (high >> 8) else 0 for byte in range(256))
        for port in inbound_ports:
            keep[port >> 8] = 1
        self.table = bytes(keep)
        self.keep_mask = bytes(0xFF if flag else 0 for flag in keep)
        self.keeps_everything = all(keep)
        self.inbound = {_swap16(port) for port in inbound_ports}
        high_bytes = sorted({port >> 8 for port in inbound_ports})
        self.inbound_tables: List[Tuple[bytes, bytes]] = []
        for first in range(0, len(high_bytes), 8):
            group = high_bytes[first : first + 8]
            his, los = bytearray(256), bytearray(256)
            for bit, high_byte in enumerate(group):
                his[high_byte] = 1 << bit
            for port in inbound_ports:
                if port >> 8 in group:
                    los[port & 0xFF] |= 1 << group.index(port >> 8)
            self.inbound_tables.append((bytes(his), bytes(los)))

    def fold(self, keys: List[int], into: Tally) -> None:
        """Count `keys` (`state << 16 | byte-swapped port`) into `into`, dropping sieved ports."""
        keep = self.table
        counted: Tally = {}
        _count_elements(counted, keys)
        for key, count in counted.items():
            if keep[key & 0xFF]:  # the low byte of a swapped port is its high byte
                into[key] = into.get(key, 0) + count

    def outbound_mask(self, sport_high: bytes, sport_low: bytes) -> Optional[int]:
        """0xFF per outbound socket, 0 per inbound one, as a little-endian integer; None: all outbound."""
        inbound = 0
        for his, los in self.inbound_tables:
            inbound |= int.from_bytes(sport_high.translate(his), "little") & int.from_bytes(sport_low.translate(los), "little")
        if not inbound:
            return None
        return int.from_bytes(inbound.to_bytes(len(sport_high), "little").translate(_OUTBOUND), "little")


#: Internal key: kernel state << 16 | byte-swapped port, a Unicode code point (state >= 1 puts it
#: at 0x10000 or above; TCP_NEW_SYN_RECV, 12, at 0xCxxxx, still below 0x10FFFF).
_STATE_OF = (16).__rrshift__  # key -> kernel state, mapped in C
_OUTBOUND = bytes([0xFF]) + bytes(255)  # inbound flags (0: none) -> 0xFF where outbound
_FEW = 6  # distinct keys counted by `str.replace` per column, before the C counter takes the rest
_LENGTH = struct.Struct("<I")
LEARN_BYTES = 64 * 1024  # record lengths are first learnt from this much of a buffer
PIECE_BYTES = 16 * 1024  # see `_pad`
#: Offsets in a record of inet_diag_msg's idiag_state and the bytes of id.idiag_sport, idiag_dport.
_FIELDS = (17, 20, 21, 22, 23)
#: Outbound sockets are also counted per `_PEER` key: the 35 bytes of a record from _PEER_START to
#: _PEER_END, with the family (offset 16) written over the low byte of sport (21) so that the key
#: reads family, dport, id.idiag_src, id.idiag_dst (the kernel zero-fills an IPv4 address's last
#: 12 bytes). The family keeps an IPv6 pair whose addresses end in 12 zero bytes (`2001:db8::`)
#: apart from the IPv4 pair that has the same first bytes, as the kernel does.
_FAMILY, _PEER_START, _PEER_END = 16, 21, 56
_FAMILY_BYTE = [bytes((family,)) for family in range(256)]


class _Walker:
    """Tallies records one `unpack_from` each: the fallback for buffers it cannot prove regular."""

    def __init__(self, data_type: int, sieve: _Sieve) -> None:
        self.data_type = data_type
        self.sieve = sieve
        self.local: Tally = {}  # state << 16 | byte-swapped port -> count
        self.remote: Tally = {}
        self.states: Tally = {}  # kernel state -> count, every socket walked
        self.peers: Dict[bytes, int] = {}  # `_PEER` key -> outbound sockets

    def walk(self, view: memoryview, length: int, offset: int = 0) -> bool:
        unpack = _RECORD.unpack_from
        local_keys: List[int] = []
        remote_keys: List[int] = []
        peer_keys: List[bytes] = []
        add_local = local_keys.append
        add_remote = remote_keys.append
        add_peer = peer_keys.append
        data_type = self.data_type
        inbound = self.sieve.inbound
        control_type = 0
        while offset < length:
            message_length, message_type, family, state, sport, dport = unpack(view, offset)
            if message_type != data_type:
                control_type = message_type
                break
            add_local(state << 16 | sport)
            if sport not in inbound:  # outbound: tallied by the service port it talks to
                add_remote(state << 16 | dport)
                add_peer(_FAMILY_BYTE[family] + view[offset + _PEER_START + 1 : offset + _PEER_END].tobytes())
            offset += (message_length + 3) & ~3
        _count_elements(self.states, map(_STATE_OF, local_keys))
        self.sieve.fold(local_keys, self.local)
        _count_elements(self.remote, remote_keys)
        _count_elements(self.peers, peer_keys)
        return bool(control_type) and _control(view, offset, control_type)


class _Slicer:
    """Tallies a dump in columns, at C speed, whatever mix of states and record sizes it holds.

    One dump of every state holds records of a few lengths (on 6.x kernels 96 bytes for TIME_WAIT
    and request sockets, 124 for full sockets, which carry attributes), interleaved in hash-table
    order. No bytecode runs per socket; per buffer (a batch of datagrams, `Dumper.dump_batched`):

    1. Regroup. Every record starts with a header whose first 12 bytes only its length tells apart
       (type, flags and `SEQUENCE` are the dump's). Zeros are inserted right after each such
       prefix of a shorter length (`_pad`: `bytes.split` and `join`), so that every record takes
       the longest length. Then every field sits at a fixed stride: a short record's
       inet_diag_msg just later.
    2. Prove it. Each header byte is cut out as one strided `bytes` slice; every record must have
       the dump's header with one of the known lengths, and the records must fill the buffer up
       to its closing message. A header-like pattern inside a payload (a crafted IPv6 address) would
       have shifted what follows off the stride, so it fails the proof; a failed buffer is walked
       record by record (`_Walker`), which counts the same or raises. A length not seen yet is
       learnt from the first buffer that has it (one short loop over its headers).
    3. Columns. The state byte and the two bytes of each port, one strided slice per record
       length, merged with byte masks made by `bytes.translate` of the length column and combined
       as big integers.
    4. Count: per-state totals are `bytes.count`s; the sieve and the outbound test are
       `bytes.translate`s (see `_Sieve`), and a socket that must not count in a tally gets key 0
       there; keys (`state << 16 | port`, the port byte-swapped) are built by strided
       `bytearray` assignments, decoded as UTF-32, one character per socket, and counted by
       `_fold_text`.
    5. Address pairs, only in a buffer with outbound sockets (`_peers`): one 35-byte key per
       outbound socket (family, dport, source and destination addresses), counted by
       `_count_elements`.

    For example, an ESTABLISHED record from local port 80 (bytes 0x00 0x50) to 3306 (0x0C 0xEA)
    gives the local key 1 << 16 | 0x5000 and the remote key 1 << 16 | 0xEA0C; `_tally` swaps each
    distinct port back once.
    """

    def __init__(self, data_type: int, sieve: _Sieve) -> None:
        self.data_type = data_type
        self.sieve = sieve
        self.local: Tally = {}  # state << 16 | byte-swapped port -> count
        self.remote: Tally = {}
        self.states: Tally = {}  # kernel state -> count, sliced records; walked ones in walker.states
        self.peers: Dict[bytes, int] = {}  # `_PEER` key -> outbound sockets, sliced records
        self.walker = _Walker(data_type, sieve)  # for what slicing cannot take
        self.lengths: Set[int] = set()  # record lengths met in this dump
        self.out = bytearray()  # the regrouped buffer, reused: a fresh one per batch costs page faults

    def on_buffer(self, view: memoryview, length: int) -> bool:
        message_length, message_type = _HEADER.unpack_from(view, 0)
        if message_type != self.data_type:
            return _control(view, 0, message_type)
        if message_length not in self.lengths:
            self._learn(view, length, LEARN_BYTES)
        if self.lengths:
            done = self._slice(view, length)
            if done is None and self._learn(view, length):
                done = self._slice(view, length)
            if done is not None:
                return done
        return self.walker.walk(view, length)

    def _learn(self, view: memoryview, length: int, first: int = 1 << 30) -> bool:
        """Add the record lengths of this buffer's `first` bytes (multiples of 4, at least a whole
        inet_diag_msg); True if any was new."""
        known = len(self.lengths)
        offset = 0
        data_type = self.data_type
        length = min(length, first)
        while offset + 16 <= length:
            message_length, message_type = _HEADER.unpack_from(view, offset)
            if message_type != data_type or message_length < RECORD_MIN or message_length % 4:
                break
            self.lengths.add(message_length)
            offset += message_length
        return len(self.lengths) > known

    def _slice(self, view: memoryview, length: int) -> Optional[bool]:
        """Steps 1 to 4 of the class docstring; None if the buffer fails the proof."""
        header = view[4:12].tobytes()  # type, flags, sequence number (the port id is not looked at)
        longest = max(self.lengths)
        shorter = sorted(self.lengths - {longest})
        room = length * longest // min(self.lengths) + 64
        if len(self.out) < room:
            self.out = bytearray(room)
        data = self.out
        if shorter:
            size = _pad(view, length, header, shorter, longest, data)
        else:
            data[:length] = view[:length]
            size = length
        count = size // longest
        end = count * longest
        if count == 0:
            return None
        for index in range(4, 12):  # the dump's header on every record
            if data[index:end:longest] != header[index - 4 : index - 3] * count:
                return None
        if data[2:end:longest] != bytes(count) or data[3:end:longest] != bytes(count):
            return None
        low, high = data[0:end:longest], data[1:end:longest]
        if not shorter:
            if low != low[:1] * count or high != high[:1] * count:
                return None
            columns = [data[offset:end:longest] for offset in _FIELDS]
            masks = [(longest, (1 << (8 * count)) - 1)]
        else:
            masks = []
            for record_length in shorter + [longest]:
                masks.append((record_length, int.from_bytes(low.translate(_equal_to(record_length & 0xFF)), "little")
                              & int.from_bytes(high.translate(_equal_to(record_length >> 8)), "little")))
            if _or(mask for _, mask in masks) != (1 << (8 * count)) - 1:  # a length not known
                return None
            columns = []
            for offset in _FIELDS:
                merged = 0
                for record_length, mask in masks:
                    shift = longest - record_length
                    merged |= int.from_bytes(data[offset + shift : end + shift : longest], "little") & mask
                columns.append(merged.to_bytes(count, "little"))
        outbound = self._count(*columns)
        if outbound != 0:
            self._peers(data, end, longest, masks, outbound)
        if end == size:
            return False
        if size - end < 16:
            return None
        message_length, message_type = _HEADER.unpack_from(data, end)
        if message_type == self.data_type or end + message_length > size:
            return None  # records past the last stride: not proven
        with memoryview(data) as rest:  # the closing NLMSG_DONE (or an error)
            return _control(rest, end, message_type)

    def _count(self, states: bytes, sport_high: bytes, sport_low: bytes, dport_high: bytes,
               dport_low: bytes) -> Optional[int]:
        """Step 4: tally one column of each field, one entry per socket. Returns which sockets are
        outbound: `_Sieve.outbound_mask` (0: none, None: all)."""
        count = len(states)
        tally = self.states
        first = states[0]
        if states.count(first) == count:
            tally[first] = tally.get(first, 0) + count
        else:
            for state in range(1, 13):
                seen = states.count(state)
                if seen:
                    tally[state] = tally.get(state, 0) + seen
        sieve = self.sieve
        keys = bytearray(4 * count)
        if sieve.keeps_everything:
            keys[0::4], keys[1::4], keys[2::4] = sport_high, sport_low, states
        else:  # a sieved socket's key is 0 in all three bytes: one character, left out
            keep = int.from_bytes(sport_high.translate(sieve.keep_mask), "little")
            keys[0::4], keys[1::4], keys[2::4] = (_masked(column, keep, count) for column in (sport_high, sport_low, states))
        _fold_text(keys.decode("utf-32-le", "surrogatepass"), self.local)
        outbound = sieve.outbound_mask(sport_high, sport_low)
        if outbound is None:
            keys[0::4], keys[1::4], keys[2::4] = dport_high, dport_low, states
        else:
            keys[0::4], keys[1::4], keys[2::4] = (_masked(column, outbound, count) for column in (dport_high, dport_low, states))
        _fold_text(keys.decode("utf-32-le", "surrogatepass"), self.remote)
        return outbound

    def _peers(self, data: bytearray, end: int, longest: int, masks: List[Tuple[int, int]],
               outbound: Optional[int]) -> None:
        """Step 5, for buffers with outbound sockets: count each one's `_PEER` key.

        Per record length (`masks`: length -> 0xFF per record of that length), the family byte is
        merged over the sport low byte of those records only (as big integers, like the columns),
        then the start and end offsets of the outbound ones' keys are picked by `itertools.compress`
        and the keys cut by `map`: no bytecode per socket, and no slice object for an inbound one
        (a cache of slice objects for every record cost ~1 MiB of peak memory at 100k sockets).
        """
        count = end // longest
        family = 0
        for record_length, mask in masks:
            shift = longest - record_length
            family |= int.from_bytes(data[_FAMILY + shift : end + shift : longest], "little") & mask
        for record_length, mask in masks:
            start = _PEER_START + longest - record_length
            column = int.from_bytes(data[start : end + start : longest], "little")
            data[start : end + start : longest] = ((column & ~mask) | (family & mask)).to_bytes(count, "little")
        with memoryview(data) as view:
            frozen = view[:end].tobytes()  # bytes slices: hashable keys that outlive this buffer
        for record_length, mask in masks:
            selected = mask if outbound is None else mask & outbound
            if selected:
                start = _PEER_START + longest - record_length
                flags = selected.to_bytes(count, "little")
                width = _PEER_END - _PEER_START
                _count_elements(self.peers, map(frozen.__getitem__, map(
                    slice, compress(range(start, end, longest), flags),
                    compress(range(start + width, end + width, longest), flags))))


def _pad(view: memoryview, length: int, header: bytes, shorter: List[int], longest: int, out: bytearray) -> int:
    """Step 1 of `_Slicer`: copy `view` into `out` with zeros after the header prefix of every
    record of a `shorter` length; returns the bytes written.

    The search for the prefix (which ends with `SEQUENCE`'s rare last byte) is fastest in pieces
    under 30000 bytes (CPython's default search; past that, each match pays for a two-way set-up),
    so the batch is cut in ~16 KiB pieces just before a record header (found in a short window);
    `split` + `join` per piece. A cut that is not a record start only makes the proof fail.
    """
    replacements = [(_LENGTH.pack(record_length) + header, _LENGTH.pack(record_length) + header + bytes(longest - record_length))
                    for record_length in shorter]
    written = start = 0
    while start < length:
        stop = length
        if start + PIECE_BYTES < length:
            found = view[start + PIECE_BYTES : start + PIECE_BYTES + 2048].tobytes().find(header)
            if found >= 0:
                stop = start + PIECE_BYTES + found - 4  # the length before type, flags, sequence
        piece = view[start:stop].tobytes()
        for prefix, padded in replacements:
            piece = padded.join(piece.split(prefix))
        out[written : written + len(piece)] = piece  # `out` is sized for the worst case
        written += len(piece)
        start = stop
    return written


def _equal_to(value: int) -> bytes:
    """A `bytes.translate` table: 0xFF for the byte `value`, 0 for every other byte."""
    return bytes(value) + b"\xff" + bytes(255 - value)


def _or(masks: Iterable[int]) -> int:
    merged = 0
    for mask in masks:
        merged |= mask
    return merged


def _masked(column: bytes, mask: int, count: int) -> bytes:
    """`column` with its bytes zeroed where `mask` (0xFF or 0 per byte, little-endian) is 0."""
    return (int.from_bytes(column, "little") & mask).to_bytes(count, "little")


def _fold_text(keys: str, into: Tally) -> None:
    """Count the characters of `keys` (one per socket) into `into`, leaving out keys of state 0.

    >>> tally = {}
    >>> _fold_text("\U00015000\U00015000\U0006bb01\u5000", tally)
    >>> {hex(key): count for key, count in tally.items()}
    {'0x15000': 2, '0x6bb01': 1}
    """
    for _ in range(_FEW):
        if not keys:
            return
        key = keys[0]
        rest = keys.replace(key, "")
        if key >= "\U00010000":
            code = ord(key)
            into[code] = into.get(code, 0) + len(keys) - len(rest)
        keys = rest
    if keys:
        counted: Tally = {}
        _count_elements(counted, map(ord, keys))
        for code, count in counted.items():
            if code >= 0x10000:
                into[code] = into.get(code, 0) + count


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


def _connections(dumper: Dumper, sieve: _Sieve, legacy: bool) -> _Slicer:
    """Every non-listening socket, both families, in ONE dump: each dump walks the kernel's whole
    connection hash table (every namespace's sockets), which costs about as much as what it sends."""
    slicer = _Slicer(TCPDIAG_GETSOCK if legacy else SOCK_DIAG_BY_FAMILY, sieve)
    if legacy:
        dumper.dump_batched(_legacy_request(CONNECTIONS_MASK), slicer.on_buffer)
    else:
        for family in (socket.AF_INET, socket.AF_INET6):
            dumper.dump_batched(_v2_request(family, CONNECTIONS_MASK), slicer.on_buffer)
    return slicer


def _tally(*counters: Tally) -> Tally:
    """Merge into `port << 4 | state` keys in host byte order, swapping once per distinct key."""
    tally: Tally = {}
    for counter in counters:
        for key, count in counter.items():
            state = key >> 16
            key = _swap16(key & 0xFFFF) << PORT_SHIFT | (SYN_RECV if state == NEW_SYN_RECV else state)
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
            slicer = _connections(dumper, sieve, legacy)
        except ScanError:
            if not legacy:
                raise
            dumper.close()
            dumper = Dumper()  # a refused request may leave the socket mid-dump
            slicer = _connections(dumper, sieve, legacy=False)
    except OSError as error:
        raise ScanError(f"netlink: {error}") from None
    finally:
        dumper.close()
    local = _tally(slicer.local, slicer.walker.local)
    remote = _tally(slicer.remote, slicer.walker.remote)
    peers = slicer.peers
    for key, count in slicer.walker.peers.items():  # one address pair may be in both
        peers[key] = peers.get(key, 0) + count
    totals = [0] * STATE_COUNT
    for states in (slicer.states, slicer.walker.states):
        for state, count in states.items():
            totals[(SYN_RECV if state == NEW_SYN_RECV else state) - 1] += count
    for listener in listeners:
        key = listener.port << PORT_SHIFT | LISTEN
        local[key] = local.get(key, 0) + 1
    totals[LISTEN - 1] += len(listeners)
    return ScanResult("netlink", local, remote, listeners, started, time.perf_counter() - clock, totals,
                      largest_per_port({(key[1] << 8 | key[2], key): count for key, count in peers.items()}))
