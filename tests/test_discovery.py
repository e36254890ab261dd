"""`tcp-lld discovery`: LLD rows of listening ports, merged per port, with process and service."""

import socket

import pytest


def rows_by_port(cli, *options):
    document = cli.json("discovery", *options)
    assert set(document) == {"data"}
    return {row["{#PORT}"]: row for row in document["data"]}


def test_one_row_per_port_with_families_merged(world, cli):
    rows = rows_by_port(cli)
    assert sorted(rows, key=int) == [str(port) for port in sorted(world.SERVICE_PORTS)]
    assert rows["8080"]["{#ADDRESS}"] == "0.0.0.0,::"
    assert rows["8080"]["{#FAMILY}"] == "ipv4,ipv6"
    assert rows["6379"]["{#FAMILY}"] == "ipv6"


@pytest.mark.parametrize("port, scope", [("8080", "any"), ("5432", "any"), ("3306", "loopback"), ("6379", "loopback")])
def test_scope_tells_wildcard_from_loopback(world, cli, port, scope):
    assert rows_by_port(cli)[port]["{#SCOPE}"] == scope


def test_process_and_service_names(world, cli):
    rows = rows_by_port(cli)
    own_name = open("/proc/self/comm").read().strip()  # the test process owns the listeners
    assert {row["{#PROCESS}"] for row in rows.values()} == {own_name}
    assert rows["3306"]["{#SERVICE}"] == socket.getservbyport(3306, "tcp")
    assert rows["5432"]["{#SERVICE}"] == "postgresql"
    assert rows["3333"]["{#SERVICE}"] == ""  # not in /etc/services
    assert all(row["{#STATUS}"] == "listening" for row in rows.values())
    assert all(row["{#EPHEMERAL}"] == "0" for row in rows.values())


def test_listeners_in_the_ephemeral_range_are_marked_and_can_be_skipped(world, cli):
    import socket

    low, high = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    random_port = socket.create_server(("127.0.0.1", 0))  # the kernel picks an ephemeral port
    try:
        port = str(random_port.getsockname()[1])
        assert low <= int(port) <= high
        rows = rows_by_port(cli, "--no-cache")
        assert rows[port]["{#EPHEMERAL}"] == "1"
        assert port not in rows_by_port(cli, "--no-cache", "--skip-ephemeral")
        assert "8080" in rows_by_port(cli, "--skip-ephemeral")
    finally:
        random_port.close()
    assert port not in rows_by_port(cli, "--no-cache")  # random ports are not kept as "gone"
    assert port not in cli.json("stats")["ports"]


def test_filters_narrow_discovery(world, cli):
    assert sorted(rows_by_port(cli, "--ports", "2000-3400"), key=int) == ["2222", "3306", "3333"]
    assert sorted(rows_by_port(cli, "--skip-loopback"), key=int) == ["5432", "8080"]
    assert sorted(rows_by_port(cli, "--ports", "6379,8080", "--skip-loopback")) == ["8080"]


def test_outbound_discovery_lists_remote_service_ports(world, cli):
    rows = cli.json("discovery", "--outbound")["data"]
    assert [row["{#PORT}"] for row in rows] == ["2222", "3306", "3333", "8080"]
    assert {row["{#PORT}"]: row["{#SERVICE}"] for row in rows}["8080"] == "http-alt"


def test_discovery_of_an_empty_namespace_is_an_empty_list(cli):
    from netns import private_network_namespace

    with private_network_namespace():
        assert cli.json("discovery") == {"data": []}
