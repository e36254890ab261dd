"""Scan, merge into the grace-period memory, and pre-render every answer into one record."""

from __future__ import annotations

from . import render
from .host import ephemeral_port_range
from .memory import Memory
from .record import Record
from .scan import scan
from .snapshot import Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


def collect(source: Optional[str], grace: float, memory_path: Optional[str], save_memory: bool) -> Record:
    """A fresh record. With a memory path gone ports are remembered; only the holder of the cache
    lock saves the memory (`save_memory`)."""
    ephemeral = ephemeral_port_range()
    result = scan(source, ephemeral)
    memory = Memory.load(memory_path) if memory_path else Memory()
    snapshot = Snapshot.build(result, memory, ephemeral, grace)
    if memory_path and save_memory:
        try:
            memory.save(memory_path)
        except OSError:
            pass  # forgetting gone ports early is better than failing the item
    return Record(
        result.started,
        grace,
        source or "auto",
        render.master_document(snapshot),
        render.count_table(snapshot),
        render.discovery_inputs(snapshot),
    )
