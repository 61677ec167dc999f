"""Tasks sent straight to a worker the node lent the driver (``LeaseManager.lend`` (node/leases.py)).

When a driver's task ends and nothing else waits for resources, the node
leaves its worker lent to the driver, which sends its next tasks of that
shape straight to it; tasks that find no room on its leases wait in the
driver, which asks the node for more.  Each test gets onto that path first
(``lent``), then checks a behaviour the node used to guarantee on its own:
parallel batches, giving the CPU back to others, retries after a crash,
cancellation (soft, forced, recursive), nested tasks that block, refs in and
out, output.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
import threading

import numpy as np
import pytest
from _actors import SignalActor
from _drivers import describe, run_script
from _gates import Gate

import actorkit as ray
from actorkit import runtime
from actorkit.exceptions import TaskCancelledError, WorkerCrashedError

T = 30  # seconds: the bound on every get()


@ray.remote
def pid():
    return os.getpid()


@ray.remote
def add_one(x):
    return x + 1


@ray.remote
def total(array):
    return int(array.sum())


@ray.remote
def arange(n):
    return np.arange(n, dtype=np.int64)


@ray.remote
def crash_once(marker):
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return os.getpid()


@ray.remote
def started_then_sleep(signal, seconds):
    ray.get(signal.send.remote())
    import time

    time.sleep(seconds)
    return "woke"


@ray.remote
def sleeper(seconds):
    import time

    time.sleep(seconds)
    return "woke"


@ray.remote
def parent_of_sleeper(keeper, signal, seconds):
    child = sleeper.remote(seconds)
    ray.get(keeper.keep.remote([child]))
    ray.get(signal.send.remote())
    return ray.get(child)


@ray.remote
def crash_if(crash):
    if crash:
        os._exit(1)
    return os.getpid()


@ray.remote
def large_or_crash(crash):
    if crash:
        os._exit(1)
    return np.ones(200_000, dtype=np.int64)  # large: its answer goes through the node


@ray.remote
def wait_for_gate(path):
    with open(path) as f:
        return f.read()


@ray.remote
class Meeting:
    """``arrive(n)`` returns once ``n`` calls have arrived: only calls that run at once meet."""

    def __init__(self):
        self.arrived = 0
        self.changed = asyncio.Condition()

    async def arrive(self, n):
        async with self.changed:
            self.arrived += 1
            self.changed.notify_all()
            await self.changed.wait_for(lambda: self.arrived >= n)
        return self.arrived


@ray.remote
def meet(meeting, n):
    if meeting is None:
        return 0
    return ray.get(meeting.arrive.remote(n))


@ray.remote
def sum_of_children(n):
    return sum(ray.get([add_one.remote(i) for i in range(n)]))


@ray.remote(num_cpus=0)
class Keeper:
    def __init__(self):
        self.kept = None

    def keep(self, refs):
        self.kept = refs

    def get(self):
        return self.kept


def direct_calls() -> int:
    return runtime.current_client().stats["direct"]


def node_stats() -> dict:
    return runtime.current_client().request("stats")


def lent(function=pid, *args):
    """Run ``function`` until a call of it went straight to a lent worker; return its result."""
    for _ in range(3):
        before = direct_calls()
        value = ray.get(function.remote(*args), timeout=T)
        if direct_calls() > before:
            return value
    raise AssertionError("the driver was never lent a worker")


def test_tasks_go_direct_after_the_first(ray_start_shared):
    worker = lent()
    before, finished = direct_calls(), node_stats()["tasks_finished"]
    assert {ray.get(pid.remote(), timeout=T) for _ in range(20)} == {worker}
    assert direct_calls() - before == 20
    assert node_stats()["tasks_finished"] == finished  # the node never saw them


def test_a_batch_makes_the_driver_ask_for_more_workers(ray_start_shared, kill_after):
    # Three tasks that return only once all three run at once: the driver must
    # get two more workers lent for the two that wait for room on its lease.
    lent(meet, kill_after(Meeting.remote()), 1)
    meeting = kill_after(Meeting.remote())
    before, leases = direct_calls(), node_stats()["leases"]
    assert ray.get([meet.remote(meeting, 3) for _ in range(3)], timeout=T) == [3, 3, 3]
    assert direct_calls() - before == 3
    assert node_stats()["leases"] - leases >= 2


def test_a_short_task_that_waits_hands_back_those_sent_behind_it(shutdown_only, kill_after):
    # One CPU: one lease, and a function known to be short gets several tasks
    # sent at once.  The first waits for the second, sent behind it: the worker
    # hands the second back, which then runs on the CPU the first lends.
    ray.init(num_cpus=1)
    lent(meet, None, 0)
    assert ray.get([meet.remote(None, 0) for _ in range(50)], timeout=T) == [0] * 50
    meeting = kill_after(Meeting.remote())
    assert ray.get([meet.remote(meeting, 2) for _ in range(2)], timeout=T) == [2, 2]


def test_a_crash_costs_a_retry_only_to_the_task_that_ran(ray_start_shared):
    lent(crash_if, False)
    assert len(ray.get([crash_if.remote(False) for _ in range(50)], timeout=T)) == 50  # known short now
    # The tasks sent behind the crashing one on its worker never started: they run elsewhere.
    no_retry = crash_if.options(max_retries=0)
    refs = [no_retry.remote(i == 0) for i in range(20)]
    with pytest.raises(WorkerCrashedError, match="crash_if"):
        ray.get(refs[0], timeout=T)
    assert all(isinstance(p, int) for p in ray.get(refs[1:], timeout=T))


def test_a_crash_after_an_answer_through_the_node_leaves_that_answer_alone(shutdown_only):
    ray.init(num_cpus=1)
    lent(large_or_crash, False)
    assert len(ray.get([large_or_crash.remote(False) for _ in range(20)], timeout=T)) == 20  # known short now
    no_retry = large_or_crash.options(max_retries=0)
    answered, crashing = no_retry.remote(False), no_retry.remote(True)
    with pytest.raises(WorkerCrashedError):
        ray.get(crashing, timeout=T)
    assert ray.get(answered, timeout=T).sum() == 200_000


def hold_the_only_lease(tmp_path):
    """On one CPU, a task that holds the driver's only lease until its gate is released."""
    ray.init(num_cpus=1)
    (tmp_path / "open").write_text("go")
    lent(wait_for_gate, str(tmp_path / "open"))
    gate = Gate(tmp_path / "gate")
    return gate, wait_for_gate.remote(gate.path)


