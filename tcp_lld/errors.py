"""One root exception, so that `cli` can turn every expected failure into one line for Zabbix."""


class TcpLldError(Exception):
    """Something tcp-lld could not do; the message is shown to the Zabbix admin as-is."""


class UsageError(TcpLldError):
    """Bad arguments: a wrong port, state, option or command."""


class ScanError(TcpLldError):
    """The kernel's socket table could not be read by the chosen method."""


class ParseError(ScanError):
    """A line of /proc/net/tcp{,6} that does not have the kernel's format."""

    def __init__(self, path: str, line_number: int, reason: str) -> None:
        super().__init__(f"{path}:{line_number}: {reason}")
        self.path = path
        self.line_number = line_number
