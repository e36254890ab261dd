"""Command line: the ONLY place that prints or exits.

The Zabbix agent merges stderr into the item value and ignores the exit code, so on success exactly
the value is printed, and on failure one plain line `tcp-lld: <reason>` (never JSON that parses:
an empty discovery would make Zabbix drop every port's items) with a non-zero exit for humans.

Arguments are parsed by hand: the cached path must start almost as fast as a bare interpreter,
and argparse alone costs several milliseconds.
"""

from __future__ import annotations

import sys

from . import __version__
from .cache import DEFAULT_GRACE, DEFAULT_TTL, SnapshotCache, default_directory
from .errors import TcpLldError, UsageError
from .record import Record

TYPE_CHECKING = False  # `typing` costs ~15 ms of start-up (re, enum...): only for type checkers
if TYPE_CHECKING:
    from typing import Dict, List, NoReturn, Optional, Tuple

USAGE = """\
usage: tcp-lld [options] discovery [--outbound] [--ports LIST] [--skip-loopback] [--skip-ephemeral]
       tcp-lld [options] stats
       tcp-lld [options] count PORT|all STATE [in|out]

  discovery         Zabbix LLD JSON of listening TCP ports ({#PORT}, {#ADDRESS}, {#FAMILY},
                    {#SCOPE}, {#PROCESS}, {#SERVICE}, {#STATUS}, {#EPHEMERAL})
    --outbound      LLD of outbound service ports (remote ports outside the ephemeral range)
    --ports LIST    only these ports, e.g. 22,80,8000-8099
    --skip-loopback   skip ports bound only to loopback addresses
    --skip-ephemeral  skip listeners inside net.ipv4.ip_local_port_range
  stats             master JSON: per-port and per-state counts, accept queues, totals, outbound
  count             one integer: sockets in STATE whose local (in, default) or remote (out) port
                    is PORT; PORT all or empty: host total. STATE: netstat, ss or RFC spelling, or ALL

options:
  --ttl SECONDS     reuse a snapshot younger than this (default 20)
  --no-cache        scan now (concurrent callers still share one scan)
  --grace SECONDS   keep a vanished listener or outbound port this long (default 86400)
  --source NAME     netlink, procfs or psutil (default: the best available)
  --cache-dir DIR   where snapshots live (default $TCP_LLD_CACHE_DIR, else the first that is the
                    caller's own: $XDG_RUNTIME_DIR/tcp-lld, /var/cache/tcp-lld, ~/.cache/tcp-lld;
                    none usable: scan every time)
  --version, --help
"""

_VALUE_OPTIONS = {"--ttl", "--grace", "--source", "--cache-dir", "--ports"}
_FLAG_OPTIONS = {"--no-cache", "--outbound", "--skip-loopback", "--skip-ephemeral"}
_COMMAND_OPTIONS = {
    "discovery": {"--outbound", "--ports", "--skip-loopback", "--skip-ephemeral"},
    "stats": set(),
    "count": set(),
}


def _split(argv: List[str]) -> Tuple[str, List[str], Dict[str, str]]:
    """(command, positional arguments, options); options may stand anywhere."""
    positional: List[str] = []
    options: Dict[str, str] = {}
    arguments = iter(argv)
    for argument in arguments:
        name, equals, value = argument.partition("=")
        if argument == "--":  # the rest is positional: the agent passes item key parameters after it
            positional.extend(arguments)
        elif argument.startswith("--"):
            if name in _VALUE_OPTIONS:
                if not equals:
                    value = next(arguments, None)  # type: ignore[assignment]
                    if value is None:
                        raise UsageError(f"option {name} needs a value")
                options[name] = value
            elif name in _FLAG_OPTIONS and not equals:
                options[name] = ""
            else:
                raise UsageError(f"unknown option {argument!r} (see tcp-lld --help)")
        else:
            positional.append(argument)
    if not positional:
        raise UsageError("no command given (discovery, stats or count; see tcp-lld --help)")
    command = positional.pop(0)
    if command not in _COMMAND_OPTIONS:
        raise UsageError(f"unknown command {command!r} (discovery, stats or count)")
    for name in options:
        if name in _FLAG_OPTIONS | {"--ports"} and name not in _COMMAND_OPTIONS[command] and name != "--no-cache":
            raise UsageError(f"option {name} does not apply to {command}")
    return command, positional, options


def _seconds(options: Dict[str, str], name: str, default: float) -> float:
    text = options.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 10 * 365 * 86400:  # NaN fails this too
        raise UsageError(f"invalid {name} {text!r} (seconds, 0 or more)")
    return value


