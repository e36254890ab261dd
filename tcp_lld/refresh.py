"""One refresh: scan, merge into the grace memory, and encode every answer into one file's bytes."""

from __future__ import annotations

from . import answers
from .grace import MAX_BYTES as GRACE_MAX_BYTES
from .grace import GraceMemory
from .namespace import ephemeral_port_range
from .scan import scan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

    from .namespace import Namespace
    from .private_files import PrivateDirectory


def grace_file_name(namespace: Namespace) -> str:
    return f"grace-{namespace.lasting_key}"


def refresh(source: Optional[str], namespace: Namespace, grace: float, min_age: float,
            directory: Optional[PrivateDirectory], save_memory: bool) -> bytes:
    """A fresh answers file. Only the holder of the namespace's lock saves the memory
    (`save_memory`); without a directory nothing is remembered and `meta.memory` says `none`."""
    from .kernel import kernel_json

    ephemeral = ephemeral_port_range()
    name = grace_file_name(namespace)
    stored = directory.read(name, GRACE_MAX_BYTES) if directory is not None else None
    memory = GraceMemory.from_bytes(stored, namespace.lasting_stamp)
    result = scan(source, memory.remembered_ports(), ephemeral)
    memory.update(result, result.started, grace, ephemeral, min_age)
    state = "none" if directory is None else "unsaved"
    if directory is not None and save_memory:
        try:
            directory.write(name, memory.to_bytes())
            state = "ok"
        except OSError:
            pass  # a full or read-only disk: forgetting gone ports early beats failing the item
    return answers.encode(result, memory, source or "auto", namespace.stamp, state, ephemeral, kernel_json())
