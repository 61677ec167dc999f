"""Executor behaves as ``ProcessPoolExecutor`` where the standard library's own tests look.

The crash cases are those of CPython's ``test_concurrent_futures`` deadlock
tests: what breaks the pool (``BrokenProcessPool``) and what is only the
call's error, wherever the fault happens (pickling or unpickling a call or
its result, the call itself).
"""

from __future__ import annotations

import concurrent.futures as cf
import faulthandler
import gc
import sys
import textwrap
import threading
import weakref
from concurrent.futures.process import BrokenProcessPool
from pickle import PicklingError, UnpicklingError

import pytest
from _drivers import describe, run_script

from actorkit.util.futures import Executor

TIMEOUT = 60


def _crash(*_):
    faulthandler.disable()
    faulthandler._sigsegv()


def _exit(*_):
    sys.exit()


def _raise_error(kind):
    raise kind("raised on purpose")


def _raise_unpickling_error():
    raise UnpicklingError("error at unpickle")


def _return_instance(cls):
    return cls()


class CrashAtPickle:
    def __reduce__(self):
        _crash()


class CrashAtUnpickle:
    def __reduce__(self):
        return _crash, ()


class ExitAtPickle:
    def __reduce__(self):
        sys.exit()


class ExitAtUnpickle:
    def __reduce__(self):
        return sys.exit, ()


class ErrorAtPickle:
    def __reduce__(self):
        raise PicklingError("error at pickle")


class ErrorAtUnpickle:
    def __reduce__(self):
        return _raise_unpickling_error, ()


CRASH_CASES = [
    (id, (ErrorAtPickle(),), PicklingError, "error at task pickle"),
    (id, (ExitAtUnpickle(),), BrokenProcessPool, "exit at task unpickle"),
    (id, (ErrorAtUnpickle(),), BrokenProcessPool, "error at task unpickle"),
    (id, (CrashAtUnpickle(),), BrokenProcessPool, "crash at task unpickle"),
    (_crash, (), BrokenProcessPool, "crash during func execution on worker"),
    (_exit, (), SystemExit, "exit during func execution on worker"),
    (_raise_error, (RuntimeError,), RuntimeError, "error during func execution on worker"),
    (_return_instance, (CrashAtPickle,), BrokenProcessPool, "crash during result pickle on worker"),
    (_return_instance, (ExitAtPickle,), SystemExit, "exit during result pickle on worker"),
    (_return_instance, (ErrorAtPickle,), PicklingError, "error during result pickle on worker"),
    (_return_instance, (ErrorAtUnpickle,), BrokenProcessPool, "error during result unpickle in result_handler"),
    (_return_instance, (ExitAtUnpickle,), BrokenProcessPool, "exit during result unpickle in result_handler"),
]


def square(x):
    return x * x


@pytest.mark.parametrize("func,args,error,name", CRASH_CASES, ids=[c[3] for c in CRASH_CASES])
def test_faults_break_the_pool_as_the_stdlib_does(ray_start_shared, func, args, error, name):
    executor = Executor(max_workers=2)
    try:
        future = executor.submit(func, *args)
        with pytest.raises(error):
            future.result(TIMEOUT)
        if error is BrokenProcessPool:
            with pytest.raises(BrokenProcessPool):
                executor.submit(square, 2)
        else:
            assert executor.submit(square, 3).result(TIMEOUT) == 9
    finally:
        executor.shutdown(wait=True)


def test_a_crash_fails_the_queued_calls_too(ray_start_shared):
    executor = Executor(max_workers=1)
    try:
        crashed = executor.submit(_crash)
        queued = [executor.submit(square, i) for i in range(3)]
        for future in [crashed, *queued]:
            with pytest.raises(BrokenProcessPool, match="not usable anymore"):
                future.result(TIMEOUT)
    finally:
        executor.shutdown(wait=True)


def capture(*args, **kwargs):
    return args, kwargs


