"""actorkit.util.multiprocessing.Pool: a spawn-safe drop-in for multiprocessing.Pool."""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import pickle
import signal
import sys
import textwrap
import multiprocessing.pool
import threading

import numpy as np
import pytest
from _drivers import describe, run_script

import actorkit as ray
from actorkit import runtime
from actorkit.exceptions import ActorDiedError
from actorkit.util import SignalActor
from actorkit.util.multiprocessing import AsyncResult, Pool, TimeoutError

TIMEOUT = 30

# Set by the initializer in each pool process; read by the mapped functions.
_INIT_STATE: object = None


def set_state(value):
    global _INIT_STATE
    _INIT_STATE = value


def read_state(x):
    return (_INIT_STATE, x)


def square(x):
    return x * x


def add(a, b):
    return a + b


def pid(_=None):
    return os.getpid()


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


def wait_for(signal, x):
    ray.get(signal.wait.remote())
    return x


def die(_):
    os._exit(1)


def array_info(arr, offset=0):
    return float(arr.sum()) + offset, bool(arr.flags.writeable)


class Unpicklable(Exception):
    def __init__(self, lock):
        super().__init__("holds a lock")
        self.lock = lock


def raise_unpicklable(_):
    raise Unpicklable(threading.Lock())


@pytest.fixture(scope="module")
def pool(_shared_node):
    p = Pool(2, initializer=set_state, initargs=("ready",))
    yield p
    p.terminate()


def test_map_and_starmap(pool):
    assert pool.map(square, range(20)) == [x * x for x in range(20)]
    assert pool.map(square, range(20), chunksize=3) == [x * x for x in range(20)]
    assert pool.map(square, []) == []
    assert pool.starmap(add, [(1, 2), (3, 4), (5, 6)]) == [3, 7, 11]
    assert pool.map(square, (x for x in range(5))) == [0, 1, 4, 9, 16]


def test_initializer_effects_are_seen(pool):
    assert pool.map(read_state, range(6), chunksize=1) == [("ready", i) for i in range(6)]
    assert pool.apply(read_state, (9,)) == ("ready", 9)


def test_apply_and_apply_async(pool):
    assert pool.apply(add, (1,), {"b": 41}) == 42
    assert pool.apply(pid) != os.getpid()
    result = pool.apply_async(square, (7,))
    assert isinstance(result, AsyncResult)
    assert result.get(timeout=TIMEOUT) == 49
    assert result.ready() and result.successful()


def test_async_callbacks(pool):
    seen = []
    r1 = pool.map_async(square, range(4), callback=seen.append)
    r2 = pool.starmap_async(add, [(1, 1), (2, 2)], callback=seen.append)
    r3 = pool.apply_async(square, (3,), callback=seen.append)
    assert r1.get(TIMEOUT) == [0, 1, 4, 9]
    assert r2.get(TIMEOUT) == [2, 4]
    assert r3.get(TIMEOUT) == 9
    # Callbacks run before the result is marked ready.
    assert sorted(map(str, seen)) == sorted(map(str, [[0, 1, 4, 9], [2, 4], 9]))
    errors = []
    r4 = pool.map_async(fail_on_three, range(5), chunksize=1, callback=seen.append, error_callback=errors.append)
    r4.wait(TIMEOUT)
    assert r4.ready() and not r4.successful()
    assert len(errors) == 1 and isinstance(errors[0], ValueError)
    with pytest.raises(ValueError, match="bad item 3"):
        r4.get()


def test_callbacks_cannot_wait_on_their_pool(pool):
    outcome = []

    def callback(_):
        try:
            pool.map(square, [1])
        except RuntimeError as e:
            outcome.append(str(e))

    pool.map_async(square, [2], callback=callback).get(TIMEOUT)
    assert outcome and "callback" in outcome[0]


def test_async_result_timeout_and_not_ready(pool):
    signal = SignalActor.remote()
    result = pool.apply_async(wait_for, (signal, 5))
    assert not result.ready()
    with pytest.raises(ValueError):
        result.successful()
    with pytest.raises(TimeoutError):
        result.get(timeout=0.05)
    with pytest.raises(multiprocessing.TimeoutError):  # also the standard library's class
        result.get(timeout=0)
    result.wait(0.01)
    ray.get(signal.send.remote())
    assert result.get(timeout=TIMEOUT) == 5
    assert "AsyncResult" in repr(result)


def test_errors_are_the_original_exceptions(pool):
    with pytest.raises(ValueError, match="bad item 3") as info:
        pool.map(fail_on_three, range(10))
    assert type(info.value) is ValueError
    assert "fail_on_three" in str(info.value.__cause__)  # the remote traceback
    assert type(info.value.__cause__) is multiprocessing.pool.RemoteTraceback  # as stdlib code checks
    with pytest.raises(ZeroDivisionError):
        pool.apply(lambda: 1 / 0)
    # An exception that cannot be pickled still reports its type and traceback.
    with pytest.raises(Exception, match="Unpicklable"):
        pool.map(raise_unpicklable, [1])
    # An argument that cannot be pickled fails the call, not the pool.
    with pytest.raises(TypeError):
        pool.map(square, [threading.Lock()])
    assert pool.map(square, [2]) == [4]


