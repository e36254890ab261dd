#!/usr/bin/env python3
"""tcp-lld benchmark: whole-process cost of every way to count TCP sockets per port and state.

    python3 benchmarks/run.py --sizes 1000,100000,500000 --mixes web,mixed,database --runs 7

Needs root (it runs each size in a fresh private network namespace, `unshare -n`, where it
raises sysctls and builds the socket population of benchmarks/population.py, in one of its traffic
mixes). Nothing leaves loopback. It checks that every method agrees on the per-port counts (exit 2
if not), then times each method as a whole process, the way the Zabbix agent runs it, alternating
methods within a round, --runs rounds, and prints medians (min..max), ratios to the floor (the
interpreter receiving the whole sock_diag dump, no parsing), the targets (PASS/FAIL) and writes the
same as Markdown (benchmarks/results/latest.md; --readme also rewrites the table in
benchmarks/README.md). --baseline times another install's launcher next to this one (before/after
in one run).
"""
import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import population as popmod  # noqa: E402

ITEM_PORTS = (80, 443)
ITEM_STATES = ("ESTABLISHED", "TIME_WAIT", "CLOSE_WAIT")
STATES = ("ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
          "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING")
SS_NAMES = {"ESTAB": "ESTABLISHED", "SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RECV",
            "FIN-WAIT-1": "FIN_WAIT1", "FIN-WAIT-2": "FIN_WAIT2", "TIME-WAIT": "TIME_WAIT",
            "UNCONN": "CLOSE", "CLOSE-WAIT": "CLOSE_WAIT", "LAST-ACK": "LAST_ACK",
            "LISTEN": "LISTEN", "CLOSING": "CLOSING"}
PSUTIL_NAMES = {"NONE": "CLOSE"}

# ---------------------------------------------------------------------------------------------
# commands (each is run as a whole process tree, like the agent does)

SS_AWK = "ss -tan | awk '{++S[$1]} END {for (s in S) print s, S[s]}'"
SS_AWK_PORT = ("ss -tanH | awk '{n = split($4, a, \":\"); ++S[a[n] \" \" $1]} "
               "END {for (k in S) print k, S[k]}'")
NETSTAT_AWK = "netstat -tan | awk '{++S[$NF]} END {for (s in S) print s, S[s]}'"
NETSTAT_AWK_PORT = ("netstat -tan | awk 'NR > 2 {n = split($4, a, \":\"); ++S[a[n] \" \" $6]} "
                    "END {for (k in S) print k, S[k]}'")
# the seeds' recipe: one netstat scan per item
SEED_ITEM = "netstat -tan | awk '$4 ~ /[:.]%d$/ && $6 == \"%s\" {n++} END {print n + 0}'"
PSUTIL_SRC = """import collections, psutil
c = collections.Counter((x.laddr.port, x.status) for x in psutil.net_connections('tcp'))
for (p, s), n in c.items(): print(p, s, n)
"""
# the floor: a bare interpreter that receives the whole sock_diag dump, both families, no parsing
FLOOR_SRC = r"""import socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
b = bytearray(1 << 20)
def dump(req):
    s.send(req)
    t = 0
    while True:
        n = s.recv_into(b)
        t += n
        if n >= 20 and struct.unpack_from('=IH', b, n - 20) == (20, 3):
            return t
        if struct.unpack_from('=IH', b, 0)[1] == 2:
            raise OSError('nlmsg error')
try:  # legacy TCPDIAG_GETSOCK: one dump, both families (inet_diag_dump_compat, AF_UNSPEC)
    t = dump(struct.pack('=IHHII BBBB 48x II', 76, 18, 0x301, 1, 0, 0, 0, 0, 0, 0xfff, 0))
except OSError:  # SOCK_DIAG_BY_FAMILY, one dump per family
    t = sum(dump(struct.pack('=IHHII BBBxI 48x', 72, 20, 0x301, 1, 0, f, 6, 0, 0xfff)) for f in (2, 10))
print(t)
"""
# Peak RSS of `tcp-lld stats --no-cache` as the process's own high-water mark (VmHWM of its
# memory map). Not wait4's ru_maxrss: after vfork + exec, Linux carries the PARENT's high-water
# mark into the child's maxrss, and this parent holds the whole population (a bare
# `python -c pass` shows the same "growth" that way).
RSS_SRC = r"""import os, sys
from tcp_lld.cli import main
sys.argv = ["tcp-lld", "stats", "--no-cache"]
saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
os.dup2(null, 1)
main()
sys.stdout.flush()
os.dup2(saved, 1)
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0])
"""

