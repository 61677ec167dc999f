"""Direct actor calls (``direct.py``): the same behaviour as through the node, by the short path.

A caller's first call to an actor goes through the node, which answers with
where the actor listens; later calls go straight to the actor's process.
Each test first makes that switch (``direct``), then checks one behaviour
that the node used to guarantee: order, refs that leave the caller, large
results, cancellation, kill, restart and retry, timeouts, futures.
"""

from __future__ import annotations

import asyncio
import gc
import os

import numpy as np
import pytest
from _actors import SignalActor

import actorkit as ray
from actorkit import runtime
from actorkit.exceptions import ActorDiedError, GetTimeoutError, TaskCancelledError

T = 30  # seconds: the bound on every get()


@ray.remote
class Box:
    def __init__(self):
        self.seen = []

    def value(self):
        return len(self.seen)

    def record(self, item):
        self.seen.append(item)
        return len(self.seen)

    def history(self):
        return self.seen

    def after(self, signal, value):
        ray.get(signal.wait.remote())
        return value

    def large(self, n):
        return np.arange(n, dtype=np.int64)

    def holding_a_ref(self, value):
        return [ray.put(value)]

    def add(self, x):
        return x + 1

    def direct_calls_to(self, other, n):
        before = runtime.current_client().stats["direct"]
        values = [ray.get(other.record.remote(i)) for i in range(n)]
        return values, runtime.current_client().stats["direct"] - before

    def pid(self):
        return os.getpid()

    def crash_once(self, marker):
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return "survived"


@ray.remote
def square(x):
    return x * x


def direct_calls() -> int:
    return runtime.current_client().stats["direct"]


def direct(handle):
    """Make the first call through the node; from here on, calls go direct."""
    ray.get(handle.value.remote(), timeout=T)
    return handle


def node_objects() -> int:
    return runtime.current_client().request("stats")["objects"]


@pytest.fixture
def box(ray_start_shared, kill_after):
    return direct(kill_after(Box.remote()))


@pytest.fixture
def signal(ray_start_shared, kill_after):
    return kill_after(SignalActor.remote())


def test_calls_go_direct_after_the_first(box):
    before = direct_calls()
    assert [ray.get(box.record.remote(i), timeout=T) for i in range(20)] == list(range(1, 21))
    assert direct_calls() - before == 20


def test_order_is_kept_across_the_switch(ray_start_shared, kill_after):
    box = kill_after(Box.remote())
    sent = 0
    for _ in range(4):
        refs = [box.record.remote(sent + i) for i in range(50)]  # the first batch goes through the node
        sent += 50
        assert ray.get(refs[-1], timeout=T) == sent
    assert direct_calls() > 0
    assert ray.get(box.history.remote(), timeout=T) == list(range(sent))


def test_result_passed_on_before_it_is_back(box, signal, kill_after):
    other = direct(kill_after(Box.remote()))
    pending = box.after.remote(signal, 7)
    to_task = square.remote(pending)  # published to the node as a promise
    to_actor = other.add.remote(pending)  # a direct call whose argument is not back yet
    in_object = ray.put([pending])  # held by an object
    ray.get(signal.send.remote(), timeout=T)
    assert ray.get(to_task, timeout=T) == 49
    assert ray.get(to_actor, timeout=T) == 8
    assert ray.get(ray.get(in_object, timeout=T)[0], timeout=T) == 7
    assert ray.get(pending, timeout=T) == 7


def test_result_passed_on_after_it_is_back(box):
    back = box.record.remote("x")
    assert ray.get(back, timeout=T) == 1
    assert ray.get(square.remote(back), timeout=T) == 1
    assert ray.get(box.add.remote(back), timeout=T) == 2
    assert ray.get(ray.get(ray.put({"ref": back}), timeout=T)["ref"], timeout=T) == 1


def test_promised_result_dropped_by_the_caller_still_reaches_the_task(box, signal):
    result = square.remote(box.after.remote(signal, 5))  # the caller keeps no ref to the call's result
    gc.collect()
    ray.get(signal.send.remote(), timeout=T)
    assert ray.get(result, timeout=T) == 25


def test_results_of_direct_calls_are_not_stored_at_the_node(box):
    ray.get(box.record.remote(0), timeout=T)
    baseline = node_objects()
    refs = [box.record.remote(i) for i in range(50)]
    assert ray.get(refs, timeout=T) == list(range(2, 52))
    assert node_objects() == baseline  # they live in this process only
    del refs


def test_large_result_comes_through_the_node(box):
    n = 1 << 20
    value = ray.get(box.large.remote(n), timeout=T)
    assert value.shape == (n,) and int(value[-1]) == n - 1
    del value


def test_result_holding_a_ref(box):
    (inner,) = ray.get(box.holding_a_ref.remote("kept"), timeout=T)
    gc.collect()
    assert ray.get(inner, timeout=T) == "kept"


def test_cancel_a_queued_direct_call(box, signal):
    running = box.after.remote(signal, "first")
    queued = box.record.remote("never")
    ray.cancel(queued)
    ray.get(signal.send.remote(), timeout=T)
    assert ray.get(running, timeout=T) == "first"
    with pytest.raises(TaskCancelledError):
        ray.get(queued, timeout=T)
    assert ray.get(box.history.remote(), timeout=T) == []


