"""``Executor``: a ``concurrent.futures.Executor`` whose work runs as actorkit tasks.

A drop-in for ``ProcessPoolExecutor`` that never forks and ships functions by
value (lambdas, closures and functions defined in ``__main__`` work)::

    from concurrent.futures import as_completed
    from actorkit.util.futures import Executor

    with Executor(max_workers=4) as ex:
        futures = {ex.submit(process, item): item for item in items}
        for f in as_completed(futures):
            print(futures[f], f.result())

How it works
------------
Each ``submit`` makes a ``concurrent.futures.Future`` and queues the call in
the driver.  A dispatcher thread (started on the first ``submit``) keeps at
most ``max_workers`` calls running as tasks; when one finishes, its future is
completed (callbacks run in that thread, as in ``ProcessPoolExecutor``) and
the next queued call is submitted.  A call still queued can be cancelled
(``Future.cancel()`` or ``shutdown(cancel_futures=True)``); a running one
cannot, as in the standard library.

Each module-level function becomes one remote function, exported to the
workers once, whatever the number of calls; other callables (lambdas,
closures, callable objects) travel with each call's arguments, so the
executor keeps nothing alive once a call is done (a bound method is sent as
its function and its object).  Arguments and results are pickled to bytes on
each side, as the standard library pickles them, and faults land where they
land there:

* the call raises, or pickling its arguments or its result fails: that
  future's error (``sys.exit()`` in the call is a ``SystemExit`` there);
* a worker dies (a segfault, ``os._exit``), or a call's arguments or result
  cannot be unpickled: the executor is broken, every pending and running
  future fails with ``BrokenProcessPool`` and later submits raise it.

Errors are raised as ``ProcessPoolExecutor`` raises them: the original
exception, with the remote traceback chained as ``__cause__``.  Tasks are not
retried (``max_retries=0``, as a process pool does not re-run work); change
that and other task options with ``ray_remote_args``.

``map()`` sends the calls in chunks (by default a few per worker, at most 64
calls a task), and raises a call's error at that call.  When the interpreter
exits, calls already submitted run to the end first, and ``submit()`` from
then on (from an ``atexit`` handler, say) raises ``RuntimeError``, as in the
standard library.

``initializer(*initargs)`` runs once in each worker process before the first
call of this executor there.  Task workers are shared with other work, so
``max_tasks_per_child`` is passed to the tasks as ``max_calls``.
``mp_context`` is accepted and ignored (actorkit only spawns).
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import pickle
import queue as _queue
import threading
import time
import traceback
import types
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..api import cancel, remote
from ..exceptions import WorkerCrashedError
from ..serialization import SerializationError, dumps, picklable_copy
from ._common import (
    ExecutorRemoteTraceback,
    cluster_cpus,
    describe_callable,
    ensure_initialized,
    unwrap_task_error,
    with_remote_traceback,
)
from ._namespace import bind_to_process_namespace

__all__ = ["Executor"]

_REMOTE_CACHE = 128  # remote functions kept per executor (least recently used are dropped)
_MAX_AUTO_CHUNK = 64  # calls per task when map() chooses the chunk size

# Per worker process: the executors whose initializer already ran here.
_initialized: set[bytes] = set()

# Set when the interpreter starts to exit, as concurrent.futures.process does.
_global_shutdown = False
_live_executors: weakref.WeakSet[Executor] = weakref.WeakSet()


def _python_exit() -> None:
    # Runs before non-daemon threads are joined and before atexit handlers (the
    # node's shutdown among them): work submitted just before the exit finishes.
    global _global_shutdown
    _global_shutdown = True
    for executor in list(_live_executors):
        executor._wait_for_dispatcher()


threading._register_atexit(_python_exit)  # type: ignore[attr-defined]


class _BrokenCall(Exception):
    """A call's arguments could not be unpickled in the worker: the pool is broken, as in the stdlib."""


class _Exit(Exception):
    """The call raised SystemExit; carried as an ordinary error so the worker carries on."""

    def __init__(self, code: Any) -> None:
        super().__init__(code)
        self.code = code


