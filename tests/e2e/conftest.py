"""End-to-end: a real Zabbix 6.0 stack (scripts/zabbix-stack) on loopback, the template imported
through the API, hosts polled through zabbix_agentd and zabbix_agent2."""

import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(__file__)
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "agent"))  # socketlab

API_URL = os.environ.get("ZBX_STACK_URL", "http://127.0.0.1:8080/api_jsonrpc.php")
STACK = os.path.join(REPO, "scripts", "zabbix-stack")


def _stack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", STACK, *args], capture_output=True, text=True, check=False,
                          timeout=600)


def _say(config, text: str) -> None:
    """A line on the terminal even while pytest captures output."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    if capture:
        with capture.global_and_fixture_disabled():
            sys.stderr.write(text + "\n")
    else:
        sys.stderr.write(text + "\n")


@pytest.fixture(scope="session")
def zabbix_stack(pytestconfig):
    """The stack, started for this session (and stopped after it, unless it was already up)."""
    was_running = _stack("status").returncode == 0
    t0 = time.monotonic()
    started = _stack("start")
    if started.returncode != 0:
        pytest.fail(f"scripts/zabbix-stack start failed:\n{started.stdout}\n{started.stderr}")
    _say(pytestconfig, f"\nzabbix-stack start took {time.monotonic() - t0:.1f} s:\n{started.stderr.rstrip()}")
    yield
    if not was_running:
        stopped = _stack("stop")
        _say(pytestconfig, stopped.stderr.rstrip())


@pytest.fixture(scope="session")
def api(zabbix_stack):
    from zabbix_utils import ZabbixAPI

    deadline = time.monotonic() + 60
    while True:
        try:
            zapi = ZabbixAPI(url=API_URL, user="Admin", password="zabbix")
            break
        except Exception as error:  # the frontend may still be warming up
            if time.monotonic() > deadline:
                pytest.fail(f"cannot log in to the Zabbix API at {API_URL}: {error}")
            time.sleep(2)
    yield zapi
    try:
        zapi.logout()
    except Exception:
        pass