def test_cancel_a_call_already_read_behind_a_running_one(box, signal, kill_after):
    # The actor reads both calls at once while it is busy, starts the first,
    # and must see the cancellation of the second before it starts that one.
    second_signal = kill_after(SignalActor.remote())
    busy = box.after.remote(signal, "busy")
    ray.get(signal.wait_for_waiters.remote(1), timeout=T)
    running = box.after.remote(second_signal, "first")
    queued = box.record.remote("never")
    ray.get(signal.send.remote(), timeout=T)
    assert ray.get(busy, timeout=T) == "busy"
    ray.get(second_signal.wait_for_waiters.remote(1), timeout=T)  # "first" runs; "never" waits in the actor
    ray.cancel(queued)
    ray.get(second_signal.send.remote(), timeout=T)
    assert ray.get(running, timeout=T) == "first"
    with pytest.raises(TaskCancelledError):
        ray.get(queued, timeout=T)
    assert ray.get(box.history.remote(), timeout=T) == []


def test_cancelling_an_async_call_that_swallows_the_cancellation(ray_start_shared, kill_after):
    @ray.remote
    class Swallower:
        def __init__(self):
            self.started = asyncio.Event()

        async def swallow(self):
            self.started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                return "swallowed"

        async def wait_started(self):
            await self.started.wait()

    actor = kill_after(Swallower.remote())
    ref = actor.swallow.remote()
    ray.get(actor.wait_started.remote(), timeout=T)
    ray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=T)


def test_a_running_sync_actor_call_can_see_it_was_cancelled(ray_start_shared, kill_after, signal):
    from actorkit.exceptions import TaskError

    @ray.remote
    class Careful:
        def work(self, started):
            started.send.remote()
            while not ray.get_runtime_context().is_canceled():
                pass  # not interrupted: it checks, as Ray's sync actors do
            return "stopped early"

        def ping(self):
            return "pong"

    careful = kill_after(Careful.remote())
    assert ray.get(careful.ping.remote(), timeout=T) == "pong"  # from now on, calls go directly
    ref = careful.work.remote(signal)
    ray.get(signal.wait.remote(), timeout=T)  # it runs
    ray.cancel(ref)  # on the direct link, which the running method reads when it checks
    with pytest.raises(TaskCancelledError) as caught:
        ray.get(ref, timeout=T)
    assert isinstance(caught.value, TaskError)  # Ray's scripts catch RayTaskError here too
    assert ray.get(careful.ping.remote(), timeout=T) == "pong"


def test_timeout_then_the_value(box, signal):
    ref = box.after.remote(signal, "late")
    with pytest.raises(GetTimeoutError):
        ray.get(ref, timeout=0.2)
    ray.get(signal.send.remote(), timeout=T)
    assert ray.get(ref, timeout=T) == "late"


def test_future_and_await(box):
    assert box.record.remote("a").future().result(timeout=T) == 1

    async def main():
        return await box.record.remote("b")

    assert asyncio.run(main()) == 2


def test_actor_calls_actor_directly(ray_start_shared, kill_after):
    caller, callee = kill_after(Box.remote(), Box.remote())
    values, direct_in_caller = ray.get(caller.direct_calls_to.remote(callee, 10), timeout=T)
    assert values == list(range(1, 11))
    assert direct_in_caller == 9  # the first went through the node


def test_kill_fails_pending_and_later_direct_calls(ray_start_shared, signal):
    box = direct(Box.remote())
    pending = box.after.remote(signal, "never")
    ray.kill(box)
    with pytest.raises(ActorDiedError):
        ray.get(pending, timeout=T)
    with pytest.raises(ActorDiedError):
        ray.get(box.value.remote(), timeout=T)


def test_crash_during_a_direct_call_is_retried_on_the_restarted_actor(ray_start_shared, kill_after, tmp_path):
    box = direct(kill_after(Box.options(max_restarts=1, max_task_retries=1).remote()))
    first_pid = ray.get(box.pid.remote(), timeout=T)
    assert ray.get(box.crash_once.remote(str(tmp_path / "crashed")), timeout=T) == "survived"
    assert ray.get(box.pid.remote(), timeout=T) != first_pid


def test_crash_during_a_direct_call_without_retries_fails_it(ray_start_shared, kill_after, tmp_path):
    box = direct(kill_after(Box.options(max_restarts=1).remote()))
    with pytest.raises(ActorDiedError, match="max_task_retries"):
        ray.get(box.crash_once.remote(str(tmp_path / "crashed")), timeout=T)
    assert ray.get(box.crash_once.remote(str(tmp_path / "crashed")), timeout=T) == "survived"


def test_a_stale_wake_up_never_blocks_the_reader():
    # The hub can be told a link is readable after a waiting caller has read
    # it; its read must come back empty at once, not hold the link's lock.
    import socket
    import threading

    from actorkit import protocol as P

    ours, theirs = socket.socketpair()
    with ours, theirs:
        reader = P.FrameReader(ours)
        returned = threading.Event()
        result = []

        def read():
            result.append(reader.feed())
            returned.set()

        threading.Thread(target=read, daemon=True).start()
        assert returned.wait(T), "FrameReader.feed() blocked on a socket with nothing to read"
        assert result == [[]]
        theirs.sendall(P.encode([("hello",)]))
        assert reader.feed() == [("hello",)]
