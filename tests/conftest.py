"""Shared fixtures.

Most tests share one running node (``ray_start_shared``): starting a node costs
a few hundred milliseconds, and the suite must stay within minutes on 2 cores.
Tests that need their own configuration call ``actorkit.init`` themselves under
``shutdown_only``.

Every test is checked for leaks: when no node is running after a test, no
process named ``actorkit:*`` started by this test run and no
``/dev/shm/actorkit-*`` segment that was not there before the test may remain.
Processes of this run are told apart from those of other programs on the
machine by an environment variable every descendant inherits, even one
orphaned by the death of its parent.
"""

from __future__ import annotations

import os

import pytest

import actorkit
import actorkit as ray

_RUN_MARK = f"ACTORKIT_TEST_RUN={os.getpid()}"
os.environ["ACTORKIT_TEST_RUN"] = str(os.getpid())


def actorkit_processes() -> list[tuple[int, str]]:
    """Live processes of this test run whose name (``/proc/PID/comm``) marks them as actorkit's."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                name = f.read().strip()
            if not name.startswith("actorkit"):
                continue
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{entry}/environ", "rb") as f:
                ours = _RUN_MARK.encode() in f.read().split(b"\0")
        except OSError:
            continue
        if ours and state != "Z":
            found.append((int(entry), name))
    return found


def actorkit_segments() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith("actorkit"))
    except FileNotFoundError:
        return []


def assert_no_leaks(before: tuple[set, set] = (set(), set())) -> None:
    """Fail if actorkit processes or shared-memory segments outlive shutdown.

    ``shutdown()`` returns only after every process it started has exited, so
    there is nothing to wait for here.  ``before`` holds what existed before
    the test (another program's nodes on this machine are not our leaks).
    """
    procs = [p for p in actorkit_processes() if p not in before[0]]
    segments = [s for s in actorkit_segments() if s not in before[1]]
    assert not procs, f"processes left behind: {procs}"
    assert not segments, f"shared-memory segments left behind: {segments}"


def _snapshot() -> tuple[set, set]:
    return set(actorkit_processes()), set(actorkit_segments())


@pytest.fixture(autouse=True)
def _no_leaks_after_test():
    before = _snapshot()
    yield
    if not actorkit.is_initialized():
        assert_no_leaks(before)


@pytest.fixture(scope="module")
def _shared_node():
    before = _snapshot()
    actorkit.init(num_cpus=4)
    yield
    actorkit.shutdown()
    assert_no_leaks(before)


@pytest.fixture
def ray_start_shared(_shared_node):
    """A running node with 4 CPUs, shared by the tests of one module.

    A ``shutdown_only`` test in the same module stops it; the next test that
    asks for it gets a new one.
    """
    if not actorkit.is_initialized():
        actorkit.init(num_cpus=4)
    yield


@pytest.fixture
def kill_after():
    """Register handles with ``kill_after(h)``; they are killed after the test."""
    handles = []

    def register(*hs):
        handles.extend(hs)
        return hs[0] if len(hs) == 1 else hs

    yield register
    if ray.is_initialized():
        for h in handles:
            ray.kill(h)


@pytest.fixture
def shutdown_only():
    """For tests that call ``actorkit.init`` themselves; shuts down afterwards."""
    if actorkit.is_initialized():
        actorkit.shutdown()
    yield
    actorkit.shutdown()