INPROC_SRC = r"""import json, statistics, sys, time
runs = int(sys.argv[1])
from tcp_lld.namespace import current_namespace, ephemeral_port_range
from tcp_lld.refresh import refresh
from tcp_lld.scan import scan
eph = ephemeral_port_range()  # as refresh passes it: sockets on ephemeral ports are not tallied by port
namespace = current_namespace()
out = {}
for name in ('auto', 'netlink', 'procfs', 'refresh'):
    ts = []
    try:
        for _ in range(runs):
            t = time.perf_counter()
            if name == 'refresh':  # scan + grace memory + kernel counters + answers encoded (no files)
                refresh(None, namespace, 86400.0, 3600.0, None, False)
            else:
                result = scan(None if name == 'auto' else name, (), eph)
            ts.append(time.perf_counter() - t)
    except Exception as e:
        out[name] = {'error': repr(e)}
        continue
    out[name] = {'median_ms': statistics.median(ts) * 1e3, 'min_ms': min(ts) * 1e3}
    if name != 'refresh':
        out[name].update(sockets=result.sockets, source=result.source)
print(json.dumps(out))
"""


# start-up-bound methods: a few ms each and the noisiest, so timed CHEAP_REPS times per round
CHEAP = ("tcp-lld stats (cached)", "tcp-lld count 80 ESTABLISHED (cached)", "python -c pass (bare)")
CHEAP_REPS = 5


def zabbix_state(state):
    return state.lower()


