"""`tcp-lld count PORT STATE [in|out]`: one integer from the cached snapshot."""

import pytest

from tcp_lld.states import STATE_NAMES, parse_state


@pytest.mark.parametrize(
    "port, spelling, expected",
    [
        ("8080", "ESTABLISHED", 7), ("8080", "estab", 7), ("8080", "LISTEN", 2),
        ("3306", "CLOSE_WAIT", 4), ("3306", "close-wait", 4),
        ("5432", "TIME_WAIT", 5), ("5432", "time-wait", 5),
        ("2222", "SYN_RECV", 2), ("2222", "SYN-RECV", 2), ("2222", "syn_rcvd", 2),
        ("6379", "LISTEN", 1), ("6379", "ESTABLISHED", 0),
        ("8080", "ALL", 9),
    ],
)
def test_local_counts_in_every_spelling(world, cli, port, spelling, expected):
    state = parse_state(spelling)
    truth = world.counts(int(port))
    assert (sum(truth.values()) if state == 0 else truth[STATE_NAMES[state - 1]]) == expected
    assert cli.ok("count", port, spelling) == f"{expected}\n"
    assert cli.ok("count", port, spelling, "in") == f"{expected}\n"


def test_outbound_counts_by_remote_port(world, cli):
    assert cli.ok("count", "3306", "FIN-WAIT-2", "out") == f"{world.remote_counts(3306)['FIN_WAIT2']}\n"
    assert cli.ok("count", "3333", "SYN_SENT", "out") == "2\n"


@pytest.mark.parametrize("port", ["all", "", "ALL"])
def test_host_totals(world, cli, port):
    assert cli.ok("count", port, "TIME_WAIT") == f"{world.totals()['TIME_WAIT']}\n"
    assert cli.ok("count", port, "ALL") == f"{sum(world.totals().values())}\n"


def test_a_quiet_service_port_counts_zero(world, cli):
    assert cli.ok("count", "443", "ESTABLISHED") == "0\n"


def test_an_ephemeral_port_is_refused_not_guessed(world, cli):
    done = cli.run("count", "45000", "ESTABLISHED")
    assert done.returncode != 0
    assert done.stdout.startswith("tcp-lld: port 45000 is in the ephemeral range")


def test_the_agent_form_never_takes_parameters_for_options(world, cli):
    """agent_conf runs `count -- "$1" "$2" "$3"`: a key like tcp.port.count[--no-cache,...] is a bad port."""
    assert cli.ok("count", "--", "8080", "ESTABLISHED", "") == "7\n"
    assert cli.ok("count", "--", "", "LISTEN", "") == f"{world.totals()['LISTEN']}\n"
    done = cli.run("count", "--", "--no-cache", "all", "")
    assert done.returncode == 2 and done.stdout.startswith("tcp-lld: invalid port '--no-cache'")
