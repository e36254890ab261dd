"""The shared snapshot: one scan for concurrent callers, per namespace, never through foreign files."""

import json
import os
import subprocess
import sys
import time

from conftest import REPO
from netns import private_network_namespace


def scan_time(cli, *options):
    return cli.json("stats", *options)["meta"]["timestamp"]


def snapshot_files(cli):
    return sorted(name for name in os.listdir(cli.cache_dir) if name.startswith("snapshot-") and not name.endswith(".lock"))


def test_callers_within_the_ttl_share_one_scan(world, cli):
    first = cli.json("stats")
    time.sleep(0.05)
    second = cli.json("stats")
    assert second["meta"]["timestamp"] == first["meta"]["timestamp"]
    assert second["meta"]["age_seconds"] >= 0.05
    assert cli.ok("count", "8080", "ESTABLISHED") == "7\n"  # same snapshot, no JSON parse


def test_ttl_and_no_cache_force_a_new_scan(world, cli):
    first = scan_time(cli)
    time.sleep(0.01)
    assert scan_time(cli, "--ttl", "0") > first
    second = scan_time(cli)
    time.sleep(0.01)
    assert scan_time(cli, "--no-cache") > second


def test_concurrent_callers_cause_one_scan(world, cli):
    environment = {**os.environ, "TCP_LLD_CACHE_DIR": str(cli.cache_dir)}
    callers = [
        subprocess.Popen([sys.executable, "-m", "tcp_lld", "stats"], stdout=subprocess.PIPE, env=environment, cwd=REPO)
        for _ in range(12)
    ]
    documents = [json.loads(caller.communicate(timeout=60)[0]) for caller in callers]
    assert len({document["meta"]["timestamp"] for document in documents}) == 1
    assert all(document["ports"]["8080"]["ESTABLISHED"] == 7 for document in documents)
    assert not [name for name in os.listdir(cli.cache_dir) if name.endswith(".tmp")]


def test_each_network_namespace_has_its_own_snapshot(world, cli):
    assert "8080" in cli.json("stats")["ports"]
    with private_network_namespace():
        assert cli.json("stats")["ports"] == {}  # not the outer namespace's snapshot
    assert "8080" in cli.json("stats")["ports"]
    assert len(snapshot_files(cli)) == 2


def test_a_symlinked_cache_directory_is_not_used(world, cli, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    cli.cache_dir.symlink_to(target)
    assert cli.json("stats")["ports"]["8080"]["ESTABLISHED"] == 7
    assert list(target.iterdir()) == []


def test_a_foreign_snapshot_is_ignored(world, cli):
    cli.json("stats")
    [name] = snapshot_files(cli)
    path = cli.cache_dir / name
    forged = path.read_bytes().replace(b'"ESTABLISHED":7', b'"ESTABLISHED":9')
    path.unlink()
    path.write_bytes(forged)
    os.chown(path, 65534, 65534)  # nobody's file in our directory
    assert cli.json("stats")["ports"]["8080"]["ESTABLISHED"] == 7


def test_a_snapshot_others_may_write_is_not_trusted(world, cli):
    cli.json("stats")
    [name] = snapshot_files(cli)
    path = cli.cache_dir / name
    path.write_bytes(path.read_bytes().replace(b'"ESTABLISHED":7', b'"ESTABLISHED":9'))
    os.chmod(path, 0o666)
    assert cli.json("stats")["ports"]["8080"]["ESTABLISHED"] == 7


def test_a_torn_snapshot_counts_as_no_snapshot(world, cli):
    cli.json("stats")
    [name] = snapshot_files(cli)
    path = cli.cache_dir / name
    path.write_bytes(path.read_bytes()[:-10])
    assert cli.json("stats")["ports"]["8080"]["ESTABLISHED"] == 7
    assert cli.ok("count", "8080", "ESTABLISHED") == "7\n"


def test_an_unusable_cache_directory_still_answers(world, cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = cli.run("stats", env={"TCP_LLD_CACHE_DIR": str(blocker / "cache")})
    assert done.returncode == 0 and done.stderr == ""
    assert json.loads(done.stdout)["ports"]["8080"]["ESTABLISHED"] == 7


def test_the_cache_directory_is_private(world, cli):
    cli.json("stats")
    assert os.stat(cli.cache_dir).st_mode & 0o777 == 0o700
    for name in os.listdir(cli.cache_dir):
        assert os.stat(cli.cache_dir / name).st_mode & 0o077 == 0, name


def test_temporary_files_of_killed_writers_are_removed(world, cli):
    cli.json("stats")
    orphan = cli.cache_dir / "snapshot-1.12345.tmp"
    orphan.write_bytes(b"half a snap")
    os.utime(orphan, (time.time() - 120, time.time() - 120))
    recent = cli.cache_dir / "snapshot-1.12346.tmp"
    recent.write_bytes(b"being written")
    cli.json("stats", "--no-cache")
    assert not orphan.exists() and recent.exists()


def test_callers_asking_another_source_do_not_get_this_one(world, cli):
    assert cli.json("stats", "--source", "procfs")["meta"]["source"] == "procfs"
    assert cli.json("stats", "--source", "psutil")["meta"]["source"] == "psutil"
    assert cli.json("stats")["meta"]["source"] == "netlink"


def test_a_symlinked_directory_is_not_read_either(world, cli, tmp_path):
    """A directory swapped for a symlink after use: its (our own) files are not read through it."""
    cli.json("stats")
    real = tmp_path / "real"
    cli.cache_dir.rename(real)
    cli.cache_dir.symlink_to(real)
    [name] = [n for n in os.listdir(real) if n.startswith("snapshot-") and not n.endswith(".lock")]
    (real / name).write_bytes((real / name).read_bytes().replace(b'"ESTABLISHED":7', b'"ESTABLISHED":9'))
    assert cli.json("stats")["ports"]["8080"]["ESTABLISHED"] == 7
