"""The public contract (tcp_lld/contract.py) against real output, and docs/contract.md against it."""

import json
import re
import socket
import typing
from pathlib import Path

import pytest

from tcp_lld import cli, contract

DOC = Path(__file__).resolve().parent.parent / "docs" / "contract.md"


def conforms(value, expected, where="$"):
    """Raise AssertionError where `value` is not of the `expected` type (TypedDicts: exact keys)."""
    if typing.is_typeddict(expected):
        hints = typing.get_type_hints(expected)
        assert isinstance(value, dict), where
        assert list(value) == list(hints), f"{where}: keys {list(value)} != {list(hints)}"
        for key, hint in hints.items():
            conforms(value[key], hint, f"{where}.{key}")
        return
    origin = typing.get_origin(expected)
    if origin is typing.Union:
        assert any(_fits(value, option) for option in typing.get_args(expected)), f"{where}: {value!r}"
    elif origin is dict:
        key_type, value_type = typing.get_args(expected)
        assert isinstance(value, dict), where
        for key, item in value.items():
            conforms(key, key_type, f"{where}[key]")
            conforms(item, value_type, f"{where}[{key!r}]")
    elif expected is float:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r}"
    elif expected is object:
        pass
    else:
        assert isinstance(value, expected) and not (expected is int and isinstance(value, bool)), f"{where}: {value!r}"


def _fits(value, expected) -> bool:
    try:
        conforms(value, expected)
    except AssertionError:
        return False
    return True


@pytest.fixture
def outputs(tmp_path, monkeypatch, capsysbinary):
    """Real stats and discovery output of this host, with a listener of ours in it."""
    monkeypatch.setenv("TCP_LLD_CACHE_DIR", str(tmp_path / "cache"))
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    found = {}
    try:
        for name, arguments in (("stats", ["stats"]), ("discovery", ["discovery"]), ("outbound", ["discovery", "--outbound"])):
            assert cli.main(arguments) == 0
            found[name] = json.loads(capsysbinary.readouterr().out)
    finally:
        client.close()
        listener.close()
    return found


def test_the_master_document_conforms(outputs):
    conforms(outputs["stats"], contract.MasterDocument)
    meta = outputs["stats"]["meta"]
    assert meta["memory"] in contract.MEMORY_STATES and meta["source"] in contract.SOURCES
    assert outputs["stats"]["ports"], "a listener of ours is there"


def test_discovery_rows_conform(outputs):
    conforms(outputs["discovery"], contract.ListeningDiscovery)
    assert outputs["discovery"]["data"]
    for row in outputs["discovery"]["data"]:
        conforms(row, contract.ListeningRow)
        assert row["{#SCOPE}"] in contract.SCOPES and row["{#STATUS}"] in contract.STATUSES
    conforms(outputs["outbound"], contract.OutboundDiscovery)
    assert outputs["outbound"]["data"]
    for row in outputs["outbound"]["data"]:
        conforms(row, contract.OutboundRow)


def documented_fields(heading: str):
    """Field names listed in the `| field |` table under `heading` in docs/contract.md."""
    section = DOC.read_text().split(f"### {heading}\n", 1)[1].split("\n#", 1)[0]
    return [match for match in re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE)]


@pytest.mark.parametrize("heading, definition", [
    ("meta", contract.Meta), ("meta.dropped", contract.Dropped), ("ports entry", contract.PortEntry),
    ("remote entry", contract.RemoteEntry),
    ("discovery row", contract.ListeningRow), ("outbound row", contract.OutboundRow),
])
def test_the_document_names_exactly_the_defined_fields(heading, definition):
    assert documented_fields(heading) == list(typing.get_type_hints(definition))
