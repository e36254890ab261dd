"""The Ansible role, run by ansible-playbook (connection local) inside a minbase Debian 12 root with
both of Debian's agents and no service manager, where zabbix_agentd.conf has lost its Include= line:
the role installs the .deb, includes tcp-lld.conf, restarts the agent with the configured command,
and the running agent then answers the keys (agent 2's test mode too). A second run changes
nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import time

import pytest

from debroots import REPO, ROOT_ONLY, Root

sys.path.insert(0, str(REPO / "tests"))
from netns import private_network_namespace  # noqa: E402

pytestmark = [ROOT_ONLY, pytest.mark.deploy]

PIDFILE = "run/zabbix/zabbix_agentd.pid"
# The restart command the role is given: no service manager in this root, so the agent is stopped by
# its pid file and started again (it drops to user zabbix and goes to the background itself).
RESTART = """#!/bin/sh
pidfile=/run/zabbix/zabbix_agentd.pid
if [ -s "$pidfile" ]; then
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
install -d -o zabbix -g zabbix /run/zabbix
exec zabbix_agentd -c /etc/zabbix/zabbix_agentd.conf
"""


def recap(output: str) -> dict:
    """The PLAY RECAP counters of the one host, e.g. {'ok': 9, 'changed': 4, 'failed': 0, ...}."""
    line = re.search(r"^localhost\s+:\s+(.*)$", output, re.M)
    assert line, output
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line[1])}


def ask(key: str, port: int = 10050) -> str:
    """The agent's value for KEY (passive check), or its error."""
    from zabbix_utils import Getter
    response = Getter(host="127.0.0.1", port=port, timeout=15).get(key)
    return response.value if response.error is None else f"error: {response.error}"


def stop_agent(root: Root) -> None:
    pidfile = root.path / PIDFILE
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().split()[0])
    try:
        os.kill(pid, signal.SIGTERM)  # the agent our restart command started, by its pid
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def wait_listening(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"no agent on 127.0.0.1:{port}")


def test_role_installs_wires_and_restarts_the_agent(fresh_root, debs):
    root = fresh_root("bookworm-ansible")  # ansible-core and python3-apt beside both agents
    root.sh("sed -i '/^Include=/d' /etc/zabbix/zabbix_agentd.conf")
    checkout = root.path / "srv" / "tcp-lld"
    shutil.copytree(REPO / "deploy", checkout / "deploy")
    shutil.copytree(REPO / "template", checkout / "template")
    root.put(debs["current"], f"/srv/tcp-lld/dist/{debs['current'].name}")
    restart = root.path / "usr/local/sbin/restart-zabbix-agentd"
    restart.write_text(RESTART)
    restart.chmod(0o755)
    (checkout / "inventory.ini").write_text(
        "[zabbix_agents]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n")
    playbook = ["ansible-playbook", "-i", "/srv/tcp-lld/inventory.ini", "/srv/tcp-lld/deploy/ansible/site.yml",
                "-e", "tcp_lld_agent_restart_command=/usr/local/sbin/restart-zabbix-agentd"]

    # A network namespace of our own: only lo, so no mirror and no package index; the agent the
    # role starts lives in it on 127.0.0.1:10050, beside no other agent.
    with private_network_namespace():
        try:
            first = root.run(*playbook).stdout
            print(first[-3000:])
            counts = recap(first)
            assert counts["failed"] == 0 and counts["changed"] >= 3, counts
            assert "RUNNING HANDLER [tcp_lld : Restart the Zabbix agent with the configured command]" in first
            config = (root.path / "etc/zabbix/zabbix_agentd.conf").read_text()
            assert "Include=/etc/zabbix/zabbix_agentd.conf.d/tcp-lld.conf" in config

            wait_listening(10050)
            document = json.loads(ask("tcp.port.stats"))
            assert document["ports"]["10050"]["LISTEN"] >= 1, document["ports"].keys()
            assert ask("tcp.port.count[10050,LISTEN]") in ("1", "2")
            discovery = ask("tcp.port.discovery")
            assert "10050" in {row["{#PORT}"] for row in json.loads(discovery)["data"]}

            # agent 2 (installed, not running here) reads its own copy, from zabbix_agent2.d
            agent2 = root.run("zabbix_agent2", "-t", "tcp.port.count[10050,LISTEN]", user="zabbix").stdout
            assert re.search(r"\[\w\|[12]\]", agent2), agent2

            second = root.run(*playbook).stdout
            assert recap(second)["changed"] == 0, second[-3000:]
        finally:
            stop_agent(root)
