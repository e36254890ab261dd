"""End-to-end: real Zabbix servers on loopback, 6.0 (scripts/zabbix-stack) and 7.0 LTS
(scripts/zabbix70-stack), the same template file imported into each through the API, hosts polled
through a zabbix_agentd and a zabbix_agent2 of the test's own (Debian 12's 6.0 agents: a 7.0
server polls them as it polls its own). Beside the passive hosts: hosts of agents in active mode
(linked to the active twin), and an "idle" host whose agent sees a private network namespace
holding only idle listeners.

Every e2e test runs once per server: `zabbix_stack` is a session fixture parametrized by server
version, so pytest runs all tests on 6.0, stops what it started, then all on 7.0. Choose with
TCP_LLD_E2E_SERVERS (default "6.0,7.0"; e.g. "7.0" for one of them)."""

from dataclasses import dataclass

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Sequence

import pytest

HERE = os.path.dirname(__file__)
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "agent"))  # socketlab, agents

from agents import AGENTS, PREFIX, running_agent, shipped_userparameters  # noqa: E402



@dataclass(frozen=True)
class Server:
    """One Zabbix server of the e2e: its version, the script that runs it, its frontend."""

    version: str
    stack: str  # scripts/zabbix-stack or scripts/zabbix70-stack
    web: str  # the frontend's base URL
    trapper_port: int  # where agents in active mode connect (ServerActive)
    run_dir: str  # where its stack keeps pid files
    log_dir: str  # and logs

    @property
    def api_url(self) -> str:
        return f"{self.web}/api_jsonrpc.php"

    def last_words(self, lines: int = 25) -> str:
        """Whether zabbix_server runs and the end of its log: a test that fails on a server which
        died (out of configuration cache, say) shows why, in the CI output that is all one has."""
        pid_file = os.path.join(self.run_dir, "zabbix_server.pid")
        log_file = os.path.join(self.log_dir, "zabbix_server.log")
        try:
            with open(pid_file) as fh:
                pid = int(fh.read().split()[0])
            os.kill(pid, 0)
            state = f"zabbix_server {self.version} runs (pid {pid})"
        except (OSError, ValueError, IndexError):
            state = f"zabbix_server {self.version} is NOT running (no live pid in {pid_file})"
        try:
            with open(log_file, errors="replace") as fh:
                tail = fh.readlines()[-lines:]
        except OSError as error:
            tail = [f"(no log: {error})\n"]
        return state + f"; the last {len(tail)} lines of {log_file}:\n" + "".join(tail)


ZBX70_ROOT = os.path.join(os.environ.get("ZBX70_STACK_DIR", "/var/lib/tcp-lld-zbx70"), "root")
SERVERS = {
    "6.0": Server("6.0", os.path.join(REPO, "scripts", "zabbix-stack"),
                  os.environ.get("ZBX_STACK_WEB", "http://127.0.0.1:8080"), 10051,
                  os.environ.get("ZBX_STACK_RUN", "/run/tcp-lld-stack"),
                  os.environ.get("ZBX_STACK_LOGS", "/var/log/tcp-lld-stack")),
    "7.0": Server("7.0", os.path.join(REPO, "scripts", "zabbix70-stack"),
                  os.environ.get("ZBX70_STACK_WEB", "http://127.0.0.1:8081"),
                  int(os.environ.get("ZBX70_STACK_SERVER_PORT", "10151")),
                  os.path.join(ZBX70_ROOT, "run/tcp-lld-stack"),
                  os.path.join(ZBX70_ROOT, "var/log/tcp-lld-stack")),
}
E2E_SERVERS = [v.strip() for v in os.environ.get("TCP_LLD_E2E_SERVERS", "6.0,7.0").split(",") if v.strip()]
assert set(E2E_SERVERS) <= set(SERVERS), f"TCP_LLD_E2E_SERVERS: unknown {set(E2E_SERVERS) - set(SERVERS)}"

# THE one place for the e2e agents' tcp-lld command lines: UserParameter key -> command line, in
# place of that key's line in the shipped agent_conf/ file (every other key is used as shipped).
# The "listener gone" test closes a listener on a 23xxx port, below the ephemeral range, so
# tcp-lld's `--min-age` (which only spares short-lived listeners OF that range) does not apply:
# the shipped command lines are tested as they are, but for one option: the tests poll the
# master item every few seconds ("Execute now"), far more often than the template's 1m, so a 20 s
# cache would hand several polls the same scan and the kernel's rate items (change per second)
# would read 0 between them. `--ttl 1` gives each poll its own scan, as the template's 1m does.
E2E_COMMAND_LINES = {
    "tcp.port.stats": f"{PREFIX}/bin/tcp-lld stats --ttl 1",
}


