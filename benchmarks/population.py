"""Build TCP socket populations for the tcp-lld benchmark, inside a private network namespace.

Run only inside a namespace of its own (``unshare -n``): it changes the namespace's sysctls and
adds addresses on its ``lo``.  ``python3 benchmarks/population.py --size 100000`` builds one
population, prints ``ss -s`` and a per-state tally, and keeps it (TIME_WAIT topped up) until Enter
(or --hold seconds).

Population at size N, in one of three MIXES (everything over loopback, both ends inside the
namespace; shares are of all sockets):
  * listeners: 0.0.0.0:P and [::]:P (v6only) for P in LISTEN_PORTS (LISTEN == 2 per port);
  * web (~90 % TIME_WAIT): ESTABLISHED 8 % (pairs: server end on 80/443/3306, client end on an
    ephemeral port), CLOSE_WAIT + FIN_WAIT2 1 %, TIME_WAIT the rest on 80 (70 %) and 443 (30 %);
  * mixed (~70 % TIME_WAIT): ESTABLISHED 25 %, CLOSE_WAIT + FIN_WAIT2 4 %, TIME_WAIT the rest;
  * database (~90 % ESTABLISHED, few ports): ESTABLISHED 90 % on 5432 and 3306, CLOSE_WAIT +
    FIN_WAIT2 2 %, TIME_WAIT the rest on 5432.
  CLOSE_WAIT: the client shut down its side; its end stays in FIN_WAIT2 because its fd stays open.
  TIME_WAIT is on the SERVER side (server closes first), so it counts on the listening ports;
  80 % IPv4, 20 % IPv6.
Kept sockets (ESTABLISHED, CLOSE_WAIT, FIN_WAIT2) need one fd each. RLIMIT_NOFILE's hard limit may
be low and not raisable (20000 in some containers, no CAP_SYS_RESOURCE), so they are held by
forked holder processes of HOLDER_PAIRS pairs each, never capped.
TIME_WAIT lasts 60 s (TCP_TIMEWAIT_LEN, no knob), so ``top_up()`` re-creates the ones that
expired (call it between timed commands); every 4-tuple is used once, so a new SYN never
recycles a TIME_WAIT socket.
"""
import errno
import os
import resource
import select
import socket
import subprocess
import sys
import time
from collections import deque

LISTEN_PORTS = (22, 25, 80, 443, 3306, 5432, 8080)
# mix -> ESTABLISHED share, CLOSE_WAIT + FIN_WAIT2 share, ESTABLISHED (family, port, weight),
#        TIME_WAIT (port, weight), CLOSE_WAIT port
MIXES = {
    "web": (0.08, 0.01, ((socket.AF_INET, 80, 45), (socket.AF_INET6, 80, 15), (socket.AF_INET, 443, 25),
                         (socket.AF_INET, 3306, 15)), ((80, 7), (443, 3)), 80),
    "mixed": (0.25, 0.04, ((socket.AF_INET, 80, 45), (socket.AF_INET6, 80, 15), (socket.AF_INET, 443, 25),
                           (socket.AF_INET, 3306, 15)), ((80, 7), (443, 3)), 80),
    "database": (0.90, 0.02, ((socket.AF_INET, 5432, 60), (socket.AF_INET6, 5432, 10),
                              (socket.AF_INET, 3306, 30)), ((5432, 1),), 5432),
}
EPHEMERAL = (10000, 65535)            # ip_local_port_range set in the namespace
CLIENT_PORTS = (10000, 65000)         # explicit client ports (inside the ephemeral range)
V6_CLIENT_ADDRS = 256                 # fd00::1:0..ff on lo
TW_LIFETIME = 60.0
TOP_UP_EVERY = 5.0                    # seconds between top-ups while a population is held
BATCH = 2000
HOLDER_PAIRS = 8000                   # kept pairs per holder process (2 fds each)

SYSCTLS = {
    "net/ipv4/tcp_max_tw_buckets": "4000000",
    "net/ipv4/ip_local_port_range": "%d %d" % EPHEMERAL,
    "net/ipv4/tcp_tw_reuse": "0",
    "net/core/somaxconn": "65535",
    "net/ipv4/tcp_max_syn_backlog": "65535",
    "net/ipv4/tcp_syncookies": "0",
    "net/ipv4/tcp_fin_timeout": "60",
}


def in_private_netns():
    """True when our network namespace is not init's (so changing it is harmless)."""
    try:
        return os.readlink("/proc/self/ns/net") != os.readlink("/proc/1/ns/net")
    except OSError:
        return os.environ.get("TCP_LLD_BENCH_NETNS") == "1"


