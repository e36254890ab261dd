"""The command line in this process (no root, no namespace): real sockets of our own on loopback
in the host's namespace, read through every key, with a cache directory of our own."""

import json
import socket

import pytest

from tcp_lld import cli


@pytest.fixture
def run(tmp_path, monkeypatch, capsysbinary):
    monkeypatch.setenv("TCP_LLD_CACHE_DIR", str(tmp_path / "cache"))

    def run(*arguments):
        status = cli.main(list(arguments))
        out, err = capsysbinary.readouterr()
        assert (status, err) == (0, b""), err
        return out

    return run


@pytest.fixture
def service():
    """A listener with two accepted connections and one waiting in its accept queue."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=8)
    port = listener.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    accepted = [listener.accept()[0] for _ in range(2)]
    yield port, clients
    for sock in clients + accepted + [listener]:
        sock.close()


def test_every_key_answers_from_one_scan(run, service):
    port, clients = service
    document = json.loads(run("stats", "--min-age", "0"))
    entry = document["ports"][str(port)]
    assert (entry["LISTEN"], entry["ESTABLISHED"], entry["accept_queue"]) == (1, 3, 1)
    assert document["remote"][str(port)]["ESTABLISHED"] == 3  # our clients, outbound
    assert run("count", "--", str(port), "ESTABLISHED", "in") == b"3\n"
    assert run("count", "--", str(port), "estab", "out") == b"3\n"
    rows = {row["{#PORT}"]: row for row in json.loads(run("discovery", "--min-age", "0"))["data"]}
    assert rows[str(port)]["{#STATUS}"] == "listening"
    assert rows[str(port)]["{#SCOPE}"] == "loopback"
    assert rows[str(port)]["{#EPHEMERAL}"] == "0"
    outbound = [row["{#PORT}"] for row in json.loads(run("discovery", "--outbound"))["data"]]
    assert str(port) in outbound
    for client in clients:  # a client's own port is not a service
        assert str(client.getsockname()[1]) not in document["remote"]


def test_filters_and_sources(run, service):
    port, _ = service
    many = ",".join(str(other) for other in range(1000, 1300)) + f",{port}"  # past the 256-character cap of other arguments
    assert str(port) in {row["{#PORT}"] for row in json.loads(run("discovery", "--ports", many, "--min-age", "0"))["data"]}
    only = json.loads(run("discovery", "--ports", f"{port}", "--skip-ephemeral", "--min-age", "0"))["data"]
    assert [row["{#PORT}"] for row in only] == [str(port)]
    procfs = json.loads(run("stats", "--no-cache", "--source", "procfs"))
    assert procfs["meta"]["source"] == "procfs"
    assert procfs["ports"][str(port)]["ESTABLISHED"] == 3


def test_usage_and_errors_exit_with_one_line(capsys):
    assert cli.main([]) == 2
    assert capsys.readouterr().out.startswith("usage:")
    assert cli.main(["--help"]) == 0
    assert cli.main(["--version"]) == 0
    with pytest.raises(SystemExit) as exit_status:
        cli.main(["count", "--", "x" * 250, "LISTEN"])
    assert exit_status.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tcp-lld: invalid port 'xxxx") and err.count("\n") == 1


def test_an_unexpected_failure_is_one_line_not_a_traceback(capsys, monkeypatch):
    def broken(argv):
        raise RuntimeError("boom\nsecond line " + "y" * 1000)

    monkeypatch.setattr(cli, "run", broken)
    with pytest.raises(SystemExit) as exit_status:
        cli.main(["stats"])
    assert exit_status.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("tcp-lld: internal error: RuntimeError: boom second line")
    assert err.count("\n") == 1 and len(err) <= len("tcp-lld: \n") + cli.MAX_ERROR_LINE
