"""actorkit.util.futures.Executor: a concurrent.futures.Executor on actorkit tasks."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import os
import threading
import weakref

import pytest

import actorkit as ray
from actorkit.util import SignalActor
from actorkit.util.futures import Executor

TIMEOUT = 30

_STATE: object = None


def set_state(value):
    global _STATE
    _STATE = value


def read_state(x):
    return (_STATE, x)


def square(x):
    return x * x


def add(a, b=0):
    return a + b


def fail(message):
    raise ValueError(message)


def wait_for(signal, x):
    ray.get(signal.wait.remote())
    return x


def test_submit_and_result(ray_start_shared):
    with Executor(max_workers=2) as ex:
        f = ex.submit(add, 1, b=2)
        assert f.result(timeout=TIMEOUT) == 3
        assert f.done() and not f.cancelled()
        assert ex.submit(os.getpid).result(TIMEOUT) != os.getpid()
        assert ex.submit(lambda: "lambda").result(TIMEOUT) == "lambda"


def test_map_in_order(ray_start_shared):
    with Executor(max_workers=3) as ex:
        assert list(ex.map(square, range(10))) == [x * x for x in range(10)]
        assert list(ex.map(add, range(5), range(5))) == [0, 2, 4, 6, 8]
        assert list(ex.map(square, range(10), chunksize=4)) == [x * x for x in range(10)]
        assert list(ex.map(square, [])) == []
        with pytest.raises(ValueError):
            ex.map(square, range(3), chunksize=0)


def test_map_timeout(ray_start_shared):
    signal = SignalActor.remote()
    with Executor(max_workers=2) as ex:
        results = ex.map(wait_for, [signal, signal], [1, 2], timeout=0.05)
        with pytest.raises(TimeoutError):
            next(results)
        ray.get(signal.send.remote())


def test_exceptions_are_the_original(ray_start_shared):
    with Executor(max_workers=2) as ex:
        f = ex.submit(fail, "boom")
        with pytest.raises(ValueError, match="boom") as info:
            f.result(TIMEOUT)
        assert type(info.value) is ValueError
        assert "fail" in str(info.value.__cause__)  # the remote traceback
        assert isinstance(f.exception(), ValueError)
        # A call whose arguments cannot be pickled fails its future only.
        bad = ex.submit(square, threading.Lock())
        with pytest.raises(TypeError):
            bad.result(TIMEOUT)
        assert ex.submit(square, 3).result(TIMEOUT) == 9


def test_with_concurrent_futures_helpers(ray_start_shared):
    with Executor(max_workers=4) as ex:
        futures = {ex.submit(square, i): i for i in range(12)}
        seen = {futures[f]: f.result() for f in cf.as_completed(futures, timeout=TIMEOUT)}
        assert seen == {i: i * i for i in range(12)}
        done, not_done = cf.wait(list(futures), timeout=TIMEOUT, return_when=cf.ALL_COMPLETED)
        assert len(done) == 12 and not not_done

        signal = SignalActor.remote()
        slow = ex.submit(wait_for, signal, "slow")
        fast = ex.submit(square, 5)
        done, not_done = cf.wait([slow, fast], timeout=TIMEOUT, return_when=cf.FIRST_COMPLETED)
        assert fast in done and slow in not_done
        ray.get(signal.send.remote())
        assert slow.result(TIMEOUT) == "slow"


def test_max_workers_limits_running_calls(ray_start_shared):
    signal = SignalActor.remote()
    ex = Executor(max_workers=2)
    futures = [ex.submit(wait_for, signal, i) for i in range(5)]
    while ray.get(signal.cur_num_waiters.remote()) < 2:
        cf.wait(futures, timeout=0.01)
    # Two are running; the rest wait in the executor and can still be cancelled.
    assert [f.running() for f in futures[:2]] == [True, True]
    assert not any(f.running() or f.done() for f in futures[2:])
    assert futures[4].cancel()
    assert not futures[0].cancel()  # running calls cannot be cancelled
    ray.get(signal.send.remote())
    assert [f.result(TIMEOUT) for f in futures[:4]] == [0, 1, 2, 3]
    assert futures[4].cancelled()
    ex.shutdown()
    assert "max_workers=2" in repr(ex)


def test_shutdown_cancel_futures(ray_start_shared):
    signal = SignalActor.remote()
    ex = Executor(max_workers=1)
    running = ex.submit(wait_for, signal, "ran")
    queued = [ex.submit(square, i) for i in range(3)]
    while ray.get(signal.cur_num_waiters.remote()) < 1:
        cf.wait([running], timeout=0.01)
    ex.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)
    ray.get(signal.send.remote())
    assert running.result(TIMEOUT) == "ran"
    cf.wait(queued, timeout=TIMEOUT)
    assert all(f.cancelled() for f in queued)
    ex.shutdown(wait=True)
    assert "shut down" in repr(ex)


def test_shutdown_waits_for_pending(ray_start_shared):
    ex = Executor(max_workers=2)
    futures = [ex.submit(square, i) for i in range(6)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [x * x for x in range(6)]


def test_initializer_runs_in_each_worker(ray_start_shared):
    with Executor(max_workers=2, initializer=set_state, initargs=("init",)) as ex:
        assert list(ex.map(read_state, range(6))) == [("init", i) for i in range(6)]
    with Executor(max_workers=2) as ex:
        # Another executor's initializer is not this one's: its state is not touched here.
        assert ex.submit(add, 2, 2).result(TIMEOUT) == 4


def test_done_callbacks(ray_start_shared):
    seen = []
    event = threading.Event()
    with Executor(max_workers=1) as ex:
        f = ex.submit(square, 6)
        f.add_done_callback(lambda fut: (seen.append(fut.result()), event.set()))
        assert event.wait(TIMEOUT)
    assert seen == [36]


def test_argument_validation(ray_start_shared):
    with pytest.raises(ValueError):
        Executor(max_workers=0)
    with pytest.raises(TypeError):
        Executor(initializer="nope")
    with pytest.raises(TypeError):
        Executor().submit(5)


def test_idle_executor_holds_no_thread(ray_start_shared):
    ex = Executor(max_workers=1)
    f = ex.submit(square, 2)
    thread = ex._thread
    assert f.result(TIMEOUT) == 4
    thread.join(TIMEOUT)  # the dispatcher ends once idle ...
    assert not thread.is_alive()
    f = ex.submit(square, 3)  # ... and a new one starts on demand
    thread = ex._thread
    assert f.result(TIMEOUT) == 9
    if thread is not None:
        thread.join(TIMEOUT)
    ref = weakref.ref(ex)
    del ex, f
    gc.collect()
    # An executor never shut down can be collected once its work is done.
    assert ref() is None


def test_max_tasks_per_child(ray_start_shared):
    with Executor(max_workers=1, max_tasks_per_child=1) as ex:
        pids = [ex.submit(os.getpid).result(TIMEOUT) for _ in range(3)]
    assert len(set(pids)) == 3  # each worker process ran one call, then was replaced
    with pytest.raises(ValueError):
        Executor(max_tasks_per_child=0)
