"""Private files: reached through the directory's descriptor, refused when not ours alone,
replaced atomically, capped when read. Runs as any user; the foreign-owner cases need root."""

import os

import pytest

from tcp_lld.private_files import PrivateDirectory


@pytest.fixture
def directory(tmp_path):
    opened = PrivateDirectory.open(str(tmp_path / "cache"), create=True)
    assert opened is not None
    yield opened
    opened.close()


def test_a_new_directory_is_private_and_files_round_trip(directory, tmp_path):
    assert os.stat(tmp_path / "cache").st_mode & 0o777 == 0o700
    directory.write("answers-x", b"hello")
    assert directory.read("answers-x", 100) == b"hello"
    assert os.stat(tmp_path / "cache" / "answers-x").st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path / "cache") == ["answers-x"]  # no temporary file left


def test_reads_are_capped(directory):
    directory.write("big", b"x" * 1000)
    assert directory.read("big", 999) is None
    assert directory.read("big", 1000) == b"x" * 1000


def test_symlinks_fifos_and_group_writable_files_are_not_read(directory, tmp_path):
    root = tmp_path / "cache"
    (tmp_path / "elsewhere").write_bytes(b"planted")
    (root / "link").symlink_to(tmp_path / "elsewhere")
    os.mkfifo(root / "fifo")
    (root / "shared").write_bytes(b"shared")
    os.chmod(root / "shared", 0o664)
    assert directory.read("link", 100) is None
    assert directory.read("fifo", 100) is None  # and it does not block
    assert directory.read("shared", 100) is None
    assert directory.read("missing", 100) is None


def test_a_symlinked_or_shared_directory_is_refused(tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert PrivateDirectory.open(str(tmp_path / "link")) is None
    (tmp_path / "shared").mkdir()
    os.chmod(tmp_path / "shared", 0o777)
    assert PrivateDirectory.open(str(tmp_path / "shared")) is None
    (tmp_path / "file").write_text("")
    assert PrivateDirectory.open(str(tmp_path / "file" / "cache"), create=True) is None


def test_a_directory_swapped_after_opening_is_not_followed(directory, tmp_path):
    """Every operation is relative to the descriptor: renaming the path changes nothing."""
    os.rename(tmp_path / "cache", tmp_path / "moved")
    (tmp_path / "cache").mkdir(mode=0o700)
    directory.write("answers-x", b"data")
    assert (tmp_path / "moved" / "answers-x").read_bytes() == b"data"
    assert not (tmp_path / "cache" / "answers-x").exists()


def test_a_failed_write_leaves_nothing_behind(directory, tmp_path):
    (tmp_path / "cache" / "answers-x").mkdir()  # os.replace onto a directory fails
    with pytest.raises(OSError):
        directory.write("answers-x", b"data")
    assert os.listdir(tmp_path / "cache") == ["answers-x"]


def test_lock_files_are_ours(directory, tmp_path):
    descriptor = directory.open_lock_file("lock-x")
    assert descriptor is not None
    os.close(descriptor)
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "cache" / "lock-y").symlink_to(tmp_path / "elsewhere")
    assert directory.open_lock_file("lock-y") is None


@pytest.mark.root
def test_files_of_another_owner_are_neither_read_nor_locked(directory, tmp_path):
    for name in ("answers-x", "lock-x"):
        (tmp_path / "cache" / name).write_bytes(b"forged")
        os.chown(tmp_path / "cache" / name, 65534, 65534)
    assert directory.read("answers-x", 100) is None
    assert directory.open_lock_file("lock-x") is None
