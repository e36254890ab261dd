"""Receive the rest of a large netlink dump in a forked child while this process parses it.

Why: the kernel produces a sock_diag dump inside each `recv` (it walks its connection table and
copies the next ~32 KiB of records), and the parser tallies what came; in one process the two
take turns. At 100k sockets that is ~28 ms of kernel time plus ~18 ms of parsing. Two processes
overlap them on two CPUs: the child only receives, into a ring of shared-memory slots, and names
each filled slot over a pipe; the parent parses a slot and hands it back over another pipe. A
thread cannot do this: it needs the GIL after every datagram, and the parser holds it.

Used only when a dump outgrows its first batch (`Dumper.dump_batched`: ~2,500 sockets) on a
machine where this process may run on more than one CPU; a fork costs more than a small scan
gains. Measured at 100k sockets, web mix: the scan in-process went from 47 to 33 ms (the bare
dump takes 28 ms); a thread in its place, 44 ms.

The child is the only receiver once it runs: it receives as the parent would (`Dumper.fill_batch`,
the same batches), never prints, never returns into the caller's code (`os._exit`), and ends when
the parent closes its pipe (the dump is done, or parsing failed) or at an error of its own (sent
as one text line for the parent to raise). The parent kills and reaps it on every way out: no
child outlives a scan.
"""

from __future__ import annotations

import os
import struct

from ..errors import ScanError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from mmap import mmap
    from typing import List, NoReturn, Optional, Tuple

    from .netlink import Dumper, OnBuffer

SLOTS = 2  # one filling while one is parsed; more only raise the peak memory
#: (slot, bytes filled) per filled slot; slot -1: an error whose text, of `bytes filled` bytes,
#: follows. Notes are far under PIPE_BUF, so each write arrives whole.
_NOTE = struct.Struct("<iI")
_ERROR_SLOT = -1
_ERROR_BYTES = 1000


def worthwhile() -> bool:
    """More than one CPU to run on (affinity, cgroup cpusets included): else nothing overlaps."""
    try:
        return len(os.sched_getaffinity(0)) > 1
    except (AttributeError, OSError):
        return (os.cpu_count() or 1) > 1


def receive_rest(dumper: Dumper, first: memoryview, first_filled: int, slot_bytes: int,
                 on_buffer: OnBuffer) -> bool:
    """Parse `first` (a full batch already received) while a child receives what follows, until
    `on_buffer` says the dump is done (or raises). False, with nothing parsed, if no child could
    be started (a process limit, a seccomp policy): the caller then goes on alone, and should not
    ask again for this scan."""
    started = _start(dumper, slot_bytes)
    if started is None:
        return False
    pid, ring, ready, free = started
    try:
        if on_buffer(first, first_filled):
            return True
        with memoryview(ring) as slots:
            while True:
                slot, filled = _read_note(ready)
                start = slot * slot_bytes
                with slots[start : start + slot_bytes] as batch:
                    if on_buffer(batch, filled):
                        return True
                os.write(free, b"\x01")  # parsed, and not the end: the slot is free again
    finally:
        os.close(ready)
        os.close(free)
        os.kill(pid, 9)  # SIGKILL: a no-op on a child that has ended (it is reaped only below)
        os.waitpid(pid, 0)
        ring.close()


def _start(dumper: Dumper, slot_bytes: int) -> Optional[Tuple[int, mmap, int, int]]:
    """Fork the receiving child: (its pid, the ring, the read end of its notes, the write end of
    the parent's hand-backs), or None if the system refused any part of it (nothing left open)."""
    from mmap import mmap  # only large scans pay for the import

    opened: List[int] = []
    ring = None
    try:
        ring = mmap(-1, SLOTS * slot_bytes)
        ready_read, ready_write = os.pipe()
        opened += (ready_read, ready_write)
        free_read, free_write = os.pipe()
        opened += (free_read, free_write)
        pid = os.fork()
    except OSError:
        for descriptor in opened:
            os.close(descriptor)
        if ring is not None:
            ring.close()
        return None
    if pid == 0:
        for descriptor in (0, 1, 2, ready_read, free_write):  # never holds the agent's pipes open
            os.close(descriptor)
        _receive(dumper, ring, slot_bytes, ready_write, free_read)
    os.close(ready_write)
    os.close(free_read)
    return pid, ring, ready_read, free_write


def _read_note(ready: int) -> Tuple[int, int]:
    slot, filled = _NOTE.unpack(_read_exactly(ready, _NOTE.size))
    if slot == _ERROR_SLOT:
        raise ScanError(_read_exactly(ready, filled).decode("utf-8", "replace"))
    return slot, filled


def _read_exactly(ready: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = os.read(ready, size - len(data))
        if not more:
            raise ScanError("netlink: the process receiving the dump ended without finishing it")
        data += more
    return data


def _receive(dumper: Dumper, ring: mmap, slot_bytes: int, ready: int, free: int) -> NoReturn:
    """The child: fill the slots in turn and name each one. A slot is filled again only once the
    parent handed it back; after a batch that may be the dump's last, nothing is received until
    the parent has parsed everything: it then either hands the slots back (not the end: go on) or
    closes its pipe (the end, or a failure), and the child exits."""
    code = 0
    try:
        with memoryview(ring) as slots:
            outstanding, slot, maybe_last = 0, 0, False
            while True:
                while outstanding >= SLOTS or (maybe_last and outstanding):
                    handed_back = os.read(free, 64)
                    if not handed_back:  # the parent is done, or gone
                        os._exit(0)
                    outstanding -= len(handed_back)
                start = slot * slot_bytes
                with slots[start : start + slot_bytes] as batch:
                    filled, maybe_last = dumper.fill_batch(batch)
                os.write(ready, _NOTE.pack(slot, filled))
                outstanding, slot = outstanding + 1, (slot + 1) % SLOTS
    except ScanError as error:
        code = _send_error(ready, str(error))
    except OSError as error:
        code = _send_error(ready, f"netlink: {error}")
    except BaseException:
        code = 1
    os._exit(code)


def _send_error(ready: int, text: str) -> int:
    message = text.encode("utf-8")[:_ERROR_BYTES]
    try:
        os.write(ready, _NOTE.pack(_ERROR_SLOT, len(message)) + message)
    except OSError:
        pass  # the parent is gone: nobody to tell
    return 1