def _stack(server: Server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", server.stack, *args], capture_output=True, text=True, check=False,
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
def say(pytestconfig):
    """say(text): a line on the terminal even while pytest captures output."""
    return lambda text: _say(pytestconfig, text)


@pytest.fixture(scope="session", params=E2E_SERVERS, ids=lambda version: f"zabbix{version}")
def zabbix_stack(request, pytestconfig) -> Server:
    """One server's stack, started for the tests of that version (and stopped after them, unless
    it was already up)."""
    server = SERVERS[request.param]
    script = os.path.relpath(server.stack, REPO)
    was_running = _stack(server, "status").returncode == 0
    t0 = time.monotonic()
    started = _stack(server, "start")
    if started.returncode != 0:
        pytest.fail(f"{script} start failed:\n{started.stdout}\n{started.stderr}")
    _say(pytestconfig, f"\n{script} start took {time.monotonic() - t0:.1f} s:\n{started.stderr.rstrip()}")
    yield server
    if not was_running:
        stopped = _stack(server, "stop")
        _say(pytestconfig, stopped.stderr.rstrip())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed e2e test (or its set-up) reports its server's state and the end of its log."""
    outcome = yield
    report = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    if report.failed and callspec and "zabbix_stack" in callspec.params:
        server = SERVERS[callspec.params["zabbix_stack"]]
        report.sections.append((f"zabbix_server {server.version}", server.last_words()))


@pytest.fixture(scope="session")
def api(zabbix_stack):
    from zabbix_utils import ZabbixAPI

    deadline = time.monotonic() + 60
    while True:
        try:
            # 300 s per call, not the library's 30: importing the template or deleting a host with
            # its hundreds of items takes a loaded 2-core machine past 30 s
            zapi = ZabbixAPI(url=zabbix_stack.api_url, user="Admin", password="zabbix", timeout=300)
            break
        except Exception as error:  # the frontend may still be warming up
            if time.monotonic() > deadline:
                pytest.fail(f"cannot log in to the Zabbix API at {zabbix_stack.api_url}: {error}")
            time.sleep(2)
    yield zapi
    try:
        zapi.logout()
    except Exception:
        pass


def e2e_userparameters(kind: str, prefix: str = "") -> str:
    """The shipped UserParameter file of one agent, the keys of E2E_COMMAND_LINES given their e2e
    command line; `prefix` goes before every command (the idle host's way into its namespace)."""
    lines = shipped_userparameters(kind).splitlines()
    replaced = set()
    for number, line in enumerate(lines):
        key, _, command = line.partition("=")[2].partition(",") if line.startswith("UserParameter=") else (None, "", "")
        if key in E2E_COMMAND_LINES:
            command = E2E_COMMAND_LINES[key]
            replaced.add(key)
        if key is not None:
            lines[number] = f"UserParameter={key},{prefix}{command}"
    missing = set(E2E_COMMAND_LINES) - replaced
    assert not missing, f"agent_conf/{AGENTS[kind][1]}/tcp-lld.conf has no UserParameter for {sorted(missing)}"
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def e2e_environment():
    """The e2e agents' environment: a tcp-lld cache directory of their own (owned by zabbix, gone
    after the session). With the shared default, the e2e hosts would discover every listener and
    outbound port the suite's earlier tests left in the grace memory (hundreds: thousands of items
    per host, and an e2e whose size depends on which tests ran before it)."""
    zabbix = pwd.getpwnam("zabbix")
    directory = tempfile.mkdtemp(prefix="tcp-lld-e2e-cache-")
    os.chown(directory, zabbix.pw_uid, zabbix.pw_gid)
    try:
        yield {"TCP_LLD_CACHE_DIR": directory}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def e2e_agent(e2e_environment):
    """e2e_agent(kind, hostname, settings): a context manager running an agent with the e2e
    UserParameter file, e.g. in active mode (settings: ServerActive=...); stopped by PID on exit."""
    @contextlib.contextmanager
    def start(kind: str, hostname: str, settings: Sequence[str] = ()):
        with contextlib.ExitStack() as running:
            try:
                agent = running.enter_context(
                    running_agent(kind, e2e_userparameters(kind), hostname, settings=settings,
                                  environment=e2e_environment))
            except RuntimeError as error:  # missing binaries or an agent that would not start
                pytest.fail(str(error))
            yield agent
    return start


@pytest.fixture(scope="session")
def agent_ports(e2e_agent):
    """kind -> port of a zabbix_agentd and a zabbix_agent2 started for this session as user
    `zabbix` on free loopback ports with e2e_userparameters(); stopped by PID afterwards. The
    same two agents serve every server of the session (their Server=127.0.0.1 admits each).
    (The stack's own agents on 10050/10060 include the installed file, which the e2e may not
    change: see E2E_COMMAND_LINES.)"""
    with contextlib.ExitStack() as agents:
        yield {kind: agents.enter_context(e2e_agent(kind, f"tcp-lld-e2e-{kind}")).port
               for kind in sorted(AGENTS)}


# The idle host: listeners nobody connects to, in a network namespace of their own (the host's
# namespace always has traffic: the test's sockets, the Zabbix stacks). Its agent runs as root only
# to enter that namespace; tcp-lld itself runs as user zabbix, as the shipped file runs it.
IDLE_PORTS = {22: "0.0.0.0", 80: "::", 5432: "127.0.0.1"}  # port -> bound address


@pytest.fixture(scope="session")
def idle_namespace():
    """(path to enter, {port: address}): a private network namespace with only `lo` and the idle
    listeners of IDLE_PORTS, kept by this process (nothing in it ever connects)."""
    from netns import KeptNamespace
    from socketlab import Lab

    namespace, lab = KeptNamespace(), Lab()
    try:
        with namespace.entered():
            for port, address in IDLE_PORTS.items():
                lab.listener(port, address)
        yield f"/proc/{os.getpid()}/fd/{namespace.descriptor}", dict(IDLE_PORTS)
    finally:
        lab.close()
        namespace.close()


@pytest.fixture(scope="session")
def idle_agent_port(idle_namespace, e2e_environment):
    """Port of a zabbix_agentd whose tcp-lld calls run in the idle namespace, as user zabbix."""
    path, _ = idle_namespace
    enter = f"/usr/bin/nsenter --net={path} /usr/bin/setpriv --reuid=zabbix --regid=zabbix --clear-groups -- "
    try:
        with running_agent("zabbix_agentd", e2e_userparameters("zabbix_agentd", prefix=enter),
                           "tcp-lld-e2e-idle", user="root", environment=e2e_environment) as agent:
            yield agent.port
    except RuntimeError as error:
        pytest.fail(str(error))
