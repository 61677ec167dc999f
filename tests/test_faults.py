"""Failures: worker crashes and retries, cancellation, node death, orphans, fork, chaos."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from _actors import process_exited

import actorkit as ray
from actorkit import exceptions


def wait_for_exit(pid: int, timeout: float = 10.0) -> bool:
    return process_exited(pid, timeout)


@ray.remote(num_cpus=0)
class Attempts:
    """Counts attempts per key, across worker deaths."""

    def __init__(self):
        self.counts: dict = {}

    def next(self, key):
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


def die(how: str) -> None:
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(3)
    elif how == "segfault":
        ctypes.string_at(0)


@ray.remote(max_retries=3)
def flaky(attempts, key, how, failures):
    if ray.get(attempts.next.remote(key)) <= failures:
        die(how)
    return "survived"


@pytest.mark.parametrize("how", ["sigkill", "exit", "segfault"])
def test_task_is_retried_after_its_worker_dies(ray_start_shared, how):
    attempts = Attempts.remote()
    assert ray.get(flaky.remote(attempts, how, how, 2), timeout=60) == "survived"
    assert ray.get(attempts.next.remote(how)) == 4  # 3 attempts + this call


def test_out_of_retries_raises_worker_crashed_naming_the_task(ray_start_shared):
    attempts = Attempts.remote()
    with pytest.raises(exceptions.WorkerCrashedError) as info:
        ray.get(flaky.options(max_retries=1).remote(attempts, "k", "sigkill", 5), timeout=60)
    message = str(info.value)
    assert "flaky" in message and "SIGKILL" in message and "pid" in message
    assert ray.get(attempts.next.remote("k")) == 3  # 2 attempts


@ray.remote(max_retries=0)
def exit_hard():
    os._exit(1)


@ray.remote
def pid_of_worker():
    return os.getpid()


def test_dead_workers_leave_no_open_pipes_in_the_node(shutdown_only):
    ray.init(num_cpus=1)
    from actorkit import runtime

    fds = f"/proc/{runtime.current_client().request('info')['pid']}/fd"
    ray.get(pid_of_worker.remote())  # a worker is up: the steady state
    start = len(os.listdir(fds))
    counts = []
    for _ in range(30):
        with pytest.raises(exceptions.WorkerCrashedError):
            ray.get(exit_hard.remote(), timeout=60)
        counts.append(len(os.listdir(fds)))
    ray.get(pid_of_worker.remote())
    counts.append(len(os.listdir(fds)))
    # Each dead worker's two pipes are closed when it is reaped, not by some later
    # garbage collection (which let them pile up by two per death); the slack is a
    # replacement worker starting.
    assert max(counts) <= start + 6, f"node fds: {start} at the start, then {counts}"


@ray.remote(max_retries=2, retry_exceptions=True)
def fails_twice(attempts, key):
    if ray.get(attempts.next.remote(key)) <= 2:
        raise ValueError("transient")
    return "ok"


@ray.remote(max_retries=2, retry_exceptions=[KeyError])
def fails_with(attempts, key, error):
    ray.get(attempts.next.remote(key))
    raise error("boom")


def test_retry_exceptions(ray_start_shared):
    attempts = Attempts.remote()
    assert ray.get(fails_twice.remote(attempts, "a")) == "ok"
    with pytest.raises(KeyError):
        ray.get(fails_with.remote(attempts, "b", KeyError))
    assert ray.get(attempts.next.remote("b")) == 4  # retried twice
    with pytest.raises(ValueError):
        ray.get(fails_with.remote(attempts, "c", ValueError))
    assert ray.get(attempts.next.remote("c")) == 2  # not a listed class: no retry


@ray.remote
def sleeper(seconds):
    time.sleep(seconds)
    return "woke"


@ray.remote
def spawn_and_wait():
    return ray.get(sleeper.remote(60))


def test_cancel_queued_and_running_tasks(shutdown_only):
    ray.init(num_cpus=1)
    running = sleeper.remote(60)
    queued = sleeper.remote(60)
    ray.cancel(queued)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(queued, timeout=10)
    started = time.monotonic()
    ray.cancel(running)  # KeyboardInterrupt inside time.sleep
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(running, timeout=10)
    assert time.monotonic() - started < 5
    assert ray.get(sleeper.remote(0)) == "woke"  # the worker survived


def test_force_cancel_kills_the_worker(shutdown_only):
    ray.init(num_cpus=1)
    ref = sleeper.remote(60)
    ray.wait([ref], timeout=0.2)
    ray.cancel(ref, force=True)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=10)


def test_cancel_is_recursive(shutdown_only):
    ray.init(num_cpus=2)
    parent = spawn_and_wait.remote()
    ray.wait([parent], timeout=0.3)
    ray.cancel(parent)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(parent, timeout=10)


@ray.remote(max_restarts=1, max_task_retries=1)
class Restartable:
    def __init__(self):
        self.calls = 0

    def pid(self):
        self.calls += 1
        return os.getpid(), self.calls


def test_actor_restarts_then_dies_for_good(ray_start_shared):
    actor = Restartable.remote()
    pid, calls = ray.get(actor.pid.remote())
    os.kill(pid, signal.SIGKILL)
    new_pid, calls = ray.get(actor.pid.remote(), timeout=30)
    assert new_pid != pid and calls == 1  # __init__ ran again
    os.kill(new_pid, signal.SIGKILL)
    assert wait_for_exit(new_pid)
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(actor.pid.remote(), timeout=30)


def run_driver(source: str, **kwargs) -> subprocess.Popen:
    root = os.path.dirname(os.path.dirname(ray.__file__))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(source)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def test_killed_driver_leaves_no_process_or_segment():
    proc = run_driver(
        """
        import os, time, numpy as np, actorkit as ray
        ray.init(num_cpus=2)

        @ray.remote
        def busy():
            time.sleep(60)

        refs = [busy.remote() for _ in range(2)]
        keep = ray.put(np.ones(1_000_000))
        from actorkit import runtime
        print(runtime._driver.node_info["session"], runtime._driver.manager._process.pid, flush=True)
        time.sleep(60)
        """
    )
    session, node_pid = proc.stdout.readline().split()
    assert any(n.startswith(f"actorkit-{session}-") for n in os.listdir("/dev/shm"))
    proc.kill()
    proc.wait()
    assert wait_for_exit(int(node_pid), timeout=5)
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"actorkit-{session}-")]
    proc.stdout.close()
    proc.stderr.close()


def test_node_death_is_reported_quickly(shutdown_only):
    ray.init(num_cpus=1)
    from actorkit import runtime

    node_pid = runtime._driver.manager._process.pid  # type: ignore[union-attr]
    ref = sleeper.remote(60)
    errors: list = []

    def blocked_get():
        try:
            ray.get(ref)
        except Exception as e:  # noqa: BLE001 - the error is what we check
            errors.append(e)

    waiter = threading.Thread(target=blocked_get)
    waiter.start()
    started = time.monotonic()
    os.kill(node_pid, signal.SIGKILL)
    waiter.join(10)
    assert not waiter.is_alive()
    assert time.monotonic() - started < 3
    assert isinstance(errors[0], exceptions.NodeDiedError)
    with pytest.raises(exceptions.NodeDiedError):
        ray.put(1)


def test_forked_child_gets_a_clear_error_and_parent_keeps_working(ray_start_shared):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what happened, then leave without cleanup
        try:
            ray.put(1)
            os.write(write, b"no error")
        except RuntimeError as e:
            os.write(write, str(e).encode()[:500])
        os._exit(0)
    os.close(write)
    message = os.read(read, 1000).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert "forked" in message and "spawn" in message
    assert ray.get(ray.put(5)) == 5


@ray.remote(max_retries=-1)
def square(x):
    time.sleep(0.004)  # the workload: long enough for kills to land mid-task
    return x * x


@pytest.mark.parametrize(
    "tasks, interval",
    [pytest.param(400, 0.1, id="short"), pytest.param(2000, 0.5, id="full", marks=pytest.mark.slow)],
)
def test_chaos_every_result_survives_random_worker_kills(shutdown_only, tasks, interval):
    ray.init(num_cpus=2)
    stop = threading.Event()
    killed = []

    def killer():
        rng = random.Random(0)
        while not stop.wait(interval):
            pids = []
            for entry in os.listdir("/proc"):
                try:
                    with open(f"/proc/{entry}/comm") as f:
                        if f.read().strip() != "actorkit:worker":
                            continue
                    with open(f"/proc/{entry}/stat") as f:
                        parent = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError):
                    continue
                if parent == node_pid:
                    pids.append(int(entry))
            if pids:
                victim = rng.choice(pids)
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

    from actorkit import runtime

    node_pid = runtime._driver.manager._process.pid  # type: ignore[union-attr]
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        refs = [square.remote(i) for i in range(tasks)]
        results = ray.get(refs, timeout=240)
    finally:
        stop.set()
        thread.join()
    assert results == [i * i for i in range(tasks)]
    assert len(killed) >= 2  # the test did kill workers, repeatedly
