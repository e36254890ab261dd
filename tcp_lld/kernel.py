"""The kernel's own TCP health for the master document: what went wrong, and how near its limits.

State counts say what is there; these say what the kernel dropped, refused or cookied, and what
its limits are, so that a Zabbix trigger can say "ListenOverflows is rising" or "TIME_WAIT is at
90 % of net.ipv4.tcp_max_tw_buckets". A few small files, read when a scan runs:

- `net/netstat` (TcpExt:) and `net/snmp` (Tcp:): cumulative counters of this network namespace,
  emitted raw (Zabbix turns them into rates with "change per second");
- `net/sockstat`, `net/sockstat6`: gauges (inuse and tw per namespace; orphan, alloc, mem host-wide);
- `sys/net/...`: the limits (tcp_mem and tcp_max_orphans exist only in the initial namespace).

`kernel_json()` builds the JSON text by hand, from fixed ASCII keys, numbers and null only, so
that no json library is imported on this path, and it never raises: a source that cannot be read
leaves its fields null and adds one to `errors`. Field by field: docs/kernel.md.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # no `typing` at run time: this runs inside every scan
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple, Union

    Value = Union[None, int, float, List[int]]

PROCFS_PATH = "/proc"

# Counter names exactly as the kernel spells them (include/uapi/linux/snmp.h, net/ipv4/proc.c),
# so that `nstat` users recognise them. Only these are emitted: keys never come from the file.
TCPEXT_FIELDS = (
    "ListenOverflows",  # accept queue full when the final ACK came (listen backlog too small / app slow)
    "ListenDrops",  # every SYN or ACK dropped by a listener, overflows included
    "SyncookiesSent",  # SYN queue full (or tcp_syncookies=2): answered with a cookie
    "SyncookiesRecv",
    "SyncookiesFailed",
    "TCPReqQFullDoCookies",  # SYN queue full, cookie sent
    "TCPReqQFullDrop",  # SYN queue full, cookies off: SYN dropped
    "TCPBacklogDrop",  # socket backlog full while the owner held the lock
    "TCPTimeWaitOverflow",  # TIME_WAIT not created: tcp_max_tw_buckets reached
    "TW",  # TIME_WAITs that ended on their timer
    "TWRecycled",
    "TWKilled",
    "TCPAbortOnData",
    "TCPAbortOnClose",
    "TCPAbortOnMemory",  # orphan killed: tcp_mem or tcp_max_orphans exceeded
    "TCPAbortOnTimeout",
    "TCPAbortOnLinger",
    "TCPAbortFailed",
    "TCPMemoryPressures",  # entered tcp_mem pressure mode
    "TCPRetransFail",
    "TCPTimeouts",
    "TCPSynRetrans",
)
TCP_FIELDS = (
    "ActiveOpens", "PassiveOpens", "AttemptFails", "EstabResets", "CurrEstab",
    "InSegs", "OutSegs", "RetransSegs", "InErrs", "OutRsts",
)
SOCKSTAT_FIELDS = ("inuse", "orphan", "tw", "alloc", "mem")  # the "TCP:" line of net/sockstat
SOCKSTAT6_FIELDS = ("inuse",)  # the "TCP6:" line of net/sockstat6

# (name as `sysctl` spells it, how many numbers the file holds)
SYSCTLS = (
    ("net.core.somaxconn", 1),
    ("net.ipv4.tcp_max_syn_backlog", 1),
    ("net.ipv4.tcp_syncookies", 1),
    ("net.ipv4.tcp_max_tw_buckets", 1),
    ("net.ipv4.tcp_fin_timeout", 1),
    ("net.ipv4.tcp_tw_reuse", 1),
    ("net.ipv4.ip_local_port_range", 2),
    ("net.ipv4.tcp_max_orphans", 1),  # initial namespace only
    ("net.ipv4.tcp_mem", 3),  # initial namespace only; pages: low, pressure, max
)
DERIVED_FIELDS = ("ephemeral_ports", "tw_pct", "orphan_pct", "mem_pct", "mem_pressure_pct")


def _read(path: str) -> Optional[str]:
    """The file's text, or None if it cannot be read (missing, no permission, not text)."""
    try:
        with open(path, "rb") as source:
            return source.read().decode("ascii")
    except (OSError, ValueError):
        return None


