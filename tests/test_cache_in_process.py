"""The answers cache in this process (no root): real files and a real flock, with a refresh that
encodes a scan built in memory, so every path (fresh, locked, stale, forced, no directory) runs
for any user."""

import fcntl
import os
import time

import pytest
from synthetic import STAMP, encoded, scan_result

from tcp_lld.cache import AnswerCache
from tcp_lld.namespace import Namespace


class CountingRefresh:
    """A refresh that records each call: (directory given?, memory saved?)."""

    def __init__(self):
        self.calls = []

    def __call__(self, directory, save_memory):
        self.calls.append((directory is not None, save_memory))
        return encoded(scan_result([80], started=time.time()))


@pytest.fixture
def namespace():
    boot, cookie, inode = STAMP.split("/")
    return Namespace(int(inode), int(cookie), boot)


@pytest.fixture
def cache(tmp_path, namespace):
    return AnswerCache(str(tmp_path / "cache"), namespace, "auto", ttl=60)


def test_a_fresh_file_is_read_without_a_scan(cache):
    refresh = CountingRefresh()
    first, stale = cache.get(refresh)
    again, _ = cache.get(refresh)
    assert refresh.calls == [(True, True)]
    assert again.started == first.started and not stale


def test_forcing_scans_again(cache):
    refresh = CountingRefresh()
    cache.get(refresh)
    cache.get(refresh, force=True)
    assert refresh.calls == [(True, True), (True, True)]


def test_a_held_lock_serves_the_last_answers_marked_stale(cache, tmp_path):
    refresh = CountingRefresh()
    first, _ = cache.get(refresh)
    cache.ttl = 0.0  # the stored answers are no longer fresh
    with open(tmp_path / "cache" / cache.lock_name, "rb") as stuck:
        fcntl.flock(stuck, fcntl.LOCK_EX)
        served, stale = cache.get(refresh)
        forced, forced_stale = cache.get(refresh, force=True)
    assert stale and served.started == first.started
    assert not forced_stale and refresh.calls[-1] == (True, False)  # scanned, memory untouched
    assert len(refresh.calls) == 2


def test_answers_of_another_namespace_or_source_are_not_served(cache, tmp_path, namespace):
    refresh = CountingRefresh()
    cache.get(refresh)
    other_boot = Namespace(namespace.inode, namespace.cookie, "another-boot")
    AnswerCache(str(tmp_path / "cache"), other_boot, "auto", ttl=60).get(refresh)
    assert len(refresh.calls) == 2  # same file name, other stamp: not served
    AnswerCache(str(tmp_path / "cache"), namespace, "procfs", ttl=60).get(refresh)
    assert len(refresh.calls) == 3


def test_without_a_directory_every_call_scans(namespace, tmp_path):
    refresh = CountingRefresh()
    (tmp_path / "file").write_text("")
    for path in (None, str(tmp_path / "file" / "cache")):
        AnswerCache(path, namespace, "auto", ttl=60).get(refresh)
    assert refresh.calls == [(False, False), (False, False)]


def test_a_directory_shared_with_others_is_not_used(namespace, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    refresh = CountingRefresh()
    AnswerCache(str(shared), namespace, "auto", ttl=60).get(refresh)
    assert refresh.calls == [(False, False)] and os.listdir(shared) == []
