"""A real Zabbix agent (Debian's zabbix_agentd, and zabbix_agent2) running tcp-lld's shipped
UserParameter file as user `zabbix`, on a free loopback port; stopped by PID afterwards."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from agents import AGENTS, running_agent, shipped_userparameters  # noqa: E402


@pytest.fixture(scope="module", params=sorted(AGENTS))
def agent(request):
    """A running agent of each kind (tests using it run once per agent)."""
    kind = request.param
    try:
        with running_agent(kind, shipped_userparameters(kind), f"tcp-lld-test-{kind}") as agent:
            yield agent
    except RuntimeError as error:  # missing binaries or an agent that would not start
        pytest.fail(str(error))
