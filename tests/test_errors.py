"""Errors raised in tasks, and the exception hierarchy with its Ray aliases."""

from __future__ import annotations

import asyncio
import threading

import pytest

import actorkit as ray
from actorkit import exceptions


class MyError(Exception):
    pass


class NeedsTwoArgs(Exception):
    """Cannot be rebuilt from ``args``: ``__init__`` takes two required args."""

    def __init__(self, code, detail):
        super().__init__(f"code {code}: {detail}")
        self.code = code
        self.detail = detail


class HoldsALock(Exception):
    """Cannot be pickled at all: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


@ray.remote
def raise_value_error():
    raise ValueError("boom from task")


@ray.remote
def raise_my_error():
    raise MyError("custom failure 17")


@ray.remote
def raise_needs_two_args():
    raise NeedsTwoArgs(42, "answer rejected")


@ray.remote
def raise_holds_a_lock():
    raise HoldsALock("locked failure")


@ray.remote
def raise_key_error():
    return {}["missing-key"]


@ray.remote
def add_one(x):
    return x + 1


@ray.remote
def sum_list(refs):
    return sum(ray.get(refs))


@ray.remote
def get_failing_child():
    return ray.get(raise_value_error.remote())


@ray.remote
def catch_failing_child():
    try:
        ray.get(raise_value_error.remote())
    except ValueError as e:
        return "caught", "boom from task" in str(e)
    return "not caught", None


def cause_of(err):
    return getattr(err, "cause", None) or err.__cause__


# --------------------------------------------------------------- task errors


def test_task_error_is_instance_of_original_class(ray_start_shared):
    with pytest.raises(ValueError) as info:
        ray.get(raise_value_error.remote())
    err = info.value
    assert isinstance(err, exceptions.TaskError)
    assert isinstance(err, exceptions.ActorkitError)
    assert isinstance(err, ValueError)


def test_task_error_caught_as_task_error(ray_start_shared):
    with pytest.raises(exceptions.TaskError):
        ray.get(raise_value_error.remote())


def test_task_error_message_has_remote_traceback(ray_start_shared):
    with pytest.raises(exceptions.TaskError) as info:
        ray.get(raise_value_error.remote())
    message = str(info.value)
    assert "boom from task" in message
    assert "ValueError" in message
    assert "raise_value_error" in message  # the function's name
    assert 'raise ValueError("boom from task")' in message  # the raising line
    assert "Traceback" in message


def test_user_defined_exception_class(ray_start_shared):
    with pytest.raises(MyError) as info:
        ray.get(raise_my_error.remote())
    assert isinstance(info.value, exceptions.TaskError)
    assert "custom failure 17" in str(info.value)


def test_builtin_lookup_error(ray_start_shared):
    with pytest.raises(KeyError) as info:
        ray.get(raise_key_error.remote())
    assert isinstance(info.value, LookupError)
    assert "missing-key" in str(info.value)


def test_original_exception_is_available(ray_start_shared):
    with pytest.raises(exceptions.TaskError) as info:
        ray.get(raise_value_error.remote())
    cause = cause_of(info.value)
    assert type(cause) is ValueError
    assert cause.args == ("boom from task",)


def test_error_in_list_get(ray_start_shared):
    refs = [add_one.remote(1), raise_value_error.remote(), add_one.remote(2)]
    with pytest.raises(ValueError):
        ray.get(refs)
    # The good results are still there.
    assert ray.get([refs[0], refs[2]]) == [2, 3]


def test_get_failed_ref_twice(ray_start_shared):
    ref = raise_value_error.remote()
    for _ in range(2):
        with pytest.raises(ValueError):
            ray.get(ref)


def test_error_propagates_through_dependent_task(ray_start_shared):
    failed = raise_value_error.remote()
    downstream = add_one.remote(failed)
    with pytest.raises(exceptions.TaskError) as info:
        ray.get(downstream)
    assert isinstance(info.value, ValueError)
    assert "boom from task" in str(info.value)


def test_error_propagates_through_chain(ray_start_shared):
    ref = raise_my_error.remote()
    for _ in range(3):
        ref = add_one.remote(ref)
    with pytest.raises(MyError):
        ray.get(ref)


def test_error_from_nested_task_reaches_driver(ray_start_shared):
    with pytest.raises(ValueError) as info:
        ray.get(get_failing_child.remote())
    assert isinstance(info.value, exceptions.TaskError)
    assert "boom from task" in str(info.value)


def test_nested_error_from_ref_in_list(ray_start_shared):
    with pytest.raises(ValueError):
        ray.get(sum_list.remote([add_one.remote(1), raise_value_error.remote()]))


def test_task_can_catch_child_error_by_original_class(ray_start_shared):
    assert ray.get(catch_failing_child.remote()) == ("caught", True)


def test_exception_not_rebuildable_from_args(ray_start_shared):
    with pytest.raises(exceptions.TaskError) as info:
        ray.get(raise_needs_two_args.remote())
    message = str(info.value)
    assert "NeedsTwoArgs" in message
    assert "code 42: answer rejected" in message


def test_unpicklable_exception(ray_start_shared):
    with pytest.raises(exceptions.TaskError) as info:
        ray.get(raise_holds_a_lock.remote())
    message = str(info.value)
    assert "HoldsALock" in message
    assert "locked failure" in message


def test_failed_task_does_not_break_worker_pool(ray_start_shared):
    refs = [raise_value_error.remote() for _ in range(8)]
    for ref in refs:
        with pytest.raises(ValueError):
            ray.get(ref)
    assert ray.get([add_one.remote(i) for i in range(8)]) == list(range(1, 9))


def test_future_of_failed_task(ray_start_shared):
    fut = raise_value_error.remote().future()
    err = fut.exception(timeout=30)
    assert isinstance(err, exceptions.TaskError)
    assert isinstance(err, ValueError)


def test_await_failed_task(ray_start_shared):
    ref = raise_my_error.remote()

    async def main():
        return await ref

    with pytest.raises(MyError):
        asyncio.run(main())


# --------------------------------------------------------------- hierarchy


def test_ray_aliases_are_the_same_objects():
    assert exceptions.RayError is exceptions.ActorkitError
    assert exceptions.RayTaskError is exceptions.TaskError
    assert exceptions.RayActorError is exceptions.ActorDiedError


@pytest.mark.parametrize(
    "name",
    [
        "TaskError",
        "RayTaskError",
        "ActorDiedError",
        "RayActorError",
        "ActorUnavailableError",
        "GetTimeoutError",
        "TaskCancelledError",
        "ObjectLostError",
        "WorkerCrashedError",
    ],
)
def test_exception_exists_and_subclasses_base(name):
    cls = getattr(exceptions, name)
    assert isinstance(cls, type)
    assert issubclass(cls, exceptions.ActorkitError)
    assert issubclass(cls, exceptions.RayError)


def test_base_is_an_exception():
    assert issubclass(exceptions.ActorkitError, Exception)


def test_get_timeout_error_is_timeout_error():
    assert issubclass(exceptions.GetTimeoutError, TimeoutError)
