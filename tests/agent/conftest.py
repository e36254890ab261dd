"""A real Zabbix agent (Debian's zabbix_agentd, and zabbix_agent2) running tcp-lld's shipped
UserParameter file as user `zabbix`, on a free loopback port; stopped by PID afterwards."""

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from socketlab import free_ports  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PREFIX = os.environ.get("TCP_LLD_PREFIX", "/opt/tcp-lld")
AGENTS = {
    "zabbix_agentd": ("/usr/sbin/zabbix_agentd", "zabbix_agentd.d"),
    "zabbix_agent2": ("/usr/sbin/zabbix_agent2", "zabbix_agent2.d"),
}


def _wait_listening(port: int, proc: subprocess.Popen, log: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    tail = open(log, errors="replace").read()[-3000:] if os.path.exists(log) else "(no log)"
    raise RuntimeError(f"agent did not listen on 127.0.0.1:{port} (exit {proc.poll()}); log:\n{tail}")


class Agent:
    def __init__(self, kind: str, port: int, config: str, proc: subprocess.Popen) -> None:
        self.kind, self.port, self.config, self.proc = kind, port, config, proc

    def get(self, key: str):
        """(value, error) of a passive check, as the server would receive it."""
        from zabbix_utils import Getter
        response = Getter(host="127.0.0.1", port=self.port, timeout=10).get(key)
        return response.value, response.error

    def test_key(self, key: str) -> str:
        """`<agent> -t KEY` output, run as user zabbix like the daemon."""
        binary = AGENTS[self.kind][0]
        out = subprocess.run([binary, "-c", self.config, "-t", key], capture_output=True, text=True,
                             timeout=30, user="zabbix", group="zabbix", extra_groups=[])
        return out.stdout + out.stderr


@pytest.fixture(scope="module", params=sorted(AGENTS))
def agent(request):
    """A running agent of each kind (tests using it run once per agent)."""
    kind = request.param
    binary, conf_dir = AGENTS[kind]
    if not os.path.exists(binary):
        pytest.fail(f"{binary} missing: run `bash scripts/zabbix-stack install`")
    if not os.access(os.path.join(PREFIX, "bin", "tcp-lld"), os.X_OK):
        pytest.fail(f"{PREFIX}/bin/tcp-lld missing: run `bash scripts/install --test`")
    zabbix = pwd.getpwnam("zabbix")
    work = tempfile.mkdtemp(prefix=f"tcp-lld-{kind}-")
    os.chmod(work, 0o755)
    os.chown(work, zabbix.pw_uid, zabbix.pw_gid)
    # the shipped UserParameter file, with the install prefix substituted as scripts/install does
    shipped = open(os.path.join(REPO, "agent_conf", conf_dir, "tcp-lld.conf")).read()
    userparams = os.path.join(work, "tcp-lld.conf")
    with open(userparams, "w") as fh:
        fh.write(shipped.replace("/opt/tcp-lld", PREFIX))
    (port,) = free_ports(1, 21000, 21999)
    log = os.path.join(work, "agent.log")
    config = os.path.join(work, "agent.conf")
    lines = [f"LogFile={log}", "LogFileSize=0", "Server=127.0.0.1", "ListenIP=127.0.0.1",
             f"ListenPort={port}", f"Hostname=tcp-lld-test-{kind}", "Timeout=3",
             f"PidFile={work}/agent.pid", f"Include={userparams}"]
    if kind == "zabbix_agent2":
        lines.append(f"ControlSocket={work}/agent.sock")
        cmd = [binary, "-c", config]
    else:
        lines.append("StartAgents=3")
        cmd = [binary, "-c", config, "-f"]
    with open(config, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    for path in (userparams, config):
        os.chmod(path, 0o644)
    proc = subprocess.Popen(cmd, user="zabbix", group="zabbix", extra_groups=[], cwd=work,
                            stdin=subprocess.DEVNULL, stdout=open(os.path.join(work, "stdout"), "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_listening(port, proc, log)
        yield Agent(kind, port, config, proc)
    finally:
        proc.terminate()  # by PID: the agent we started, nothing else
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
