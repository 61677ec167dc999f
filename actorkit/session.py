"""actorkit's files on disk: the per-user root, session directories, their pids and keys,
and the cluster files (``cluster.json``, ``cluster.key``) ``actorkit start`` writes there.

Used by the driver's start-up (``driver``), ``actorkit start`` (``cluster``),
member nodes (``member``) and ``actorkit status``.  A session whose driver
and node were both killed is removed by the next one started here
(``remove_dead_sessions``).  A driver finds a cluster with ``find_cluster``
without loading what runs one (``cluster``, ``member``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import time
from typing import Any

from . import shm
from .node_config import NodeConfig

SESSION_KEY_FILE = "session.key"


def session_root(temp_dir: str | None = None) -> str:
    """The directory holding this user's sessions (and the local cluster's files)."""
    root = os.path.join(temp_dir or tempfile.gettempdir(), f"actorkit-{os.getuid()}")
    if len(root) > 60 and os.path.isdir("/tmp"):
        # Unix socket paths are limited to ~100 bytes: keep session paths short.
        root = f"/tmp/actorkit-{os.getuid()}"
    os.makedirs(root, mode=0o700, exist_ok=True)
    _check_private(root)
    return root


def _check_private(root: str) -> None:
    """Refuse a root someone else made or may write: they could swap its sockets and read its key."""
    st = os.lstat(root)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        problem = "is a symbolic link" if stat.S_ISLNK(st.st_mode) else "is not a directory"
    elif st.st_uid != os.getuid():
        problem = f"is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    elif stat.S_IMODE(st.st_mode) & 0o077:
        problem = f"has mode {stat.S_IMODE(st.st_mode):04o}, which lets other users in"
    else:
        return
    raise PermissionError(
        f"actorkit's session directory {root} {problem}; it must be a directory of yours with mode "
        f"0700. Remove it if nothing of yours runs from it (`rm -r {root}`, then it is made again), "
        f"`chmod 700 {root}` if it is yours, or pass init(_temp_dir=...) / set TMPDIR to another place"
    )


def new_node_config(
    totals: dict[str, float], store_memory: int, owner_pid: int, temp_dir: str | None = None, **extra: Any
) -> NodeConfig:
    """A fresh session directory and the configuration of a node serving it."""
    root = session_root(temp_dir)
    remove_dead_sessions(root)
    session = os.urandom(4).hex()
    return NodeConfig(
        node_id=os.urandom(14).hex(),
        session=session,
        session_dir=tempfile.mkdtemp(prefix=f"session-{session}-", dir=root),
        authkey=os.urandom(32),
        resources=totals,
        object_store_memory=store_memory,
        owner_pid=owner_pid,
        # One worker now for a fast first task; the rest start on demand.
        prestart_workers=1 if totals["CPU"] >= 1 else 0,
        **extra,
    )


def write_pids(session_dir: str, driver_pid: int, node_pid: int) -> None:
    # Written whole or not at all: another driver's init() may be reading it.
    pids_tmp = os.path.join(session_dir, "pids.tmp")
    with open(pids_tmp, "w") as f:
        f.write(f"{driver_pid} {node_pid}\n")
    os.replace(pids_tmp, os.path.join(session_dir, "pids"))


def write_session_key(session_dir: str, authkey: bytes) -> None:
    """Leave the node's key in its (0700) session directory, mode 0600, for
    ``actorkit status`` run by the same user: a private node shows there too."""
    fd = os.open(os.path.join(session_dir, SESSION_KEY_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(authkey)


def remove_dead_sessions(root: str) -> None:
    """Remove what sessions whose driver and node were both killed left behind.

    Segments go by their session's lock (see ``shm``), wherever the session's
    directory was.  A directory goes with its session's segments; one whose
    session has no lock (an older actorkit's) is dead when neither its driver
    nor its node process exists and its node's socket accepts no connection,
    and is left alone while young (it may still be starting).
    """
    dead = shm.reap_dead_sessions()
    for entry in os.listdir(root):
        if not entry.startswith("session-"):
            continue
        path = os.path.join(root, entry)
        if entry.split("-")[1] in dead:
            shutil.rmtree(path, ignore_errors=True)
            continue
        if os.path.exists(shm.lock_path(entry.split("-")[1])):
            continue  # alive: its lock is held (a free one was just reaped)
        try:
            if time.time() - os.stat(path).st_mtime < 60:
                continue
            with open(os.path.join(path, "pids")) as f:
                pids = [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            continue  # starting right now, or not ours
        if len(pids) != 2 or any(process_alive(pid) for pid in pids) or _listening(os.path.join(path, "data.sock")):
            continue
        shm.unlink_session(entry.split("-")[1])
        shutil.rmtree(path, ignore_errors=True)


def _listening(address: str) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(address)
        except OSError:
            return False
    return True


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------ the cluster started by `actorkit start`


def cluster_files(temp_dir: str | None = None) -> tuple[str, str]:
    root = session_root(temp_dir)
    return os.path.join(root, "cluster.json"), os.path.join(root, "cluster.key")


def key_from_environment() -> bytes | None:
    text = os.environ.get("ACTORKIT_AUTHKEY")
    if text:
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise ValueError(
                "ACTORKIT_AUTHKEY is not a hex string: set it to the cluster's key in hex (the bytes "
                "of the cluster.key file `actorkit start --head` wrote), or unset it"
            ) from None
    path = os.environ.get("ACTORKIT_AUTHKEY_FILE")
    if path:
        try:
            with open(path, "rb") as f:
                key = f.read()
        except OSError as e:
            raise type(e)(
                f"ACTORKIT_AUTHKEY_FILE={path}: cannot read it ({e.strerror}); set it to the key file "
                f"`actorkit start --head` wrote (cluster.key), or unset it"
            ) from None
        if not key:
            raise ValueError(f"ACTORKIT_AUTHKEY_FILE={path} is empty: set it to the key file `actorkit start --head` wrote")
        return key
    return None


def read_local_cluster() -> dict[str, Any] | None:
    """The node started on this machine by ``actorkit start``, if any."""
    path, key_path = cluster_files()
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    try:
        info["authkey"] = read_key_file(key_path)
    except OSError:
        if not node_alive(info):
            return None  # what a node that is gone left: a new one replaces it
        raise
    return info


def read_key_file(path: str) -> bytes:
    """This user's cluster key: only from a regular file of theirs that no one else may read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the cluster key file {path} is missing while the node `actorkit start` started runs: "
            f"`actorkit stop` and start it again, or set ACTORKIT_AUTHKEY to its key"
        ) from None
    except OSError:
        if os.path.islink(path):
            raise PermissionError(_bad_key_file(path, "is a symbolic link")) from None
        raise
    with os.fdopen(fd, "rb") as f:
        problem = _key_file_problem(os.fstat(f.fileno()))
        if problem:
            raise PermissionError(_bad_key_file(path, problem))
        return f.read()


