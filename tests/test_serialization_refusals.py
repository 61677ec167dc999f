"""What cannot move between processes is refused, named in the caller's terms.

dill would copy a ``threading.Lock`` (a copy of a held one deadlocks the task)
and reopen files; actorkit refuses them with a ``TypeError`` that says which
argument, attribute or global holds the culprit and what to pass instead.
"""

from __future__ import annotations

import asyncio
import io
import queue
import socket
import sys
import threading
import time

import numpy as np
import pytest

import actorkit as ray
from actorkit.serialization import SerializationError


@ray.remote
def first(*args, **kwargs):
    return args[0] if args else next(iter(kwargs.values()))


@ray.remote
class Keeper:
    def __init__(self, value=None):
        self.value = value

    def take(self, value):
        return value


class Holder:
    def __init__(self, thing):
        self.state = {"thing": thing}


def _generator():
    yield 1


UNMOVABLE = [
    ("lock", threading.Lock, "threading.Lock"),
    ("rlock", threading.RLock, "threading.RLock"),
    ("condition", threading.Condition, "threading.Condition"),
    ("event", threading.Event, "threading.Event"),
    ("semaphore", threading.Semaphore, "threading.Semaphore"),
    ("file", lambda: open(__file__), "_io.TextIOWrapper"),
    ("binary file", lambda: open(__file__, "rb"), "_io.BufferedReader"),
    ("socket", socket.socket, "socket.socket"),
    ("generator", _generator, "generator"),
    ("thread", lambda: threading.Thread(target=print), "threading.Thread"),
    ("queue", queue.Queue, "queue.Queue"),
    ("simple queue", queue.SimpleQueue, "queue.SimpleQueue"),
    ("asyncio queue", asyncio.Queue, "asyncio.queues.Queue"),
]


def _close(thing):
    if isinstance(thing, (io.IOBase, socket.socket)):
        thing.close()


@pytest.mark.parametrize("name,make,type_name", UNMOVABLE, ids=[u[0] for u in UNMOVABLE])
def test_unmovable_argument_is_refused_naming_the_argument(ray_start_shared, name, make, type_name):
    thing = make()
    try:
        with pytest.raises(TypeError) as info:
            first.remote(1, Holder(thing))
        message = str(info.value)
        assert isinstance(info.value, SerializationError)
        assert "argument 2 of first()" in message, message
        assert ".state['thing']" in message, message
        assert type_name in message, message
    finally:
        _close(thing)


def test_keyword_argument_put_and_actor_calls_are_named(ray_start_shared):
    lock = threading.Lock()
    with pytest.raises(TypeError, match=r"keyword argument 'guard' of first\(\)"):
        first.remote(guard=lock)
    with pytest.raises(TypeError, match=r"the value given to put\(\), at \[1\]"):
        ray.put([1, lock])
    with pytest.raises(TypeError, match=r"argument 1 of Keeper\(\)"):
        Keeper.remote(lock)
    keeper = Keeper.remote()
    with pytest.raises(TypeError, match=r"argument 1 of Keeper\.take\(\)"):
        keeper.take.remote(lock)
    # Nothing was lost: the session and the actor still work.
    assert ray.get(keeper.take.remote(3)) == 3
    ray.kill(keeper)


def test_a_held_lock_is_refused_not_copied(ray_start_shared):
    lock = threading.Lock()
    lock.acquire()
    try:
        with pytest.raises(TypeError, match="threading.Lock"):
            first.remote(lock)
    finally:
        lock.release()


def test_a_function_capturing_a_lock_is_refused_naming_the_global(ray_start_shared):
    guard = threading.Lock()

    def locked_increment(x):
        with guard:
            return x + 1

    with pytest.raises(TypeError, match=r"<closure guard>.*threading\.Lock"):
        ray.remote(locked_increment).remote(1)


def test_a_result_that_cannot_move_names_the_function(ray_start_shared):
    @ray.remote
    def make_lock():
        return {"lock": threading.Lock()}

    with pytest.raises(TypeError, match=r"the value [\w.<>]*make_lock\(\) returned, at \[.lock.\]"):
        ray.get(make_lock.remote())


def test_deeply_nested_value_fails_fast_with_a_short_message(ray_start_shared):
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    started = time.monotonic()
    with pytest.raises(SerializationError) as info:
        ray.put(nested)
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed  # was 98 s; about 0.1 s here
    assert len(str(info.value)) < 1000
    assert "recursion limit" in str(info.value)


def test_failure_analysis_of_a_wide_value_is_bounded(ray_start_shared):
    class Odd:
        def __reduce__(self):
            raise RuntimeError("no")

    wide = [list(range(10)) for _ in range(20_000)] + [Odd()]
    with pytest.raises(SerializationError) as info:
        ray.put(wide)
    assert len(str(info.value)) < 2000


@pytest.mark.parametrize("size", [1, 100, 10_000, 200_000, 2_000_000])
def test_arrays_are_read_only_at_every_size(ray_start_shared, size):
    array = np.arange(size, dtype=np.float64)
    fetched = ray.get(ray.put(array))
    assert not fetched.flags.writeable
    np.testing.assert_array_equal(fetched, array)

    @ray.remote
    def writeable(a):
        return a.flags.writeable

    assert ray.get(writeable.remote(array)) is False
    fortran = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    back = ray.get(ray.put(fortran))
    assert not back.flags.writeable and back.flags.f_contiguous
    np.testing.assert_array_equal(back, fortran)


class CodedError(Exception):
    def __init__(self, code):
        super().__init__(f"failed with code {code}")
        self.code = code
        self.lock = threading.Lock()  # cannot be pickled


class Pair:
    __slots__ = ("left", "right")

    def __init__(self, left, right):
        self.left, self.right = left, right


def test_exception_with_unpicklable_attribute_keeps_its_class_and_fields(ray_start_shared):
    @ray.remote
    def fail():
        raise CodedError(7)

    with pytest.raises(CodedError) as info:
        ray.get(fail.remote())
    assert info.value.code == 7
    assert "failed with code 7" in str(info.value)
    assert isinstance(info.value.__cause__, CodedError)
    assert not hasattr(info.value.__cause__, "lock")


def test_slots_instance_returned_from_a_task_arrives_intact(ray_start_shared):
    @ray.remote
    def swap(p):
        return Pair(p.right, p.left)

    back = ray.get(swap.remote(Pair(1, [2])))
    assert type(back) is Pair and (back.left, back.right) == ([2], 1)
    assert not hasattr(back, "__dict__")


@pytest.mark.skipif(sys.platform != "linux", reason="uses /proc")
def test_refusal_keeps_working_for_registered_serializers(ray_start_shared):
    from actorkit.util import deregister_serializer, register_serializer

    register_serializer(type(threading.Lock()), serializer=lambda lock: None, deserializer=lambda _: threading.Lock())
    try:
        fresh = ray.get(ray.put(threading.Lock()))
        assert fresh.acquire(blocking=False)
    finally:
        deregister_serializer(type(threading.Lock()))


def test_a_refused_first_call_leaves_the_function_usable(ray_start_shared):
    @ray.remote
    def double(x):
        return 2 * x

    with pytest.raises(TypeError, match="argument 1 of"):
        double.remote(threading.Lock())  # fails before the function was ever sent
    assert ray.get(double.remote(21)) == 42