def _integer(word: str) -> Optional[int]:
    """`int(word)` for a decimal integer (signed, as Tcp: MaxConn is -1), else None.

    >>> _integer("-1"), _integer("42"), _integer("4x"), _integer("")
    (-1, 42, None, None)
    """
    digits = word[1:] if word[:1] == "-" else word
    return int(word) if digits.isdigit() and digits.isascii() else None


def parse_header_value_pairs(text: str, prefix: str) -> Tuple[Dict[str, str], int]:
    """`net/netstat`, `net/snmp`: the `prefix` table, from its header line of names and the line
    of values after it, as name -> word (converted later, and only for the fields we emit).

    Paired by name, never by position in the file, so kernels that add, drop or reorder counters
    are read correctly. Also returns how many malformed things it saw (a values line of another
    length than its header, no values line, no such table): whatever can still be paired is kept.

    >>> parse_header_value_pairs("Tcp: ActiveOpens CurrEstab\\nTcp: 7 2\\nUdp: InDatagrams\\nUdp: 9\\n", "Tcp")
    ({'ActiveOpens': '7', 'CurrEstab': '2'}, 0)
    >>> parse_header_value_pairs("TcpExt: A B C\\nTcpExt: 1 x\\n", "TcpExt")
    ({'A': '1', 'B': 'x'}, 1)
    >>> parse_header_value_pairs("TcpExt: A B\\n", "TcpExt"), parse_header_value_pairs("", "Tcp")
    (({}, 1), ({}, 1))
    """
    start = prefix + ":"
    lines = [line.split() for line in text.splitlines() if line.startswith(start)]
    if len(lines) < 2:
        return {}, 1
    header, values = lines[0][1:], lines[1][1:]
    return dict(zip(header, values)), int(len(header) != len(values)) + len(lines) - 2


def parse_sockstat(text: str, prefix: str) -> Tuple[Dict[str, str], int]:
    """`net/sockstat{,6}`: the `prefix` line, `PROTO: name value name value ...`, as name -> word.

    >>> parse_sockstat("TCP: inuse 3 orphan 0 tw 5 alloc 4 mem 1\\nTCP6: inuse 2\\n", "TCP")
    ({'inuse': '3', 'orphan': '0', 'tw': '5', 'alloc': '4', 'mem': '1'}, 0)
    >>> parse_sockstat("TCP: inuse 3 tw\\n", "TCP"), parse_sockstat("UDP: inuse 1\\n", "TCP")
    (({'inuse': '3'}, 1), ({}, 1))
    """
    start = prefix + ":"
    for line in text.splitlines():
        if line.startswith(start):
            words = line.split()
            return dict(zip(words[1::2], words[2::2])), int(len(words) % 2 == 0)
    return {}, 1


def parse_sysctl(text: str, count: int) -> Optional[Union[int, List[int]]]:
    """A /proc/sys file of `count` integers: one number, or a list of them; None if it is not that.

    >>> parse_sysctl("4096\\n", 1), parse_sysctl("32768\\t60999\\n", 2), parse_sysctl("1 2\\n", 3)
    (4096, [32768, 60999], None)
    """
    numbers = [_integer(word) for word in text.split()]
    if len(numbers) != count or None in numbers:
        return None
    return numbers[0] if count == 1 else numbers  # type: ignore[return-value]


def _percent(part: Value, whole: Value) -> Optional[float]:
    """part / whole in %, one decimal, or None when either is unknown or the limit is not positive."""
    if not isinstance(part, int) or not isinstance(whole, int) or whole <= 0:
        return None
    return round(100.0 * part / whole, 1)


