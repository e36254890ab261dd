"""The state table: kernel numbers and every spelling users type."""

import socket
import time

import pytest

from tcp_lld.states import STATE_NAMES, parse_state


def kernel_states(ports):
    """(local port, remote port) -> the state number the kernel reports in /proc/net/tcp."""
    found = {}
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            local, remote = (int(field.rsplit(":", 1)[1], 16) for field in fields[1:3])
            if local in ports or remote in ports:
                found[(local, remote)] = int(fields[3], 16)
    return found


def test_canonical_names_follow_the_kernel_numbering():
    """Real sockets in four states, as the kernel numbers them (include/net/tcp_states.h)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    open_client = socket.create_connection(("127.0.0.1", port))
    closing_client = socket.create_connection(("127.0.0.1", port))
    accepted = [listener.accept()[0] for _ in range(2)]
    closing_client.close()  # its peer is left in CLOSE_WAIT, itself in FIN_WAIT2
    try:
        expected = {
            (port, 0): "LISTEN",
            (open_client.getsockname()[1], port): "ESTABLISHED",
            (port, open_client.getsockname()[1]): "ESTABLISHED",  # its accepted end
        }
        deadline = time.monotonic() + 10
        while True:  # the FIN is handled asynchronously, in microseconds on loopback
            states = kernel_states({port})
            closing = [key for key in states if key[1] == port and states[key] == 5]
            if closing or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        names = {key: STATE_NAMES[number - 1] for key, number in states.items()}
        for key, name in expected.items():
            assert names.get(key) == name, (key, names)
        assert "FIN_WAIT2" in names.values() and "CLOSE_WAIT" in names.values(), names
        assert all(parse_state(name) == states[key] for key, name in names.items())
    finally:
        for sock in [listener, open_client, *accepted]:
            sock.close()


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
