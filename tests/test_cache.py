"""The shared answers file: one scan for concurrent callers whatever their options, per namespace,
never through foreign or damaged files, and an answer within the agent's Timeout when a scan is
stuck."""

import fcntl
import json
import os
import subprocess
import sys
import time

import pytest

from netns import private_network_namespace

# not `from conftest import REPO`: which conftest module that name reaches depends on the
# directories collected (tests/agent/conftest.py has no REPO)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.root  # real sockets in private network namespaces


def scan_time(cli, *options):
    return cli.json("stats", *options)["meta"]["timestamp"]


def answers_files(cli):
    return sorted(name for name in os.listdir(cli.cache_dir) if name.startswith("answers-") and ".tmp" not in name)


def established(world) -> int:
    return world.counts(8080)["ESTABLISHED"]


def callers(cli, argument_lists):
    environment = {**os.environ, "TCP_LLD_CACHE_DIR": str(cli.cache_dir)}
    processes = [
        subprocess.Popen([sys.executable, "-m", "tcp_lld", *arguments], stdout=subprocess.PIPE, env=environment, cwd=REPO)
        for arguments in argument_lists
    ]
    return [json.loads(process.communicate(timeout=60)[0]) for process in processes]


def test_callers_within_the_ttl_share_one_scan(world, cli):
    first = cli.json("stats")
    time.sleep(0.05)
    second = cli.json("stats")
    assert second["meta"]["timestamp"] == first["meta"]["timestamp"]
    assert second["meta"]["age_seconds"] >= 0.05
    assert cli.ok("count", "8080", "ESTABLISHED") == f"{established(world)}\n"


def test_ttl_and_no_cache_force_a_new_scan(world, cli):
    first = scan_time(cli)
    time.sleep(0.01)
    assert scan_time(cli, "--ttl", "0") > first
    second = scan_time(cli)
    time.sleep(0.01)
    assert scan_time(cli, "--no-cache") > second


def new_scans(cli, argument_lists):
    """Timestamps of the scans that `argument_lists`, run at once, caused (besides a first one).

    The first answers are left to go stale (`--ttl 1`) so that every caller must have a fresh
    scan: a caller that waits on the lock longer than the cache allows gets those first answers
    (marked stale) rather than scanning again, so the count does not depend on the machine's
    speed."""
    first = scan_time(cli)
    time.sleep(1.1)
    documents = callers(cli, [[*arguments, "--ttl", "1"] for arguments in argument_lists])
    return documents, {document["meta"]["timestamp"] for document in documents} - {first}


def test_concurrent_callers_cause_one_scan(world, cli):
    documents, scans = new_scans(cli, [["stats"]] * 12)
    assert len(scans) == 1
    assert all(document["ports"]["8080"]["ESTABLISHED"] == established(world) for document in documents)
    assert not [name for name in os.listdir(cli.cache_dir) if name.endswith(".tmp")]


def test_callers_with_different_graces_share_one_scan(world, cli):
    _, scans = new_scans(cli, [["stats", "--grace", grace] for grace in ("60", "86400") * 8])
    assert len(scans) == 1
    assert len(answers_files(cli)) == 1


def test_each_network_namespace_has_its_own_answers(world, cli):
    assert "8080" in cli.json("stats")["ports"]
    with private_network_namespace():
        assert cli.json("stats")["ports"] == {}  # not the outer namespace's answers
    assert "8080" in cli.json("stats")["ports"]
    assert len(answers_files(cli)) == 2


def test_a_symlinked_cache_directory_is_not_used(world, cli, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    cli.cache_dir.symlink_to(target)
    document = cli.json("stats")
    assert document["ports"]["8080"]["ESTABLISHED"] == established(world)
    assert document["meta"]["memory"] == "none"  # and it says so
    assert list(target.iterdir()) == []


def forge(path):
    """Our own answers file with one count changed (same length)."""
    raw = path.read_bytes()
    start = raw.index(b"\nL 8080 ") + len(b"\nL 8080 ")
    digit = raw[start:start + 1]
    return raw[:start] + (b"8" if digit == b"9" else b"9") + raw[start + 1:]


def test_a_foreign_answers_file_is_ignored(world, cli):
    cli.json("stats")
    [name] = answers_files(cli)
    path = cli.cache_dir / name
    forged = path.read_bytes()  # intact, but not ours
    path.unlink()
    path.write_bytes(forged)
    os.chown(path, 65534, 65534)  # nobody's file in our directory
    before = scan_time(cli)
    assert cli.json("stats")["meta"]["timestamp"] >= before
    assert os.stat(path).st_uid == 0  # replaced by our own


def test_an_answers_file_others_may_write_is_not_trusted(world, cli):
    cli.json("stats")
    [name] = answers_files(cli)
    path = cli.cache_dir / name
    first = scan_time(cli)
    os.chmod(path, 0o666)
    assert scan_time(cli) > first


@pytest.mark.parametrize("damage", ["truncated", "changed byte", "oversized"])
def test_a_damaged_answers_file_is_no_answer(world, cli, damage):
    cli.json("stats")
    [name] = answers_files(cli)
    path = cli.cache_dir / name
    first = scan_time(cli)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-10])
    elif damage == "changed byte":
        path.write_bytes(forge(path))
    else:
        with open(path, "ab") as grown:
            grown.truncate(64 << 20)
    document = cli.json("stats")
    assert document["meta"]["timestamp"] > first
    assert document["ports"]["8080"]["ESTABLISHED"] == established(world)
    assert cli.ok("count", "8080", "ESTABLISHED") == f"{established(world)}\n"