class _Call:
    """What a task runs: the user's call, after this executor's initializer (once per process).

    Arguments and results cross as bytes pickled here, as the standard library
    pickles them: an error while unpickling the arguments breaks the pool, an
    error while pickling the result is that call's error, and ``sys.exit()``
    in the call is its error, not the worker's end.  With ``fn`` None the
    callable travels with each call's arguments (one not worth caching).
    """

    def __init__(
        self,
        fn: Callable[..., Any] | None,
        scope: bytes,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        chunked: bool = False,
    ) -> None:
        self.fn = fn
        self.scope = scope
        self.initializer = initializer
        self.initargs = initargs
        self.chunked = chunked
        self.__name__ = getattr(fn, "__name__", type(fn).__name__) if fn is not None else "call"
        self.__qualname__ = describe_callable(fn) if fn is not None else "Executor.call"
        self._bound: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_bound"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bound = None

    def __call__(self, packed: bytes) -> bytes:
        if self.scope not in _initialized:
            if self.initializer is not None:
                bind_to_process_namespace(self.initializer, self.scope)(*self.initargs)
            _initialized.add(self.scope)
        try:
            unpacked = pickle.loads(packed)
        except BaseException as e:  # noqa: B036  (SystemExit while unpickling too)
            raise _BrokenCall(f"the arguments could not be unpickled in worker pid {os.getpid()}: {e!r}") from None
        if self.fn is None:
            fn, args, kwargs = unpacked
            fn = bind_to_process_namespace(fn, self.scope)
        else:
            if self._bound is None:
                self._bound = bind_to_process_namespace(self.fn, self.scope)
            fn, (args, kwargs) = self._bound, unpacked
        if self.chunked:
            return _pack([_outcome(fn, item) for item in args[0]])
        try:
            result = fn(*args, **kwargs)
        except SystemExit as e:
            raise _Exit(e.code) from None
        return _pack(result)


def _outcome(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, ...]:
    """One call of a chunk: (True, result) or (False, error, remote traceback)."""
    try:
        return (True, fn(*args))
    except BaseException as e:  # noqa: B036
        error: BaseException = SystemExit(e.code) if isinstance(e, SystemExit) else e
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        try:
            dumps(error)
        except Exception:
            error = picklable_copy(error) or RuntimeError(f"{type(e).__name__}: {e}")
        return (False, error.with_traceback(None), text)


def _pack(value: Any) -> bytes:
    try:
        return dumps(value)
    except SystemExit as e:
        raise _Exit(e.code) from None
    except SerializationError as e:
        # Raise what pickle raised (PicklingError, say), as the stdlib does.
        raise (e.__cause__ or e) from None


def _pack_arguments(value: Any) -> bytes:
    try:
        return dumps(value)
    except SerializationError as e:
        raise (e.__cause__ or e) from None


def _is_long_lived(fn: Any) -> bool:
    """A module-level function: it lives as long as its module, so caching it keeps nothing alive."""
    return (
        isinstance(fn, types.FunctionType)
        and "<locals>" not in fn.__qualname__
        and fn.__name__ != "<lambda>"
    )


def _chunks(items: list[tuple[Any, ...]], chunksize: int) -> Iterator[list[tuple[Any, ...]]]:
    for start in range(0, len(items), chunksize):
        yield items[start : start + chunksize]


def _flatten(results: Iterator[list[tuple[Any, ...]]]) -> Iterator[Any]:
    for chunk in results:
        for outcome in chunk:
            if outcome[0]:
                yield outcome[1]
            else:
                raise with_remote_traceback(outcome[1], outcome[2], ExecutorRemoteTraceback)


