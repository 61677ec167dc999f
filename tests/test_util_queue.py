"""actorkit.util.queue: Ray's Queue semantics, passed to tasks and actors."""

from __future__ import annotations

import asyncio
import pickle
import queue as stdlib_queue

import pytest

import actorkit as ray
from actorkit.exceptions import ActorDiedError
from actorkit.util.queue import Empty, Full, Queue

TIMEOUT = 30


@ray.remote
def produce(q, items):
    for item in items:
        q.put(item)
    return len(items)


@ray.remote
def drain(q):
    """Take items until the queue is empty (it is filled before this starts)."""
    got = []
    try:
        while True:
            got.append(q.get_nowait())
    except Empty:
        return got


@ray.remote
def get_one(q, timeout=None):
    return q.get(timeout=timeout)


@ray.remote
class Consumer:
    def __init__(self, q):
        self.q = q

    def take(self, n):
        return [self.q.get(timeout=TIMEOUT) for _ in range(n)]


def test_fifo_and_sizes(ray_start_shared):
    q = Queue()
    assert q.empty() and not q.full() and q.qsize() == 0 and len(q) == 0
    for i in range(5):
        q.put(i)
    assert q.qsize() == q.size() == len(q) == 5
    assert [q.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert q.empty()


def test_maxsize_full_and_empty(ray_start_shared):
    q = Queue(maxsize=2)
    q.put_nowait("a")
    q.put("b", block=False)
    assert q.full()
    with pytest.raises(Full):
        q.put_nowait("c")
    with pytest.raises(Full):
        q.put("c", timeout=0.05)
    with pytest.raises(stdlib_queue.Full):  # Full is also the standard library's
        q.put("c", block=False)
    assert q.get_nowait() == "a"
    assert q.get(block=False) == "b"
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.get(timeout=0.05)
    with pytest.raises(stdlib_queue.Empty):
        q.get(block=False)


def test_negative_timeouts_and_bad_arguments(ray_start_shared):
    q = Queue()
    with pytest.raises(ValueError):
        q.put(1, timeout=-1)
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    with pytest.raises(TypeError):
        q.put_nowait_batch(5)
    with pytest.raises(TypeError):
        q.get_nowait_batch("2")
    with pytest.raises(ValueError):
        q.get_nowait_batch(-1)
    with pytest.raises(TypeError):
        Queue(maxsize="3")


def test_batches_are_all_or_nothing(ray_start_shared):
    q = Queue(maxsize=3)
    q.put_nowait_batch([1, 2])
    with pytest.raises(Full):
        q.put_nowait_batch([3, 4])  # would exceed maxsize: nothing is added
    assert q.qsize() == 2
    q.put_nowait_batch(iter([3]))
    with pytest.raises(Empty):
        q.get_nowait_batch(4)  # only 3 there: nothing is taken
    assert q.get_nowait_batch(2) == [1, 2]
    assert q.get_nowait_batch(0) == []
    assert q.get_nowait_batch(1) == [3]


def test_blocked_get_wakes_on_put(ray_start_shared):
    q = Queue()
    ref = get_one.remote(q)
    ready, _ = ray.wait([ref], timeout=0.05)
    assert ready == []
    q.put("hello")
    assert ray.get(ref, timeout=TIMEOUT) == "hello"


def test_blocked_put_wakes_on_get(ray_start_shared):
    q = Queue(maxsize=1)
    q.put(0)
    ref = produce.remote(q, [1])  # blocks: the queue is full
    ready, _ = ray.wait([ref], timeout=0.05)
    assert ready == []
    assert q.get(timeout=TIMEOUT) == 0
    assert ray.get(ref, timeout=TIMEOUT) == 1
    assert q.get(timeout=TIMEOUT) == 1


def test_get_timeout_in_a_task(ray_start_shared):
    q = Queue()
    with pytest.raises(Empty):
        ray.get(get_one.remote(q, 0.05), timeout=TIMEOUT)


def test_queue_passed_to_tasks(ray_start_shared):
    q = Queue()
    produced = ray.get([produce.remote(q, range(i * 10, i * 10 + 10)) for i in range(3)], timeout=TIMEOUT)
    assert produced == [10, 10, 10]
    drained = ray.get([drain.remote(q) for _ in range(2)], timeout=TIMEOUT)
    got = drained[0] + drained[1]
    assert sorted(got) == list(range(30))
    for part in drained:  # each consumer saw the items of each producer in order
        for i in range(3):
            mine = [x for x in part if i * 10 <= x < i * 10 + 10]
            assert mine == sorted(mine)


def test_queue_passed_to_an_actor(ray_start_shared):
    q = Queue()
    consumer = Consumer.remote(q)
    ref = consumer.take.remote(3)
    q.put_nowait_batch(["x", "y", "z"])
    assert ray.get(ref, timeout=TIMEOUT) == ["x", "y", "z"]


def test_pickles_small(ray_start_shared):
    q = Queue()
    q.put_nowait_batch(list(range(1000)))
    assert len(pickle.dumps(q)) < 1000  # a handle, not the items
    assert "Queue maxsize=0 actor=" in repr(q)


def test_async_variants(ray_start_shared):
    q = Queue(maxsize=1)

    async def main():
        await q.put_async(1)
        with pytest.raises(Full):
            await q.put_async(2, block=False)
        with pytest.raises(Full):
            await q.put_async(2, timeout=0.05)
        first = await q.get_async()
        with pytest.raises(Empty):
            await q.get_async(block=False)
        with pytest.raises(Empty):
            await q.get_async(timeout=0.05)
        getter = asyncio.ensure_future(q.get_async(timeout=TIMEOUT))
        await q.put_async(3)
        return first, await getter

    assert asyncio.run(main()) == (1, 3)


def test_shutdown(ray_start_shared):
    q = Queue()
    q.put(1)
    q.shutdown()
    assert "shut down" in repr(q)
    with pytest.raises(RuntimeError, match="shut down"):
        q.put(2)
    with pytest.raises(RuntimeError, match="shut down"):
        q.get_nowait()
    q.shutdown()  # twice is fine


def test_shutdown_fails_other_handles(ray_start_shared):
    q = Queue()
    other = pickle.loads(pickle.dumps(q))
    blocked = get_one.remote(q)
    q.shutdown(grace_period_s=5)
    with pytest.raises(ActorDiedError):
        other.get(timeout=1)
    with pytest.raises(ActorDiedError):
        ray.get(blocked, timeout=TIMEOUT)


def test_force_shutdown(ray_start_shared):
    q = Queue()
    other = pickle.loads(pickle.dumps(q))
    q.shutdown(force=True)
    with pytest.raises(ActorDiedError):
        other.qsize()
