"""`tcp-lld discovery`: LLD rows of listening ports, merged per port, with user, process, service."""

import json
import os
import pwd
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root  # real sockets in private network namespaces

SERVICES = "our-mysql 3306/tcp\nour-postgres 5432/tcp\nour-web 8080/tcp\n"


def rows_by_port(cli, *options, services=None):
    document = cli.json("discovery", *options, services=services)
    assert set(document) == {"data"}
    return {row["{#PORT}"]: row for row in document["data"]}


@pytest.fixture
def services_file(tmp_path):
    path = tmp_path / "services"
    path.write_text(SERVICES)
    return path


def test_one_row_per_port_with_families_merged(world, cli):
    rows = rows_by_port(cli)
    assert sorted(rows, key=int) == [str(port) for port in sorted(world.SERVICE_PORTS)]
    assert rows["8080"]["{#ADDRESS}"] == "0.0.0.0,::"
    assert rows["8080"]["{#FAMILY}"] == "ipv4,ipv6"
    assert rows["6379"]["{#FAMILY}"] == "ipv6"


@pytest.mark.parametrize("port, scope", [("8080", "any"), ("5432", "any"), ("3306", "loopback"), ("6379", "loopback")])
def test_scope_tells_wildcard_from_loopback(world, cli, port, scope):
    assert rows_by_port(cli)[port]["{#SCOPE}"] == scope


def test_user_process_and_service_names(world, cli, services_file):
    rows = rows_by_port(cli, services=services_file)
    own_name = open("/proc/self/comm").read().strip()  # the test process owns the listeners
    assert {row["{#PROCESS}"] for row in rows.values()} == {own_name}
    assert {row["{#USER}"] for row in rows.values()} == {pwd.getpwuid(os.geteuid()).pw_name}
    assert rows["3306"]["{#SERVICE}"] == "our-mysql"
    assert rows["5432"]["{#SERVICE}"] == "our-postgres"
    assert rows["3333"]["{#SERVICE}"] == ""  # not in the file
    assert all(row["{#STATUS}"] == "listening" for row in rows.values())
    assert all(row["{#EPHEMERAL}"] == "0" for row in rows.values())


def test_a_broken_services_file_costs_only_the_service_field(world, cli, tmp_path):
    broken = tmp_path / "services"
    broken.write_bytes(b"caf\xe9-svc 3306/tcp\nour-web 8080/tcp\n")
    rows = rows_by_port(cli, services=broken)
    assert sorted(rows, key=int) == [str(port) for port in sorted(world.SERVICE_PORTS)]
    assert rows["8080"]["{#SERVICE}"] == "our-web"
    assert rows["3306"]["{#SERVICE}"] in ("", "caf?-svc")  # never the key's failure


def test_short_lived_listeners_of_the_ephemeral_range_are_marked_and_can_be_skipped(world, cli):
    low, high = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    random_port = socket.create_server(("127.0.0.1", 0))  # the kernel picks an ephemeral port
    try:
        port = str(random_port.getsockname()[1])
        assert low <= int(port) <= high
        rows = rows_by_port(cli, "--no-cache")
        assert rows[port]["{#EPHEMERAL}"] == "1"
        assert rows_by_port(cli, "--min-age", "0")[port]["{#EPHEMERAL}"] == "0"
        assert port not in rows_by_port(cli, "--no-cache", "--skip-ephemeral")
        assert "8080" in rows_by_port(cli, "--skip-ephemeral")
    finally:
        random_port.close()
    assert port not in rows_by_port(cli, "--no-cache")  # short-lived random ports are not kept as "gone"
    assert port not in cli.json("stats")["ports"]


def test_filters_narrow_discovery(world, cli):
    assert sorted(rows_by_port(cli, "--ports", "2000-3400"), key=int) == ["2222", "3306", "3333"]
    assert sorted(rows_by_port(cli, "--skip-loopback"), key=int) == ["5432", "8080"]
    assert sorted(rows_by_port(cli, "--ports", "6379,8080", "--skip-loopback")) == ["8080"]


def test_outbound_discovery_lists_the_ports_this_host_connects_to(world, cli, services_file):
    rows = cli.json("discovery", "--outbound", services=services_file)["data"]
    assert sorted(int(row["{#PORT}"]) for row in rows) == sorted(world.remote)
    assert {row["{#PORT}"]: row["{#SERVICE}"] for row in rows}["8080"] == "our-web"


def test_a_wildcard_v4_mapped_listener_has_scope_any(cli):
    from netns import private_network_namespace

    with private_network_namespace():
        listener = socket.socket(socket.AF_INET6)
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::ffff:0.0.0.0", 8443))
        listener.listen()
        try:
            rows = rows_by_port(cli)
        finally:
            listener.close()
    assert rows["8443"]["{#SCOPE}"] == "any"


def test_discovery_of_an_empty_namespace_is_an_empty_list(cli):
    from netns import private_network_namespace

    with private_network_namespace():
        assert cli.json("discovery") == {"data": []}


def test_a_listener_held_from_another_namespace_still_names_its_process(tmp_path):
    """The walk reads our namespace's processes first; a socket only a process elsewhere holds (this
    test, back in its own namespace) is found in the second pass."""

    from netns import KeptNamespace
    from tcp_lld.processes import process_name

    namespace = KeptNamespace()
    try:
        with namespace.entered():
            listener = socket.socket()
            listener.bind(("127.0.0.1", 8765))
            listener.listen()
        try:
            done = subprocess.run(
                ["nsenter", f"--net=/proc/{os.getpid()}/fd/{namespace.descriptor}",
                 sys.executable, "-m", "tcp_lld", "discovery"],
                capture_output=True, text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)),
                env={**os.environ, "TCP_LLD_CACHE_DIR": str(tmp_path / "cache")})
        finally:
            listener.close()
    finally:
        namespace.close()
    assert done.returncode == 0 and done.stderr == "", done.stderr
    (row,) = json.loads(done.stdout)["data"]
    assert row["{#PORT}"] == "8765"
    assert row["{#PROCESS}"] == process_name(os.getpid()) != ""