def test_an_unusable_cache_directory_still_answers(world, cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = cli.run("stats", env={"TCP_LLD_CACHE_DIR": str(blocker / "cache")})
    assert done.returncode == 0 and done.stderr == ""
    assert json.loads(done.stdout)["ports"]["8080"]["ESTABLISHED"] == established(world)
    assert json.loads(done.stdout)["meta"]["memory"] == "none"


def test_the_cache_directory_is_private(world, cli):
    cli.json("stats")
    assert os.stat(cli.cache_dir).st_mode & 0o777 == 0o700
    for name in os.listdir(cli.cache_dir):
        assert os.stat(cli.cache_dir / name).st_mode & 0o077 == 0, name


def test_only_our_own_leftovers_are_removed(world, cli):
    cli.json("stats")
    old = time.time() - 3 * 86400
    planted = {
        "answers-c1-auto.12345.tmp": True,  # a killed writer's temporary file: ours, removed
        "answers-c999-auto": True,  # a namespace nobody asked about for days: removed
        "grace-c999": True,
        "grace-host": False,  # the host's memory outlives downtime: kept
        "thesis.tmp": False,  # not ours: never touched
        "notes": False,
    }
    for name in planted:
        (cli.cache_dir / name).write_bytes(b"x")
        os.utime(cli.cache_dir / name, (old, old))
    recent = cli.cache_dir / "answers-c1-auto.12346.tmp"
    recent.write_bytes(b"being written")
    cli.json("stats", "--no-cache")
    for name, removed in planted.items():
        assert (cli.cache_dir / name).exists() != removed, name
    assert recent.exists()


def test_callers_asking_another_source_do_not_get_this_one(world, cli):
    assert cli.json("stats", "--source", "procfs")["meta"]["source"] == "procfs"
    assert cli.json("stats")["meta"]["source"] == "netlink"


def test_a_symlinked_directory_is_not_read_either(world, cli, tmp_path):
    """A directory swapped for a symlink after use: its (our own) files are not read through it."""
    cli.json("stats")
    real = tmp_path / "real"
    cli.cache_dir.rename(real)
    cli.cache_dir.symlink_to(real)
    assert [n for n in os.listdir(real) if n.startswith("answers-")]
    assert cli.json("stats")["meta"]["memory"] == "none"  # answered without the directory


def test_a_stuck_scan_gets_the_last_answers_marked_stale(world, cli):
    first = cli.json("stats")
    [lock_name] = [n for n in os.listdir(cli.cache_dir) if n.startswith("lock-")]
    with open(cli.cache_dir / lock_name, "rb") as stuck:  # another process holds the lock forever
        fcntl.flock(stuck, fcntl.LOCK_EX)
        stale = cli.json("stats", "--ttl", "0")
        count = cli.ok("count", "--ttl", "0", "8080", "ESTABLISHED")
    assert stale["meta"]["stale"] == 1
    assert stale["meta"]["timestamp"] == first["meta"]["timestamp"]  # no second scan
    assert count == f"{established(world)}\n"
    assert cli.json("stats", "--ttl", "0")["meta"]["stale"] == 0  # the lock is free again


def test_a_stuck_scan_without_earlier_answers_scans_alone(world, cli):
    cli.cache_dir.mkdir(mode=0o700)
    with private_network_namespace():
        cli.json("stats")  # makes the lock file of this namespace
        [lock_name] = [n for n in os.listdir(cli.cache_dir) if n.startswith("lock-")]
        for name in answers_files(cli):
            os.unlink(cli.cache_dir / name)
        with open(cli.cache_dir / lock_name, "rb") as stuck:
            fcntl.flock(stuck, fcntl.LOCK_EX)
            document = cli.json("stats")
        assert document["meta"]["stale"] == 0 and document["meta"]["memory"] == "unsaved"


def test_a_user_without_home_or_runtime_directory_still_remembers(tmp_path):
    """pip install + the agent's user (home /nonexistent): /var/tmp/tcp-lld-<uid>, made safely.
    A uid of nobody's (no password entry, no such directory yet), so that nothing real is touched."""
    import pwd

    uid = next(uid for uid in range(61000, 62000)
               if not os.path.exists(f"/var/tmp/tcp-lld-{uid}") and uid not in {p.pw_uid for p in pwd.getpwall()})
    directory = f"/var/tmp/tcp-lld-{uid}"
    environment = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "PYTHONPATH": str(REPO)}
    try:
        done = subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable, "-m", "tcp_lld", "stats"],
            capture_output=True, text=True, env=environment, cwd="/", timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["meta"]["memory"] == "ok"
        status = os.lstat(directory)
        assert (status.st_uid, status.st_mode & 0o777) == (uid, 0o700)
    finally:
        subprocess.run(["rm", "-rf", "--", directory], check=False)
