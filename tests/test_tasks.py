"""Remote functions: declaring, calling, options, arguments and ObjectRefs."""

from __future__ import annotations

import math
import os
import pickle
import sys
import uuid

import cloudpickle
import numpy as np
import pytest

import actorkit
import actorkit as ray


@ray.remote
def square(x):
    return x * x


@ray.remote
def echo(*args, **kwargs):
    return args, kwargs


@ray.remote
def combine(a, b=10, *, c=100):
    return a + b + c


@ray.remote(num_returns=2, num_cpus=1)
def two_values(x):
    return x, x + 1


@ray.remote
def three_values():
    return "a", "b", "c"


@ray.remote
def no_value():
    return None


@ray.remote
def describe_arg(x):
    """Report what the task received, as seen inside the worker."""
    return type(x).__name__, isinstance(x, actorkit.ObjectRef), x


@ray.remote
def nested_list_arg(items):
    return [isinstance(item, actorkit.ObjectRef) for item in items], ray.get(items)


@ray.remote
def nested_dict_arg(mapping):
    return isinstance(mapping["ref"], actorkit.ObjectRef), ray.get(mapping["ref"])


@ray.remote
def kwarg_value(*, value):
    return isinstance(value, actorkit.ObjectRef), value


@ray.remote
def return_ref(x):
    return ray.put(x * 2)


@ray.remote
def return_task_ref(x):
    return square.remote(x)


@ray.remote
def call_square(x):
    # ``square`` is a remote function this task refers to and calls.
    return ray.get(square.remote(x)) + 1


@ray.remote
def call_given(fn, x):
    # A remote function passed as an argument.
    return ray.get(fn.remote(x))


@ray.remote
def worker_pid():
    return os.getpid()


def make_caller(remote_fn):
    offset = 1000

    @ray.remote
    def caller(x):
        return ray.get(remote_fn.remote(x)) + offset

    return caller


def plain(x):
    return x + 1


def _note_unpickle(key):
    """Runs wherever a ``CountsUnpickles`` is unpickled; counts per process."""
    counts = sys.__dict__.setdefault("_actorkit_test_unpickles", {})
    counts[key] = counts.get(key, 0) + 1
    return CountsUnpickles(key)


class CountsUnpickles:
    def __init__(self, key):
        self.key = key

    def __reduce__(self):
        return _note_unpickle, (self.key,)


def make_counted_function():
    """A remote function whose closure counts how often it is unpickled."""
    marker = CountsUnpickles(uuid.uuid4().hex)

    def counted(i):
        counts = sys.__dict__.get("_actorkit_test_unpickles", {})
        return os.getpid(), counts.get(marker.key, 0)

    return ray.remote(counted)


# --------------------------------------------------------------- declaring


def test_decorator_no_arguments(ray_start_shared):
    ref = square.remote(7)
    assert isinstance(ref, actorkit.ObjectRef)
    assert ray.get(ref) == 49


def test_decorator_with_options_num_returns(ray_start_shared):
    refs = two_values.remote(5)
    assert isinstance(refs, list | tuple)
    assert len(refs) == 2
    assert all(isinstance(r, actorkit.ObjectRef) for r in refs)
    assert ray.get(list(refs)) == [5, 6]


def test_remote_of_existing_function(ray_start_shared):
    remote_plain = ray.remote(plain)
    assert ray.get(remote_plain.remote(41)) == 42
    # The original function is left as it was.
    assert plain(1) == 2


def test_remote_with_options_called_on_function(ray_start_shared):
    remote_plain = ray.remote(num_cpus=1, max_retries=0)(plain)
    assert ray.get(remote_plain.remote(1)) == 2


def test_remote_math_factorial(ray_start_shared):
    factorial = ray.remote(math.factorial)
    assert ray.get(factorial.remote(20)) == math.factorial(20)


def test_remote_numpy_ufunc(ray_start_shared):
    np_add = ray.remote(np.add)
    assert ray.get(np_add.remote(2, 3)) == 5
    result = ray.get(np_add.remote(np.arange(4), 10))
    np.testing.assert_array_equal(result, np.arange(4) + 10)


def test_remote_builtin_len(ray_start_shared):
    remote_len = ray.remote(len)
    assert ray.get(remote_len.remote([1, 2, 3])) == 3
    assert ray.get(remote_len.remote("hello")) == 5


def test_remote_lambda(ray_start_shared):
    cube = ray.remote(lambda x: x**3)
    assert ray.get(cube.remote(3)) == 27


def test_options_num_returns(ray_start_shared):
    refs = three_values.options(num_returns=3).remote()
    assert len(refs) == 3
    assert ray.get(list(refs)) == ["a", "b", "c"]


def test_options_does_not_change_the_function(ray_start_shared):
    three_values.options(num_returns=3)
    ref = three_values.remote()
    assert isinstance(ref, actorkit.ObjectRef)
    assert ray.get(ref) == ("a", "b", "c")


def test_num_returns_zero_returns_none(ray_start_shared):
    assert no_value.options(num_returns=0).remote() is None


def test_num_returns_one_returns_a_ref(ray_start_shared):
    ref = three_values.options(num_returns=1).remote()
    assert isinstance(ref, actorkit.ObjectRef)
    assert ray.get(ref) == ("a", "b", "c")


