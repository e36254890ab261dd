"""tcp_lld.kernel against the live kernel, as root: provoke each condition, watch its counter move.

Every test runs in its own private network namespace (tests/netns.py), so the counters start at
zero, nothing else moves them, and the sysctls set here (tcp_syncookies, tcp_max_tw_buckets)
vanish with the namespace. What fixtures cannot prove is proven here: that the kernel really
counts these events under these names, and that tcp-lld reads what the kernel files say.
"""

import json
import os
import socket
import struct
import subprocess
import time

import pytest

from netns import private_network_namespace

from tcp_lld import kernel

pytestmark = pytest.mark.root
if os.geteuid() != 0:
    pytest.skip("needs root: private network namespaces and per-namespace sysctls", allow_module_level=True)


def files(prefix: str) -> dict:
    """The kernel's own counters for `prefix` (TcpExt in netstat, Tcp in snmp), read naively."""
    name = "/proc/net/netstat" if prefix == "TcpExt" else "/proc/net/snmp"
    with open(name) as source:
        lines = [line.split() for line in source if line.startswith(prefix + ":")]
    return {key: int(value) for key, value in zip(lines[0][1:], lines[1][1:])}


def sockstat() -> dict:
    with open("/proc/net/sockstat") as source:
        words = next(line.split() for line in source if line.startswith("TCP:"))
    return {key: int(value) for key, value in zip(words[1::2], words[2::2])}


def sysctl(name: str, value: int) -> None:
    with open("/proc/sys/" + name.replace(".", "/"), "w") as target:
        target.write(f"{value}\n")


def tcp_lld_agrees_with_the_files() -> dict:
    """kernel_json() now, checked field by field against the files read just before and after."""
    before = {"TcpExt": files("TcpExt"), "Tcp": files("Tcp"), "sockstat": sockstat()}
    found = json.loads(kernel.kernel_json())
    after = {"TcpExt": files("TcpExt"), "Tcp": files("Tcp"), "sockstat": sockstat()}
    assert found["errors"] == 0
    for section in before:
        for field, value in found[section].items():
            low, high = sorted((before[section][field], after[section][field]))
            if section == "TcpExt" or field not in ("CurrEstab",) and section == "Tcp":
                assert low <= value <= high, (section, field, value, low, high)  # counters only grow
            elif field in ("inuse", "tw"):  # per namespace and quiet here: exact
                assert before[section][field] == value == after[section][field], (field, value)
    return found


def ss_count(*filter_words: str) -> int:
    done = subprocess.run(["ss", "-Htan", *filter_words], capture_output=True, text=True, check=True)
    return len(done.stdout.splitlines())


def listener(backlog: int) -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(backlog)
    return server


def close_all(sockets: list) -> None:
    for each in sockets:
        each.close()


def test_a_fresh_namespace_counts_only_itself():
    with private_network_namespace():
        found = tcp_lld_agrees_with_the_files()
        assert found["Tcp"]["ActiveOpens"] == 0 and found["TcpExt"]["ListenOverflows"] == 0
        assert found["sockstat"]["inuse"] == 0 and found["sockstat"]["tw"] == 0
        assert found["sysctl"]["net.ipv4.tcp_mem"] is None  # initial namespace only
        assert found["sysctl"]["net.ipv4.tcp_max_orphans"] is None


def test_listen_overflows_from_a_listener_that_never_accepts():
    with private_network_namespace():
        server = listener(backlog=1)
        clients = []
        try:
            for _ in range(10):
                client = socket.socket()
                client.setblocking(False)
                client.connect_ex(server.getsockname())
                clients.append(client)
            time.sleep(0.3)
            found = tcp_lld_agrees_with_the_files()
        finally:
            close_all(clients + [server])
        overflows = found["TcpExt"]["ListenOverflows"]
        assert overflows >= 1, found["TcpExt"]
        assert found["TcpExt"]["ListenDrops"] >= overflows  # drops include every overflow


def test_syncookies_sent_when_the_namespace_always_sends_them():
    """tcp_syncookies=2: every SYN is answered with a cookie, counted as if the queue were full."""
    with private_network_namespace():
        sysctl("net.ipv4.tcp_syncookies", 2)
        server = listener(backlog=16)
        clients = []
        try:
            for _ in range(3):
                clients.append(socket.create_connection(server.getsockname(), timeout=5))
            time.sleep(0.1)
            found = tcp_lld_agrees_with_the_files()
        finally:
            close_all(clients + [server])
        assert found["sysctl"]["net.ipv4.tcp_syncookies"] == 2
        assert found["TcpExt"]["SyncookiesSent"] == 3
        assert found["TcpExt"]["TCPReqQFullDoCookies"] == 3
        assert found["TcpExt"]["SyncookiesRecv"] == 3  # the clients' ACKs carried valid cookies
        assert found["TcpExt"]["SyncookiesFailed"] == 0


