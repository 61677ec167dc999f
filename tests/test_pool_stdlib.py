"""Pool behaves as multiprocessing.Pool where CPython's own tests look.

Each test follows one of ``Lib/test/_test_multiprocessing.py``'s ``_TestPool``
tests (named in its docstring), run against actorkit's Pool.
"""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from multiprocessing.pool import MaybeEncodingError, RemoteTraceback

import pytest
from _drivers import describe, run_python

import actorkit
from actorkit import cluster_utils
from actorkit.exceptions import SerializationError
from actorkit.util.multiprocessing import Pool


class SayWhenError(ValueError):
    pass


def exception_throwing_generator(total, when):
    if when == -1:
        raise SayWhenError("Somebody said when")
    for i in range(total):
        if i == when:
            raise SayWhenError("Somebody said when")
        yield i


def sqr(x):
    return x * x


def identity(x):
    return x


def raise_runtime_error():
    raise RuntimeError(123)  # some comment


def unpicklable_result(_=None):
    return threading.Lock()


class NoPickle:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


class CountedObject:
    n_instances = 0

    def __new__(cls):
        cls.n_instances += 1
        return object.__new__(cls)

    def __del__(self):
        type(self).n_instances -= 1


@pytest.fixture(scope="module")
def pool(_shared_node):
    p = Pool(2)
    yield p
    p.terminate()


def assert_still_works(pool):
    assert pool.map(sqr, range(10)) == [x * x for x in range(10)]
    assert list(pool.imap(sqr, range(5), 2)) == [0, 1, 4, 9, 16]


def test_imap_handle_iterable_exception(pool):
    """test_imap_handle_iterable_exception: the error at the failing chunk's position."""
    it = pool.imap(sqr, exception_throwing_generator(1, -1), 1)
    pytest.raises(SayWhenError, it.__next__)
    it = pool.imap(sqr, exception_throwing_generator(10, 3), 1)
    assert [next(it) for _ in range(3)] == [0, 1, 4]
    pytest.raises(SayWhenError, it.__next__)
    # A chunk size given: the chunk being pulled fails whole, as in multiprocessing.
    it = pool.imap(sqr, exception_throwing_generator(20, 7), 2)
    assert [next(it) for _ in range(6)] == [i * i for i in range(6)]
    pytest.raises(SayWhenError, it.__next__)
    pytest.raises(StopIteration, it.__next__)
    it = pool.imap(sqr, exception_throwing_generator(20, 7), 4)
    assert [next(it) for _ in range(4)] == [i * i for i in range(4)]
    pytest.raises(SayWhenError, it.__next__)
    # The default chunk size adapts and behaves as chunksize=1: the error at its very position.
    it = pool.imap(sqr, exception_throwing_generator(20, 7))
    assert [next(it) for _ in range(7)] == [i * i for i in range(7)]
    pytest.raises(SayWhenError, it.__next__)
    assert_still_works(pool)


def test_imap_unordered_handle_iterable_exception(pool):
    """test_imap_unordered_handle_iterable_exception."""
    for chunksize in (1, 2, None):
        it = pool.imap_unordered(sqr, exception_throwing_generator(10, 3), chunksize)
        expected = [x * x for x in range(10)]
        with pytest.raises(SayWhenError):
            for _ in range(10):
                value = next(it)
                assert value in expected
                expected.remove(value)
    assert_still_works(pool)


def test_map_handle_iterable_exception(pool):
    """test_map_handle_iterable_exception: map (and map_async) raise the iterable's error."""

    class SpecialIterable:
        def __iter__(self):
            return self

        def __next__(self):
            raise SayWhenError

        def __len__(self):
            return 1

    for _ in range(2):
        with pytest.raises(SayWhenError):
            pool.map(sqr, exception_throwing_generator(1, -1), 1)
        with pytest.raises(SayWhenError):
            pool.map(sqr, exception_throwing_generator(10, 3), 1)
        with pytest.raises(SayWhenError):
            pool.map(sqr, SpecialIterable(), 1)
        with pytest.raises(SayWhenError):
            pool.map_async(sqr, exception_throwing_generator(10, 3)).get(30)
    assert_still_works(pool)


