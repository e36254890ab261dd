"""Bad input: one plain line on stderr (the agent merges it into the value), nothing on stdout,
exit 2 for usage errors, nothing that parses as JSON, and no scan."""

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
        (["discovery", "--ports", "80-"], "invalid port range '80-'"),
        (["discovery", "--ports", "1_000"], "invalid port range '1_000'"),
        (["discovery", "--ports", "８０"], "invalid port range '８０'"),
        (["count", "٨٠", "ESTABLISHED"], "invalid port '٨٠'"),
        (["count", "８０", "ESTABLISHED"], "invalid port '８０'"),
        (["count", "𝟖𝟎", "ESTABLISHED"], "invalid port '𝟖𝟎'"),
        (["count", "²", "ESTABLISHED"], "invalid port '²'"),
        (["count", "①", "ESTABLISHED"], "invalid port '①'"),
        (["count", "9" * 200, "ESTABLISHED"], "invalid port '99999"),
        (["count", "9" * 100000, "ESTABLISHED"], "argument too long (100000 characters"),
        (["stats", "--ttl", "１"], "invalid --ttl '１'"),
        (["stats", "--min-age", "nan"], "invalid --min-age 'nan'"),
    ],
)
def test_one_line_error_and_usage_exit(cli, arguments, reason):
    done = cli.run(*arguments)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and len(done.stderr) <= 310
    assert done.stderr.startswith(f"tcp-lld: {reason}"), done.stderr
    with pytest.raises(json.JSONDecodeError):
        json.loads(done.stderr)


def test_bad_input_is_refused_before_any_scan(cli):
    cli.run("count", "abc", "ESTABLISHED")
    assert not cli.cache_dir.exists()


def test_no_command_prints_usage_and_fails(cli):
    done = cli.run()
    assert done.returncode == 2 and done.stdout.startswith("usage: tcp-lld")
    assert "--min-age" in done.stdout


def test_version(cli):
    assert cli.ok("--version").startswith("tcp-lld 0.")
