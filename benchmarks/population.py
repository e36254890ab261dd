"""Build TCP socket populations for the tcp-lld benchmark, inside a private network namespace.

Run only inside a namespace of its own (``unshare -n``): it changes the namespace's sysctls and
adds addresses on its ``lo``.  ``python3 benchmarks/population.py --size 100000`` builds one
population, prints ``ss -s`` and a per-state tally, and keeps it until Enter (or --hold seconds).

Population at size N (everything over loopback, both ends inside the namespace):
  * listeners: 0.0.0.0:P and [::]:P (v6only) for P in LISTEN_PORTS (LISTEN == 2 per port);
  * ESTABLISHED: ~N/50 pairs (server end on 80/443/3306, client end on an ephemeral port);
  * CLOSE_WAIT: ~N/200 sockets on port 80 (client shut down its side; the client end stays
    in FIN_WAIT2 because its fd stays open);
  * TIME_WAIT: the rest, on the SERVER side (server closes first), so TIME_WAIT counts land on
    the listening ports: 80 % IPv4, 20 % IPv6; ports 80 (70 %) and 443 (30 %).
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
TW_PORTS = ((80, 7), (443, 3))        # (port, weight)
EPHEMERAL = (10000, 65535)            # ip_local_port_range set in the namespace
CLIENT_PORTS = (10000, 65000)         # explicit client ports (inside the ephemeral range)
V6_CLIENT_ADDRS = 256                 # fd00::1:0..ff on lo
TW_LIFETIME = 60.0
BATCH = 2000
MAX_EST_PAIRS = 6000
MAX_CLOSE_WAIT = 1000

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
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    global MAX_EST_PAIRS, MAX_CLOSE_WAIT
    fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    spare = max(0, fds - BATCH - 1000)
    MAX_EST_PAIRS = min(MAX_EST_PAIRS if fds < want else 1 << 30, spare * 3 // 8)
    MAX_CLOSE_WAIT = min(MAX_CLOSE_WAIT if fds < want else 1 << 30, spare // 16)
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
    def __init__(self, size, log=None):
        self.size = size
        self.log = log or (lambda *a: None)
        self.listeners = {}            # (family, port) -> socket
        self.keep = []                 # sockets kept open (ESTABLISHED / CLOSE_WAIT ends)
        self.cursors = {socket.AF_INET: TupleCursor(socket.AF_INET, 0),
                        socket.AF_INET6: TupleCursor(socket.AF_INET6, 0)}
        # TIME_WAIT creation history: deque of (monotonic time, family, count)
        self.history = deque()
        # kept sockets need fds: RLIMIT_NOFILE may not be raisable (no CAP_SYS_RESOURCE in some
        # containers, hard limit 20000 here), so ESTABLISHED/CLOSE_WAIT are capped
        self.est_pairs = max(5, min(size // 50, MAX_EST_PAIRS))
        self.cw = max(3, min(size // 200, MAX_CLOSE_WAIT))
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
        wsum = sum(w for _, w in TW_PORTS)
        out, left = [], total
        for i, (port, w) in enumerate(TW_PORTS):
            k = left if i == len(TW_PORTS) - 1 else total * w // wsum
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

    def build(self, workers=None):
        t0 = time.monotonic()
        self.listen()
        e = self.est_pairs
        # ESTABLISHED pairs: 60 % port 80 (v4/v6), 25 % 443, 15 % 3306 (an "outbound" service)
        for fam, port, k in ((socket.AF_INET, 80, e * 45 // 100), (socket.AF_INET6, 80, e * 15 // 100),
                             (socket.AF_INET, 443, e * 25 // 100),
                             (socket.AF_INET, 3306, e - e * 45 // 100 - e * 15 // 100 - e * 25 // 100)):
            self.make_established(fam, port, k)
        self.make_close_wait(socket.AF_INET, 80, self.cw - self.cw // 4)
        self.make_close_wait(socket.AF_INET6, 80, self.cw // 4)
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
        self.keep, self.listeners = [], {}


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
    ap.add_argument("--hold", type=float, default=None, help="seconds to keep it (default: until Enter)")
    a = ap.parse_args(argv)
    if not in_private_netns() and os.environ.get("TCP_LLD_BENCH_NETNS") != "1":
        os.environ["TCP_LLD_BENCH_NETNS"] = "1"
        os.execvp("unshare", ["unshare", "-n", sys.executable, os.path.abspath(__file__)]
                  + (argv if argv is not None else sys.argv[1:]))
    setup_namespace()
    pop = Population(a.size)
    secs = pop.build()
    print("built %d sockets in %.2f s" % (a.size, secs))
    subprocess.run(["ss", "-s"])
    print(state_tally())
    if a.hold is None:
        try:
            input("Enter to exit ")
        except EOFError:
            pass
    else:
        time.sleep(a.hold)


if __name__ == "__main__":
    main()
