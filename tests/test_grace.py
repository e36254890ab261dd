"""The grace memory on real sockets: a vanished listener stays (LISTEN 0) for the grace period,
its connections stay inbound, and a namespace never inherits another's memory.

Time is moved by rewriting the stored sightings through `GraceMemory` (never by sleeping), so the
tests do not depend on the machine's speed."""

import socket
import time

import pytest

from netns import KeptNamespace, private_network_namespace
from tcp_lld.grace import GraceMemory
from world import living_world

pytestmark = pytest.mark.root  # real sockets in private network namespaces

DAY = 86400


@pytest.fixture
def own_world():
    """A world of our own: these tests stop its listeners."""
    with living_world() as built:
        yield built


def age_memory(cli, seconds: float) -> None:
    """Make every stored sighting `seconds` older, as if that much time had passed."""
    [path] = cli.cache_dir.glob("grace-*")
    raw = path.read_bytes()
    memory = GraceMemory.from_bytes(raw, raw.split(b"\n", 1)[0].split()[1].decode())
    for entry in memory.listeners.values():
        entry.first_seen -= seconds
        entry.last_seen -= seconds
    memory.outbound = {port: seen - seconds for port, seen in memory.outbound.items()}
    memory.graces = {grace: asked - seconds for grace, asked in memory.graces.items()}
    temporary = path.with_suffix(".test")
    temporary.write_bytes(memory.to_bytes())
    temporary.chmod(0o600)
    temporary.replace(path)


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
    cli.json("stats", "--no-cache")
    own_world.stop_listener(6379)
    cli.json("stats", "--no-cache")
    age_memory(cli, DAY + 60)
    assert "6379" not in cli.json("stats", "--no-cache")["ports"]
    assert "6379" not in {row["{#PORT}"] for row in cli.json("discovery")["data"]}


def test_a_longer_grace_is_kept_for_its_callers_and_applied_per_caller(own_world, cli):
    three_days = str(3 * DAY)
    cli.json("stats", "--no-cache", "--grace", three_days)
    own_world.stop_listener(6379)
    cli.json("stats", "--no-cache", "--grace", three_days)
    age_memory(cli, 2 * DAY)
    cli.json("stats", "--no-cache")  # a default caller scans: it must not cut the memory to a day
    assert cli.json("stats", "--ttl", "600", "--grace", three_days)["ports"]["6379"]["LISTEN"] == 0
    assert "6379" not in cli.json("stats", "--ttl", "600")["ports"]  # the same scan, a day's grace


def test_a_caller_with_a_shorter_grace_does_not_erase_the_shared_memory(own_world, cli):
    cli.json("stats", "--no-cache")
    own_world.stop_listener(6379)
    assert "6379" not in cli.json("stats", "--no-cache", "--grace", "0")["ports"]
    assert cli.json("stats", "--no-cache")["ports"]["6379"]["LISTEN"] == 0  # still remembered


def settled(cli, check, *arguments):
    """The document once `check` holds (sockets on loopback change state in microseconds, but
    asynchronously); fails after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        document = cli.json("stats", "--no-cache", *arguments)
        if check(document) or time.monotonic() > deadline:
            return document
        time.sleep(0.05)


def test_outbound_ports_are_kept_through_the_grace_period_too(cli):
    with private_network_namespace():
        listener = socket.create_server(("127.0.0.1", 1521))
        client = socket.create_connection(("127.0.0.1", 1521))
        server_side, _ = listener.accept()
        assert cli.json("stats", "--no-cache")["remote"]["1521"]["ESTABLISHED"] == 1
        for sock in (client, server_side, listener):
            sock.close()
        document = settled(cli, lambda d: d["remote"]["1521"]["ESTABLISHED"] == 0)
        assert document["remote"]["1521"]["ESTABLISHED"] == 0
        assert [row["{#PORT}"] for row in cli.json("discovery", "--outbound")["data"]] == ["1521"]


def test_connections_outliving_their_listener_stay_inbound(cli):
    with private_network_namespace():
        listener = socket.create_server(("127.0.0.1", 8443))
        client = socket.create_connection(("127.0.0.1", 8443))
        server_side, _ = listener.accept()
        cli.json("stats", "--no-cache")
        listener.close()
        document = cli.json("stats", "--no-cache")
        assert document["ports"]["8443"]["LISTEN"] == 0
        assert document["ports"]["8443"]["ESTABLISHED"] == 1  # the server side, still inbound
        assert document["remote"]["8443"]["ESTABLISHED"] == 1  # the client side, outbound
        assert str(client.getsockname()[1]) not in document["remote"]
        client.close()
        server_side.close()


WAIT_SECONDS = 60  # for the kernel to free a dead namespace's inode


def test_a_namespace_reusing_a_dead_ones_inode_starts_empty(cli):
    """The kernel hands a dead namespace's inode to a later one: it must not inherit its
    listeners (as "gone") nor its cached counts."""
    with private_network_namespace() as first:
        listener = socket.create_server(("127.0.0.1", 7777))
        assert "7777" in cli.json("stats")["ports"]
        listener.close()
    # The kernel numbers namespaces lowest-free-first and frees a dead one's number later, when its
    # asynchronous clean-up has run (well over a second on a busy machine). Each miss is kept open,
    # so the search climbs past every number in use and takes `first` as soon as it is free.
    missed = []
    deadline = time.monotonic() + WAIT_SECONDS
    try:
        while time.monotonic() < deadline:
            candidate = KeptNamespace()
            if candidate.inode == first:
                with candidate.entered():
                    assert cli.json("stats")["ports"] == {}
                    assert cli.json("discovery") == {"data": []}
                candidate.close()
                return
            missed.append(candidate)
            time.sleep(0.05)
    finally:
        for namespace in missed:
            namespace.close()
    pytest.fail(f"no new namespace got inode {first} back in {WAIT_SECONDS} s ({len(missed)} tries)")
