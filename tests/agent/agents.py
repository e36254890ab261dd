"""Real Zabbix agents for tests: Debian's zabbix_agentd and zabbix_agent2, started as user
`zabbix` (or root, for a test that must enter a network namespace) on a free loopback port with a
UserParameter file the test gives, stopped by PID. Used by tests/agent (the shipped file) and
tests/e2e (the shipped file with its e2e lines; agents in active mode get their ServerActive and
Hostname through `settings`)."""

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Iterator, Mapping, Optional, Sequence

from socketlab import free_ports

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PREFIX = os.environ.get("TCP_LLD_PREFIX", "/opt/tcp-lld")
AGENTS = {  # kind -> (binary, its directory in agent_conf/)
    "zabbix_agentd": ("/usr/sbin/zabbix_agentd", "zabbix_agentd.d"),
    "zabbix_agent2": ("/usr/sbin/zabbix_agent2", "zabbix_agent2.d"),
}


def shipped_userparameters(kind: str) -> str:
    """The agent's shipped UserParameter file, the install prefix substituted as scripts/install does."""
    with open(os.path.join(REPO, "agent_conf", AGENTS[kind][1], "tcp-lld.conf")) as fh:
        return fh.read().replace("/opt/tcp-lld", PREFIX)


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


def _wait_listening(port: int, proc: subprocess.Popen, log: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    tail = open(log, errors="replace").read()[-3000:] if os.path.exists(log) else "(no log)"
    raise RuntimeError(f"agent did not listen on 127.0.0.1:{port} (exit {proc.poll()}); log:\n{tail}")


@contextlib.contextmanager
def running_agent(kind: str, userparameters: str, hostname: str, settings: Sequence[str] = (),
                  user: str = "zabbix", environment: Optional[Mapping[str, str]] = None) -> Iterator[Agent]:
    """An agent of `kind` with `userparameters` as its only Include, listening when this yields.
    `settings`: more configuration lines, e.g. ServerActive=... for active checks. `user`: the
    daemon's user, zabbix as in production; root only where a test needs privileges the agent
    then hands down (zabbix_agentd gets AllowRoot=1). `environment`: more variables for the
    daemon, which its UserParameter commands inherit."""
    binary = AGENTS[kind][0]
    if not os.path.exists(binary):
        raise RuntimeError(f"{binary} missing: run `bash scripts/zabbix-stack install`")
    if not os.access(os.path.join(PREFIX, "bin", "tcp-lld"), os.X_OK):
        raise RuntimeError(f"{PREFIX}/bin/tcp-lld missing: run `bash scripts/install --test`")
    zabbix = pwd.getpwnam("zabbix")
    work = tempfile.mkdtemp(prefix=f"tcp-lld-{kind}-")
    try:
        os.chmod(work, 0o755)
        os.chown(work, zabbix.pw_uid, zabbix.pw_gid)
        included = os.path.join(work, "tcp-lld.conf")
        with open(included, "w") as fh:
            fh.write(userparameters)
        (port,) = free_ports(1, 21000, 21999)
        log = os.path.join(work, "agent.log")
        config = os.path.join(work, "agent.conf")
        lines = [f"LogFile={log}", "LogFileSize=0", "Server=127.0.0.1", "ListenIP=127.0.0.1",
                 f"ListenPort={port}", f"Hostname={hostname}", "Timeout=3",
                 f"PidFile={work}/agent.pid", f"Include={included}", *settings]
        if user == "root" and kind == "zabbix_agentd":
            lines.append("AllowRoot=1")
        if kind == "zabbix_agent2":
            lines.append(f"ControlSocket={work}/agent.sock")
            command = [binary, "-c", config]
        else:
            lines.append("StartAgents=3")
            command = [binary, "-c", config, "-f"]
        with open(config, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        for path in (included, config):
            os.chmod(path, 0o644)
        with open(os.path.join(work, "stdout"), "w") as out:
            proc = subprocess.Popen(command, user=user, group=user, extra_groups=[], cwd=work,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(environment or {})}, start_new_session=True)
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
    finally:
        shutil.rmtree(work, ignore_errors=True)