def test_submit_passes_self_and_fn_keywords_through(ray_start_shared):
    with Executor(max_workers=1) as executor:
        assert executor.submit(capture, 1, self=2, fn=3).result(TIMEOUT) == ((1,), {"self": 2, "fn": 3})
        with pytest.raises(TypeError):
            executor.submit(fn=capture)  # positional only, as in the stdlib


class Owner:
    def method(self):
        return 1


def test_no_stale_references_to_submitted_callables(ray_start_shared):
    with Executor(max_workers=1) as executor:
        owner = Owner()
        collected = threading.Event()
        ref = weakref.ref(owner, lambda _: collected.set())
        future = executor.submit(owner.method)
        del owner
        assert future.result(TIMEOUT) == 1
        gc.collect()
        assert collected.wait(TIMEOUT), "the executor kept the bound method's object alive"
        assert ref() is None

        def local(x):
            return x + 1

        local_ref = weakref.ref(local)
        assert executor.submit(local, 1).result(TIMEOUT) == 2
        del local
        gc.collect()
        assert local_ref() is None


def test_map_without_chunksize_raises_at_the_failing_item(ray_start_shared):
    def maybe_fail(x):
        if x == 57:
            raise ValueError("fifty-seven")
        return x

    with Executor(max_workers=2) as executor:
        results = executor.map(maybe_fail, range(200))
        seen = []
        with pytest.raises(ValueError, match="fifty-seven") as info:
            for value in results:
                seen.append(value)
        assert seen == list(range(57))
        assert "maybe_fail" in str(info.value.__cause__)  # the remote traceback
        assert list(executor.map(square, range(1000))) == [x * x for x in range(1000)]


def _announce_then_wait(started, release):
    import actorkit

    actorkit.get(started.send.remote())
    actorkit.get(release.wait.remote())
    return "ran"


def test_shutdown_cancel_futures_cancels_only_calls_not_started(ray_start_shared):
    import actorkit
    from actorkit.util import SignalActor

    started, release = SignalActor.remote(), SignalActor.remote()
    executor = Executor(max_workers=1)
    running = executor.submit(_announce_then_wait, started, release)
    actorkit.get(started.wait.remote(), timeout=TIMEOUT)
    queued = [executor.submit(square, i) for i in range(3)]
    executor.shutdown(wait=False, cancel_futures=True)
    done, _ = cf.wait(queued, timeout=TIMEOUT)
    assert len(done) == 3 and all(f.cancelled() for f in queued)
    assert not running.cancelled() and not running.done()
    actorkit.get(release.send.remote())
    assert running.result(TIMEOUT) == "ran"
    executor.shutdown(wait=True)
    for actor in (started, release):
        actorkit.kill(actor)


def test_work_submitted_before_exit_completes_and_atexit_submits_fail(tmp_path):
    marker = tmp_path / "done.txt"
    source = textwrap.dedent(
        f"""
        import atexit
        from actorkit.util.futures import Executor

        def write(path):
            import time
            time.sleep(0.5)
            with open(path, "w") as f:
                f.write("written")

        executor = Executor(max_workers=1)

        def late():
            try:
                executor.submit(print, "never")
            except RuntimeError as e:
                print("atexit:", e)

        atexit.register(late)
        executor.submit(write, {str(marker)!r})
        print("exiting")
        """
    )
    proc = run_script(tmp_path, source)
    assert proc.returncode == 0, describe(proc)
    assert marker.read_text() == "written", describe(proc)
    assert "atexit: cannot schedule new futures after interpreter shutdown" in proc.stdout, describe(proc)


def test_remote_traceback_is_the_stdlib_class(ray_start_shared):
    from concurrent.futures.process import _RemoteTraceback

    with Executor(max_workers=1) as executor:
        future = executor.submit(_raise_error, ValueError)
        with pytest.raises(ValueError) as info:
            future.result(TIMEOUT)
        cause = info.value.__cause__
        assert type(cause) is _RemoteTraceback
        assert "_raise_error" in cause.tb and 'raise kind("raised on purpose")' in cause.tb
