"""Choose how to read the kernel's socket table: netlink, else procfs on Linux; psutil elsewhere."""

from __future__ import annotations

import sys

from ..errors import ScanError, UsageError
from .result import ScanResult

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable, Optional, Tuple

SOURCES = ("netlink", "procfs", "psutil")


def scan(source: Optional[str] = None, remembered: Iterable[int] = (),
         ephemeral: Optional[Tuple[int, int]] = None) -> ScanResult:
    """Scan with `source`, or with the best method this system allows.

    On Linux netlink is tried first; a refusal (SELinux, a kernel without inet_diag) falls back to
    /proc/net/tcp{,6}, which gives the same counts. `remembered`: ports that listened recently
    (the grace memory), still inbound for the remote tally though nobody listens on them now (see
    `result`). `ephemeral` lets netlink skip counting by local port the sockets on non-listening
    ephemeral ports (they stay in the totals; see `netlink.scan`).
    """
    if source is not None and source not in SOURCES:
        raise UsageError(f"unknown scan source {source!r} (use one of: {', '.join(SOURCES)})")
    remembered = tuple(remembered)
    if source == "psutil" or (source is None and not sys.platform.startswith("linux")):
        from . import portable

        return portable.scan(remembered)
    if source == "procfs":
        from . import procfs

        return procfs.scan(remembered=remembered)
    from . import netlink

    try:
        return netlink.scan(remembered, ephemeral)
    except ScanError:
        if source == "netlink":
            raise
    from . import procfs

    return procfs.scan(remembered=remembered)
