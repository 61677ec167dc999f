"""A node's session on disk: the per-user root, session directories, their pids and key.

Used by the driver's start-up (``runtime``/``driver``), ``actorkit start``
(``cluster``), member nodes (``member``) and ``actorkit status``.  A session
whose driver and node were both killed is removed by the next one started
here (``remove_dead_sessions``).
"""

from __future__ import annotations

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
