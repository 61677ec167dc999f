"""The session root and the cluster key: made private by actorkit, and refused when they are not."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

import actorkit as ray
from actorkit import cluster, session


@pytest.fixture
def short_dir():
    # Short: a long root would be swapped for /tmp/actorkit-UID (unix socket path limit).
    path = tempfile.mkdtemp(prefix="ak", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def local_files(short_dir, monkeypatch):
    """This user's actorkit files (cluster.json, cluster.key) under ``short_dir``."""
    monkeypatch.setattr(tempfile, "tempdir", short_dir)
    monkeypatch.delenv("ACTORKIT_AUTHKEY", raising=False)
    monkeypatch.delenv("ACTORKIT_AUTHKEY_FILE", raising=False)
    root = session.session_root()
    assert root.startswith(short_dir)
    return root


def test_a_root_others_may_write_is_refused(short_dir, shutdown_only):
    root = os.path.join(short_dir, f"actorkit-{os.getuid()}")
    os.mkdir(root)
    os.chmod(root, 0o777)
    with pytest.raises(PermissionError) as error:
        ray.init(num_cpus=1, _temp_dir=short_dir)
    message = str(error.value)
    assert root in message and "0777" in message and "0700" in message and "chmod 700" in message
    assert not ray.is_initialized()
    assert os.listdir(root) == []  # no session was made in it
    os.chmod(root, 0o700)
    ray.init(num_cpus=1, _temp_dir=short_dir)
    assert ray.get(ray.put(7)) == 7


def test_a_symlinked_root_is_refused(short_dir):
    target = os.path.join(short_dir, "elsewhere")
    os.mkdir(target, 0o700)
    root = os.path.join(short_dir, f"actorkit-{os.getuid()}")
    os.symlink(target, root)
    with pytest.raises(PermissionError, match="symbolic link"):
        session.session_root(short_dir)


@pytest.mark.skipif(os.getuid() != 0, reason="making a directory another user owns needs root")
def test_a_root_of_another_user_is_refused(short_dir):
    root = os.path.join(short_dir, f"actorkit-{os.getuid()}")
    os.mkdir(root, 0o700)
    os.chown(root, 65534, 65534)
    with pytest.raises(PermissionError, match="owned by uid 65534"):
        session.session_root(short_dir)


def test_the_key_is_written_to_a_new_file_of_mode_0600(local_files):
    key_path = os.path.join(local_files, "cluster.key")
    with open(key_path, "wb") as f:  # a stale key of a node that is gone, private: replaced
        f.write(b"old")
    os.chmod(key_path, 0o600)
    cluster._write_cluster_files(b"new-key", {"pid": os.getpid()})
    with open(key_path, "rb") as f:
        assert f.read() == b"new-key"
    assert os.stat(key_path).st_mode & 0o777 == 0o600
    assert session.read_local_cluster()["authkey"] == b"new-key"


def test_a_premade_readable_key_file_is_refused(local_files):
    key_path = os.path.join(local_files, "cluster.key")
    with open(key_path, "wb") as f:
        f.write(b"planted")
    os.chmod(key_path, 0o644)
    with pytest.raises(PermissionError) as error:
        cluster._write_cluster_files(b"secret", {"pid": os.getpid()})
    assert key_path in str(error.value) and "0644" in str(error.value) and "0600" in str(error.value)
    with open(key_path, "rb") as f:
        assert f.read() == b"planted"  # the key never went into it


def test_a_key_file_symlink_is_never_followed(local_files):
    key_path = os.path.join(local_files, "cluster.key")
    target = os.path.join(local_files, "target")
    os.symlink(target, key_path)
    with pytest.raises(PermissionError, match="symbolic link"):
        cluster._write_cluster_files(b"secret", {"pid": os.getpid()})
    assert not os.path.exists(target)
    # Reading does not follow it either, while the node it describes runs.
    with open(target, "wb") as f:
        f.write(b"planted")
    with open(os.path.join(local_files, "cluster.json"), "w") as f:
        f.write('{"pid": %d, "data_address": "x"}' % os.getpid())
    with pytest.raises(PermissionError, match="symbolic link"):
        session.read_local_cluster()


def test_a_missing_key_file_of_a_live_node_names_its_path(local_files):
    with open(os.path.join(local_files, "cluster.json"), "w") as f:
        f.write('{"pid": %d, "data_address": "x"}' % os.getpid())
    key_path = os.path.join(local_files, "cluster.key")
    with pytest.raises(FileNotFoundError) as error:
        ray.init(address="auto")
    assert key_path in str(error.value)
    # The description of a node that is gone is no node at all.
    with open(os.path.join(local_files, "cluster.json"), "w") as f:
        f.write('{"pid": %d, "data_address": "x"}' % _a_dead_pid())
    assert session.read_local_cluster() is None


def _a_dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_bad_authkey_variable_is_named(local_files, monkeypatch):
    monkeypatch.setenv("ACTORKIT_AUTHKEY", "not-hex")
    with pytest.raises(ValueError, match="ACTORKIT_AUTHKEY is not a hex string"):
        ray.init(address="127.0.0.1:1")
    monkeypatch.delenv("ACTORKIT_AUTHKEY")
    missing = os.path.join(local_files, "no-such-key")
    monkeypatch.setenv("ACTORKIT_AUTHKEY_FILE", missing)
    with pytest.raises(FileNotFoundError) as error:
        ray.init(address="127.0.0.1:1")
    assert f"ACTORKIT_AUTHKEY_FILE={missing}" in str(error.value)
    empty = os.path.join(local_files, "empty-key")
    open(empty, "wb").close()
    monkeypatch.setenv("ACTORKIT_AUTHKEY_FILE", empty)
    with pytest.raises(ValueError, match="is empty"):
        ray.init(address="127.0.0.1:1")
    assert not ray.is_initialized()