def _key_file_problem(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    if stat.S_IMODE(st.st_mode) != 0o600:
        return f"has mode {stat.S_IMODE(st.st_mode):04o}, not 0600"
    return None


def _bad_key_file(path: str, problem: str) -> str:
    return (
        f"the cluster key file {path} {problem}: actorkit keeps its key only in a file of yours "
        f"with mode 0600. Remove it (`actorkit stop`, then `rm {path}`) and start the node again"
    )


def remove_stale_key_file(path: str) -> None:
    """Remove the key a node that is gone left (a live one was refused before); refuse a suspect file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    problem = "is a symbolic link" if stat.S_ISLNK(st.st_mode) else _key_file_problem(st)
    if problem:
        raise PermissionError(_bad_key_file(path, problem))
    os.unlink(path)


def write_key_file(path: str, authkey: bytes) -> None:
    remove_stale_key_file(path)
    # O_EXCL|O_NOFOLLOW: the key goes only into a new file made here, never through a link.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(authkey)


def find_cluster(address: str) -> tuple[Any, bytes, dict[str, Any] | None]:
    """Where a driver connects for ``address`` ("auto" or "HOST:PORT"): the head's data
    address, the key, and (on a member node's machine) that member's description."""
    local = read_local_cluster()
    key = key_from_environment()
    if address == "auto":
        if local is None:
            raise ConnectionError(
                "init(address='auto') found no node started on this machine; start one with "
                "`actorkit start --head`, or call init() without an address for a private one"
            )
        data_address = local["data_address"]
        if isinstance(data_address, list):
            data_address = tuple(data_address)
        return data_address, key or local["authkey"], local.get("member")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"init(address={address!r}): expected 'auto' or 'HOST:PORT'")
    if key is None:
        if local is None:
            raise ConnectionError(
                f"no key for the cluster at {address}: set ACTORKIT_AUTHKEY (hex) or "
                f"ACTORKIT_AUTHKEY_FILE to the key written by `actorkit start --head`"
            )
        key = local["authkey"]
    return (host, int(port)), key, None


def node_alive(info: dict[str, Any]) -> bool:
    return "pid" in info and process_alive(info["pid"])
