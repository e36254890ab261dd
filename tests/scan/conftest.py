"""Fixtures of the scan tests."""

import os

import pytest

from tcp_lld.scan import netlink, pipeline


@pytest.fixture
def forks(monkeypatch):
    """Small batches, a second CPU assumed, every fork recorded: the pids of the children."""
    monkeypatch.setattr(netlink, "BATCH_SIZE", 64 * 1024)
    monkeypatch.setattr(pipeline, "worthwhile", lambda: True)
    children = []
    fork = os.fork

    def recorded_fork():
        pid = fork()
        if pid:
            children.append(pid)
        return pid

    monkeypatch.setattr(pipeline.os, "fork", recorded_fork)
    return children
