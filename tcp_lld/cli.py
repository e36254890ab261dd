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
from .cache import DEFAULT_TTL, AnswerCache, default_directory
from .errors import TcpLldError, UsageError

TYPE_CHECKING = False  # `typing` costs ~15 ms of start-up (re, enum...): only for type checkers
if TYPE_CHECKING:
    from typing import Dict, List, NoReturn, Optional, Tuple

    from .private_files import PrivateDirectory

DEFAULT_GRACE = 86400.0
DEFAULT_MIN_AGE = 3600.0
MAX_ARGUMENT = 256  # characters; the agent passes item key parameters, nothing longer is valid
MAX_ERROR_LINE = 300  # characters of an error line: Zabbix shows it as the item's reason

USAGE = """\
usage: tcp-lld [options] discovery [--outbound] [--ports LIST] [--skip-loopback] [--skip-ephemeral]
       tcp-lld [options] stats
       tcp-lld [options] count PORT|all STATE [in|out]

  discovery         Zabbix LLD JSON of listening TCP ports ({#PORT}, {#ADDRESS}, {#FAMILY},
                    {#SCOPE}, {#USER}, {#PROCESS}, {#SERVICE}, {#STATUS}, {#EPHEMERAL})
    --outbound      LLD of outbound service ports (remote ports of connections this host opened)
    --ports LIST    only these ports, e.g. 22,80,8000-8099
    --skip-loopback   skip ports bound only to loopback addresses
    --skip-ephemeral  skip short-lived listeners of the ephemeral range (see --min-age)
  stats             master JSON: per-port and per-state counts, accept queues, totals, outbound,
                    kernel TCP health, meta
  count             one integer: sockets in STATE connected to listening port PORT (in, default),
                    or opened by this host to remote port PORT (out); PORT all or empty: host
                    total. STATE: netstat, ss or RFC spelling, or ALL

options:
  --ttl SECONDS     reuse a scan younger than this (default 20)
  --no-cache        scan now (concurrent callers still share one scan)
  --grace SECONDS   keep a vanished listener or outbound port this long (default 86400)
  --min-age SECONDS a listener on the ephemeral range is short-lived until it has listened this
                    long: flagged {#EPHEMERAL}=1 and never reported gone (default 3600)
  --source NAME     netlink, procfs or psutil (default: the best available)
  --cache-dir DIR   where answers and the grace memory live (default $TCP_LLD_CACHE_DIR, else the
                    first that is the caller's own: $XDG_RUNTIME_DIR/tcp-lld, /var/cache/tcp-lld,
                    ~/.cache/tcp-lld, /var/tmp/tcp-lld-UID)
  --version, --help
"""

_VALUE_OPTIONS = {"--ttl", "--grace", "--min-age", "--source", "--cache-dir", "--ports"}
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
                raise UsageError(f"unknown option {argument[:40]!r} (see tcp-lld --help)")
        else:
            positional.append(argument)
    for text in positional + [value for name, value in options.items() if name != "--ports"]:
        if len(text) > MAX_ARGUMENT:  # --ports has its own bound (discovery.MAX_RANGES_TEXT)
            raise UsageError(f"argument too long ({len(text)} characters, at most {MAX_ARGUMENT})")
    if not positional:
        raise UsageError("no command given (discovery, stats or count; see tcp-lld --help)")
    command = positional.pop(0)
    if command not in _COMMAND_OPTIONS:
        raise UsageError(f"unknown command {command[:40]!r} (discovery, stats or count)")
    for name in options:
        if name in _FLAG_OPTIONS | {"--ports"} and name not in _COMMAND_OPTIONS[command] and name != "--no-cache":
            raise UsageError(f"option {name} does not apply to {command}")
    return command, positional, options


def _seconds(options: Dict[str, str], name: str, default: float) -> float:
    text = options.get(name)
    if text is None:
        return default
    try:
        value = float(text) if text.isascii() else -1.0
    except ValueError:
        value = -1.0
    if not 0 <= value <= 10 * 365 * 86400:  # NaN fails this too
        raise UsageError(f"invalid {name} {text[:40]!r} (seconds, 0 or more)")
    return value