def _port(text: str) -> Optional[int]:
    """None for the host total (`all` or empty), else a port number."""
    text = text.strip()
    if text.lower() in ("", "all"):
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"invalid port {text!r} (1-65535, or all)")
    return int(text)


class CountQuery:
    """What `count` was asked: a port (None: host total), a state index (None: all), a direction."""

    __slots__ = ("port", "state_index", "remote")

    def __init__(self, port: Optional[int], state_index: Optional[int], remote: bool) -> None:
        self.port = port
        self.state_index = state_index  # 0..10 in STATE_NAMES order
        self.remote = remote  # count by remote port ("out") instead of local port ("in")


def _count_query(arguments: List[str]) -> CountQuery:
    from .states import parse_state

    if not 2 <= len(arguments) <= 3:
        raise UsageError("count needs PORT and STATE, and optionally in or out")
    port = _port(arguments[0])
    state = parse_state(arguments[1])
    if state is None:
        raise UsageError(f"invalid state {arguments[1]!r} (e.g. ESTABLISHED, TIME_WAIT, CLOSE_WAIT, SYN_RECV, ALL)")
    direction = arguments[2].strip().lower() if len(arguments) == 3 else ""
    if direction not in ("", "in", "out"):
        raise UsageError(f"invalid direction {arguments[2]!r} (in or out)")
    return CountQuery(port, state - 1 if state else None, direction == "out")


def _count(record: Record, query: CountQuery) -> int:
    if query.port is None:
        return record.count(b"T", query.state_index)  # type: ignore[return-value]  # always there
    value = record.count(b"%s%d" % (b"R" if query.remote else b"L", query.port), query.state_index)
    if value is not None:
        return value
    low, high = record.ephemeral_range()
    if low <= query.port <= high:
        side = "remote" if query.remote else "local"
        raise UsageError(
            f"port {query.port} is in the ephemeral range {low}-{high} and not a service port: "
            f"{side} ephemeral ports are not tallied"
        )
    return 0  # service ports with no socket are simply absent from the table


def run(argv: List[str]) -> bytes:
    """The value to print for `argv`; raises TcpLldError. Every argument is checked before a scan."""
    command, arguments, options = _split(argv)
    if command != "count" and arguments:
        raise UsageError(f"unexpected argument {arguments[0]!r} for {command}")
    query = _count_query(arguments) if command == "count" else None
    ttl = _seconds(options, "--ttl", DEFAULT_TTL)
    grace = _seconds(options, "--grace", DEFAULT_GRACE)
    source = options.get("--source")
    if source is not None:
        from .scan import SOURCES

        if source not in SOURCES:
            raise UsageError(f"unknown source {source!r} ({', '.join(SOURCES)})")
    if command == "discovery":
        from . import discovery

        filters = discovery.Filters(
            ports=discovery.parse_port_ranges(options["--ports"]) if "--ports" in options else None,
            skip_loopback="--skip-loopback" in options,
            skip_ephemeral="--skip-ephemeral" in options,
        )

    from .host import network_namespace_id

    directory = options.get("--cache-dir") or default_directory()
    cache = SnapshotCache(directory, network_namespace_id(), ttl, grace, source or "auto")

    def produce(memory_path: Optional[str], save_memory: bool) -> Record:
        from .collect import collect

        return collect(source, grace, memory_path, save_memory)

    record = cache.get(produce, force="--no-cache" in options)
    if command == "stats":
        import time

        return record.stats_document(time.time())
    if query is not None:
        return b"%d" % _count(record, query)
    from .render import lld

    if "--outbound" in options:
        return lld(discovery.outbound_rows(record.discovery, filters))
    return lld(discovery.listening_rows(record.discovery, record.ephemeral_range(), filters))


def _fail(message: str, status: int) -> NoReturn:
    line = " ".join(message.split())  # one line, whatever the exception said
    sys.stdout.write(f"tcp-lld: {line}\n")
    sys.stdout.flush()
    raise SystemExit(status)


def main(argv: Optional[List[str]] = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments in (["--version"], ["-V"]):
        sys.stdout.write(f"tcp-lld {__version__}\n")
        return 0
    if not arguments or arguments[0] in ("--help", "-h", "help"):
        sys.stdout.write(USAGE)
        return 0 if arguments else 2
    try:
        value = run(arguments)
    except UsageError as error:
        _fail(str(error), 2)
    except TcpLldError as error:
        _fail(str(error), 1)
    except Exception as error:  # the agent shows this line; a traceback would be cut to garbage
        _fail(f"internal error: {type(error).__name__}: {error}", 1)
    sys.stdout.buffer.write(value + b"\n")
    return 0
