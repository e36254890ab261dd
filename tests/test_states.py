"""The state table: kernel numbers and every spelling users type."""

import pytest

from tcp_lld.states import STATE_NAMES, parse_state


def test_canonical_names_follow_the_kernel_numbering():
    # include/net/tcp_states.h: TCP_ESTABLISHED = 1 ... TCP_CLOSING = 11
    assert STATE_NAMES[0] == "ESTABLISHED" and STATE_NAMES[5] == "TIME_WAIT"
    assert STATE_NAMES[9] == "LISTEN" and STATE_NAMES[10] == "CLOSING"
    assert [parse_state(name) for name in STATE_NAMES] == list(range(1, 12))


@pytest.mark.parametrize(
    "spelling, number",
    [
        ("ESTAB", 1), ("established", 1), ("SYN-SENT", 2), ("syn_rcvd", 3), ("SYN-RECEIVED", 3),
        ("FIN-WAIT-1", 4), ("fin_wait1", 4), ("FIN-WAIT-2", 5), ("time-wait", 6), ("CLOSED", 7),
        ("UNCONN", 7), ("close-wait", 8), ("LAST-ACK", 9), ("listening", 10), (" closing ", 11), ("all", 0),
    ],
)
def test_netstat_ss_and_rfc_spellings(spelling, number):
    assert parse_state(spelling) == number


@pytest.mark.parametrize("spelling", ["", "ESTABLISHD", "WAIT", "12", "NEW_SYN_RECV"])
def test_unknown_spellings(spelling):
    assert parse_state(spelling) is None