def test_tasks_waiting_for_a_lease_are_not_stranded_when_it_is_asked_back(shutdown_only, tmp_path):
    gate, held = hold_the_only_lease(tmp_path)
    batch = [pid.remote() for _ in range(20)]  # another function: they wait here
    other = add_one.options(num_cpus=0.5).remote(1)  # another shape: the lease is asked back
    gate.release()
    assert ray.get(held, timeout=T) == "go"
    assert ray.get(other, timeout=T) == 2
    assert len(ray.get(batch, timeout=T)) == 20
    assert node_stats()["leases_revoked"] >= 1


def test_cancel_a_task_waiting_for_a_lease(shutdown_only, tmp_path):
    gate, held = hold_the_only_lease(tmp_path)
    waiting = pid.remote()  # another function: it waits in the driver
    ray.cancel(waiting)
    with pytest.raises(TaskCancelledError):
        ray.get(waiting, timeout=T)
    gate.release()
    assert ray.get(held, timeout=T) == "go"
    assert isinstance(ray.get(pid.remote(), timeout=T), int)


def test_an_idle_lent_worker_counts_as_free(ray_start_shared):
    lent()
    assert ray.available_resources().get("CPU") == ray.cluster_resources()["CPU"]


def test_the_lent_cpu_goes_back_when_others_need_it(shutdown_only):
    ray.init(num_cpus=1)
    lent()
    # Another shape, then more tasks than CPUs, then an actor that needs the CPU.
    assert ray.get(add_one.options(num_cpus=0.5).remote(1), timeout=T) == 2
    assert ray.get([add_one.remote(i) for i in range(20)], timeout=T) == list(range(1, 21))
    keeper = Keeper.options(num_cpus=1).remote()
    assert ray.get(keeper.get.remote(), timeout=T) is None
    assert node_stats()["leases_revoked"] >= 1


def test_a_function_the_lent_worker_never_ran(ray_start_shared):
    lent()

    @ray.remote
    def triple(x):
        return 3 * x

    assert [ray.get(triple.remote(i), timeout=T) for i in range(4)] == [0, 3, 6, 9]


def test_results_and_arguments_by_reference(ray_start_shared):
    lent(add_one, 0)
    pending = add_one.remote(1)  # direct
    chained = add_one.remote(pending)  # passed on before it is back: through the node
    assert ray.get(chained, timeout=T) == 3
    array = ray.put(np.ones(1_000_000, dtype=np.int64))
    lent(total, array)
    assert ray.get(total.remote(array), timeout=T) == 1_000_000
    big = arange.remote(1_000_000)  # large: the node keeps it for the driver
    assert ray.get(total.remote(big), timeout=T) == sum(range(1_000_000))
    assert ray.get(big, timeout=T)[-1] == 999_999


