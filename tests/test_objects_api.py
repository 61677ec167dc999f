"""get / put / wait, ObjectRef.future() and ``await ref``.

Tasks that must stay unfinished for a while block on a gate (a FIFO, see
``_gates.py``) which the test releases; nothing here sleeps to wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import numpy as np
import pytest
from _gates import Gates

import actorkit
import actorkit as ray
from actorkit import exceptions


@ray.remote
def identity(x):
    return x


@ray.remote
def wait_for_gate(path):
    with open(path) as f:
        return f.read()


@ray.remote
def fail():
    raise ValueError("failed on purpose")


@pytest.fixture
def gates(tmp_path):
    made = Gates(tmp_path)
    yield made
    made.release_all()


# --------------------------------------------------------------- put / get


@pytest.mark.parametrize(
    "value",
    [0, -1.5, "text", b"bytes", None, True, [1, [2, 3]], {"a": (1, 2)}, {1, 2}],
    ids=repr,
)
def test_put_then_get_returns_equal_value(ray_start_shared, value):
    ref = ray.put(value)
    assert isinstance(ref, actorkit.ObjectRef)
    assert ray.get(ref) == value


def test_put_get_numpy_array(ray_start_shared):
    array = np.arange(100_000, dtype=np.float64).reshape(100, 1000)
    out = ray.get(ray.put(array))
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_put_of_object_ref_is_type_error(ray_start_shared):
    with pytest.raises(TypeError):
        ray.put(ray.put(1))


def test_get_single_ref(ray_start_shared):
    assert ray.get(identity.remote("x")) == "x"


def test_get_list_of_refs_keeps_order(ray_start_shared):
    refs = [identity.remote(i) for i in range(10)] + [ray.put("last")]
    assert ray.get(refs) == list(range(10)) + ["last"]


def test_get_empty_list(ray_start_shared):
    assert ray.get([]) == []


def test_get_same_ref_twice_in_list(ray_start_shared):
    ref = ray.put(3)
    assert ray.get([ref, ref]) == [3, 3]


def test_get_of_non_ref_is_an_error(ray_start_shared):
    with pytest.raises((TypeError, ValueError)):
        ray.get(1)


def test_get_timeout_raises_get_timeout_error(ray_start_shared, gates):
    gate = gates.new()
    ref = wait_for_gate.remote(gate.path)
    start = time.monotonic()
    with pytest.raises(exceptions.GetTimeoutError) as info:
        ray.get(ref, timeout=0.2)
    elapsed = time.monotonic() - start
    assert isinstance(info.value, TimeoutError)
    assert 0.15 <= elapsed < 3, elapsed
    # The ref is still good once the task can finish.
    gate.release("done")
    assert ray.get(ref, timeout=30) == "done"


def test_get_timeout_is_also_builtin_timeout_error(ray_start_shared, gates):
    ref = wait_for_gate.remote(gates.new().path)
    with pytest.raises(TimeoutError):
        ray.get(ref, timeout=0.1)


def test_get_list_with_ready_and_unready_refs(ray_start_shared, gates):
    gate = gates.new()
    ready = ray.put("ready")
    pending = wait_for_gate.remote(gate.path)
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get([ready, pending], timeout=0.2)
    gate.release("later")
    assert ray.get([ready, pending], timeout=30) == ["ready", "later"]


def test_get_with_timeout_returns_ready_value(ray_start_shared):
    ref = identity.remote(5)
    assert ray.get(ref, timeout=30) == 5
    assert ray.get(ref, timeout=0) == 5


# --------------------------------------------------------------- wait


def test_wait_default_returns_one_ready(ray_start_shared):
    refs = [identity.remote(i) for i in range(4)]
    ready, not_ready = ray.wait(refs)
    assert len(ready) == 1
    assert len(not_ready) == 3
    assert set(ready) | set(not_ready) == set(refs)


def test_wait_num_returns_k(ray_start_shared, gates):
    blocked = [wait_for_gate.remote(gates.new().path) for _ in range(2)]
    quick = [identity.remote(i) for i in range(3)]
    refs = [blocked[0], quick[0], blocked[1], quick[1], quick[2]]
    ready, not_ready = ray.wait(refs, num_returns=3, timeout=None)
    assert ready == quick  # exactly the finished ones, in input order
    assert not_ready == blocked


def test_wait_preserves_input_order(ray_start_shared):
    refs = [ray.put(i) for i in range(6)]
    ready, not_ready = ray.wait(refs, num_returns=4)
    assert len(ready) == 4 and len(not_ready) == 2
    # Both lists are subsequences of the input, together a partition of it.
    assert sorted(ready + not_ready, key=refs.index) == refs
    assert ready == sorted(ready, key=refs.index)
    assert not_ready == sorted(not_ready, key=refs.index)


def test_wait_all(ray_start_shared):
    refs = [identity.remote(i) for i in range(8)]
    ready, not_ready = ray.wait(refs, num_returns=len(refs), fetch_local=True)
    assert ready == refs
    assert not_ready == []


def test_wait_timeout_zero_returns_immediately(ray_start_shared, gates):
    done = ray.put("done")
    pending = wait_for_gate.remote(gates.new().path)
    start = time.monotonic()
    ready, not_ready = ray.wait([pending, done], num_returns=2, timeout=0)
    assert time.monotonic() - start < 1
    assert ready == [done]
    assert not_ready == [pending]


def test_wait_timeout_returns_fewer_than_requested(ray_start_shared, gates):
    pending = wait_for_gate.remote(gates.new().path)
    start = time.monotonic()
    ready, not_ready = ray.wait([pending], num_returns=1, timeout=0.2)
    elapsed = time.monotonic() - start
    assert ready == [] and not_ready == [pending]
    assert 0.15 <= elapsed < 3, elapsed


def test_wait_returns_when_gate_opens(ray_start_shared, gates):
    gate = gates.new()
    pending = wait_for_gate.remote(gate.path)
    ready, _ = ray.wait([pending], timeout=0)
    assert ready == []
    gate.release()
    ready, not_ready = ray.wait([pending], timeout=30)
    assert ready == [pending] and not_ready == []


def test_wait_failed_task_counts_as_ready(ray_start_shared):
    ref = fail.remote()
    ready, not_ready = ray.wait([ref], timeout=30)
    assert ready == [ref] and not_ready == []


def test_wait_empty_list(ray_start_shared):
    assert ray.wait([]) == ([], [])


def test_wait_duplicates_is_value_error(ray_start_shared):
    ref = ray.put(1)
    with pytest.raises(ValueError):
        ray.wait([ref, ref])


def test_wait_num_returns_greater_than_len_is_value_error(ray_start_shared):
    refs = [ray.put(1), ray.put(2)]
    with pytest.raises(ValueError):
        ray.wait(refs, num_returns=3)


def test_wait_num_returns_zero_is_value_error(ray_start_shared):
    with pytest.raises(ValueError):
        ray.wait([ray.put(1)], num_returns=0)


def test_wait_negative_timeout_is_value_error(ray_start_shared):
    with pytest.raises(ValueError):
        ray.wait([ray.put(1)], timeout=-1)


def test_wait_on_single_ref_is_type_error(ray_start_shared):
    with pytest.raises(TypeError):
        ray.wait(ray.put(1))


def test_wait_on_tuple_is_type_error(ray_start_shared):
    with pytest.raises(TypeError):
        ray.wait((ray.put(1),))


def test_wait_on_list_of_non_refs_is_type_error(ray_start_shared):
    with pytest.raises(TypeError):
        ray.wait([1, 2])


# --------------------------------------------------------------- futures


def test_future_gives_value(ray_start_shared):
    fut = identity.remote({"v": 1}).future()
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=30) == {"v": 1}


def test_future_completes_when_task_finishes(ray_start_shared, gates):
    gate = gates.new()
    fut = wait_for_gate.remote(gate.path).future()
    with pytest.raises(concurrent.futures.TimeoutError):
        fut.result(timeout=0.1)
    assert not fut.done()
    gate.release("released")
    assert fut.result(timeout=30) == "released"


def test_future_of_put(ray_start_shared):
    assert ray.put(7).future().result(timeout=30) == 7


def test_await_ref(ray_start_shared):
    ref = identity.remote(11)

    async def main():
        return await ref

    assert asyncio.run(main()) == 11


def test_await_gather(ray_start_shared):
    refs = [identity.remote(i) for i in range(5)]

    async def main():
        return await asyncio.gather(*refs)

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


@pytest.mark.timeout(30)
def test_await_pending_ref_does_not_block_event_loop(ray_start_shared, gates):
    gate = gates.new()
    ref = wait_for_gate.remote(gate.path)

    async def main():
        # A pending ref: the loop must stay free, so wait_for can time out.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(_await(ref), timeout=0.2)
        # Giving up on one await does not spoil the ref.
        await asyncio.get_running_loop().run_in_executor(None, gate.release, "async")
        return await asyncio.wait_for(_await(ref), timeout=30)

    assert asyncio.run(main()) == "async"


async def _await(ref):
    return await ref
