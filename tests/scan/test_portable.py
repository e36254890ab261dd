"""The psutil method against a faked `psutil.net_connections`: no root, no sockets needed.

psutil returns a set, so look-alike listeners it cannot map to a process (SO_REUSEPORT, pid None,
fd -1) collapse into one; on Linux the method takes the listeners from /proc/net/tcp{,6} instead.
"""

import os
import socket
from collections import namedtuple

import psutil
import pytest

from tcp_lld.errors import ScanError
from tcp_lld.scan import portable, procfs
from tcp_lld.scan.result import Listener, counts_for

ESTABLISHED, LISTEN = 0, 9
addr = namedtuple("addr", "ip port")  # the shapes of psutil's results (its own are private)
sconn = namedtuple("sconn", "fd family type laddr raddr status pid")

REUSEPORT = [Listener(443, 4, "127.0.0.1", 1000 + n, 0, None, 0) for n in range(3)]


def connection(status, local_port, remote_port=None, pid=None):
    remote = addr("127.0.0.1", remote_port) if remote_port else ()
    return sconn(-1, socket.AF_INET, socket.SOCK_STREAM, addr("127.0.0.1", local_port), remote, status, pid)


@pytest.fixture
def fake(monkeypatch):
    """3 SO_REUSEPORT listeners on 443 (psutil shows 2), one client of 443 from 62001, one NONE."""
    connections = {
        connection("LISTEN", 443, pid=os.getpid()), connection("LISTEN", 443),
        connection("ESTABLISHED", 443, 62001), connection("ESTABLISHED", 62001, 443),
        connection("NONE", 5555),
    }
    monkeypatch.setattr(psutil, "net_connections", lambda kind: list(connections))
    monkeypatch.setattr(procfs, "listeners", lambda: [Listener(*vars_of(l)) for l in REUSEPORT])


def vars_of(listener):
    return [getattr(listener, name) for name in Listener.__slots__]


def test_on_linux_reuseport_listeners_are_counted_from_procfs(fake, monkeypatch):
    monkeypatch.setattr(portable.sys, "platform", "linux")
    result = portable.scan()
    assert result.source == "psutil"
    assert counts_for(result.local, 443)[LISTEN] == 3
    assert [l.inode for l in result.listeners] == [1000, 1001, 1002]
    assert sorted(l.pid is not None for l in result.listeners) == [False, False, True]  # one pid known, no guesses
    assert {l.uid for l in result.listeners if l.pid} == {os.getuid()}  # the process's uid


def test_elsewhere_look_alike_listeners_count_once(fake, monkeypatch):
    monkeypatch.setattr(portable.sys, "platform", "freebsd13")
    result = portable.scan()
    assert counts_for(result.local, 443)[LISTEN] == 2  # what psutil can tell apart
    assert {(l.pid, l.uid) for l in result.listeners} == {(os.getpid(), os.getuid()), (None, None)}


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_inbound_and_outbound(fake, monkeypatch, platform):
    monkeypatch.setattr(portable.sys, "platform", platform)
    result = portable.scan()
    assert counts_for(result.local, 443)[ESTABLISHED] == counts_for(result.local, 62001)[ESTABLISHED] == 1
    assert counts_for(result.remote, 443)[ESTABLISHED] == 1  # the client side
    assert sum(counts_for(result.remote, 62001)) == 0  # the server side is inbound
    assert result.sockets == result.totals[LISTEN] + 2
    remembering = portable.scan(remembered=[62001])
    assert sum(counts_for(remembering.remote, 443)) == 0


def test_a_gone_or_hidden_process_has_no_uid(monkeypatch):
    def gone(pid):
        raise psutil.NoSuchProcess(pid)
    monkeypatch.setattr(psutil, "Process", gone)
    assert portable._owner(psutil, 1, {}) is None


def test_psutil_failures_are_scan_errors(monkeypatch):
    def refuse(kind):
        raise psutil.AccessDenied()
    monkeypatch.setattr(psutil, "net_connections", refuse)
    with pytest.raises(ScanError, match="psutil: cannot list connections"):
        portable.scan()


def test_without_psutil(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "psutil", None)
    with pytest.raises(ScanError, match="not installed"):
        portable.scan()
