"""Shared-memory segments: files in /dev/shm, created mode 0600 under random names.

A segment's name is ``actorkit-<session>-<random>``: unguessable, and the
session part lets a node remove every segment of its session at shutdown, and
the next ``init()`` remove those of a session whose node was killed.

Whether a session is alive is told by its lock, ``actorkit-<session>.lock``
beside its segments: the node's process holds an ``flock`` on it from before
the first segment is made until it removes the session's segments.  The kernel
drops the lock when that process dies, SIGKILL included, so a lock anyone can
take is a dead session's (neither age nor pids are needed, and the session's
directory may be gone or somewhere else).  Segments of a session without a
lock file are left alone: an older actorkit may be using them.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import re
import tempfile

PREFIX = "actorkit-"
_LOCK_SUFFIX = ".lock"
# A lock being made (see hold_session): "actorkit-<session>.lock.<random>".
_LOCK_NAME = re.compile(rf"{PREFIX}([0-9a-f]+){re.escape(_LOCK_SUFFIX)}(\.[0-9a-f]+)?$")
_held: dict[str, int] = {}  # session -> descriptor of its lock, for the sessions this process holds


def _directory() -> str:
    if os.path.isdir("/dev/shm"):
        return "/dev/shm"
    # Without /dev/shm (macOS), a temporary directory's files are the next best.
    path = os.path.join(tempfile.gettempdir(), "actorkit-shm")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


SHM_DIR = _directory()


def session_of(name: str) -> str:
    """The session (and so the node) whose segment ``name`` is."""
    return name[len(PREFIX) :].rsplit("-", 1)[0]


def path_of(name: str) -> str:
    return os.path.join(SHM_DIR, name)


def create(session: str, size: int) -> tuple[str, mmap.mmap]:
    """A new writable segment of ``size`` bytes and its name."""
    name = f"{PREFIX}{session}-{os.urandom(12).hex()}"
    fd = os.open(path_of(name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, max(size, 1))
        return name, mmap.mmap(fd, max(size, 1))
    except BaseException:
        os.unlink(path_of(name))
        raise
    finally:
        os.close(fd)


def open_writable(name: str, size: int) -> mmap.mmap:
    """Map the first ``size`` bytes of an existing (recycled) segment for writing."""
    fd = os.open(path_of(name), os.O_RDWR)
    try:
        return mmap.mmap(fd, max(size, 1))
    finally:
        os.close(fd)


def free_bytes() -> int:
    """Room left in the shared-memory file system."""
    st = os.statvfs(SHM_DIR)
    return st.f_bavail * st.f_frsize


def attach(name: str, size: int) -> mmap.mmap:
    """Map an existing segment read-only: arrays built on it are read-only."""
    fd = os.open(path_of(name), os.O_RDONLY)
    try:
        return mmap.mmap(fd, max(size, 1), prot=mmap.PROT_READ)
    finally:
        os.close(fd)


def unlink(name: str) -> None:
    try:
        os.unlink(path_of(name))
    except FileNotFoundError:
        pass


def unlink_session(session: str) -> int:
    """Remove every segment of ``session`` (ended, or about to end); return how many there were.

    Its lock goes too if this process holds it or its holder is dead.
    """
    count = _unlink_segments(session)
    _release(session)
    return count


def lock_path(session: str) -> str:
    return path_of(f"{PREFIX}{session}{_LOCK_SUFFIX}")


def hold_session(session: str) -> None:
    """Mark ``session`` alive for as long as this process lives (or until ``unlink_session``).

    Called by a node's process before any segment of its session exists.
    """
    # Locked under a private name, then renamed into place: a reaper never sees
    # the lock file unlocked, so it cannot mistake a starting session for a dead one.
    # (A reaper may take the private one in the instant between its creation and
    # its flock, as it would a dying creator's: then it is made again.)
    for _ in range(3):
        making = f"{lock_path(session)}.{os.urandom(4).hex()}"
        fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(making, lock_path(session))
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            unlink(os.path.basename(making))
            raise
        _held[session] = fd
        return
    raise RuntimeError(f"could not make the lock {lock_path(session)} of session {session}: removed as it was made")


def _release(session: str) -> None:
    """Remove the lock of ``session``: this process's own, or a dead session's."""
    fd = _held.pop(session, None)
    if fd is not None:
        unlink(os.path.basename(lock_path(session)))
        os.close(fd)
    else:
        _reap_if_dead(lock_path(session), session)


def _reap_if_dead(path: str, session: str) -> bool:
    """If the lock at ``path`` is free (its holder died), remove its session's segments and it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False  # removed meanwhile (by its holder or another reaper), or not a file
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            return False  # another user's session: theirs to clean
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # held: the session is alive
        try:
            now = os.lstat(path)
        except FileNotFoundError:
            return False
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return False  # another reaper removed this one and a new session took the name
        _unlink_segments(session)
        os.unlink(path)
        return True
    finally:
        os.close(fd)


def reap_dead_sessions() -> set[str]:
    """Remove the segments and locks of this user's sessions whose node died; return those sessions."""
    dead = set()
    for entry in os.listdir(SHM_DIR):
        match = _LOCK_NAME.match(entry)
        if match and _reap_if_dead(path_of(entry), match.group(1)):
            dead.add(match.group(1))
    return dead


def _unlink_segments(session: str) -> int:
    prefix = f"{PREFIX}{session}-"
    count = 0
    for entry in os.listdir(SHM_DIR):
        if entry.startswith(prefix):
            unlink(entry)
            count += 1
    return count
