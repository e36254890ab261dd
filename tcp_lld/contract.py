"""The public contract as types: what `stats` and `discovery` print (docs/contract.md).

Imported only by type checkers and tests: the package never imports it at run time, so start-up
pays nothing. The tests validate real output against these definitions and check that
docs/contract.md names exactly their fields.
"""

from __future__ import annotations

from typing import Dict, Optional, TypedDict

StateCounts = TypedDict(
    "StateCounts",
    {
        "ESTABLISHED": int, "SYN_SENT": int, "SYN_RECV": int, "FIN_WAIT1": int, "FIN_WAIT2": int,
        "TIME_WAIT": int, "CLOSE": int, "CLOSE_WAIT": int, "LAST_ACK": int, "LISTEN": int,
        "CLOSING": int,
    },
)


class PortEntry(StateCounts):
    """`ports["80"]`: sockets whose local port is a listening (or recently gone) port."""

    accept_queue: Optional[int]
    accept_queue_max: Optional[int]


class RemoteEntry(StateCounts):
    """`remote["5432"]`: outbound sockets whose REMOTE port is that port."""

    peer_max: int


class Dropped(TypedDict):
    """Entries left out to stay under the agent's 512 KiB limit, by kind."""

    gone: int
    listening: int
    remote: int


class Meta(TypedDict):
    source: str
    version: str
    timestamp: float
    scan_seconds: float
    sockets: int
    ports: int
    remote_ports: int
    truncated: int
    dropped: Dropped
    memory: str
    stale: int
    age_seconds: float


class MasterDocument(TypedDict):
    """`tcp-lld stats`."""

    ports: Dict[str, PortEntry]
    total: StateCounts
    remote: Dict[str, RemoteEntry]
    kernel: Dict[str, object]
    meta: Meta


ListeningRow = TypedDict(
    "ListeningRow",
    {
        "{#PORT}": str, "{#ADDRESS}": str, "{#FAMILY}": str, "{#SCOPE}": str, "{#USER}": str,
        "{#PROCESS}": str, "{#SERVICE}": str, "{#STATUS}": str, "{#EPHEMERAL}": str,
    },
)

OutboundRow = TypedDict("OutboundRow", {"{#PORT}": str, "{#SERVICE}": str})


class ListeningDiscovery(TypedDict):
    """`tcp-lld discovery`."""

    data: list  # of ListeningRow


class OutboundDiscovery(TypedDict):
    """`tcp-lld discovery --outbound`."""

    data: list  # of OutboundRow


#: Closed vocabularies of some string fields.
MEMORY_STATES = ("ok", "none", "unsaved")
SCOPES = ("any", "loopback", "address")
STATUSES = ("listening", "gone")
SOURCES = ("netlink", "procfs", "psutil")