class _WorkItem:
    __slots__ = ("future", "fn", "args", "kwargs", "chunked")

    def __init__(
        self,
        future: concurrent.futures.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chunked: bool = False,
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.chunked = chunked


def _post_done(events: Any, item: _WorkItem, done: concurrent.futures.Future[Any]) -> None:
    # Runs in the client's receiver thread: only hand the result over.
    events.put((_DONE, item, done))


_SUBMIT, _DONE, _SHUTDOWN = range(3)


class Executor(concurrent.futures.Executor):
    """Run calls asynchronously as actorkit tasks (``concurrent.futures`` interface).

    Args:
        max_workers: the most calls running at once; default: the cluster's CPUs.
        mp_context: accepted for compatibility with ``ProcessPoolExecutor``; ignored.
        initializer: called as ``initializer(*initargs)`` once per worker process
            before it runs this executor's first call there.
        initargs: arguments of ``initializer``.
        max_tasks_per_child: passed to the tasks as ``max_calls``.
        ray_address: the cluster to connect to if this process is not connected yet.
        ray_remote_args: task options (``num_cpus``, ``max_retries``, ...).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        *,
        max_tasks_per_child: int | None = None,
        ray_address: str | None = None,
        ray_remote_args: dict[str, Any] | None = None,
    ) -> None:
        if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers <= 0):
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None and (
            isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int) or max_tasks_per_child < 1
        ):
            raise ValueError("max_tasks_per_child must be >= 1")
        ensure_initialized(ray_address)
        self._max_workers = max_workers or cluster_cpus()
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._options: dict[str, Any] = {"max_retries": 0, **(ray_remote_args or {})}
        if max_tasks_per_child is not None:
            self._options["max_calls"] = max_tasks_per_child
        self._scope = os.urandom(8)
        self._remotes: OrderedDict[Any, Any] = OrderedDict()
        self._events: _queue.SimpleQueue[tuple[Any, ...]] = _queue.SimpleQueue()
        self._pending: deque[_WorkItem] = deque()  # dispatcher thread only
        self._running: dict[_WorkItem, Any] = {}  # dispatcher thread only: item -> its ObjectRef
        self._submitted = 0
        self._completed = 0
        self._lock = threading.Lock()
        self._shutdown = False
        self._broken: str | None = None
        self._thread: threading.Thread | None = None
        _live_executors.add(self)

    def __repr__(self) -> str:
        state = "broken" if self._broken else "shut down" if self._shutdown else "running"
        return (
            f"<actorkit.util.futures.Executor {state} max_workers={self._max_workers} "
            f"submitted={self._submitted} completed={self._completed} running={len(self._running)} "
            f"queued={len(self._pending)}>"
        )

    # ---------------------------------------------------------------- submit

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; returns its ``Future`` at once."""
        if not callable(fn):
            raise TypeError(f"submit() expects a callable, not {type(fn).__name__}")
        return self._submit(_WorkItem(concurrent.futures.Future(), fn, args, kwargs))

    def _submit(self, item: _WorkItem) -> concurrent.futures.Future[Any]:
        with self._lock:
            if self._broken:
                raise BrokenProcessPool(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _global_shutdown:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            self._submitted += 1
            self._events.put((_SUBMIT, item))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="actorkit-executor", daemon=True)
                self._thread.start()
        return item.future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
    ) -> Iterator[Any]:
        """``fn`` over the zipped iterables, results in order (as ``ProcessPoolExecutor.map``).

        Each task runs a chunk of ``chunksize`` calls; by default the chunk
        size is chosen so that each worker gets several chunks (a task per
        call would spend more time on messages than on work).  An error is
        raised by the iterator at the call that raised it.  ``timeout``
        counts from this call; a result not ready by then raises
        ``TimeoutError`` from the iterator.
        """
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        items = list(zip(*iterables))  # the stdlib submits everything at once too
        if chunksize is None:
            chunksize = max(1, min(_MAX_AUTO_CHUNK, len(items) // (4 * self._max_workers)))
        futures = [
            self._submit(_WorkItem(concurrent.futures.Future(), fn, (chunk,), {}, chunked=True))
            for chunk in _chunks(items, chunksize)
        ]
        return _flatten(_results_in_order(futures, timeout))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; with ``cancel_futures`` cancel those not yet started; with ``wait`` wait for the rest."""
        with self._lock:
            if not self._shutdown:
                self._shutdown = True
                self._events.put((_SHUTDOWN, cancel_futures))
            elif cancel_futures:
                self._events.put((_SHUTDOWN, True))
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    def _wait_for_dispatcher(self) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # ------------------------------------------------------------ dispatcher

    def _remote_for(self, item: _WorkItem) -> tuple[Any, bytes]:
        """The remote function for the item's call, and the call's arguments as bytes."""
        fn, args = item.fn, item.args
        if isinstance(fn, types.MethodType) and _is_long_lived(fn.__func__):
            # Cache the function, not the bound method: the executor must not
            # keep the method's object alive once its calls are done.
            fn, args = fn.__func__, (fn.__self__, *args)
        if not _is_long_lived(fn):
            key: Any = ("call", item.chunked)
            packed = _pack_arguments((fn, args, item.kwargs))
            fn = None
        else:
            key = (fn, item.chunked)
            packed = _pack_arguments((args, item.kwargs))
        remote_fn = self._remotes.get(key)
        if remote_fn is None:
            remote_fn = remote(**self._options)(_Call(fn, self._scope, self._initializer, self._initargs, item.chunked))
            self._remotes[key] = remote_fn
            while len(self._remotes) > _REMOTE_CACHE:
                self._remotes.popitem(last=False)
        else:
            self._remotes.move_to_end(key)
        return remote_fn, packed

    def _loop(self) -> None:
        stopping = False
        while True:
            if not self._pending and not self._running:
                # Idle: end the thread (the next submit starts another), so that
                # an executor nobody shut down holds no thread and can be collected.
                with self._lock:
                    if self._events.empty():
                        self._thread = None
                        return
            event = self._events.get()
            while True:
                kind = event[0]
                if kind == _SUBMIT:
                    self._pending.append(event[1])
                elif kind == _DONE:
                    self._finish(event[1], event[2])
                else:
                    stopping = True
                    if event[1]:  # cancel_futures
                        while self._pending:
                            future = self._pending.popleft().future
                            if future.cancel():
                                future.set_running_or_notify_cancel()  # wakes wait()/as_completed()
                try:
                    event = self._events.get_nowait()
                except _queue.Empty:
                    break
            self._start_calls()
            if stopping and not self._pending and not self._running:
                self._remotes.clear()

    def _start_calls(self) -> None:
        while self._pending and len(self._running) < self._max_workers and not self._broken:
            item = self._pending.popleft()
            if not item.future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            try:
                remote_fn, packed = self._remote_for(item)
                ref = remote_fn.remote(packed)
            except BaseException as e:  # noqa: B036  (arguments that cannot be pickled)
                item.future.set_exception(e)
                self._completed += 1
                continue
            self._running[item] = ref
            ref.future().add_done_callback(functools.partial(_post_done, self._events, item))
            item.fn = item.args = item.kwargs = None  # type: ignore[assignment]  # let them go

    def _finish(self, item: _WorkItem, done: concurrent.futures.Future[Any]) -> None:
        if self._running.pop(item, None) is None:
            return  # already failed by a break
        self._completed += 1
        error = done.exception()
        if error is not None:
            error = unwrap_task_error(error, ExecutorRemoteTraceback)
            if isinstance(error, (WorkerCrashedError, _BrokenCall)):
                self._break(item, error)
                return
            if isinstance(error, _Exit):
                error = SystemExit(error.code)
            item.future.set_exception(error)
            return
        try:
            value = pickle.loads(done.result())
        except BaseException as e:  # noqa: B036  (as the stdlib's result handler)
            self._break(item, e)
            return
        item.future.set_result(value)

    def _break(self, item: _WorkItem, reason: BaseException) -> None:
        """A worker died or a call could not be read: fail every call, as ProcessPoolExecutor does."""
        self._broken = (
            f"A process of this executor died or could not read a call ({type(reason).__name__}: "
            f"{reason}); the executor is not usable anymore. Create a new Executor to go on."
        )
        failed = [item, *self._running, *self._pending]
        refs = list(self._running.values())
        self._running.clear()
        self._pending.clear()
        for ref in refs:
            cancel(ref, force=True)
        for each in failed:
            if not each.future.done():
                error = BrokenProcessPool(self._broken)
                error.__cause__ = reason
                if each.future.running() or each.future.set_running_or_notify_cancel():
                    each.future.set_exception(error)


def _results_in_order(futures: list[concurrent.futures.Future[Any]], timeout: float | None) -> Iterator[Any]:
    """The futures' results in order, as ``Executor.map`` yields them; the rest are cancelled on an error."""
    deadline = None if timeout is None else time.monotonic() + timeout
    futures.reverse()
    try:
        while futures:
            future = futures.pop()
            if deadline is None:
                yield future.result()
            else:
                yield future.result(deadline - time.monotonic())
    finally:
        for future in futures:
            future.cancel()
