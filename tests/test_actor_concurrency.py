"""Concurrency inside actors: serial mailboxes, async actors, threaded actors.

A plain actor runs one call at a time.  An actor with any ``async def`` method
runs its calls concurrently on one event loop (up to ``max_concurrency``,
default 1000), and ``await ref`` works inside.  ``max_concurrency > 1`` on a
class of plain methods runs up to that many calls at once in threads.

Concurrency is measured inside the actor (a counter of calls in progress), or
proved with a ``threading.Barrier`` that only opens when enough calls run at
once.  Every ``get`` has a timeout, so a hang fails the test.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from _actors import SignalActor

import actorkit as ray

T = 30  # seconds: the bound on every get()


@ray.remote
class SerialProbe:
    """A plain actor: counts how many calls run at once."""

    def __init__(self):
        self.running = 0
        self.peak = 0

    def work(self, seconds):
        self.running += 1
        self.peak = max(self.peak, self.running)
        time.sleep(seconds)
        self.running -= 1
        return self.peak

    def peak_seen(self):
        return self.peak


@ray.remote
class AsyncProbe:
    """An async actor: counts how many calls are in progress at once."""

    def __init__(self):
        self.running = 0
        self.peak = 0

    async def nap(self, seconds):
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.running -= 1
        return "rested"

    async def peak_seen(self):
        return self.peak

    async def await_ref_of(self, ref_holder):
        # Refs nested in a container arrive as refs: await them on the loop.
        values = []
        for ref in ref_holder:
            values.append(await ref)
        return values

    async def await_actor_call(self, other):
        return await other.value.remote()

    async def await_task(self, x):
        return await square.remote(x)

    async def wait_for_signal(self, signal):
        return await signal.wait.remote()

    def plain_method(self):
        return "sync methods run on the loop too"


@ray.remote
class ThreadedProbe:
    """A class of plain methods, made threaded with ``max_concurrency``."""

    def __init__(self, parties):
        self.barrier = threading.Barrier(parties)
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.release = threading.Event()

    def meet(self, timeout=10):
        # Passes only if ``parties`` calls run at the same time.
        return self.barrier.wait(timeout=timeout)

    def hold(self, seconds):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(seconds)
        with self.lock:
            self.running -= 1
        return threading.get_ident()

    def peak_seen(self):
        return self.peak

    def block_until_released(self):
        return self.release.wait(timeout=10)

    def release_all(self):
        self.release.set()
        return True


@ray.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def value(self):
        return self.n


@ray.remote
def square(x):
    return x * x


# ------------------------------------------------------------ serial actors


def test_plain_actor_runs_one_call_at_a_time(ray_start_shared, kill_after):
    p = kill_after(SerialProbe.remote())
    ray.get(p.peak_seen.remote(), timeout=T)
    ray.get([p.work.remote(0.05) for _ in range(6)], timeout=T)
    assert ray.get(p.peak_seen.remote(), timeout=T) == 1


def test_plain_actor_calls_from_several_tasks_still_serial(ray_start_shared, kill_after):
    @ray.remote
    def hammer(probe):
        return ray.get([probe.work.remote(0.01) for _ in range(5)], timeout=T)

    p = kill_after(SerialProbe.remote())
    ray.get(p.peak_seen.remote(), timeout=T)
    ray.get([hammer.remote(p) for _ in range(3)], timeout=T)
    assert ray.get(p.peak_seen.remote(), timeout=T) == 1


# ------------------------------------------------------------- async actors


def test_async_actor_runs_calls_concurrently(ray_start_shared, kill_after):
    a = kill_after(AsyncProbe.remote())
    ray.get(a.peak_seen.remote(), timeout=T)  # started: time only the calls
    start = time.monotonic()
    results = ray.get([a.nap.remote(0.5) for _ in range(10)], timeout=T)
    elapsed = time.monotonic() - start
    assert results == ["rested"] * 10
    # Serially this would take 5 s; concurrently about 0.5 s.
    assert elapsed < 2.0, f"10 concurrent 0.5 s sleeps took {elapsed:.2f} s"
    assert ray.get(a.peak_seen.remote(), timeout=T) == 10


def test_async_actor_max_concurrency_limits_calls_in_progress(ray_start_shared, kill_after):
    a = kill_after(AsyncProbe.options(max_concurrency=2).remote())
    ray.get(a.peak_seen.remote(), timeout=T)
    assert ray.get([a.nap.remote(0.1) for _ in range(6)], timeout=T) == ["rested"] * 6
    assert ray.get(a.peak_seen.remote(), timeout=T) == 2


def test_async_actor_max_concurrency_one_is_serial(ray_start_shared, kill_after):
    a = kill_after(AsyncProbe.options(max_concurrency=1).remote())
    ray.get([a.nap.remote(0.02) for _ in range(4)], timeout=T)
    assert ray.get(a.peak_seen.remote(), timeout=T) == 1


def test_async_actor_awaits_refs_of_actors_and_tasks(ray_start_shared, kill_after):
    a = kill_after(AsyncProbe.remote())
    c = kill_after(Counter.remote(7))
    assert ray.get(a.await_actor_call.remote(c), timeout=T) == 7
    assert ray.get(a.await_task.remote(6), timeout=T) == 36
    refs = [square.remote(2), c.value.remote(), ray.put("stored")]
    assert ray.get(a.await_ref_of.remote(refs), timeout=T) == [4, 7, "stored"]


def test_async_actor_keeps_serving_while_a_call_awaits(ray_start_shared, kill_after):
    signal = kill_after(SignalActor.remote())
    a = kill_after(AsyncProbe.remote())
    waiting = [a.wait_for_signal.remote(signal) for _ in range(3)]
    assert ray.get(signal.wait_for_waiters.remote(3), timeout=T) == 3
    # Three calls are suspended in the actor; others still run.
    assert ray.get(a.nap.remote(0), timeout=T) == "rested"
    assert ray.get(a.plain_method.remote(), timeout=T).startswith("sync methods")
    ready, _ = ray.wait(waiting, num_returns=1, timeout=0)
    assert not ready
    ray.get(signal.send.remote(), timeout=T)
    assert ray.get(waiting, timeout=T) == ["signalled"] * 3


def test_async_actor_method_error_does_not_stop_the_loop(ray_start_shared, kill_after):
    @ray.remote
    class Flaky:
        async def fail(self):
            await asyncio.sleep(0)
            raise ValueError("async failure 9")

        async def ok(self):
            return "ok"

    f = kill_after(Flaky.remote())
    with pytest.raises(ValueError, match="async failure 9"):
        ray.get(f.fail.remote(), timeout=T)
    assert ray.get(f.ok.remote(), timeout=T) == "ok"


# ----------------------------------------------------------- threaded actors


def test_threaded_actor_runs_max_concurrency_calls_at_once(ray_start_shared, kill_after):
    a = kill_after(ThreadedProbe.options(max_concurrency=4).remote(4))
    # The barrier opens only when four calls wait in it together.
    indices = ray.get([a.meet.remote() for _ in range(4)], timeout=T)
    assert sorted(indices) == [0, 1, 2, 3]


def test_threaded_actor_never_exceeds_max_concurrency(ray_start_shared, kill_after):
    a = kill_after(ThreadedProbe.options(max_concurrency=3).remote(3))
    idents = ray.get([a.hold.remote(0.1) for _ in range(9)], timeout=T)
    assert ray.get(a.peak_seen.remote(), timeout=T) == 3
    assert len(set(idents)) <= 3


def test_threaded_actor_serves_others_while_calls_block(ray_start_shared, kill_after):
    a = kill_after(ThreadedProbe.options(max_concurrency=3).remote(1))
    blocked = [a.block_until_released.remote() for _ in range(2)]
    # Two threads are blocked; the third releases them.
    assert ray.get(a.release_all.remote(), timeout=T) is True
    assert ray.get(blocked, timeout=T) == [True, True]


def test_serial_actor_does_not_run_calls_concurrently(ray_start_shared, kill_after):
    # Without max_concurrency the same class is serial: two calls never meet
    # in a 2-party barrier; the first times out and breaks it for the second.
    a = kill_after(ThreadedProbe.remote(2))
    refs = [a.meet.remote(0.5) for _ in range(2)]
    for ref in refs:
        with pytest.raises(threading.BrokenBarrierError):
            ray.get(ref, timeout=T)