def deferred_listener(backlog: int) -> socket.socket:
    """A loopback listener with TCP_DEFER_ACCEPT: a client's bare ACK does not complete the
    handshake, so each connection's request stays in the SYN queue (SYN_RECV) while the client
    sees ESTABLISHED: the SYN queue fills with no spoofed packet and no sysctl."""
    server = socket.socket()
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 30)
    server.bind(("127.0.0.1", 0))
    server.listen(backlog)
    return server


def knock(server: socket.socket, count: int) -> list:
    """`count` non-blocking connects, left as they are."""
    clients = []
    for _ in range(count):
        client = socket.socket()
        client.setblocking(False)
        try:
            client.connect(server.getsockname())
        except BlockingIOError:
            pass
        clients.append(client)
    return clients


def test_a_deferred_accept_listener_sends_syn_cookies_at_the_default_setting():
    """What the e2e does in the host's namespace to raise the SYN cookie trigger: with the default
    tcp_syncookies=1, once the SYN queue of a backlog-1 listener holds its deferred requests, the
    next SYNs are answered with cookies. (A bare listen(0) no longer does it: since 6.x kernels
    call the SYN queue full only past the backlog, and an empty queue is not past 0.)"""
    with private_network_namespace():
        assert kernel.collect()[0]["sysctl"]["net.ipv4.tcp_syncookies"] == 1  # a new namespace's default
        server = deferred_listener(backlog=1)
        clients = []
        try:
            clients = knock(server, 6)
            time.sleep(0.2)
            found = tcp_lld_agrees_with_the_files()
            half_open = ss_count("state", "syn-recv")
        finally:
            close_all(clients + [server])
        counters = found["TcpExt"]
        assert 1 <= half_open < 6
        # Every SYN past the full SYN queue is meant for a cookie (TCPReqQFullDoCookies); the
        # cookies' connections complete into the accept queue, and once that is full too the next
        # SYNs are dropped there (ListenOverflows) before a cookie is sent.
        assert counters["TCPReqQFullDoCookies"] >= counters["SyncookiesSent"] >= 1, counters
        assert counters["TCPReqQFullDrop"] == 0, counters


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_flood(port: int, count: int, source: str = "10.255.0.1") -> None:
    """`count` SYNs to 127.0.0.1:`port` from an address that is not ours, as in a spoofed SYN flood.

    The route to `source` over lo lets the kernel send its SYN-ACKs (without a route it drops the
    request at once); nobody answers them, so each request stays in the listener's SYN queue.
    """
    subprocess.run(["ip", "route", "replace", source + "/32", "dev", "lo"], check=True)
    flood = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    flood.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    source_address, target_address = socket.inet_aton(source), socket.inet_aton("127.0.0.1")
    try:
        for index in range(count):
            source_port = 20000 + index
            header = struct.pack("!HHLLBBHHH", source_port, port, 1000 + index, 0, 5 << 4, 0x02, 65535, 0, 0)
            pseudo = source_address + target_address + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(header))
            header = header[:16] + struct.pack("!H", _checksum(pseudo + header)) + header[18:]
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(header), index, 0, 64, socket.IPPROTO_TCP, 0,
                             source_address, target_address)
            flood.sendto(ip + header, ("127.0.0.1", 0))
    finally:
        flood.close()


@pytest.mark.parametrize("syncookies", [1, 0])
def test_a_spoofed_syn_flood_fills_the_syn_queue(syncookies):
    """Queue full: with cookies on, SYNs get cookies (SyncookiesSent, TCPReqQFullDoCookies);
    with cookies off, they are dropped (TCPReqQFullDrop, ListenDrops)."""
    with private_network_namespace():
        sysctl("net.ipv4.tcp_syncookies", syncookies)
        server = listener(backlog=4)
        try:
            syn_flood(server.getsockname()[1], 30)
            time.sleep(0.2)
            found = tcp_lld_agrees_with_the_files()
            half_open = ss_count("state", "syn-recv")
        finally:
            server.close()
        counters = found["TcpExt"]
        assert 4 <= half_open < 30  # the SYN queue filled up (this 6.x kernel: backlog + 1)
        assert found["sockstat"]["inuse"] == 1  # the listener: half-open requests are not sockets yet
        # every SYN is either half-open in the queue or counted as refused (6.x: 5 + 25)
        if syncookies:
            assert counters["TCPReqQFullDoCookies"] == counters["SyncookiesSent"] == 30 - half_open, counters
            assert counters["TCPReqQFullDrop"] == 0
        else:
            assert counters["TCPReqQFullDrop"] == counters["ListenDrops"] == 30 - half_open, counters
            assert counters["SyncookiesSent"] == 0


