"""Shared-memory segments: files in /dev/shm, created mode 0600 under random names.

A segment's name is ``actorkit-<session>-<random>``: unguessable, and the
session part lets a node remove every segment of its session at shutdown, and
the next ``init()`` remove those of a session whose node was killed.
"""

from __future__ import annotations

import mmap
import os
import tempfile

PREFIX = "actorkit-"


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
    """Remove every segment of ``session``; return how many there were."""
    prefix = f"{PREFIX}{session}-"
    count = 0
    for entry in os.listdir(SHM_DIR):
        if entry.startswith(prefix):
            unlink(entry)
            count += 1
    return count
