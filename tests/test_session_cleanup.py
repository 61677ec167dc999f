"""What a killed session leaves behind is removed, and a live session's files never are."""

from __future__ import annotations

import os
import signal
import textwrap

import numpy as np
from _drivers import describe, run_python

import actorkit as ray
from actorkit import runtime, shm


def session_files(session: str) -> list[str]:
    return sorted(n for n in os.listdir(shm.SHM_DIR) if n.startswith(f"actorkit-{session}"))


def test_segments_of_a_killed_node_are_removed_by_shutdown(shutdown_only):
    ray.init(num_cpus=1)
    session = runtime._driver.node_info["session"]
    keep = ray.put(np.zeros(2_000_000, dtype=np.uint8))
    assert f"actorkit-{session}.lock" in session_files(session)
    assert len(session_files(session)) == 2  # the lock and the array's segment
    process = runtime._driver.manager._process
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    ray.shutdown()
    assert session_files(session) == []
    del keep


def test_segments_of_a_killed_node_and_driver_are_removed_by_the_next_init(tmp_path, shutdown_only):
    # The driver dies without running its exit handlers after its node was SIGKILLed:
    # nothing of the session can clean up, and its directory is gone or elsewhere.
    source = textwrap.dedent(
        """
        import os, select, signal, sys
        import numpy as np
        import actorkit as ray
        from actorkit import runtime

        ray.init(num_cpus=1, _temp_dir=sys.argv[1])

        @ray.remote
        def pid():
            return os.getpid()

        worker = os.pidfd_open(ray.get(pid.remote()))
        keep = ray.put(np.zeros(2_000_000, dtype=np.uint8))
        print("session", runtime._driver.node_info["session"], flush=True)
        node = runtime._driver.manager._process
        os.kill(node.pid, signal.SIGKILL)
        node.join()
        select.select([worker], [], [], 30)  # the worker goes with its node
        os._exit(0)
        """
    )
    # A directory of its own, so that only the segments lead to the dead session.
    path = tmp_path / "driver.py"
    path.write_text(source)
    proc = run_python([str(path), str(tmp_path / "elsewhere")], tmp_path)
    assert proc.returncode == 0, describe(proc)
    session = proc.stdout.split("session ", 1)[1].split()[0]
    left = session_files(session)
    assert f"actorkit-{session}.lock" in left and len(left) == 2, left
    ray.init(num_cpus=1)
    assert session_files(session) == []


def test_a_live_session_is_never_reaped(shutdown_only):
    ray.init(num_cpus=1)
    session = runtime._driver.node_info["session"]
    keep = ray.put(np.zeros(2_000_000, dtype=np.uint8))
    before = session_files(session)
    assert session not in shm.reap_dead_sessions()
    assert session_files(session) == before
    assert (ray.get(keep) == 0).all()


def test_a_dead_lock_is_reaped_and_a_lockless_session_left_alone():
    dead, lockless = os.urandom(4).hex(), os.urandom(4).hex()
    made = []
    for session in (dead, lockless):
        name, mapping = shm.create(session, 10)
        mapping.close()
        made.append(name)
    # A lock that nobody holds: its holder died.
    os.close(os.open(shm.lock_path(dead), os.O_CREAT | os.O_WRONLY, 0o600))
    try:
        assert dead in shm.reap_dead_sessions()
        assert session_files(dead) == []
        # No lock at all: an older actorkit's session, maybe alive: not ours to judge.
        assert session_files(lockless) == [made[1]]
    finally:
        for name in made:
            shm.unlink(name)
        shm.unlink(os.path.basename(shm.lock_path(dead)))


def test_a_held_lock_is_kept_and_its_holder_removes_it():
    session = os.urandom(4).hex()
    shm.hold_session(session)
    try:
        assert session not in shm.reap_dead_sessions()
        assert session_files(session) == [f"actorkit-{session}.lock"]
    finally:
        shm.unlink_session(session)
    assert session_files(session) == []