class Env:
    def __init__(self, args):
        self.tcp_lld = args.tcp_lld
        self.baseline = args.baseline
        self.py = args.python
        self.zabbix = args.zabbix_agentd
        self.tmp = tempfile.mkdtemp(prefix="tcp-lld-bench-")
        self.cache_dir = os.path.join(self.tmp, "cache")
        os.makedirs(self.cache_dir)
        self.zconf = os.path.join(self.tmp, "zabbix_agentd.conf")
        with open(self.zconf, "w") as f:
            f.write("LogType=console\nServer=127.0.0.1\nHostname=tcp-lld-bench\nAllowRoot=1\n"
                    "PidFile=%s/zabbix_agentd.pid\n" % self.tmp)
        self.env = dict(os.environ, TCP_LLD_CACHE_DIR=self.cache_dir, LC_ALL="C")
        self.env.pop("PYTHONPATH", None)

    def methods(self):
        """name -> list of argv (a list of several = run one after another, time summed)."""
        T, PY = self.tcp_lld, self.py
        m = {
            "tcp-lld stats --no-cache": [[T, "stats", "--no-cache"]],
            "baseline: tcp-lld stats --no-cache": [[self.baseline, "stats", "--no-cache"]],
            "tcp-lld stats (cached)": [[T, "stats"]],
            "tcp-lld count 80 ESTABLISHED (cached)": [[T, "count", "80", "ESTABLISHED"]],
            "tcp-lld discovery --no-cache": [[T, "discovery", "--no-cache"]],
            "ss -tan | awk (per state)": [["sh", "-c", SS_AWK]],
            "ss -tan | awk (per port+state)": [["sh", "-c", SS_AWK_PORT]],
            "netstat -tan | awk (per state)": [["sh", "-c", NETSTAT_AWK]],
            "psutil net_connections script": [[PY, "-c", PSUTIL_SRC]],
            "seeds' recipe: 6x netstat|awk": [["sh", "-c", SEED_ITEM % (p, s)]
                                              for p in ITEM_PORTS for s in ITEM_STATES],
            "native: 6x net.tcp.socket.count": [[self.zabbix, "-c", self.zconf, "-t",
                                                 "net.tcp.socket.count[,%d,,,%s]" % (p, zabbix_state(s))]
                                                for p in ITEM_PORTS for s in ITEM_STATES],
            "python -c pass (bare)": [[PY, "-c", "pass"]],
            "floor: raw sock_diag dump": [[PY, "-c", FLOOR_SRC]],
        }
        if not (self.zabbix and os.path.exists(self.zabbix)):
            del m["native: 6x net.tcp.socket.count"]
        if not self.baseline:
            del m["baseline: tcp-lld stats --no-cache"]
        return m

    def run(self, argvs):
        """Run argvs one after another; returns (seconds, max ru_maxrss KiB, [stdout...])."""
        outs, rss, total = [], 0, 0.0
        for argv in argvs:
            with tempfile.TemporaryFile(dir=self.tmp) as out, tempfile.TemporaryFile(dir=self.tmp) as err:
                t = time.perf_counter()
                p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=self.env, cwd=self.tmp)
                _, status, ru = os.wait4(p.pid, 0)
                total += time.perf_counter() - t
                p.returncode = os.waitstatus_to_exitcode(status)
                out.seek(0)
                err.seek(0)
                o, e = out.read().decode(), err.read().decode()
                if p.returncode != 0 or (e.strip() and "tcp-lld" in argv[0]):
                    raise RuntimeError("%s failed (%s): %s %s" % (shlex.join(argv), p.returncode, e.strip()[:500], o[:200]))
                rss = max(rss, ru.ru_maxrss)
                outs.append(o)
        return total, rss, outs


# ---------------------------------------------------------------------------------------------
# verification