def test_imap_in_order_and_unordered(pool):
    assert list(pool.imap(square, range(50))) == [x * x for x in range(50)]
    assert list(pool.imap(square, range(50), chunksize=7)) == [x * x for x in range(50)]
    assert sorted(pool.imap_unordered(square, range(50))) == [x * x for x in range(50)]
    assert list(pool.imap(square, iter([]))) == []
    with pytest.raises(ValueError):
        pool.imap(square, range(3), chunksize=0)


def test_imap_is_lazy_and_stops_when_dropped(pool):
    pulled = itertools.count()

    def endless():
        while True:
            yield next(pulled)

    it = pool.imap(square, endless())
    assert [next(it) for _ in range(5)] == [0, 1, 4, 9, 16]
    del it  # the job stops taking items
    # The pool is still usable and not swamped.
    assert pool.map(square, [3]) == [9]
    assert next(pulled) < 100_000


def test_imap_error_at_its_position(pool):
    it = pool.imap(fail_on_three, range(6), chunksize=2)
    assert [next(it), next(it), next(it)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad item 3"):
        next(it)
    assert list(it) == [4, 5]


def test_imap_iterable_that_raises(pool):
    def items():
        yield 1
        yield 2
        raise KeyError("broken iterable")

    it = pool.imap(square, items())
    assert next(it) == 1
    assert next(it) == 4
    with pytest.raises(KeyError):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_imap_next_timeout(pool):
    signal = SignalActor.remote()
    it = pool.imap(lambda x: wait_for(signal, x), [1, 2])
    with pytest.raises(TimeoutError):
        it.next(timeout=0.05)
    ray.get(signal.send.remote())
    assert [it.next(timeout=TIMEOUT), it.next(timeout=TIMEOUT)] == [1, 2]
    assert "IMapIterator" in repr(it)


def test_lambdas_closures_and_locals(pool):
    k = 10
    assert pool.map(lambda x: x + k, range(3)) == [10, 11, 12]

    def local(x, y=2):
        return x**y

    assert pool.starmap(local, [(2,), (3, 3)]) == [4, 27]


def test_large_arrays_go_through_shared_memory_once(pool):
    big = np.arange(2**18, dtype=np.float64)  # 2 MiB
    client = runtime.current_client()
    puts = client.stats["puts"]
    results = pool.starmap(array_info, [(big, i) for i in range(12)], chunksize=1)
    assert client.stats["puts"] == puts + 1  # one put, shared by all twelve tasks
    expected = float(big.sum())
    # Read-only: the workers map the shared segment instead of unpickling a copy.
    assert results == [(expected + i, False) for i in range(12)]
    small = np.ones(10)  # inline, and read-only too, as in Ray
    assert pool.map(array_info, [small]) == [(10.0, False)]
    assert client.stats["puts"] == puts + 1


def test_progress_bar_forced(pool, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain fallback
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    assert pool.map(square, range(40), progress="force") == [x * x for x in range(40)]
    err = capsys.readouterr().err
    assert "map: 40/40 100%" in err
    assert list(pool.imap(square, range(30), progress="force")) == [x * x for x in range(30)]
    assert "imap: 30/30 100%" in capsys.readouterr().err
    # Off a terminal, progress=True prints a few plain lines.
    assert pool.map(square, range(5), progress=True) == [0, 1, 4, 9, 16]
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines()[-1].startswith("map: 5/5 100%")


def test_not_picklable_and_repr(pool):
    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)
    text = repr(pool)
    assert text.startswith("<actorkit.util.multiprocessing.Pool state=RUN processes=2")


def test_maxtasksperchild_recycles_processes(ray_start_shared):
    with Pool(1, initializer=set_state, initargs=("again",), maxtasksperchild=2) as p:
        pids = p.map(pid, range(6), chunksize=1)
        # Two calls per process, then a fresh process takes over.
        assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]
        assert len(set(pids)) == 3
        # Every replacement ran the initializer too.
        assert p.map(read_state, range(2), chunksize=1) == [("again", 0), ("again", 1)]
        assert "processes_started=" in repr(p)


def test_dead_process_is_replaced(ray_start_shared):
    with Pool(1) as p:
        before = p.apply(pid)
        with pytest.raises(ActorDiedError):
            p.map(die, [1])
        after = p.apply(pid)
        assert after != before
        assert p.map(square, range(3)) == [0, 1, 4]


def test_initializer_failure_raises(ray_start_shared):
    with pytest.raises(ZeroDivisionError):
        Pool(1, initializer=lambda: 1 / 0)