def test_unpicklable_argument_raises_the_picklers_error(pool):
    """test_map_unplicklable: the error pickling raised, not a wrapper; the pool goes on."""
    with pytest.raises(RuntimeError, match="cannot pickle") as info:
        pool.map(sqr, [NoPickle()] * 10)
    assert type(info.value) is RuntimeError

    lock = threading.Lock()
    for call in (
        lambda: pool.map(sqr, [1, lock, 3]),
        lambda: pool.starmap(max, [(1, lock)]),
        lambda: pool.apply(sqr, (lock,)),
        lambda: pool.apply_async(identity, (), {"x": lock}).get(30),
        lambda: list(pool.imap(sqr, [lock], 1)),
        lambda: list(pool.imap_unordered(sqr, [lock])),
    ):
        with pytest.raises(TypeError, match="cannot pickle '_thread.lock' object") as info:
            call()
        assert not isinstance(info.value, SerializationError), info.value
        if sys.version_info >= (3, 11):  # actorkit's explanation comes along as a note
            assert any("threading.Lock" in note for note in info.value.__notes__)

    got = []
    done = threading.Event()
    pool.apply_async(identity, (lock,), error_callback=lambda e: (got.append(e), done.set()))
    assert done.wait(30)
    assert type(got[0]) is TypeError
    assert_still_works(pool)


def test_unpicklable_result_is_maybe_encoding_error(pool):
    """test_unpickleable_result: MaybeEncodingError, with the standard message; no process lost."""
    pids_before = set(pool.map(_pid, range(4), 1))
    for _ in range(5):
        errors = []
        called = threading.Event()
        res = pool.apply_async(
            unpicklable_result, error_callback=lambda e, errors=errors, called=called: (errors.append(e), called.set())
        )
        with pytest.raises(MaybeEncodingError) as info:
            res.get(30)
        assert called.wait(30)
        wrapped = errors[0]
        assert wrapped is info.value
        assert wrapped.exc is not None and wrapped.value is not None
        message = str(wrapped)
        assert message.startswith("Error sending result: '") and "'. Reason: '" in message, message
        assert "threading.Lock" in message, message
    with pytest.raises(MaybeEncodingError, match="item 2"):
        pool.map(unpicklable_result_at_two, range(5), 1)
    it = pool.imap(unpicklable_result_at_two, range(4), 1)
    assert [next(it), next(it)] == [0, 1]
    pytest.raises(MaybeEncodingError, it.__next__)
    assert next(it) == 3
    assert_still_works(pool)
    assert set(pool.map(_pid, range(4), 1)) <= pids_before  # the same processes


def unpicklable_result_at_two(x):
    return threading.Lock() if x == 2 else x


def _pid(_):
    import os

    return os.getpid()


def test_traceback(pool, capsys):
    """test_traceback: the original exception, with a RemoteTraceback cause holding the remote frames."""
    with pytest.raises(RuntimeError) as info:
        pool.apply(raise_runtime_error)
    exc = info.value
    assert type(exc) is RuntimeError and exc.args == (123,)
    cause = exc.__cause__
    assert type(cause) is RemoteTraceback
    assert "raise RuntimeError(123)  # some comment" in cause.tb
    try:
        raise exc
    except RuntimeError:
        sys.excepthook(*sys.exc_info())
    assert "raise RuntimeError(123)  # some comment" in capsys.readouterr().err
    # An error of the iterable itself (raised in this process) is not made a remote one.
    with pytest.raises(SayWhenError) as info:
        pool.map(sqr, exception_throwing_generator(1, -1), 1)
    assert type(info.value) is SayWhenError and info.value.__cause__ is None
    with pytest.raises(SayWhenError) as info:
        next(pool.imap(sqr, exception_throwing_generator(1, -1), 1))
    assert info.value.__cause__ is None


