"""Generator tasks and methods: items as refs while they are made (streaming), or all at once (dynamic)."""

from __future__ import annotations

import asyncio

import pytest
from _actors import SignalActor

import actorkit as ray
from actorkit.exceptions import TaskCancelledError
from actorkit.util.state import list_objects

T = 30


@ray.remote
def numbers(n):
    for i in range(n):
        yield i * 10


@ray.remote
def after_signal(signal):
    yield "first"
    ray.get(signal.wait.remote())
    yield "second"


@ray.remote
def fails_at_second():
    yield "fine"
    raise ValueError("the second item broke")


@ray.remote(num_returns="dynamic")
def dynamic(n):
    yield from range(n)


@ray.remote
class Streamer:
    def items(self, n):
        for i in range(n):
            yield f"item{i}"

    async def async_items(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i


def test_a_generator_function_streams_its_items(ray_start_shared):
    generator = numbers.remote(4)
    assert isinstance(generator, ray.ObjectRefGenerator)
    assert [ray.get(ref, timeout=T) for ref in generator] == [0, 10, 20, 30]
    assert ray.get(generator.completed(), timeout=T) == 4
    with pytest.raises(StopIteration):
        next(generator)


def test_items_arrive_before_the_generator_ends(ray_start_shared, kill_after):
    signal = kill_after(SignalActor.remote())
    generator = after_signal.remote(signal)
    assert ray.get(next(generator), timeout=T) == "first"  # the task still waits for the signal
    ray.get(signal.send.remote(), timeout=T)
    assert ray.get(next(generator), timeout=T) == "second"
    assert list(generator) == []


def test_an_error_is_raised_at_the_failing_item(ray_start_shared):
    generator = fails_at_second.remote()
    assert ray.get(next(generator), timeout=T) == "fine"
    with pytest.raises(ValueError, match="the second item broke"):
        ray.get(next(generator), timeout=T)
    with pytest.raises(StopIteration):
        next(generator)


def test_streaming_actor_methods_sync_and_async(ray_start_shared, kill_after):
    streamer = kill_after(Streamer.remote())
    for _ in range(2):  # the first call goes through the node, the second directly
        assert [ray.get(r, timeout=T) for r in streamer.items.remote(3)] == ["item0", "item1", "item2"]

    async def consume():
        return [await ref async for ref in streamer.async_items.remote(3)]

    assert asyncio.run(consume()) == [0, 1, 2]
    dynamic_refs = ray.get(streamer.items.options(num_returns="dynamic").remote(2), timeout=T)
    assert [ray.get(r, timeout=T) for r in dynamic_refs] == ["item0", "item1"]


def test_dynamic_returns_one_ref_to_all_the_refs(ray_start_shared):
    refs = ray.get(dynamic.remote(3), timeout=T)
    assert isinstance(refs, ray.DynamicObjectRefGenerator) and len(refs) == 3
    assert [ray.get(r, timeout=T) for r in refs] == [0, 1, 2]


def test_cancelling_a_generator_ends_it_with_task_cancelled(ray_start_shared, kill_after):
    signal = kill_after(SignalActor.remote())
    generator = after_signal.remote(signal)
    assert ray.get(next(generator), timeout=T) == "first"
    ray.cancel(generator)
    with pytest.raises(TaskCancelledError):
        ray.get(next(generator), timeout=T)


def test_a_dropped_generator_frees_its_items(ray_start_shared):
    before = len(list_objects(limit=None))
    generator = numbers.remote(20)
    ray.get(generator.completed(), timeout=T)
    first = next(generator)
    assert ray.get(first, timeout=T) == 0
    del generator, first
    ray.get(numbers.remote(0).completed(), timeout=T)  # a round trip after the releases
    assert len(list_objects(limit=None)) <= before + 2


def test_a_consumer_task_lends_its_cpu_while_it_waits_for_items(shutdown_only):
    ray.init(num_cpus=1)

    @ray.remote
    def consume():
        return [ray.get(ref) for ref in numbers.remote(3)]

    # One CPU: the producer runs only because the waiting consumer lent it.
    assert ray.get(consume.remote(), timeout=T) == [0, 10, 20]


def test_a_function_that_does_not_yield_fails_clearly(ray_start_shared):
    @ray.remote(num_returns="streaming")
    def not_a_generator():
        return 1

    with pytest.raises(TypeError, match="must be a generator"):
        ray.get(next(not_a_generator.remote()), timeout=T)


def test_generators_in_local_mode(shutdown_only):
    ray.init(local_mode=True)
    assert [ray.get(r) for r in numbers.remote(3)] == [0, 10, 20]
    assert [ray.get(r) for r in ray.get(dynamic.remote(2))] == [0, 1]


@ray.remote
def yields_two_then_fails():
    yield 0
    yield 1
    raise ValueError("after two")


def test_wait_on_a_generator_is_ready_when_its_next_item_is(ray_start_shared, kill_after):
    signal = kill_after(SignalActor.remote())
    generator = after_signal.remote(signal)
    ready, _ = ray.wait([generator], timeout=T)
    assert ready == [generator]
    assert ray.get(next(generator), timeout=T) == "first"
    ready, not_ready = ray.wait([generator], timeout=0)
    assert ready == [] and not_ready == [generator]  # "second" waits for the signal
    ray.get(signal.send.remote(), timeout=T)
    assert ray.wait([generator], timeout=T)[0] == [generator]
    assert ray.get(next(generator), timeout=T) == "second"
    assert ray.wait([generator], timeout=T)[0] == [generator]  # ended: next() does not block
    with pytest.raises(StopIteration):
        next(generator)


def test_errors_of_static_and_dynamic_generators_land_where_ray_puts_them(ray_start_shared):
    first, second, third, fourth = yields_two_then_fails.options(num_returns=4).remote()
    assert ray.get([first, second], timeout=T) == [0, 1]
    for ref in (third, fourth):
        with pytest.raises(ValueError, match="after two"):
            ray.get(ref, timeout=T)
    assert ray.get(yields_two_then_fails.options(num_returns=2).remote(), timeout=T) == [0, 1]
    refs = list(ray.get(yields_two_then_fails.options(num_returns="dynamic").remote(), timeout=T))
    assert len(refs) == 3 and ray.get(refs[:2], timeout=T) == [0, 1]
    with pytest.raises(ValueError, match="after two"):
        ray.get(refs[2], timeout=T)


def test_a_worker_cancelled_as_it_starts_to_wait_runs_its_next_task(ray_start_shared):
    # The cancellation lands while the task enters get(); half set up, the wait used to
    # leave a thread reading the worker's links, and the worker hung on its next task
    # (about one round in 30 hit that window).
    for _ in range(30):
        signal = SignalActor.remote()
        generator = after_signal.remote(signal)
        assert ray.get(next(generator), timeout=T) == "first"
        ray.cancel(generator)
        with pytest.raises(TaskCancelledError):
            ray.get(next(generator), timeout=T)
        assert ray.get(numbers.remote(2).completed(), timeout=T) == 2
        ray.kill(signal)
