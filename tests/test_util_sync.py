"""actorkit.util synchronization: FileLock across tasks, SignalActor, the public surface."""

from __future__ import annotations

import filelock
import pytest

import actorkit as ray
import actorkit.util
from actorkit.util import FileLock, SignalActor

TIMEOUT = 30


@ray.remote
def append_lines(path: str, lock_path: str, worker: int, n: int) -> int:
    for i in range(n):
        with FileLock(lock_path):
            # Read-modify-write: without the lock, concurrent writers lose lines.
            with open(path) as f:
                text = f.read()
            with open(path, "w") as f:
                f.write(text + f"{worker}:{i}\n")
    return n


@ray.remote
def wait_and_go(signal, name: str) -> str:
    ray.get(signal.wait.remote())
    return name


def test_public_surface():
    assert actorkit.util.FileLock is filelock.FileLock
    assert set(actorkit.util.__all__) >= {
        "ActorPool",
        "SignalActor",
        "FileLock",
        "as_completed",
        "register_serializer",
        "deregister_serializer",
    }
    from actorkit import serialization

    assert actorkit.util.register_serializer is serialization.register_serializer
    assert actorkit.util.deregister_serializer is serialization.deregister_serializer


def test_filelock_no_lost_lines(ray_start_shared, tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("")
    lock = str(tmp_path / "data.txt.lock")
    workers, per_worker = 4, 25
    done = ray.get([append_lines.remote(str(path), lock, w, per_worker) for w in range(workers)], timeout=TIMEOUT)
    assert done == [per_worker] * workers
    lines = path.read_text().splitlines()
    assert len(lines) == workers * per_worker
    assert set(lines) == {f"{w}:{i}" for w in range(workers) for i in range(per_worker)}


def test_signal_blocks_tasks_until_send(ray_start_shared):
    signal = SignalActor.remote()
    refs = [wait_and_go.remote(signal, f"t{i}") for i in range(4)]
    # Wait (without sleeping) until every task is blocked in the actor.
    while ray.get(signal.cur_num_waiters.remote()) < 4:
        ray.wait(refs, timeout=0.01)
    ready, _ = ray.wait(refs, num_returns=1, timeout=0)
    assert ready == []
    ray.get(signal.send.remote())
    assert ray.get(refs, timeout=TIMEOUT) == ["t0", "t1", "t2", "t3"]
    assert ray.get(signal.cur_num_waiters.remote()) == 0


def test_signal_send_clear_and_should_wait(ray_start_shared):
    signal = SignalActor.remote()
    # should_wait=False returns at once, whatever the signal's state.
    assert ray.get(signal.wait.remote(should_wait=False), timeout=TIMEOUT) is None
    blocked = wait_and_go.remote(signal, "first")
    while ray.get(signal.cur_num_waiters.remote()) < 1:
        ray.wait([blocked], timeout=0.01)
    # send(clear=True) wakes the current waiters but leaves the signal unset ...
    ray.get(signal.send.remote(clear=True))
    assert ray.get(blocked, timeout=TIMEOUT) == "first"
    assert ray.get(signal.is_set.remote()) is False
    # ... so a later waiter blocks again until the next send.
    later = wait_and_go.remote(signal, "later")
    while ray.get(signal.cur_num_waiters.remote()) < 1:
        ray.wait([later], timeout=0.01)
    ray.get(signal.send.remote())
    assert ray.get(later, timeout=TIMEOUT) == "later"
    # Once sent (not cleared), waiting returns at once.
    assert ray.get(signal.wait.remote(), timeout=TIMEOUT) is None


def test_signal_actor_holds_no_cpu(shutdown_only):
    ray.init(num_cpus=1)
    signal = SignalActor.remote()
    # The only CPU is free for the task that waits, and more signals fit too.
    others = [SignalActor.remote() for _ in range(3)]
    ref = wait_and_go.remote(signal, "ran")
    while ray.get(signal.cur_num_waiters.remote()) < 1:
        ray.wait([ref], timeout=0.01)
    ray.get([o.send.remote() for o in others])
    ray.get(signal.send.remote())
    assert ray.get(ref, timeout=TIMEOUT) == "ran"
    assert "SignalActor" in repr(signal)


@pytest.mark.parametrize("bad", ["yes", 1.5])
def test_progress_option_validated(bad):
    from actorkit.util.progress import progress_enabled

    with pytest.raises(ValueError):
        progress_enabled(bad)