def test_close_join_and_terminate(ray_start_shared):
    p = Pool(2)
    result = p.map_async(square, range(10))
    p.close()
    with pytest.raises(ValueError, match="not running"):
        p.map(square, [1])
    p.join()  # waits for the pending work, then the processes exit
    assert result.get(0) == [x * x for x in range(10)]

    p = Pool(1)
    with pytest.raises(ValueError, match="still running"):
        p.join()
    signal = SignalActor.remote()
    pending = p.apply_async(wait_for, (signal, 1))
    p.terminate()
    p.join()
    with pytest.raises(RuntimeError, match="terminated"):
        pending.get(TIMEOUT)
    assert "state=TERMINATE" in repr(p)
    with pytest.raises(ValueError):
        p.apply(square, (1,))


def test_context_manager_terminates(ray_start_shared):
    with Pool(1) as p:
        assert p.map(square, [4]) == [16]
        actors = [slot.actor for slot in p._core.slots]
    with pytest.raises(ValueError):
        p.map(square, [1])
    # Leaving the block terminated the pool: its processes are gone.
    with pytest.raises(ActorDiedError):
        ray.get(actors[0].pid.remote(), timeout=TIMEOUT)


def test_argument_validation(ray_start_shared):
    with pytest.raises(ValueError):
        Pool(0)
    with pytest.raises(TypeError):
        Pool(1, initializer=5)
    with pytest.raises(ValueError):
        Pool(1, maxtasksperchild=0)


DRIVER = textwrap.dedent(
    """
    import os
    from actorkit.util.multiprocessing import Pool

    counter = 0

    def init(start):
        global counter
        counter = start

    def bump(x):
        global counter
        counter += 1
        return x * 10 + (counter > 100)

    if __name__ == "__main__":
        with Pool(2, initializer=init, initargs=(100,)) as pool:
            print("lambda", pool.map(lambda x: x + 1, range(4)))
            print("main", pool.map(bump, range(4), chunksize=1))
            print("imap", list(pool.imap(bump, range(3))))
            print("pids", len(set(pool.map(lambda _: os.getpid(), range(8), chunksize=1))) >= 1)
        print("done")
    """
)


def test_functions_defined_in_main(tmp_path):
    """Lambdas and __main__ functions work; the initializer's globals are seen in __main__ too."""
    proc = run_script(tmp_path, DRIVER)
    assert proc.returncode == 0, describe(proc)
    lines = proc.stdout.splitlines()
    assert "lambda [1, 2, 3, 4]" in lines, describe(proc)
    assert "main [1, 11, 21, 31]" in lines, describe(proc)
    assert "imap [1, 11, 21]" in lines, describe(proc)
    assert "done" in lines, describe(proc)


def test_pool_after_shutdown_never_starts_a_node(shutdown_only):
    ray.init(num_cpus=2)
    p = Pool(1)
    assert p.map(square, [3]) == [9]
    ray.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        p.map(square, [1])
    p.terminate()
    assert not ray.is_initialized()


def announce_then_wait(started_fifo, signal, x):
    """Tell the test this item runs (a byte into its FIFO), then block until ``signal``."""
    fd = os.open(started_fifo, os.O_WRONLY)
    try:
        os.write(fd, b"s")
    finally:
        os.close(fd)
    ray.get(signal.wait.remote())
    return x


def interrupt_main_once_started(fifo: str, count: int) -> threading.Thread:
    """A thread that sends SIGINT to the main thread once ``count`` items announced they run."""
    reader = os.open(fifo, os.O_RDWR)  # read-write: never EOF between two writers

    def run():
        try:
            got = 0
            while got < count:
                got += len(os.read(reader, count - got))
        finally:
            os.close(reader)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("how", ["map", "starmap", "imap"])
def test_an_interrupted_map_frees_the_pool_at_once(ray_start_shared, tmp_path, how):
    blocker = SignalActor.remote()
    fifo = str(tmp_path / "started")
    os.mkfifo(fifo)
    with Pool(2) as pool:
        other = pool.map_async(square, range(5))  # submitted before: must still complete, right
        interrupter = interrupt_main_once_started(fifo, 2)
        items = [(fifo, blocker, x) for x in range(8)]
        with pytest.raises(KeyboardInterrupt):
            if how == "map":
                pool.map(functools.partial(announce_then_wait, fifo, blocker), range(8), chunksize=1)
            elif how == "starmap":
                pool.starmap(announce_then_wait, items, chunksize=1)
            else:
                list(pool.imap(functools.partial(announce_then_wait, fifo, blocker), range(8), chunksize=1))
        interrupter.join(TIMEOUT)
        # The interrupted items block until `blocker` is sent, which never happens: a map
        # that waited behind them would time out here.
        assert pool.map_async(square, range(6)).get(TIMEOUT) == [0, 1, 4, 9, 16, 25]
        assert other.get(TIMEOUT) == [0, 1, 4, 9, 16]
        # None of the interrupted items runs any more: the FIFO gets no new announcement.
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert pool.map(square, range(3)) == [0, 1, 4]
            assert os.read(reader, 10) == b""
        finally:
            os.close(reader)
    ray.kill(blocker)