def _port(text: str) -> Optional[int]:
    """None for the host total (`all` or empty), else a port number."""
    text = text.strip()
    if text.lower() in ("", "all"):
        return None
    if not 0 < len(text) <= 5 or not all("0" <= character <= "9" for character in text) or not 1 <= int(text) <= 65535:
        raise UsageError(f"invalid port {text[:40]!r} (1-65535, or all)")
    return int(text)


class CountQuery:
    """What `count` was asked: a port (None: host total), a state index (None: all), a direction."""

    __slots__ = ("port", "state_index", "outbound")

    def __init__(self, port: Optional[int], state_index: Optional[int], outbound: bool) -> None:
        self.port = port
        self.state_index = state_index  # 0..10 in STATE_NAMES order
        self.outbound = outbound  # by remote port ("out") instead of listening port ("in")


def _count_query(arguments: List[str]) -> CountQuery:
    """PORT STATE [in|out]; the agent conf passes every key parameter ("$1".."$9"), so anything
    after the third that is not empty is a key the admin mistyped, refused rather than ignored."""
    from .states import parse_state

    while len(arguments) > 3 and not arguments[-1]:
        arguments = arguments[:-1]
    if not 2 <= len(arguments) <= 3:
        raise UsageError("count needs PORT and STATE, and optionally in or out (3 parameters at most)")
    port = _port(arguments[0])
    state = parse_state(arguments[1]) if arguments[1].isascii() else None
    if state is None:
        raise UsageError(
            f"invalid state {arguments[1][:40]!r} (e.g. ESTABLISHED, TIME_WAIT, CLOSE_WAIT, SYN_RECV, ALL)"
        )
    direction = arguments[2].strip().lower() if len(arguments) == 3 else ""
    if direction not in ("", "in", "out"):
        raise UsageError(f"invalid direction {arguments[2][:40]!r} (in or out)")
    return CountQuery(port, state - 1 if state else None, direction == "out")


def run(argv: List[str]) -> bytes:
    """The value to print for `argv`; raises TcpLldError. Every argument is checked before a scan."""
    command, arguments, options = _split(argv)
    if command != "count" and arguments:
        raise UsageError(f"unexpected argument {arguments[0][:40]!r} for {command}")
    query = _count_query(arguments) if command == "count" else None
    ttl = _seconds(options, "--ttl", DEFAULT_TTL)
    grace = _seconds(options, "--grace", DEFAULT_GRACE)
    min_age = _seconds(options, "--min-age", DEFAULT_MIN_AGE)
    source = options.get("--source")
    if source is not None:
        from .scan import SOURCES

        if source not in SOURCES:
            raise UsageError(f"unknown source {source[:40]!r} ({', '.join(SOURCES)})")
    if command == "discovery":
        from . import discovery

        filters = discovery.Filters(
            ports=discovery.parse_port_ranges(options["--ports"]) if "--ports" in options else None,
            skip_loopback="--skip-loopback" in options,
            skip_ephemeral="--skip-ephemeral" in options,
        )

    from .namespace import current_namespace

    namespace = current_namespace()
    directory = options.get("--cache-dir") or default_directory()
    cache = AnswerCache(directory, namespace, source or "auto", ttl)

    def refresh(private_directory: Optional[PrivateDirectory], save_memory: bool) -> bytes:
        from .refresh import refresh as scan_and_encode

        return scan_and_encode(source, namespace, grace, min_age, private_directory, save_memory)

    answers, stale = cache.get(refresh, force="--no-cache" in options)
    if query is not None:
        return b"%d" % answers.count(query.port, query.state_index, query.outbound)
    from .selection import select

    selection = select(answers, grace, min_age)
    if command == "stats":
        import time

        from .render import master_document

        return master_document(answers, selection, time.time(), stale)
    from .render import lld

    if "--outbound" in options:
        return lld(discovery.outbound_rows(selection, filters))
    return lld(discovery.listening_rows(answers, selection, min_age, filters))


def _fail(message: str, status: int) -> NoReturn:
    """One line on stderr (the agent merges it into the value): whitespace folded, length cut."""
    line = " ".join(message.split())
    if len(line) > MAX_ERROR_LINE:
        line = line[: MAX_ERROR_LINE - 3] + "..."
    sys.stderr.write(f"tcp-lld: {line}\n")
    sys.stderr.flush()
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