def test_wrong_number_of_returned_values_is_an_error(ray_start_shared):
    refs = three_values.options(num_returns=2).remote()
    with pytest.raises(ValueError):
        ray.get(list(refs), timeout=30)


def test_unknown_option_is_rejected(ray_start_shared):
    with pytest.raises((ValueError, TypeError), match="not_an_option"):
        square.options(not_an_option=1)
    with pytest.raises((ValueError, TypeError), match="not_an_option"):
        ray.remote(not_an_option=1)(plain)


def test_direct_call_is_type_error(ray_start_shared):
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        square(3)


# --------------------------------------------------------------- arguments


def test_positional_and_keyword_arguments(ray_start_shared):
    assert ray.get(echo.remote(1, "two", three=3)) == ((1, "two"), {"three": 3})
    assert ray.get(combine.remote(1)) == 111
    assert ray.get(combine.remote(1, 2)) == 103
    assert ray.get(combine.remote(1, b=2, c=3)) == 6


def test_wrong_arguments_raise_type_error(ray_start_shared):
    with pytest.raises(TypeError):
        ray.get(square.remote(1, 2, 3), timeout=30)


def test_numpy_argument(ray_start_shared):
    ref = square.remote(np.arange(5))
    np.testing.assert_array_equal(ray.get(ref), np.arange(5) ** 2)


def test_top_level_ref_argument_is_resolved(ray_start_shared):
    ref = ray.put(21)
    assert ray.get(describe_arg.remote(ref)) == ("int", False, 21)
    # A ref produced by another task is resolved too.
    assert ray.get(square.remote(square.remote(3))) == 81


def test_top_level_ref_keyword_argument_is_resolved(ray_start_shared):
    assert ray.get(kwarg_value.remote(value=ray.put("v"))) == (False, "v")


def test_refs_nested_in_a_list_pass_through(ray_start_shared):
    refs = [ray.put(1), square.remote(3)]
    flags, values = ray.get(nested_list_arg.remote(refs))
    assert flags == [True, True]
    assert values == [1, 9]


def test_refs_nested_in_a_dict_pass_through(ray_start_shared):
    assert ray.get(nested_dict_arg.remote({"ref": ray.put("x")})) == (True, "x")


def test_same_ref_passed_twice(ray_start_shared):
    ref = ray.put(4)
    assert ray.get(echo.remote(ref, ref)) == ((4, 4), {})


def test_task_returning_a_put_ref(ray_start_shared):
    inner = ray.get(return_ref.remote(5))
    assert isinstance(inner, actorkit.ObjectRef)
    assert ray.get(inner) == 10


def test_task_returning_a_task_ref(ray_start_shared):
    inner = ray.get(return_task_ref.remote(6))
    assert isinstance(inner, actorkit.ObjectRef)
    assert ray.get(inner) == 36


# ---------------------------------------------------- remote functions as values


def test_task_calls_module_level_remote_function(ray_start_shared):
    assert ray.get(call_square.remote(4)) == 17


def test_task_calls_closed_over_remote_function(ray_start_shared):
    caller = make_caller(square)
    assert ray.get(caller.remote(5)) == 1025


def test_remote_function_passed_as_argument(ray_start_shared):
    assert ray.get(call_given.remote(square, 9)) == 81


def test_remote_function_is_picklable(ray_start_shared):
    restored = cloudpickle.loads(cloudpickle.dumps(square))
    assert ray.get(restored.remote(8)) == 64
    local = ray.remote(lambda x: -x)
    assert ray.get(cloudpickle.loads(cloudpickle.dumps(local)).remote(8)) == -8


# --------------------------------------------------------------- ObjectRef


def test_object_ref_hashable(ray_start_shared):
    a, b = ray.put(1), ray.put(1)
    assert a != b
    assert a == a
    assert len({a, b, a}) == 2
    table = {a: "a", b: "b"}
    assert table[a] == "a" and table[b] == "b"


def test_object_ref_pickle_round_trip(ray_start_shared):
    ref = ray.put({"k": [1, 2, 3]})
    restored = pickle.loads(pickle.dumps(ref))
    assert isinstance(restored, actorkit.ObjectRef)
    assert restored == ref
    assert hash(restored) == hash(ref)
    assert ray.get(restored) == {"k": [1, 2, 3]}


def test_object_ref_repr_shows_hex_id(ray_start_shared):
    ref = ray.put(1)
    hex_id = ref.hex()
    assert isinstance(hex_id, str) and hex_id
    int(hex_id, 16)  # really hexadecimal
    assert hex_id in repr(ref)
    assert ray.put(1).hex() != hex_id


# --------------------------------------------------------------- many tasks


def test_many_tasks_results_in_order(ray_start_shared):
    refs = [square.remote(i) for i in range(200)]
    assert ray.get(refs) == [i * i for i in range(200)]


def test_workers_are_reused(ray_start_shared):
    pids = ray.get([worker_pid.remote() for _ in range(40)])
    assert os.getpid() not in pids
    # 40 tasks on a 4-CPU node do not need 40 processes.
    assert len(set(pids)) < 40


def test_function_is_exported_once_per_worker(ray_start_shared):
    counted = make_counted_function()
    results = ray.get([counted.remote(i) for i in range(60)])
    by_pid = {}
    for pid, count in results:
        by_pid.setdefault(pid, set()).add(count)
    # Each worker unpickled the function once, however many calls it ran.
    assert all(counts == {1} for counts in by_pid.values()), by_pid