def setup_namespace():
    if not in_private_netns():
        raise SystemExit("population: refusing to run outside a private network namespace "
                         "(use: unshare -n python3 %s)" % sys.argv[0])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for k, v in SYSCTLS.items():
        with open("/proc/sys/" + k, "w") as f:
            f.write(v)
    batch = "".join("addr add fd00::1:%x/128 dev lo nodad\n" % i for i in range(V6_CLIENT_ADDRS))
    subprocess.run(["ip", "-force", "-batch", "-"], input=batch, text=True, check=False,
                   stderr=subprocess.DEVNULL)
    global HOLDER_PAIRS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    HOLDER_PAIRS = max(500, min(1 << 20, fds - BATCH - 1000) // 2)
    # wait for ::1 / fd00:: to be usable
    for _ in range(50):
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.bind(("fd00::1:0", 0))
            s.close()
            break
        except OSError:
            time.sleep(0.05)


class TupleCursor:
    """Endless supply of never-reused (client address, client port) pairs for one family."""

    def __init__(self, family, base):
        self.family = family
        self.i = base
        self.span = CLIENT_PORTS[1] - CLIENT_PORTS[0]

    def take(self):
        i = self.i
        self.i += 1
        a, p = divmod(i, self.span)
        port = CLIENT_PORTS[0] + p
        if self.family == socket.AF_INET:
            # 127.1.0.0/16, then 127.2.0.0/16 ... (127/8 is all local)
            a += 1
            return ("127.%d.%d.%d" % (1 + (a >> 16) % 250, (a >> 8) & 255, a & 255), port)
        return ("fd00::1:%x" % (a % V6_CLIENT_ADDRS), port)


class Population:
    def __init__(self, size, log=None, mix="web"):
        self.size = size
        self.mix = mix
        est_share, cw_share, self.est_plan, self.tw_ports, self.cw_port = MIXES[mix]
        self.holders = []              # (pid, write end of its pipe): holders of kept sockets
        self.log = log or (lambda *a: None)
        self.listeners = {}            # (family, port) -> socket
        self.keep = []                 # sockets kept open (ESTABLISHED / CLOSE_WAIT ends)
        self.cursors = {socket.AF_INET: TupleCursor(socket.AF_INET, 0),
                        socket.AF_INET6: TupleCursor(socket.AF_INET6, 0)}
        # TIME_WAIT creation history: deque of (monotonic time, family, count)
        self.history = deque()
        self.est_pairs = max(5, int(size * est_share) // 2)
        self.cw = max(3, int(size * cw_share) // 2)
        self.tw_target = max(0, size - 2 * len(LISTEN_PORTS)
                             - 2 * self.est_pairs - 2 * self.cw)
        self.tw_target_family = {
            socket.AF_INET6: self.tw_target // 5,
        }
        self.tw_target_family[socket.AF_INET] = self.tw_target - self.tw_target_family[socket.AF_INET6]
        self.build_seconds = None

    # -- listeners -----------------------------------------------------------------------
    def listen(self):
        for port in LISTEN_PORTS:
            for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
                s = socket.socket(fam, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((addr, port))
                s.listen(65535)
                s.setblocking(False)
                self.listeners[(fam, port)] = s

    def _server_addr(self, fam):
        return "127.0.0.1" if fam == socket.AF_INET else "::1"

    def _connect_batch(self, fam, port, n):
        """n non-blocking connects from fresh tuples to (server, port); returns client sockets."""
        cur = self.cursors[fam]
        dst = (self._server_addr(fam), port)
        out = []
        sock = socket.socket
        for _ in range(n):
            c = sock(fam, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            c.bind(cur.take())
            err = c.connect_ex(dst)
            if err not in (0, errno.EINPROGRESS):
                c.close()
                raise OSError(err, "connect %s: %s" % (dst, os.strerror(err)))
            out.append(c)
        return out

    def _accept_n(self, fam, port, n, close):
        """Accept n connections on the (fam, port) listener; close them or return them."""
        L = self.listeners[(fam, port)]
        lfd = L.fileno()
        got = []
        deadline = time.monotonic() + 30
        p = select.poll()
        p.register(lfd, select.POLLIN)
        acc = L._accept
        while len(got) < n:
            try:
                fd, _ = acc()
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError("accept timed out on port %d (%d/%d)" % (port, len(got), n))
                p.poll(100)
                continue
            if close:
                os.close(fd)
                got.append(None)
            else:
                got.append(socket.socket(fam, socket.SOCK_STREAM, 0, fd))
        return got

    # -- TIME_WAIT -----------------------------------------------------------------------
    def make_time_wait(self, fam, port, n):
        """n server-side TIME_WAIT sockets on (fam, port): server closes first.

        Safe when several processes share the listener: whoever accepts closes the server end,
        and a client is closed only once it has read EOF, i.e. after the server's FIN.
        """
        L = self.listeners[(fam, port)]
        acc = L._accept
        p = select.poll()
        p.register(L.fileno(), select.POLLIN)
        done = 0
        while done < n:
            k = min(BATCH, n - done)
            started = time.monotonic()
            pending = self._connect_batch(fam, port, k)
            deadline = started + 60
            while pending:
                while True:                          # server FIN first -> client CLOSE_WAIT
                    try:
                        fd, _ = acc()
                    except BlockingIOError:
                        break
                    os.close(fd)
                nxt = []
                for c in pending:
                    try:
                        if c.recv(1) == b"":
                            c.close()
                        else:
                            nxt.append(c)
                    except BlockingIOError:
                        nxt.append(c)
                if nxt:
                    if time.monotonic() > deadline:
                        raise RuntimeError("clients never saw FIN (%d left)" % len(nxt))
                    p.poll(1)
                pending = nxt
            done += k
            self.history.append((started, fam, port, k))   # per batch: expiry is per batch

    def _tw_plan(self, fam, total):
        wsum = sum(w for _, w in self.tw_ports)
        out, left = [], total
        for i, (port, w) in enumerate(self.tw_ports):
            k = left if i == len(self.tw_ports) - 1 else total * w // wsum
            out.append((port, k))
            left -= k
        return out

    # -- ESTABLISHED / CLOSE_WAIT --------------------------------------------------------
    def make_established(self, fam, port, n):
        done = 0
        while done < n:
            k = min(BATCH, n - done)
            clients = self._connect_batch(fam, port, k)
            servers = self._accept_n(fam, port, k, close=False)
            self.keep.extend(clients)
            self.keep.extend(servers)
            done += k

    def make_close_wait(self, fam, port, n):
        """n CLOSE_WAIT sockets whose LOCAL port is `port` (client shuts down first)."""
        clients = self._connect_batch(fam, port, n)
        servers = self._accept_n(fam, port, n, close=False)
        for c in clients:
            c.shutdown(socket.SHUT_WR)          # client FIN_WAIT2 (fd kept), server CLOSE_WAIT
        self.keep.extend(clients)
        self.keep.extend(servers)

    # -- whole population ----------------------------------------------------------------
    def _parallel_time_wait(self, plan, workers):
        """Fork `workers` children that share the listeners; each gets its own tuple range."""
        import json
        v4_span, v6_span = 100_000_000, 3_000_000   # v6: 256 addrs x 55000 ports = 14M tuples
        kids = []
        for w in range(workers):
            r, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                code = 0
                try:
                    self.history = deque()
                    self.cursors = {socket.AF_INET: TupleCursor(socket.AF_INET, (w + 1) * v4_span),
                                    socket.AF_INET6: TupleCursor(socket.AF_INET6, (w + 1) * v6_span)}
                    for fam, port, k in plan:
                        part = k // workers + (1 if w < k % workers else 0)
                        self.make_time_wait(fam, port, part)
                    os.write(wfd, json.dumps(list(self.history)).encode())
                except BaseException as e:  # noqa: BLE001
                    os.write(2, ("population worker: %r\n" % (e,)).encode())
                    code = 1
                finally:
                    os._exit(code)
            os.close(wfd)
            kids.append((pid, r))
        failed = False
        for pid, r in kids:
            data = b""
            while True:
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    break
                data += chunk
            os.close(r)
            _, status = os.waitpid(pid, 0)
            failed |= status != 0
            self.history.extend(tuple(h) for h in json.loads(data or b"[]"))
        if failed:
            raise RuntimeError("a population worker failed")
        self.history = deque(sorted(self.history))
        # the parent's own tuples (top-ups) come after every worker's range
        self.cursors = {socket.AF_INET: TupleCursor(socket.AF_INET, (workers + 1) * v4_span),
                        socket.AF_INET6: TupleCursor(socket.AF_INET6, (workers + 1) * v6_span)}

    def _hold(self, jobs):
        """Fork one holder process that makes `jobs` ((kind, family, port, pairs), kind
        "established" or "close_wait") and keeps their sockets open until `close()`."""
        r, w = os.pipe()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(w)
                os.close(ready_r)
                for _, other in self.holders:
                    os.close(other)
                for kind, fam, port, n in jobs:
                    getattr(self, "make_" + kind)(fam, port, n)
                os.write(ready_w, b"ok")
                os.read(r, 1)              # EOF when the parent closes (or dies)
            except BaseException as e:  # noqa: BLE001
                os.write(2, ("population holder: %r\n" % (e,)).encode())
                code = 1
            finally:
                os._exit(code)
        os.close(r)
        os.close(ready_w)
        for _, fam, _, n in jobs:           # the holder used these tuples: never again
            self.cursors[fam].i += n
        ok = os.read(ready_r, 2) == b"ok"
        os.close(ready_r)
        self.holders.append((pid, w))
        if not ok:
            raise RuntimeError("a population holder failed")

    def _kept(self):
        """ESTABLISHED and CLOSE_WAIT pairs of this mix, split among holders of HOLDER_PAIRS."""
        e, wsum = self.est_pairs, sum(w for _, _, w in self.est_plan)
        plan, left = [], e
        for i, (fam, port, w) in enumerate(self.est_plan):
            k = left if i == len(self.est_plan) - 1 else e * w // wsum
            plan.append(("established", fam, port, k))
            left -= k
        plan.append(("close_wait", socket.AF_INET, self.cw_port, self.cw - self.cw // 4))
        plan.append(("close_wait", socket.AF_INET6, self.cw_port, self.cw // 4))
        jobs, room = [], HOLDER_PAIRS
        for kind, fam, port, k in plan:
            while k > 0:
                take = min(k, room)
                jobs.append((kind, fam, port, take))
                k -= take
                room -= take
                if room == 0:
                    self._hold(jobs)
                    jobs, room = [], HOLDER_PAIRS
        if jobs:
            self._hold(jobs)

    def build(self, workers=None):
        t0 = time.monotonic()
        self.listen()
        self._kept()
        plan = [(fam, port, k) for fam in (socket.AF_INET, socket.AF_INET6)
                for port, k in self._tw_plan(fam, self.tw_target_family[fam])]
        if workers is None:
            workers = min(2, os.cpu_count() or 1)
        if workers > 1 and self.tw_target >= 20000:
            self._parallel_time_wait(plan, workers)
        else:
            for fam, port, k in plan:
                self.make_time_wait(fam, port, k)
        self.build_seconds = time.monotonic() - t0
        return self.build_seconds

    def expected_time_wait(self, now=None):
        now = time.monotonic() if now is None else now
        while self.history and now - self.history[0][0] > TW_LIFETIME - 1.0:
            self.history.popleft()           # treat as expired 1 s early (safety margin)
        out = {}
        for _, fam, port, n in self.history:
            out[(fam, port)] = out.get((fam, port), 0) + n
        return out

    def top_up(self):
        """Re-create TIME_WAIT sockets that expired (or are about to); returns how many."""
        have = self.expected_time_wait()
        made = 0
        for fam in (socket.AF_INET, socket.AF_INET6):
            for port, k in self._tw_plan(fam, self.tw_target_family[fam]):
                need = k - have.get((fam, port), 0)
                if need > 0:
                    self.make_time_wait(fam, port, need)
                    made += need
        return made

    def close(self):
        for s in self.keep:
            s.close()
        for s in self.listeners.values():
            s.close()
        for pid, w in self.holders:
            os.close(w)
            os.waitpid(pid, 0)
        self.keep, self.listeners, self.holders = [], {}, []


def state_tally():
    """Per-state count via `ss -tan` (for verification)."""
    out = subprocess.run(["ss", "-tanH"], capture_output=True, text=True, check=True).stdout
    tally = {}
    for line in out.splitlines():
        st = line.split(None, 1)[0]
        tally[st] = tally.get(st, 0) + 1
    return tally


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10000)
    ap.add_argument("--mix", choices=sorted(MIXES), default="web")
    ap.add_argument("--hold", type=float, default=None, help="seconds to keep it (default: until Enter)")
    a = ap.parse_args(argv)
    if not in_private_netns() and os.environ.get("TCP_LLD_BENCH_NETNS") != "1":
        os.environ["TCP_LLD_BENCH_NETNS"] = "1"
        os.execvp("unshare", ["unshare", "-n", sys.executable, os.path.abspath(__file__)]
                  + (argv if argv is not None else sys.argv[1:]))
    setup_namespace()
    pop = Population(a.size, mix=a.mix)
    secs = pop.build()
    print("built %d sockets in %.2f s" % (a.size, secs))
    subprocess.run(["ss", "-s"])
    print(state_tally())
    hold(pop, a.hold)
    pop.close()


def hold(pop, seconds=None):
    """Keep `pop` at its size until Enter (or for `seconds`): TIME_WAIT sockets expire after 60 s,
    so the ones that did are re-created every few seconds; a hand measurement made minutes after
    the build then still sees the mix it asked for."""
    deadline = None if seconds is None else time.monotonic() + seconds
    if deadline is None:
        print("Enter to exit ", end="", flush=True)
    while True:
        if deadline is None:
            if select.select([sys.stdin], [], [], TOP_UP_EVERY)[0]:
                sys.stdin.readline()  # Enter, or end of input
                return
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(TOP_UP_EVERY, left))
        pop.top_up()


if __name__ == "__main__":
    main()