@pytest.mark.parametrize("how", ["map", "map_async", "starmap", "imap", "imap_unordered", "apply"])
def test_release_task_refs(pool, how):
    """test_release_task_refs: once a call's results are read, neither arguments nor results stay alive."""
    objs = [CountedObject() for _ in range(10)]
    refs = [weakref.ref(o) for o in objs]
    if how == "map":
        pool.map(identity, objs)
    elif how == "map_async":
        pool.map_async(identity, objs, 3).get(30)
    elif how == "starmap":
        pool.starmap(identity, [(o,) for o in objs])
    elif how == "imap":
        list(pool.imap(identity, objs))
    elif how == "imap_unordered":
        list(pool.imap_unordered(identity, objs, 2))
    else:
        for i in range(len(objs)):
            pool.apply(identity, (objs[i],))
    del objs
    gc.collect()
    assert {r() for r in refs} == {None}
    assert CountedObject.n_instances == 0  # the copies the processes sent back are gone too


def test_pool_of_n_starts_a_node_of_n_cpus(shutdown_only, monkeypatch):
    """As Ray's Pool: Pool(processes=N) with no node running starts one with N CPUs."""
    for name in ("ACTORKIT_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    with Pool(3) as p:
        assert p.map(sqr, [1, 2]) == [1, 4]
        assert actorkit.cluster_resources()["CPU"] == 3


@pytest.mark.parametrize("variable", ["ACTORKIT_ADDRESS", "RAY_ADDRESS"])
def test_pool_joins_the_cluster_named_in_the_environment(shutdown_only, monkeypatch, variable):
    """As Ray's Pool: with ACTORKIT_ADDRESS or RAY_ADDRESS set, Pool() joins that cluster."""
    for name in ("ACTORKIT_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 5})
    try:
        monkeypatch.setenv(variable, cluster.address)
        with Pool(2) as p:
            assert p.map(sqr, [3]) == [9]
            # The cluster's 5 CPUs, not a private node of 2.
            assert actorkit.cluster_resources()["CPU"] == 5
    finally:
        actorkit.shutdown()
        cluster.shutdown()


HELPER_DRIVER = """
import atexit, multiprocessing, os, sys
from actorkit.util.multiprocessing import Pool

LOG = sys.argv[2]

def start_helper():
    # What initializers do: start something of their own (here a Manager, a child process
    # holding the resource tracker's pipe) that their process's exit shuts down.
    global MANAGER
    MANAGER = multiprocessing.get_context("spawn").Manager()
    atexit.register(lambda: open(LOG, "a").write(f"exited {os.getpid()}\\n"))

def pid(_):
    return os.getpid()

if __name__ == "__main__":
    how = sys.argv[1]
    if how == "with":
        with Pool(2, initializer=start_helper) as pool:
            pids = set(pool.map(pid, range(8), chunksize=1))
    else:
        pool = Pool(2, initializer=start_helper)
        pids = set(pool.map(pid, range(8), chunksize=1))
        if how == "close":
            pool.close()
            pool.join()
        else:
            pool.terminate()
    exited = {int(line.split()[1]) for line in open(LOG)}
    print("pool processes exited cleanly:", pids <= exited)
"""


@pytest.mark.parametrize("how", ["close", "terminate", "with"])
def test_pool_processes_exit_as_multiprocessing_workers_do(tmp_path, how):
    """close()/join() and terminate() of idle processes let them exit as multiprocessing workers do.

    Their atexit handlers run, so what an initializer started (a Manager) is
    shut down instead of orphaned: an orphan would hold the driver's output and
    resource tracker open, and whoever waits for the script's output (as this
    test does) would wait until its timeout.
    """
    log = tmp_path / "exits.log"
    log.write_text("")
    (tmp_path / "driver.py").write_text(HELPER_DRIVER)
    proc = run_python(["driver.py", how, str(log)], tmp_path, timeout=30)
    assert proc.returncode == 0, describe(proc)
    assert "pool processes exited cleanly: True" in proc.stdout, describe(proc)


def test_resource_warning(_shared_node):
    """test_resource_warning: a running pool dropped unclosed warns with the standard message."""
    p = Pool(1)
    assert p.map(sqr, [2]) == [4]
    with pytest.warns(ResourceWarning, match="^unclosed running multiprocessing pool"):
        p = None
        gc.collect()