def tally_lines(text, names=None, port_first=True):
    """'PORT STATE N' lines -> {(port, STATE): n}."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        port, state, n = parts
        state = (names or {}).get(state, state)
        if not port.isdigit():
            continue
        out[(int(port), state)] = out.get((int(port), state), 0) + int(n)
    return out


def verify(env, methods, listen_ports, skip=()):
    """Every method must give the same counts; returns (ok, report lines). Methods whose name
    holds a `skip` substring are left out: at 500k sockets psutil, netstat and the agent take
    long enough that TIME_WAIT sockets would expire during the check."""
    report = []
    _, _, (ss_out,) = env.run([["sh", "-c", SS_AWK_PORT]])
    ref = tally_lines(ss_out, SS_NAMES)
    keys = [(p, s) for p in listen_ports for s in STATES]
    items = [(p, s) for p in ITEM_PORTS for s in ITEM_STATES]
    got = {}
    ok = True

    def attempt(name, fn):
        nonlocal ok
        if any(x in name for x in skip):
            return
        try:
            got[name] = fn()
        except (RuntimeError, ValueError, KeyError, IndexError) as e:
            report.append("%-28s ERROR %s" % (name, str(e)[:300]))
            ok = False

    def tcp_stats():
        nonlocal ok
        _, _, (o,) = env.run(methods["tcp-lld stats --no-cache"])
        doc = json.loads(o)
        ref_total = {}
        for (p, s), n in ref.items():
            ref_total[s] = ref_total.get(s, 0) + n
        tot_ok = all(doc["total"].get(s, 0) == ref_total.get(s, 0) for s in STATES)
        report.append("tcp-lld total per state vs ss: %s" % (
            "ok" if tot_ok else "MISMATCH %s vs %s" % (doc["total"], ref_total)))
        ok = ok and tot_ok
        return {(int(p), s): v for p, d in doc["ports"].items() for s, v in d.items() if s in STATES}

    attempt("tcp-lld stats", tcp_stats)
    attempt("tcp-lld count", lambda: {(80, "ESTABLISHED"): int(env.run(methods["tcp-lld count 80 ESTABLISHED (cached)"])[2][0])})
    attempt("netstat -tan | awk", lambda: tally_lines(env.run([["sh", "-c", NETSTAT_AWK_PORT]])[2][0]))
    attempt("psutil net_connections", lambda: tally_lines(env.run(methods["psutil net_connections script"])[2][0], PSUTIL_NAMES))
    attempt("seeds' recipe", lambda: {k: int(v) for k, v in zip(items, env.run(methods["seeds' recipe: 6x netstat|awk"])[2])})
    if "native: 6x net.tcp.socket.count" in methods:
        attempt("native net.tcp.socket.count", lambda: {
            k: int(v.rsplit("|", 1)[1].rstrip("]\n "))
            for k, v in zip(items, env.run(methods["native: 6x net.tcp.socket.count"])[2])})
    _, _, (ss2,) = env.run([["sh", "-c", SS_AWK_PORT]])
    stable = tally_lines(ss2, SS_NAMES) == ref
    report.append("population stable during the check: %s" % ("yes" if stable else "NO (TIME_WAIT expired?)"))
    for name, g in got.items():
        ks = keys if name in ("tcp-lld stats", "netstat -tan | awk", "psutil net_connections") else list(g)
        bad = [(k, g.get(k, 0), ref.get(k, 0)) for k in ks if g.get(k, 0) != ref.get(k, 0)]
        report.append("%-28s %s" % (name, "ok (%d counts)" % len(ks) if not bad else "MISMATCH %s" % bad[:6]))
        ok = ok and not bad
    return ok, report, ref


# ---------------------------------------------------------------------------------------------
# one size, inside its own namespace

def worker(args):
    popmod.setup_namespace()
    env = Env(args)
    result = {"size": args.worker, "mix": args.mix, "kernel": platform.release()}
    pop = popmod.Population(args.worker, mix=args.mix)
    result["build_seconds"] = pop.build()
    _, _, (ssd,) = env.run([["sh", "-c", SS_AWK]])
    result["ss_tally"] = {SS_NAMES.get(l.split()[0], l.split()[0]): int(l.split()[1]) for l in ssd.splitlines()
                          if len(l.split()) == 2 and l.split()[1].isdigit()}
    result["sockets"] = sum(v for k, v in result["ss_tally"].items() if k in STATES)
    methods = env.methods()
    t = time.monotonic()
    ok, report, _ = verify(env, methods, popmod.LISTEN_PORTS, [x for x in args.skip.split(",") if x])
    result["verify_ok"], result["verify"] = ok, report
    result["verify_seconds"] = time.monotonic() - t
    result["oldest_time_wait_age"] = time.monotonic() - pop.history[0][0] if pop.history else 0
    for name in [n for n in methods if any(x and x in n for x in args.skip.split(","))]:
        del methods[name]
    if not ok and not args.keep_going:
        print(json.dumps(result))
        return
    # timed rounds: alternate methods; top the TIME_WAIT population up before each command
    times = {name: [] for name in methods}
    rss = {name: [] for name in methods}
    out_sizes = {}
    topped = 0
    failed = {}
    for r in range(args.runs):
        order = list(methods)
        if r % 2:
            order.reverse()
        for name in order:
            topped += pop.top_up()
            if name in failed:
                continue
            if "(cached)" in name:  # warm the cache (untimed) so it is fresh for this call
                try:
                    env.run(methods["tcp-lld stats --no-cache"])
                except RuntimeError as e:
                    failed[name] = "warm-up: " + str(e)[:300]
                    continue
            try:
                for _ in range(CHEAP_REPS if name in CHEAP else 1):
                    secs, maxrss, outs = env.run(methods[name])
                    times[name].append(secs)
                    rss[name].append(maxrss)
            except RuntimeError as e:
                failed[name] = str(e)[:300]
                continue
            if name == "tcp-lld stats --no-cache":
                _, _, hwm = env.run([[env.py, "-c", RSS_SRC]])
                rss[name][-1] = int(hwm[0])
                out_sizes["stats_bytes"] = len(outs[0].encode())
                meta = json.loads(outs[0])["meta"]
                result.setdefault("scan_seconds", []).append(meta.get("scan_seconds"))
                result.setdefault("meta_sockets", []).append(meta.get("sockets"))
            if name == "tcp-lld stats (cached)":
                meta = json.loads(outs[0])["meta"]
                result.setdefault("cached_age", []).append(meta.get("age_seconds"))
    result["topped_up"] = topped
    result["failed"] = failed
    for name in failed:
        times.pop(name, None)
        rss.pop(name, None)
    result["times"] = times
    result["rss_kib"] = rss
    result.update(out_sizes)
    pop.top_up()
    try:
        o = subprocess.run([env.py, "-c", INPROC_SRC, str(args.runs)], capture_output=True, text=True,
                           env=env.env, cwd=env.tmp, timeout=600)
        result["inproc"] = json.loads(o.stdout) if o.returncode == 0 else {"error": o.stderr[-500:]}
    except Exception as e:  # noqa: BLE001
        result["inproc"] = {"error": repr(e)}
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# report

UNCACHED, DISCOVERY, FLOOR = "tcp-lld stats --no-cache", "tcp-lld discovery --no-cache", "floor: raw sock_diag dump"


def med(xs):
    return statistics.median(xs) * 1e3 if xs else float("nan")


def fmt_ms(xs):
    return "%.1f (%.1f..%.1f)" % (med(xs), min(xs) * 1e3, max(xs) * 1e3) if xs else "failed"


def report(results, args):
    lines = []
    sizes = [r for r in results if "times" in r]
    lines.append("## tcp-lld benchmark")
    lines.append("")
    lines.append("Machine: %s, %s, kernel %s, %d cores; Python for tcp-lld: `%s`." % (
        platform.node() or "?", platform.machine(), platform.release(), os.cpu_count() or 0, args.python))
    lines.append("Command: `python3 benchmarks/run.py %s`  (%s)" % (
        " ".join(shlex.quote(a) for a in args.orig_argv), time.strftime("%Y-%m-%d %H:%M %Z")))
    lines.append("")
    lines.append("Whole-process wall time, median (min..max) of %d runs (%d for the start-up-bound cached/bare rows), ms; "
                 "÷floor = ratio of medians to the floor row (the interpreter receiving the whole sock_diag dump, "
                 "no parsing), measured in the same run." % (args.runs, args.runs * CHEAP_REPS))
    lines.append("")
    lines.append("| mix | size | built in s | sockets (ss) | TIME_WAIT | ESTAB | CLOSE_WAIT | FIN_WAIT2 | LISTEN |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        t = r.get("ss_tally", {})
        lines.append("| %s | %d | %.1f | %d | %d | %d | %d | %d | %d |" % (
            r.get("mix", "web"), r["size"], r.get("build_seconds", 0), r.get("sockets", 0), t.get("TIME_WAIT", 0),
            t.get("ESTABLISHED", 0), t.get("CLOSE_WAIT", 0), t.get("FIN_WAIT2", 0), t.get("LISTEN", 0)))
    lines.append("")
    mixes = []
    for r in sizes:
        if r.get("mix", "web") not in mixes:
            mixes.append(r.get("mix", "web"))
    for mix in mixes:
        group = [r for r in sizes if r.get("mix", "web") == mix]
        names = []
        for r in group:
            names += [n for n in r["times"] if n not in names]
            names += [n for n in r.get("failed", {}) if n not in names]
        for r in group:
            for n in names:
                r["times"].setdefault(n, [])
                r["rss_kib"].setdefault(n, [])
        lines.append("### %s mix" % mix)
        lines.append("")
        head = "| method | " + " | ".join(("%dk ms | ÷floor" % (r["size"] // 1000)) if r["size"] >= 1000 else "%d ms | ÷floor" % r["size"] for r in group) + " |"
        lines.append(head)
        lines.append("|---|" + "---|---|" * len(group))
        for name in names:
            row = "| %s |" % name.replace("|", "\\|")
            for r in group:
                base = med(r["times"][FLOOR])
                row += " %s | %.2f |" % (fmt_ms(r["times"][name]), med(r["times"][name]) / base)
            lines.append(row)
        lines.append("")
        lines.append("| size | scan in-process ms (source) | µs/socket | scan+render in-process ms | peak RSS stats --no-cache MiB | stats JSON bytes | discovery ÷ stats (uncached) |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in group:
            tm = r["times"]
            ip = r.get("inproc", {}).get("auto", {})
            ipms = ip.get("median_ms")
            socks = ip.get("sockets") or r.get("sockets") or 1
            col = r.get("inproc", {}).get("refresh", {}).get("median_ms")
            lines.append("| %d | %s | %s | %s | %.1f | %s | %.2f |" % (
                r["size"],
                "%.1f (%s)" % (ipms, ip.get("source")) if ipms else "n/a %s" % r.get("inproc", {}).get("error", "")[:60],
                "%.2f" % (ipms * 1e3 / socks) if ipms else "n/a",
                "%.1f" % col if col else "n/a",
                statistics.median(r["rss_kib"]["tcp-lld stats --no-cache"] or [float("nan")]) / 1024.0,
                r.get("stats_bytes", "?"), med(tm[DISCOVERY]) / med(tm[UNCACHED])))
        lines.append("")
    # targets
    lines.append("### Targets")
    lines.append("")
    checks = []
    for r in sizes:
        tm, label = r["times"], "%s %dk" % (r.get("mix", "web"), r["size"] // 1000)
        if r["size"] >= 100000:
            checks.append(("%s: uncached stats ÷ floor <= 1.3" % label, med(tm[UNCACHED]) / med(tm[FLOOR]), "<=", 1.3))
            checks.append(("%s: discovery ÷ stats (uncached) <= 1.1" % label, med(tm[DISCOVERY]) / med(tm[UNCACHED]), "<=", 1.1))
        if r["size"] == 100000:
            bare = med(tm["python -c pass (bare)"])
            checks.append(("%s: cached stats ÷ bare python <= 1.2" % label, med(tm["tcp-lld stats (cached)"]) / bare, "<=", 1.2))
            checks.append(("%s: cached count ÷ bare python <= 1.2" % label, med(tm["tcp-lld count 80 ESTABLISHED (cached)"]) / bare, "<=", 1.2))
        if r["size"] >= 1000000:
            checks.append(("%s: uncached stats < 2000 ms" % label, med(tm[UNCACHED]), "<=", 2000))
    for mix in mixes:
        by = {r["size"]: r for r in sizes if r.get("mix", "web") == mix}
        if by and min(by) <= 1000 and max(by) >= 500000:
            lo = statistics.median(by[min(by)]["rss_kib"][UNCACHED] or [float("nan")])
            hi = statistics.median(by[max(by)]["rss_kib"][UNCACHED] or [float("nan")])
            checks.append(("%s: peak RSS %dk ÷ %dk (stats --no-cache) <= 1.2" % (mix, max(by) // 1000, min(by) // 1000), hi / lo, "<=", 1.2))
    allpass = True
    for label, val, op, lim in checks:
        ok = val <= lim if op == "<=" else val >= lim  # NaN (a failed method) fails
        allpass &= ok
        lines.append("- %s %s: %.3f (%s %g)" % ("PASS" if ok else "FAIL", label, val, op, lim))
    lines.append("")
    lines.append("### Correctness")
    lines.append("")
    for r in results:
        lines.append("- %s %d: %s" % (r.get("mix", "web"), r["size"], "all methods agree" if r.get("verify_ok") else "DISAGREE"))
        for n, e in r.get("failed", {}).items():
            lines.append("    - timing of %s failed: %s" % (n, e))
        for v in r.get("verify", []):
            lines.append("    - " + v)
    return "\n".join(lines) + "\n", allpass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,100000,500000")
    ap.add_argument("--mixes", default="web,mixed,database", help="population mixes (benchmarks/population.py)")
    ap.add_argument("--baseline", default="", help="another tcp-lld launcher, timed next to --tcp-lld")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--tcp-lld", default="/opt/tcp-lld/bin/tcp-lld")
    ap.add_argument("--python", default="/opt/tcp-lld/bin/python", help="tcp-lld's interpreter (bare, floor, psutil)")
    ap.add_argument("--zabbix-agentd", default=shutil.which("zabbix_agentd") or "/usr/sbin/zabbix_agentd")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "latest.md"))
    ap.add_argument("--readme", action="store_true", help="also put the table into benchmarks/README.md")
    ap.add_argument("--keep-going", action="store_true", help="time methods even if counts disagree")
    ap.add_argument("--skip", default="", help="comma-separated substrings of method names not to time")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mix", default="web", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if os.geteuid() != 0:
        raise SystemExit("run.py: needs root (private network namespaces)")
    for path in (args.tcp_lld, args.python):
        if not os.path.exists(path):
            raise SystemExit("run.py: %s missing (install with: bash scripts/install)" % path)
    args.orig_argv = sys.argv[1:]
    results = []
    for mix in args.mixes.split(","):
        for size in [int(s) for s in args.sizes.split(",")]:
            t = time.monotonic()
            cmd = ["unshare", "-n", sys.executable, os.path.abspath(__file__), "--worker", str(size), "--mix", mix,
                   "--runs", str(args.runs), "--tcp-lld", args.tcp_lld, "--python", args.python,
                   "--baseline", args.baseline,
                   "--zabbix-agentd", args.zabbix_agentd, "--skip", args.skip] + (["--keep-going"] if args.keep_going else [])
            p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=dict(os.environ, TCP_LLD_BENCH_NETNS="1"))
            if p.returncode != 0 or not p.stdout.strip():
                raise SystemExit("run.py: %s %d failed (exit %d)" % (mix, size, p.returncode))
            r = json.loads(p.stdout.strip().splitlines()[-1])
            results.append(r)
            print("%s %d: built in %.1fs, verify %s in %.1fs (oldest TIME_WAIT then %.0fs old), %.0fs in all" % (
                mix, size, r["build_seconds"], "ok" if r["verify_ok"] else "FAILED", r["verify_seconds"],
                r["oldest_time_wait_age"], time.monotonic() - t), file=sys.stderr)
            for v in r["verify"]:
                print("   " + v, file=sys.stderr)
            if not r["verify_ok"] and not args.keep_going:
                print(json.dumps(r, indent=1), file=sys.stderr)
                raise SystemExit(2)
    text, allpass = report(results, args)
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(results, f, indent=1)
    if args.readme:
        path = os.path.join(HERE, "README.md")
        old = open(path).read() if os.path.exists(path) else ""
        a, b = "<!-- results:start -->", "<!-- results:end -->"
        if a in old and b in old:
            new = old[:old.index(a) + len(a)] + "\n" + text + old[old.index(b):]
        else:
            new = old + "\n" + a + "\n" + text + b + "\n"
        with open(path, "w") as f:
            f.write(new)
    return 0 if allpass else 1


if __name__ == "__main__":
    sys.exit(main() or 0)