def test_crash_of_a_lent_worker_retries_the_task(ray_start_shared, tmp_path):
    survived = tmp_path / "survived"
    survived.touch()
    lent(crash_once, str(survived))
    before = direct_calls()
    first = crash_once.options(max_retries=1).remote(str(tmp_path / "crashed"))
    assert direct_calls() == before + 1
    assert isinstance(ray.get(first, timeout=T), int)


def test_crash_of_a_lent_worker_without_retries_fails_the_task(ray_start_shared, tmp_path):
    survived = tmp_path / "survived"
    survived.touch()
    lent(crash_once.options(max_retries=0), str(survived))
    with pytest.raises(WorkerCrashedError, match="crash_once"):
        ray.get(crash_once.options(max_retries=0).remote(str(tmp_path / "crashed")), timeout=T)


def test_cancel_a_running_direct_task(ray_start_shared, kill_after):
    signal = kill_after(SignalActor.remote())
    lent(started_then_sleep, signal, 0)
    signal = kill_after(SignalActor.remote())
    worker = lent()
    before = direct_calls()
    ref = started_then_sleep.remote(signal, 60)
    assert direct_calls() == before + 1
    ray.get(signal.wait.remote(), timeout=T)
    ray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=T)
    assert ray.get(pid.remote(), timeout=T) == worker  # the worker survived


def test_force_cancel_a_direct_task(ray_start_shared, kill_after):
    signal = kill_after(SignalActor.remote())
    lent(started_then_sleep, signal, 0)
    signal = kill_after(SignalActor.remote())
    worker = lent()
    ref = started_then_sleep.remote(signal, 60)
    ray.get(signal.wait.remote(), timeout=T)
    ray.cancel(ref, force=True)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=T)
    assert ray.get(pid.remote(), timeout=T) != worker  # its worker was killed, not retried


def test_cancel_of_a_direct_task_cancels_what_it_submitted(ray_start_shared, kill_after):
    keeper = kill_after(Keeper.remote())
    signal = kill_after(SignalActor.remote())
    ray.get(signal.send.remote())
    lent(parent_of_sleeper.options(num_cpus=0.5), keeper, signal, 0)
    signal = kill_after(SignalActor.remote())
    before = direct_calls()
    parent = parent_of_sleeper.options(num_cpus=0.5).remote(keeper, signal, 60)
    assert direct_calls() == before + 1
    ray.get(signal.wait.remote(), timeout=T)
    ray.cancel(parent)
    with pytest.raises(TaskCancelledError):
        ray.get(parent, timeout=T)
    [child] = ray.get(keeper.get.remote(), timeout=T)
    with pytest.raises(TaskCancelledError):
        ray.get(child, timeout=T)


def test_a_direct_task_waiting_for_its_children_lends_its_cpu(shutdown_only):
    ray.init(num_cpus=1)
    lent(sum_of_children, 1)
    assert ray.get(sum_of_children.remote(5), timeout=T) == 15


def test_print_from_a_direct_task_reaches_the_driver(tmp_path):
    proc = run_script(
        tmp_path,
        textwrap.dedent(
            """
            import actorkit as ray
            from actorkit import runtime

            @ray.remote
            def say(i):
                print("said", i)

            ray.init(num_cpus=1)
            for i in range(3):
                ray.get(say.remote(i))
            direct = runtime.current_client().stats["direct"]
            ray.shutdown()  # after it, no forwarded line can cut into this one
            print("direct", direct)
            """
        ),
    )
    assert proc.returncode == 0, describe(proc)
    assert "direct 2" in proc.stdout, describe(proc)
    for i in range(3):
        assert f"said {i}" in proc.stdout, describe(proc)


def test_a_task_submitted_from_a_callback_does_not_wait_on_its_own_thread(ray_start_shared):
    # The callback runs on the thread that read the answer: a direct send that
    # first needs the node's answer to "sync" would wait for that same thread.
    half = add_one.options(num_cpus=0.5)
    lent(half, 0)
    lent(add_one, 0)
    submitted = []
    done = threading.Event()

    def callback(_future):
        ray.put(0)  # the node must hear of it before anything goes direct
        submitted.append(half.remote(41))
        done.set()

    add_one.remote(1).future().add_done_callback(callback)
    assert done.wait(T)
    assert ray.get(submitted[0], timeout=T) == 42
