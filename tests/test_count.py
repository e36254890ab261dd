"""`tcp-lld count PORT STATE [in|out]`: one integer from the cached snapshot."""

import pytest

from tcp_lld.states import STATE_NAMES, parse_state

pytestmark = pytest.mark.root  # real sockets in private network namespaces


@pytest.mark.parametrize(
    "port, spelling",
    [
        ("8080", "ESTABLISHED"), ("8080", "estab"), ("8080", "LISTEN"),
        ("3306", "CLOSE_WAIT"), ("3306", "close-wait"),
        ("5432", "TIME_WAIT"), ("5432", "time-wait"),
        ("2222", "SYN_RECV"), ("2222", "SYN-RECV"), ("2222", "syn_rcvd"),
        ("6379", "LISTEN"), ("6379", "ESTABLISHED"),
        ("8080", "ALL"),
    ],
)
def test_inbound_counts_in_every_spelling(world, cli, port, spelling):
    state = parse_state(spelling)
    truth = world.counts(int(port))
    expected = sum(truth.values()) if state == 0 else truth[STATE_NAMES[state - 1]]
    assert cli.ok("count", port, spelling) == f"{expected}\n"
    assert cli.ok("count", port, spelling, "in") == f"{expected}\n"


@pytest.mark.parametrize("port, state", [("3306", "FIN_WAIT2"), ("3333", "SYN_SENT"), ("8080", "ESTABLISHED"), ("2222", "ESTABLISHED")])
def test_outbound_counts_by_remote_port(world, cli, port, state):
    assert cli.ok("count", port, state, "out") == f"{world.remote_counts(int(port))[state]}\n"
    assert world.remote_counts(int(port))[state] > 0


@pytest.mark.parametrize("port", ["all", "", "ALL"])
def test_host_totals(world, cli, port):
    assert cli.ok("count", port, "TIME_WAIT") == f"{world.totals()['TIME_WAIT']}\n"
    assert cli.ok("count", port, "ALL") == f"{sum(world.totals().values())}\n"


def test_a_quiet_service_port_counts_zero(world, cli):
    assert cli.ok("count", "443", "ESTABLISHED") == "0\n"


def test_a_port_nobody_listens_on_has_no_inbound_connections(world, cli):
    client_port = min(port for port in world.local if port not in world.inbound_ports)
    assert cli.ok("count", str(client_port), "ALL") == "0\n"  # a client's port is not a service


def test_the_agent_form_never_takes_parameters_for_options(world, cli):
    """agent_conf runs `count -- "$1" "$2" "$3"`: a key like tcp.port.count[--no-cache,...] is a bad port."""
    established = world.counts(8080)["ESTABLISHED"]
    assert cli.ok("count", "--", "8080", "ESTABLISHED", "", "", "", "", "", "", "") == f"{established}\n"
    assert cli.ok("count", "--", "", "LISTEN", "") == f"{world.totals()['LISTEN']}\n"
    done = cli.run("count", "--", "--no-cache", "all", "")
    assert done.returncode == 2 and done.stderr.startswith("tcp-lld: invalid port '--no-cache'")


def test_a_fourth_key_parameter_is_refused_not_dropped(world, cli):
    """tcp.port.count[80,ESTAB,in,x]: the agent conf passes "$1".."$9"; x is a mistyped key."""
    done = cli.run("count", "--", "8080", "ESTABLISHED", "in", "x", "", "", "", "", "")
    assert done.returncode == 2 and done.stdout == ""
    assert "3 parameters at most" in done.stderr
