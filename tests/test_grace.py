"""A listener that vanishes stays in discovery and stats with LISTEN 0 for the grace period."""

import time

import pytest

from netns import private_network_namespace
from world import living_world


@pytest.fixture
def own_world():
    """A world of our own: this test stops one of its listeners."""
    with living_world() as built:
        yield built


def test_gone_listener_is_kept_with_listen_zero(own_world, cli):
    assert cli.json("stats", "--no-cache")["ports"]["6379"]["LISTEN"] == 1
    own_world.stop_listener(6379)
    document = cli.json("stats", "--no-cache")
    assert document["ports"]["6379"]["LISTEN"] == 0
    assert document["ports"]["6379"]["accept_queue"] == 0
    rows = {row["{#PORT}"]: row for row in cli.json("discovery")["data"]}
    assert rows["6379"]["{#STATUS}"] == "gone"
    assert rows["6379"]["{#ADDRESS}"] == "::1"  # as it was last seen
    assert rows["8080"]["{#STATUS}"] == "listening"
    assert cli.ok("count", "6379", "LISTEN") == "0\n"


def test_gone_listener_is_dropped_after_the_grace_period(own_world, cli):
    cli.json("stats", "--no-cache", "--grace", "1")
    own_world.stop_listener(6379)
    assert "6379" in cli.json("stats", "--no-cache", "--grace", "1")["ports"]
    time.sleep(1.2)
    assert "6379" not in cli.json("stats", "--no-cache", "--grace", "1")["ports"]
    assert "6379" not in {row["{#PORT}"] for row in cli.json("discovery", "--grace", "1")["data"]}


def test_outbound_ports_are_kept_through_the_grace_period_too(cli):
    import socket

    with private_network_namespace():
        listener = socket.create_server(("127.0.0.1", 1521))
        client = socket.create_connection(("127.0.0.1", 1521))
        server_side, _ = listener.accept()
        assert cli.json("stats", "--no-cache")["remote"]["1521"]["ESTABLISHED"] == 1
        for sock in (client, server_side, listener):
            sock.close()
        time.sleep(0.1)
        document = cli.json("stats", "--no-cache")
        assert document["remote"]["1521"]["ESTABLISHED"] == 0
        assert [row["{#PORT}"] for row in cli.json("discovery", "--outbound")["data"]] == ["1521"]


def test_a_caller_with_a_shorter_grace_does_not_erase_the_shared_memory(own_world, cli):
    cli.json("stats", "--no-cache")
    own_world.stop_listener(6379)
    assert "6379" not in cli.json("stats", "--no-cache", "--grace", "0")["ports"]
    assert cli.json("stats", "--no-cache")["ports"]["6379"]["LISTEN"] == 0  # still remembered