def connections_closed_by_the_client(count: int) -> list:
    """`count` connections each closed by the client first, then by the server: the client's
    side ends in TIME_WAIT (no FIN_WAIT2 left over, which sockstat would also count as tw)."""
    server = listener(backlog=count)
    kept = [server]
    for _ in range(count):
        client = socket.create_connection(server.getsockname(), timeout=5)
        accepted, _ = server.accept()
        client.close()
        accepted.recv(1)  # the client's FIN
        accepted.close()
    time.sleep(0.2)
    return kept


def test_time_wait_overflow_with_a_small_tcp_max_tw_buckets():
    with private_network_namespace():
        sysctl("net.ipv4.tcp_max_tw_buckets", 5)
        kept = connections_closed_by_the_client(20)
        try:
            found = tcp_lld_agrees_with_the_files()
            time_wait = ss_count("state", "time-wait")
            others = ss_count("exclude", "time-wait")
        finally:
            close_all(kept)
        assert found["sysctl"]["net.ipv4.tcp_max_tw_buckets"] == 5
        assert found["sockstat"]["tw"] == time_wait == 5
        assert found["TcpExt"]["TCPTimeWaitOverflow"] == 15
        assert found["derived"]["tw_pct"] == 100.0
        assert found["sockstat"]["inuse"] == others == 1  # the listener


def test_time_wait_and_inuse_match_ss():
    with private_network_namespace():
        kept = connections_closed_by_the_client(12)
        server = listener(backlog=4)
        client = socket.create_connection(server.getsockname(), timeout=5)
        accepted, _ = server.accept()
        try:
            time.sleep(0.1)
            found = tcp_lld_agrees_with_the_files()
            time_wait = ss_count("state", "time-wait")
            others = ss_count("exclude", "time-wait")
        finally:
            close_all(kept + [server, client, accepted])
        assert found["sockstat"]["tw"] == time_wait == 12
        assert found["sockstat"]["inuse"] == others == 4  # two listeners, two ends of one connection
        assert found["Tcp"]["CurrEstab"] == 2
        assert found["TcpExt"]["TCPTimeWaitOverflow"] == 0


def nstat() -> dict:
    """`nstat`'s absolute counters (iproute2's own reader of the same files), history untouched."""
    done = subprocess.run(["nstat", "-asz", "--json"], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["kernel"]


def test_names_and_values_are_the_ones_nstat_shows():
    """Names exactly as the kernel spells them: `nstat` shows each as TcpExt<name> or Tcp<name>."""
    with private_network_namespace():
        kept = connections_closed_by_the_client(3)
        try:
            before = nstat()
            found = json.loads(kernel.kernel_json())
            after = nstat()
        finally:
            close_all(kept)
    for section in ("TcpExt", "Tcp"):
        for field, value in found[section].items():
            if field == "CurrEstab":  # a gauge: nstat leaves it out
                continue
            assert before[section + field] <= value <= after[section + field], (field, value)
    assert found["Tcp"]["ActiveOpens"] == 3 and found["Tcp"]["PassiveOpens"] == 3


def test_limits_are_the_ones_sysctl_shows():
    """In the namespace pytest runs in, read only (on a host: tcp_mem and tcp_max_orphans too)."""
    found = json.loads(kernel.kernel_json())
    for name, _ in kernel.SYSCTLS:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True)
        numbers = [int(word) for word in done.stdout.split()] if done.returncode == 0 else []
        expected = None if not numbers else numbers[0] if len(numbers) == 1 else numbers
        assert found["sysctl"][name] == expected, name
    low, high = found["sysctl"]["net.ipv4.ip_local_port_range"]
    assert found["derived"]["ephemeral_ports"] == high - low + 1


def test_ipv6_time_wait_counts_in_tw_and_ipv6_sockets_in_sockstat6():
    """`sockstat.tw` is both families (one TIME_WAIT limit for both); `inuse` is IPv4 only."""
    with private_network_namespace():
        server = socket.socket(socket.AF_INET6)
        server.bind(("::1", 0))
        server.listen(8)
        try:
            for _ in range(4):
                client = socket.create_connection(server.getsockname()[:2], timeout=5)
                accepted, _ = server.accept()
                client.close()
                accepted.recv(1)
                accepted.close()
            time.sleep(0.2)
            found = tcp_lld_agrees_with_the_files()
            time_wait = ss_count("state", "time-wait")
        finally:
            server.close()
        assert found["sockstat"]["tw"] == time_wait == 4
        assert found["sockstat"]["inuse"] == 0 and found["sockstat6"]["inuse"] == 1
