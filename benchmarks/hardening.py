"""Figures for the failure modes: thousands of ports, and a scan stuck while callers wait.

Runs in a private network namespace of its own (root; it re-executes itself under `unshare -n`):

1. 3,500 listening ports: every key answers (exit 0), sizes against the agent's 512 KiB limit,
   what `meta.dropped` says, and discovery rows == document ports.
2. For each population size: 8 concurrent `stats` callers while another process holds the
   namespace's lock (a stuck scan), wall time of the slowest, with and without earlier answers
   to fall back on; and one uncached call per scan source.

    python3 benchmarks/hardening.py --sizes 300000,500000 [--tcp-lld /opt/tcp-lld/bin/tcp-lld]
"""

import argparse
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from population import Population, in_private_netns, setup_namespace  # noqa: E402

AGENT_LIMIT = 512 * 1024
CALLERS = 8


def run(command, cache, *arguments):
    started = time.perf_counter()
    done = subprocess.run([*command, *arguments], capture_output=True,
                          env={**os.environ, "TCP_LLD_CACHE_DIR": cache}, timeout=120)
    return done, time.perf_counter() - started


def many_ports(command, count):
    listeners = []
    for port in range(20000, 20000 + count):
        listener = socket.socket()
        listener.bind(("127.0.0.1", port))
        listener.listen(8)
        listeners.append(listener)
    cache = tempfile.mkdtemp(prefix="tcp-lld-bench-")
    try:
        print(f"## {count} listening ports")
        stats, _ = run(command, cache, "stats", "--min-age", "0")
        discovery, _ = run(command, cache, "discovery", "--min-age", "0")
        outbound, _ = run(command, cache, "discovery", "--outbound")
        count_one, _ = run(command, cache, "count", "--", "20000", "LISTEN")
        for name, done in (("stats", stats), ("discovery", discovery), ("discovery --outbound", outbound),
                           ("count 20000 LISTEN", count_one)):
            print(f"{name:22s} exit {done.returncode}  {len(done.stdout):7d} bytes "
                  f"({len(done.stdout) / AGENT_LIMIT:.0%} of 512 KiB)  {done.stderr.decode().strip()[:80]}")
        document = json.loads(stats.stdout)
        rows = json.loads(discovery.stdout)["data"]
        print("meta.dropped", document["meta"]["dropped"], " document ports", len(document["ports"]),
              " discovery rows", len(rows), " same ports:",
              sorted(document["ports"]) == sorted(row["{#PORT}"] for row in rows))
    finally:
        for listener in listeners:
            listener.close()
        shutil.rmtree(cache)


def stuck_lock(command, size):
    population = Population(size)
    population.build()
    cache = tempfile.mkdtemp(prefix="tcp-lld-bench-")
    try:
        print(f"## {size} sockets")
        for source in ("netlink", "procfs"):
            population.top_up()
            _, seconds = run(command, cache, "stats", "--no-cache", "--source", source)
            print(f"one uncached caller, {source:8s}: {seconds:.2f} s")
        for earlier in (True, False):
            population.top_up()
            run(command, cache, "stats")
            lock = next(name for name in os.listdir(cache) if name.startswith("lock-"))
            if not earlier:
                for name in os.listdir(cache):
                    if name.startswith("answers-"):
                        os.unlink(os.path.join(cache, name))
            with open(os.path.join(cache, lock), "rb") as stuck:
                fcntl.flock(stuck, fcntl.LOCK_EX)
                started = time.perf_counter()
                callers = [subprocess.Popen([*command, "stats", "--ttl", "0"], stdout=subprocess.PIPE,
                                            env={**os.environ, "TCP_LLD_CACHE_DIR": cache})
                           for _ in range(CALLERS)]
                finished = []
                for caller in callers:
                    out, _ = caller.communicate(timeout=120)
                    finished.append((time.perf_counter() - started, json.loads(out)["meta"]["stale"]))
            slowest = max(seconds for seconds, _ in finished)
            stale = sum(flag for _, flag in finished)
            print(f"{CALLERS} callers, lock held, earlier answers {'yes' if earlier else 'no '}: "
                  f"slowest {slowest:.2f} s, {stale} served stale")
    finally:
        population.close()
        shutil.rmtree(cache)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="300000,500000")
    parser.add_argument("--ports", type=int, default=3500)
    parser.add_argument("--tcp-lld", default="")
    arguments = parser.parse_args()
    sizes = [int(text) for text in arguments.sizes.split(",") if text]
    if not in_private_netns() and os.environ.get("TCP_LLD_BENCH_NETNS") != "1":
        # one fresh namespace per part: a population's sockets would hold the next one's ports
        environment = {**os.environ, "TCP_LLD_BENCH_NETNS": "1"}
        tail = ["--tcp-lld", arguments.tcp_lld] if arguments.tcp_lld else []
        parts = [["--ports", str(arguments.ports), "--sizes", ""]] + [["--ports", "0", "--sizes", str(size)] for size in sizes]
        for part in parts:
            subprocess.run(["unshare", "-n", sys.executable, os.path.abspath(__file__), *part, *tail],
                           env=environment, check=True)
        return
    setup_namespace()
    command = [arguments.tcp_lld] if arguments.tcp_lld else [sys.executable, "-m", "tcp_lld"]
    if arguments.ports:
        many_ports(command, arguments.ports)
    for size in sizes:
        stuck_lock(command, size)


if __name__ == "__main__":
    main()
