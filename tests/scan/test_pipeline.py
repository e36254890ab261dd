"""A large dump received by a forked child while the parent parses (`pipeline`): the same counts,
the same errors, and no child left behind.

The recorded dumps are ~170 KiB: with BATCH_SIZE at one datagram (64 KiB), each batch after the
first goes through the child, as the batches of a 100k-socket dump do at the real size.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcp_lld.errors import ScanError
from tcp_lld.scan import netlink, pipeline
from test_netlink_parser import peer_truth, replay, request_named, truth


def reaped(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.mark.parametrize("legacy", [True, False], ids=["one-legacy-dump", "per-family-dumps"])
def test_a_dump_received_by_the_child_counts_every_socket_exactly(monkeypatch, forks, legacy):
    replay(monkeypatch)
    result = netlink.scan(remembered=[4444], legacy=legacy)
    local, remote, totals = truth(remembered=[4444])
    assert (dict(result.local), dict(result.remote), result.totals) == (local, remote, totals)
    assert result.peers == peer_truth(remembered=[4444])
    assert len(forks) == 1  # the recorded IPv6 dump is one datagram: no child for it
    assert all(reaped(pid) for pid in forks)


def test_a_dump_cut_short_is_an_error_from_the_parent_and_the_child_is_reaped(monkeypatch, forks):
    """The legacy dump's NLMSG_DONE says it was cut short: the parent raises while the child waits
    (the scan then tries the per-family dumps, whose IPv6 one is cut short too)."""
    replayer = replay(monkeypatch, "done-error")
    with pytest.raises(ScanError, match=r"cut the sock_diag dump short \(errno 105"):
        netlink.scan()
    assert [request[4] for request in replayer.requests].count(netlink.TCPDIAG_GETSOCK) == 1
    assert forks and all(reaped(pid) for pid in forks)


def test_an_error_while_the_child_receives_reaches_the_parent_as_is(monkeypatch, forks):
    def oversized_third_datagram(world):
        request = request_named(world, "v2-inet-states-1bfe.bin")
        chunks = list(world[request])
        chunks[2] = (69632, chunks[2][1])  # what recv reports for a message larger than the buffer
        world[request] = chunks
    replay(monkeypatch, edit=oversized_third_datagram)
    with pytest.raises(ScanError, match=r"^netlink: a 69632-byte dump message did not fit the 65536-byte buffer$"):
        netlink.scan(legacy=False)
    assert forks and all(reaped(pid) for pid in forks)


def test_a_child_that_dies_mid_dump_is_an_error_not_a_partial_count(monkeypatch, forks):
    parent = os.getpid()
    fill_batch = netlink.Dumper.fill_batch

    def dying(self, batch):
        if os.getpid() != parent:
            os._exit(3)
        return fill_batch(self, batch)

    replay(monkeypatch)
    monkeypatch.setattr(netlink.Dumper, "fill_batch", dying)
    with pytest.raises(ScanError, match="the process receiving the dump ended without finishing it"):
        netlink.scan(legacy=False)
    assert forks and all(reaped(pid) for pid in forks)


def test_one_batch_or_one_cpu_never_forks(monkeypatch, forks):
    replay(monkeypatch)
    monkeypatch.setattr(netlink, "BATCH_SIZE", 512 * 1024)  # the whole recorded dump fits
    assert netlink.scan().totals == truth()[2]
    monkeypatch.setattr(netlink, "BATCH_SIZE", 64 * 1024)
    monkeypatch.setattr(pipeline, "worthwhile", lambda: False)
    assert netlink.scan().totals == truth()[2]
    assert forks == []


def test_one_cpu_is_read_from_the_affinity_mask():
    """A container pinned to one CPU (cpuset) has nothing to overlap the child with."""
    code = "from tcp_lld.scan import pipeline; print(pipeline.worthwhile())"
    repo = Path(__file__).resolve().parents[2]
    pinned = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code],
                            capture_output=True, text=True, check=True, cwd=repo)
    assert pinned.stdout.strip() == "False"
    if len(os.sched_getaffinity(0)) > 1:
        free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
        assert free.stdout.strip() == "True"


def test_a_refused_fork_parses_in_this_process_and_leaves_nothing_open(monkeypatch, forks):
    """RLIMIT_NPROC of the zabbix user, or a seccomp policy: the scan goes on without a child."""
    attempts = []

    def refused():
        attempts.append(1)
        raise BlockingIOError(11, "Resource temporarily unavailable")

    replay(monkeypatch)
    monkeypatch.setattr(pipeline.os, "fork", refused)
    descriptors = sorted(os.listdir("/proc/self/fd"))
    result = netlink.scan()
    assert (dict(result.local), dict(result.remote), result.totals) == truth()
    assert sorted(os.listdir("/proc/self/fd")) == descriptors
    assert len(attempts) == 1  # not once more for each of the dump's batches