def collect(procfs_path: str = "") -> Tuple[Dict[str, Dict[str, Value]], int]:
    """Every field of the `kernel` object as Python values (None when unknown), and the error count.

    An error is a /proc/net file that cannot be read or lacks its table, a values line that does
    not match its header, a wanted value that is not an integer, or a sysctl file that does not
    hold its numbers. A missing sysctl is not: tcp_mem and tcp_max_orphans are absent outside the
    initial namespace, and older kernels lack some; its field is null.
    """
    root = procfs_path or PROCFS_PATH
    errors = 0
    sections: Dict[str, Dict[str, Value]] = {}

    for section, name, parse, prefix, fields in (
        ("TcpExt", "net/netstat", parse_header_value_pairs, "TcpExt", TCPEXT_FIELDS),
        ("Tcp", "net/snmp", parse_header_value_pairs, "Tcp", TCP_FIELDS),
        ("sockstat", "net/sockstat", parse_sockstat, "TCP", SOCKSTAT_FIELDS),
        ("sockstat6", "net/sockstat6", parse_sockstat, "TCP6", SOCKSTAT6_FIELDS),
    ):
        text = _read(os.path.join(root, name))
        words: Dict[str, str] = {}
        if text is None:
            errors += 1
        else:
            words, malformed = parse(text, prefix)
            errors += malformed
        values: Dict[str, Value] = {}
        for field in fields:
            word = words.get(field)
            values[field] = None if word is None else _integer(word)
            errors += word is not None and values[field] is None  # there, but not an integer
        sections[section] = values

    limits: Dict[str, Value] = {}
    for name, count in SYSCTLS:
        path = os.path.join(root, "sys", *name.split("."))
        text = _read(path)
        value = None if text is None else parse_sysctl(text, count)
        errors += value is None and text is not None  # present but not what the kernel writes
        limits[name] = value
    sections["sysctl"] = limits

    port_range = limits["net.ipv4.ip_local_port_range"]
    tcp_mem = limits["net.ipv4.tcp_mem"]
    sockstat = sections["sockstat"]
    sections["derived"] = {
        "ephemeral_ports": (port_range[1] - port_range[0] + 1
                            if isinstance(port_range, list) and port_range[1] >= port_range[0] else None),
        "tw_pct": _percent(sockstat["tw"], limits["net.ipv4.tcp_max_tw_buckets"]),
        "orphan_pct": _percent(sockstat["orphan"], limits["net.ipv4.tcp_max_orphans"]),
        "mem_pct": _percent(sockstat["mem"], tcp_mem[2] if isinstance(tcp_mem, list) else None),
        "mem_pressure_pct": _percent(sockstat["mem"], tcp_mem[1] if isinstance(tcp_mem, list) else None),
    }
    return sections, errors


def _json_value(value: Value) -> str:
    """JSON text of a number, a list of numbers or None; anything else is null (never raises).

    >>> [_json_value(value) for value in (None, 7, -1, 12.5, [1, 2], True, "x")]
    ['null', '7', '-1', '12.5', '[1,2]', 'null', 'null']
    """
    if value is None or isinstance(value, bool):
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and value not in (float("inf"), float("-inf")) else "null"
    if isinstance(value, list):
        return "[" + ",".join(_json_value(item) for item in value) + "]"
    return "null"


def _skeleton() -> Dict[str, Dict[str, Value]]:
    """Every key with a null value: the shape when nothing could be read."""
    return {
        "TcpExt": dict.fromkeys(TCPEXT_FIELDS),
        "Tcp": dict.fromkeys(TCP_FIELDS),
        "sockstat": dict.fromkeys(SOCKSTAT_FIELDS),
        "sockstat6": dict.fromkeys(SOCKSTAT6_FIELDS),
        "sysctl": dict.fromkeys(name for name, _ in SYSCTLS),
        "derived": dict.fromkeys(DERIVED_FIELDS),
    }


def kernel_json(procfs_path: str = "") -> str:
    """The `kernel` object of the master document as compact JSON text; never raises.

    `procfs_path` (default `PROCFS_PATH`) is where /proc is, so tests run on captured trees.
    Always the same keys, so Zabbix's JSONPath finds every field; a field it cannot know is null.
    """
    try:
        sections, errors = collect(procfs_path)
    except Exception:  # a bug here must not cost the whole master document its port counts
        sections, errors = _skeleton(), -1
    parts = []
    for section, fields in sections.items():
        members = ",".join(f'"{name}":{_json_value(value)}' for name, value in fields.items())
        parts.append(f'"{section}":{{{members}}}')
    parts.append(f'"errors":{errors}')
    return "{" + ",".join(parts) + "}"
