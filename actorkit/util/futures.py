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

Each function becomes one remote function, exported to the workers once,
whatever the number of calls.  Errors are raised as ``ProcessPoolExecutor``
raises them: the original exception, with the remote traceback chained as
``__cause__`` (``actorkit.exceptions`` errors for a crashed worker).  Tasks are
not retried (``max_retries=0``, as a process pool does not re-run work);
change that and other task options with ``ray_remote_args``.

``initializer(*initargs)`` runs once in each worker process before the first
call of this executor there.  Task workers are shared with other work, so
``max_tasks_per_child`` is passed to the tasks as ``max_calls``.
``mp_context`` is accepted and ignored (actorkit only spawns).
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import os
import queue as _queue
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..api import remote
from ._common import cluster_cpus, describe_callable, ensure_initialized, unwrap_task_error
from ._namespace import bind_to_process_namespace

__all__ = ["Executor"]

_REMOTE_CACHE = 128  # remote functions kept per executor (least recently used are dropped)

# Per worker process: the executors whose initializer already ran here.
_initialized: set[bytes] = set()


class _Call:
    """What a task runs: the user's function, after this executor's initializer (once per process)."""

    def __init__(self, fn: Callable[..., Any], scope: bytes, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
        self.fn = fn
        self.scope = scope
        self.initializer = initializer
        self.initargs = initargs
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.__qualname__ = describe_callable(fn)
        self._bound: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_bound"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bound = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.scope not in _initialized:
            if self.initializer is not None:
                bind_to_process_namespace(self.initializer, self.scope)(*self.initargs)
            _initialized.add(self.scope)
        if self._bound is None:
            self._bound = bind_to_process_namespace(self.fn, self.scope)
        return self._bound(*args, **kwargs)


def _process_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``fn`` on each argument tuple of a chunk (``Executor.map`` with ``chunksize > 1``)."""
    return [fn(*args) for args in chunk]


def _chunks(iterables: tuple[Iterable[Any], ...], chunksize: int) -> Iterator[list[tuple[Any, ...]]]:
    it = zip(*iterables)
    while chunk := list(itertools.islice(it, chunksize)):
        yield chunk


def _flatten(results: Iterator[list[Any]]) -> Iterator[Any]:
    for chunk in results:
        yield from chunk


def _post_done(events: _queue.SimpleQueue[tuple[Any, ...]], item: _WorkItem, done: concurrent.futures.Future[Any]) -> None:
    # Runs in the client's receiver thread: only hand the result over.
    events.put((_DONE, item, done))


class _WorkItem:
    __slots__ = ("future", "fn", "args", "kwargs")

    def __init__(self, future: concurrent.futures.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs


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
        self._remotes: OrderedDict[int, tuple[Callable[..., Any], Any]] = OrderedDict()
        self._events: _queue.SimpleQueue[tuple[Any, ...]] = _queue.SimpleQueue()
        self._pending: deque[_WorkItem] = deque()  # dispatcher thread only
        self._running = 0  # dispatcher thread only
        self._submitted = 0
        self._completed = 0
        self._lock = threading.Lock()
        self._shutdown = False
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else "running"
        return (
            f"<actorkit.util.futures.Executor {state} max_workers={self._max_workers} "
            f"submitted={self._submitted} completed={self._completed} running={self._running} "
            f"queued={len(self._pending)}>"
        )

    # ---------------------------------------------------------------- submit

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; returns its ``Future`` at once."""
        if not callable(fn):
            raise TypeError(f"submit() expects a callable, not {type(fn).__name__}")
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            self._submitted += 1
            self._events.put((_SUBMIT, _WorkItem(future, fn, args, kwargs)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="actorkit-executor", daemon=True)
                self._thread.start()
        return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """``fn`` over the zipped iterables, results in order (as ``ProcessPoolExecutor.map``).

        With ``chunksize > 1`` each task runs a chunk of that many calls.
        ``timeout`` counts from this call; a result not ready by then raises
        ``TimeoutError`` from the iterator.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        results = super().map(functools.partial(_process_chunk, fn), _chunks(iterables, chunksize), timeout=timeout)
        return _flatten(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; with ``cancel_futures`` cancel those still queued; with ``wait`` wait for the rest."""
        with self._lock:
            if not self._shutdown:
                self._shutdown = True
                self._events.put((_SHUTDOWN, cancel_futures))
            elif cancel_futures:
                self._events.put((_SHUTDOWN, True))
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    # ------------------------------------------------------------ dispatcher

    def _remote_for(self, fn: Callable[..., Any]) -> Any:
        entry = self._remotes.get(id(fn))
        if entry is not None and entry[0] is fn:
            self._remotes.move_to_end(id(fn))
            return entry[1]
        remote_fn = remote(**self._options)(_Call(fn, self._scope, self._initializer, self._initargs))
        self._remotes[id(fn)] = (fn, remote_fn)
        while len(self._remotes) > _REMOTE_CACHE:
            self._remotes.popitem(last=False)
        return remote_fn

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
        while self._pending and self._running < self._max_workers:
            item = self._pending.popleft()
            if not item.future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            try:
                ref = self._remote_for(item.fn).remote(*item.args, **item.kwargs)
            except BaseException as e:  # e.g. arguments that cannot be pickled
                item.future.set_exception(e)
                self._completed += 1
                continue
            self._running += 1
            ref.future().add_done_callback(functools.partial(_post_done, self._events, item))
            item.fn = item.args = item.kwargs = None  # type: ignore[assignment]  # let them go

    def _finish(self, item: _WorkItem, done: concurrent.futures.Future[Any]) -> None:
        self._running -= 1
        self._completed += 1
        error = done.exception()
        if error is not None:
            item.future.set_exception(unwrap_task_error(error))
        else:
            item.future.set_result(done.result())
