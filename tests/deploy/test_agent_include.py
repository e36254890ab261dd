"""The role's tcp_lld_agent_include module, run by `ansible` on this machine against config files in
a temporary folder: an agent must end up including exactly one copy of the tcp-lld keys."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from debroots import REPO, ROOT_ONLY

pytestmark = [ROOT_ONLY, pytest.mark.deploy,
              pytest.mark.skipif(not shutil.which("ansible"), reason="ansible-core missing (scripts/test installs it)")]


def run_module(config: Path, files: list, include: str, check: bool = False) -> dict:
    arguments = json.dumps({"config": str(config), "files": files, "include": include})
    env = {**os.environ, "ANSIBLE_LIBRARY": str(REPO / "deploy" / "ansible" / "roles" / "tcp_lld" / "library"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    done = subprocess.run(["ansible", "localhost", "-c", "local", "-m", "tcp_lld_agent_include", "-a", arguments,
                           "--one-line", *(["--check"] if check else [])],
                          capture_output=True, text=True, env=env, timeout=120)
    # "localhost | CHANGED => {...}" (or SUCCESS, FAILED!)
    assert " => " in done.stdout, done.stdout + done.stderr
    status, result = done.stdout.split(" => ", 1)
    return {**json.loads(result), "failed": "FAILED" in status}


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    for name in ("zabbix_agentd.conf.d", "zabbix_agentd.d", "zabbix_agent2.d/plugins.d"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "tcp-lld.conf").write_text("# keys\n")
    return tmp_path


def test_glob_include_is_enough(etc):
    config = etc / "zabbix_agentd.conf"
    config.write_text(f"LogFile=/tmp/log\nInclude={etc}/zabbix_agentd.conf.d/*.conf\n")
    result = run_module(config, [f"{etc}/zabbix_agentd.conf.d/tcp-lld.conf", f"{etc}/zabbix_agentd.d/tcp-lld.conf"],
                        f"{etc}/zabbix_agentd.conf.d/tcp-lld.conf")
    assert not result["failed"] and result["changed"] is False and result["included"] == [f"{etc}/zabbix_agentd.conf.d/tcp-lld.conf"]


def test_missing_include_is_added_once(etc):
    config = etc / "zabbix_agent2.conf"
    # a relative glob into another folder includes nothing of tcp-lld
    config.write_text("Include=./zabbix_agent2.d/plugins.d/*.conf")
    wanted = f"{etc}/zabbix_agent2.d/tcp-lld.conf"
    assert run_module(config, [wanted], wanted, check=True)["changed"] is True
    assert "tcp-lld" not in config.read_text(), "check mode writes nothing"
    assert run_module(config, [wanted], wanted)["changed"] is True
    assert config.read_text().endswith(f"\nInclude={wanted}\n")
    assert run_module(config, [wanted], wanted)["changed"] is False


def test_two_copies_included_is_an_error(etc):
    config = etc / "zabbix_agentd.conf"
    config.write_text(f"Include={etc}/zabbix_agentd.conf.d/\nInclude=./zabbix_agentd.d/*.conf\n")
    result = run_module(config, [f"{etc}/zabbix_agentd.conf.d/tcp-lld.conf", f"{etc}/zabbix_agentd.d/tcp-lld.conf"],
                        f"{etc}/zabbix_agentd.conf.d/tcp-lld.conf")
    assert result["failed"] and "2 copies" in result["msg"], result
