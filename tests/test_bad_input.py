"""Bad input: one plain line on stdout, nothing on stderr, non-zero exit, nothing that parses as JSON."""

import json

import pytest


@pytest.mark.parametrize(
    "arguments, reason",
    [
        (["count", "abc", "ESTABLISHED"], "invalid port 'abc'"),
        (["count", "0", "ESTABLISHED"], "invalid port '0'"),
        (["count", "65536", "LISTEN"], "invalid port '65536'"),
        (["count", "80", "ESTABLISHD"], "invalid state 'ESTABLISHD'"),
        (["count", "80"], "count needs PORT and STATE"),
        (["count", "80", "LISTEN", "sideways"], "invalid direction 'sideways'"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["stats", "--ttl", "soon"], "invalid --ttl 'soon'"),
        (["stats", "--ttl"], "option --ttl needs a value"),
        (["stats", "--grace", "-5"], "invalid --grace '-5'"),
        (["stats", "--source", "magic"], "unknown source 'magic'"),
        (["stats", "--outbound"], "option --outbound does not apply to stats"),
        (["stats", "extra"], "unexpected argument 'extra' for stats"),
        (["discovery", "--ports", "80-20"], "invalid port range '80-20'"),
        (["discovery", "--ports", "http"], "invalid port range 'http'"),
        (["discovery", "--bogus"], "unknown option '--bogus'"),
    ],
)
def test_one_line_error_and_non_zero_exit(cli, arguments, reason):
    done = cli.run(*arguments)
    assert done.returncode != 0
    assert done.stderr == ""
    assert done.stdout.count("\n") == 1
    assert done.stdout.startswith(f"tcp-lld: {reason}"), done.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(done.stdout)


def test_bad_input_is_refused_before_any_scan(cli):
    cli.run("count", "abc", "ESTABLISHED")
    assert not cli.cache_dir.exists()


def test_no_command_prints_usage_and_fails(cli):
    done = cli.run()
    assert done.returncode == 2 and done.stdout.startswith("usage: tcp-lld")


def test_version(cli):
    assert cli.ok("--version").startswith("tcp-lld 0.")
