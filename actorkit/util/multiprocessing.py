"""``Pool``: a drop-in for ``multiprocessing.Pool`` that runs on actorkit and never forks.

    from actorkit.util.multiprocessing import Pool

    with Pool(4, initializer=load_model, initargs=("weights.bin",)) as pool:
        print(pool.map(predict, inputs))
        for y in pool.imap(lambda x: x * x, range(10_000)):   # lambdas work too
            ...

How it works
------------
The pool's processes are actors of one class, ``processes`` of them.  Each
actor runs ``initializer(*initargs)`` in its ``__init__``, so module globals
the initializer sets persist in that process and the mapped functions see
them, exactly as in a ``multiprocessing`` worker.  Functions travel with
cloudpickle, so lambdas, closures and functions defined in ``__main__`` or a
REPL work; functions shipped by value from one module share one namespace in
each actor (see ``actorkit.util._namespace``), so even an initializer defined
in ``__main__`` sets globals that a mapped function from ``__main__`` reads.
Each function is sent to each actor once, not with every call.

Work is cut into chunks; one actor call carries a whole chunk, and each actor
has two calls in flight (one running, one waiting in its mailbox; more while
chunks take under 2 ms, so that round trips overlap), handed out by a
dispatcher thread as results come back, so slow and fast chunks balance
across actors.  Chunk sizes:

* ``chunksize=N`` given: chunks of ``N`` items, as in ``multiprocessing``
  (except ``imap``'s ``chunksize=1``, see below).
* by default (``map``, ``starmap`` and their ``_async`` forms with
  ``chunksize=None``; ``imap``/``imap_unordered`` with ``None`` or
  ``multiprocessing``'s default of 1) the size adapts: the first chunks hold
  one item, so the first results come at once and slow items spread one per
  call; each result reports how long its items took, and the size doubles
  while a chunk stays under about 25 ms of work, up to multiprocessing's
  heuristic ``ceil(len / (4 * processes))`` when the length is known.  Cheap
  items thus travel in large chunks, and the end of a map stays balanced.
* ``apply``/``apply_async``: one call.

``imap`` consumes its iterable lazily, in the dispatcher thread, as chunks are
sent: an endless generator works, dropping the iterator stops the job, and a
slow iterable delays the pool's other work meanwhile.

Once a call's results are handed over, the pool holds no reference to its
arguments or results (as ``multiprocessing`` since Python 3.8): the
dispatcher wakes a waiting caller only after it has let go of the chunk.

Arguments that are large arrays (numpy arrays, bytes, bytearray and
memoryviews over 1 MiB) are ``put`` into the object store once per call of
``map``/``apply_async``/... and travel by reference: every task that receives
the same array maps the same shared memory instead of unpickling a copy.

Differences from ``multiprocessing.Pool``
-----------------------------------------
* An exception in one item fails only that item (``multiprocessing`` fails its
  whole chunk); ``map`` raises it (the original exception, with the remote
  traceback as ``__cause__``) as soon as it happens and sends no more chunks
  of that call.  ``imap`` raises it at that item's position, and iterating on
  goes on with the next item.
* An exception raised by ``imap``'s iterable itself is raised by ``next()``
  where it happened, and the iteration ends there, as in ``multiprocessing``:
  with a ``chunksize`` given, the chunk being pulled fails whole (its items
  are not run) and the error comes at its first position; with the adaptive
  default, at the very position (as ``multiprocessing``'s ``chunksize=1``).
  ``map`` raises it at once (it reads the iterable before it starts).
* An argument that cannot be pickled raises the pickler's own error, as in
  ``multiprocessing`` (``TypeError: cannot pickle '_thread.lock' object``, or
  what a ``__reduce__`` raised), with actorkit's explanation added as a note
  (Python 3.11+); a result that cannot be pickled fails its chunk with
  ``multiprocessing.pool.MaybeEncodingError``.  Both leave the pool working.
  Functions travel with cloudpickle, so results ``multiprocessing`` cannot
  send (a lambda, a local class's instance) come back here; and
  ``MaybeEncodingError``'s ``value`` describes the result (which item, what
  in it does not pickle) instead of being its ``repr``.
* A process that dies (``os._exit``, a segfault) fails the items it was running
  with ``ActorDiedError`` and is replaced; ``multiprocessing`` hangs.
* ``terminate()`` fails the results still pending with ``RuntimeError`` instead
  of leaving them pending forever.  ``close()``/``join()``, ``terminate()``
  (and leaving a ``with`` block) let idle processes exit as ``multiprocessing``
  workers do after ``close()``: their atexit handlers run, so what an
  initializer started (a ``Manager``, a child process) is shut down rather
  than orphaned still holding the script's output open; processes busy with a
  call are killed (as ``terminate()`` does), and so is one whose exit takes
  over 5 s.  Processes retired by ``maxtasksperchild`` exit the same way.
* ``context`` is accepted and ignored: processes are always spawned.
* ``Pool()`` returns once its processes have started; an initializer that
  raises makes ``Pool()`` raise its exception (``multiprocessing`` restarts
  such workers forever).  ``maxtasksperchild`` counts calls (chunks), as
  ``multiprocessing`` does.
* With no node running, ``Pool()`` starts one as Ray's Pool does: it joins the
  cluster that ``ray_address``, else ``ACTORKIT_ADDRESS`` or ``RAY_ADDRESS``
  names; with none of them, it starts a local node with ``processes`` CPUs
  (all of the machine's when ``processes`` is not given).
* ``processes`` defaults to the cluster's CPU count; the actors hold no CPU
  (``num_cpus=0``, as in Ray's Pool) so tasks started by the mapped functions
  still run; pass ``ray_remote_args={"num_cpus": 1}`` to reserve CPUs.
* ``progress=True`` on ``map``/``imap``/... shows a progress bar (see
  ``actorkit.util.progress``).

Callbacks (``callback``, ``error_callback``) run in the pool's dispatcher
thread, as in ``multiprocessing``: they should return quickly and must not
wait for another result of the same pool.
"""

from __future__ import annotations

import builtins
import itertools
import math
import os
import queue as _queue
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from multiprocessing import TimeoutError as _MultiprocessingTimeoutError
from multiprocessing.pool import MaybeEncodingError
from typing import Any, NamedTuple

import actorkit
from actorkit.actor import exit_actor
from actorkit.api import remote
from actorkit.exceptions import ActorDiedError, SerializationError, TaskError

from ._common import (
    cluster_cpus,
    describe_callable,
    ensure_initialized,
    unwrap_task_error,
    with_remote_traceback,
)
from ._namespace import bind_to_process_namespace
from .progress import Progress, ProgressBar

__all__ = ["AsyncResult", "IMapIterator", "Pool", "TimeoutError"]


class TimeoutError(_MultiprocessingTimeoutError, builtins.TimeoutError):
    """A result was not ready in time (both ``multiprocessing.TimeoutError`` and ``TimeoutError``)."""


_DEPTH = 2  # calls in flight per actor: one running, one waiting in its mailbox ...
_DEEP = 8  # ... or more while chunks are short, so that the round trips overlap
_SHORT_CHUNK_S = 0.002
_TARGET_CHUNK_S = 0.025  # adaptive chunks aim at about this much work each
_MAX_ADAPTIVE_CHUNK = 4096
_SHARE_THRESHOLD = 1 << 20  # arguments larger than this go through the object store once
_FUNCTION_CACHE = 64  # functions remembered by each actor (least recently used are dropped)
_POOL_SCOPE = "actorkit.util.multiprocessing.Pool"
_EXIT_GRACE_S = 5.0  # an idle process asked to exit (close/terminate) is killed after this long

# How a chunk's items are passed to the function.
_ONE_ARG = 0  # fn(item)                      map, imap
_STAR_ARGS = 1  # fn(*item)                   starmap
_ARGS_KWARGS = 2  # fn(*args, **kwargs)       apply

_RUN, _CLOSE, _TERMINATE = "RUN", "CLOSE", "TERMINATE"


# --------------------------------------------------------------------------
# What travels between the driver and the pool's actors
# --------------------------------------------------------------------------


class _Shared:
    """Stands for a large argument stored once in the object store (its ref travels instead)."""

    __slots__ = ("ref",)

    def __init__(self, ref: actorkit.ObjectRef) -> None:
        self.ref = ref

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Shared, (self.ref,))


class _Failure:
    """An item's exception as the actor reports it: the exception if it pickles, and its traceback."""

    __slots__ = ("error", "type_name", "traceback", "pid")

    def __init__(self, error: BaseException | None, type_name: str, tb: str, pid: int) -> None:
        self.error = error
        self.type_name = type_name
        self.traceback = tb
        self.pid = pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Failure, (self.error, self.type_name, self.traceback, self.pid))

    @classmethod
    def capture(cls, error: BaseException) -> _Failure:
        import pickle

        import cloudpickle

        tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        try:
            pickle.loads(cloudpickle.dumps(error))
        except Exception:
            kept: BaseException | None = None
        else:
            kept = error.with_traceback(None)
        return cls(kept, type(error).__name__, tb, os.getpid())

    def exception(self, function_name: str) -> BaseException:
        """The exception to raise in the driver: the original one, with the remote traceback."""
        if self.error is not None:
            return with_remote_traceback(self.error, self.traceback)
        return TaskError(function_name, self.traceback, None, self.pid, self.type_name)


def _nbytes(value: Any) -> int:
    kind = type(value)
    if kind is bytes or kind is bytearray:
        return len(value)
    if kind is memoryview:
        return value.nbytes
    if kind.__name__ == "ndarray" and kind.__module__ == "numpy":
        return int(value.nbytes)
    return 0


def _resolve_shared(mode: int, items: list[Any]) -> list[Any]:
    """Replace the ``_Shared`` markers of a chunk by their values (one ``get`` for all)."""
    refs: dict[actorkit.ObjectRef, Any] = {}

    def collect(value: Any) -> None:
        if type(value) is _Shared:
            refs[value.ref] = None

    for item in items:
        if mode == _ONE_ARG:
            collect(item)
        elif mode == _STAR_ARGS:
            for arg in item:
                collect(arg)
        else:
            args, kwargs = item
            for arg in itertools.chain(args, kwargs.values()):
                collect(arg)
    if not refs:
        return items
    values = dict(zip(refs, actorkit.get(list(refs))))

    def swap(value: Any) -> Any:
        return values[value.ref] if type(value) is _Shared else value

    if mode == _ONE_ARG:
        return [swap(item) for item in items]
    if mode == _STAR_ARGS:
        return [tuple(swap(arg) for arg in item) for item in items]
    return [(tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}) for args, kwargs in items]


class _PoolWorker:
    """One process of a Pool: an actor that runs the initializer once, then chunks of work."""

    def __init__(self, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
        self._functions: dict[int, Any] = {}
        if initializer is not None:
            bind_to_process_namespace(initializer, _POOL_SCOPE)(*initargs)

    def pid(self) -> int:
        return os.getpid()

    def exit(self) -> None:
        """End this process as a ``multiprocessing`` worker ends: its atexit handlers run.

        So what the initializer started is shut down (``multiprocessing``'s own
        finalizers stop a ``Manager``, join child processes, ...) instead of
        being orphaned, still holding the driver's output and resource tracker.
        """
        exit_actor()

    def run(
        self, token: int, fn: Any, forget: list[int], mode: int, items: list[Any], shared: bool
    ) -> tuple[list[Any], dict[int, _Failure] | None, float]:
        """Apply the function to each item; returns (values, failures by index, seconds spent)."""
        functions = self._functions
        for old in forget:
            functions.pop(old, None)
        if fn is not None:
            fn = functions[token] = bind_to_process_namespace(fn, _POOL_SCOPE)
        else:
            fn = functions[token]
        if shared:
            items = _resolve_shared(mode, items)
        values: list[Any] = []
        append = values.append
        failures: dict[int, _Failure] | None = None
        start = time.perf_counter()
        for i, item in enumerate(items):
            try:
                if mode == _ONE_ARG:
                    append(fn(item))
                elif mode == _STAR_ARGS:
                    append(fn(*item))
                else:
                    append(fn(*item[0], **item[1]))
            except Exception as e:
                append(None)
                if failures is None:
                    failures = {}
                failures[i] = _Failure.capture(e)
        return values, failures, time.perf_counter() - start


_PoolWorkerActor = remote(num_cpus=0, max_restarts=0)(_PoolWorker)


# --------------------------------------------------------------------------
# Jobs: one per map/imap/apply call
# --------------------------------------------------------------------------


class _ChunkSizer:
    """How many items the next chunk of a job takes.

    Fixed when the user gave a chunk size.  Otherwise adaptive: the first
    chunks hold one item (results come at once, and slow items are spread
    one per call); each result reports how long its items took, and the size
    doubles while chunks stay under ``_TARGET_CHUNK_S`` of work, up to ``cap``
    (multiprocessing's ``ceil(len / (4 * processes))`` when the length is
    known), so cheap items travel in large chunks and the last chunks stay
    small enough to balance the actors at the end.
    """

    __slots__ = ("adaptive", "size", "cap")

    def __init__(self, chunksize: int | None, length: int | None, processes: int, adaptive: bool) -> None:
        self.adaptive = adaptive
        self.size = 1 if adaptive or not chunksize else chunksize
        self.cap = max(1, math.ceil(length / (4 * processes))) if length else _MAX_ADAPTIVE_CHUNK

    def observe(self, count: int, elapsed: float) -> None:
        if not self.adaptive or not count:
            return
        per_item = elapsed / count
        ideal = int(_TARGET_CHUNK_S / per_item) if per_item > 0 else _MAX_ADAPTIVE_CHUNK
        self.size = max(1, min(ideal, self.size * 2, self.cap, _MAX_ADAPTIVE_CHUNK))


class _Job:
    """The work of one call: hands out chunks to the dispatcher and collects their results."""

    mode: int
    fn: Any
    name: str
    _share_cache: int | None = None  # large arguments remembered (None: all, for the job's life)
    interrupted = False  # its caller was interrupted (Ctrl-C): cancelled, its processes freed
    # Where the dispatcher collects the wake-ups of waiting callers (None: wake at once).
    wake: list[Callable[[], Any]] | None = None

    def __init__(self, fn: Any, mode: int, progress: Progress, total: int | None, desc: str) -> None:
        self.fn = fn
        self.mode = mode
        self.name = describe_callable(fn)
        # Chunks to send again: they were queued behind an interrupted job's chunk in a
        # process the pool killed, so they never ran.
        self.retry: list[tuple[int, list[Any]]] = []
        self._shared: dict[int, tuple[Any, _Shared]] = {}
        self._bar = ProgressBar(total, desc, progress) if progress else None

    # called by the dispatcher thread only
    def next_chunk(self, pool: _PoolCore) -> tuple[int, list[Any]] | None:
        raise NotImplementedError

    def on_chunk(self, start: int, count: int, values: list[Any] | None, failures: dict[int, Any] | None, elapsed: float) -> bool:
        """Record a chunk's results (``values`` None: every item failed); True when the job is finished."""
        raise NotImplementedError

    def abort(self, error: BaseException) -> None:
        """Fail whatever is still pending (pool terminated or broken)."""
        raise NotImplementedError

    def finished(self) -> bool:
        """Whether no chunk of this job is left to send or to wait for."""
        raise NotImplementedError

    def _progress(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def _close_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def share_large(self, items: list[Any]) -> tuple[list[Any], bool]:
        """Put arguments over 1 MiB in the object store, once per distinct object in this job."""
        found = False

        def share(value: Any) -> Any:
            nonlocal found
            if _nbytes(value) < _SHARE_THRESHOLD:
                return value
            found = True
            entry = self._shared.get(id(value))
            if entry is None:
                entry = self._shared[id(value)] = (value, _Shared(actorkit.put(value)))
                limit = self._share_cache
                if limit is not None and len(self._shared) > limit:
                    del self._shared[next(iter(self._shared))]  # the oldest
            return entry[1]

        mode = self.mode
        if mode == _ONE_ARG:
            if not any(_nbytes(item) >= _SHARE_THRESHOLD for item in items):
                return items, False  # the common case: nothing to share, no copy
            out = [share(item) for item in items]
        elif mode == _STAR_ARGS:
            out = [tuple(share(arg) for arg in item) for item in items]
        else:
            out = [(tuple(share(a) for a in args), {k: share(v) for k, v in kwargs.items()}) for args, kwargs in items]
        return (out, True) if found else (items, False)


class AsyncResult:
    """The result of ``apply_async``, ``map_async`` or ``starmap_async`` (as in ``multiprocessing``)."""

    def __init__(
        self,
        fn: Any,
        mode: int,
        items: list[Any],
        sizer: _ChunkSizer,
        callback: Callable[[Any], Any] | None,
        error_callback: Callable[[BaseException], Any] | None,
        single: bool = False,
        progress: Progress = False,
        desc: str = "map",
    ) -> None:
        self._job = _MapJob(self, fn, mode, items, sizer, callback, error_callback, single, progress, desc)
        self._event = threading.Event()
        self._success: bool | None = None
        self._value: Any = None
        if not items:  # as multiprocessing: ready at once, callback not called
            self._set(True, [])

    def __repr__(self) -> str:
        state = "pending" if not self.ready() else ("ok" if self._success else "failed")
        return f"<actorkit.util.multiprocessing.AsyncResult {self._job.name} {state} done={self._job.done}/{self._job.total}>"

    def _set(self, success: bool, value: Any) -> None:
        self._success, self._value = success, value
        self._event.set()

    def ready(self) -> bool:
        """Whether the call has completed (successfully or not)."""
        return self._event.is_set()

    def successful(self) -> bool:
        """Whether the call completed without raising; ``ValueError`` if it is not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return bool(self._success)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is ready or ``timeout`` seconds pass."""
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The result; raises the call's exception, or ``TimeoutError`` if not ready in ``timeout`` s."""
        self._event.wait(timeout)
        if not self._event.is_set():
            raise TimeoutError(f"the result was not ready within {timeout} s")
        if self._success:
            return self._value
        raise self._value


ApplyResult = AsyncResult
MapResult = AsyncResult


class _MapJob(_Job):
    def __init__(
        self,
        result: AsyncResult,
        fn: Any,
        mode: int,
        items: list[Any],
        sizer: _ChunkSizer,
        callback: Callable[[Any], Any] | None,
        error_callback: Callable[[BaseException], Any] | None,
        single: bool,
        progress: Progress,
        desc: str,
    ) -> None:
        super().__init__(fn, mode, progress if items else False, len(items), desc)
        self._result = result
        self._items = items
        self._sizer = sizer
        self._callback = callback
        self._error_callback = error_callback
        self._single = single
        self._values: list[Any] = [None] * len(items)
        self._next = 0
        self.total = len(items)
        self.done = 0

    def next_chunk(self, pool: _PoolCore) -> tuple[int, list[Any]] | None:
        if self._result.ready():
            return None
        if self.retry:
            return self.retry.pop()
        if self._next >= self.total:
            return None
        start = self._next
        chunk = self._items[start : start + self._sizer.size]
        self._next += len(chunk)
        return start, chunk

    def on_chunk(self, start: int, count: int, values: list[Any] | None, failures: dict[int, Any] | None, elapsed: float) -> bool:
        if self._result.ready():
            return True
        if values is not None:
            self._sizer.observe(count, elapsed)
        if values is None or failures:
            assert failures
            first = failures[min(failures)]
            error = first if isinstance(first, BaseException) else first.exception(self.name)
            self._finish(False, error)
            return True
        self._values[start : start + count] = values
        self.done += count
        self._progress(count)
        if self.done < self.total:
            return False
        self._finish(True, self._values[0] if self._single else self._values)
        return True

    def _finish(self, success: bool, value: Any) -> None:
        self._items = []  # let the arguments go, and the results (the AsyncResult has them)
        self._values = []
        self._shared.clear()
        self._close_progress()
        callback = self._callback if success else self._error_callback
        if callback is not None:
            try:
                callback(value)
            except Exception:
                _report_callback_error()
        result = self._result
        result._success, result._value = success, value
        if self.wake is None:
            result._event.set()
        else:  # the dispatcher sets it once it holds no reference to the chunk (see _PoolCore._loop)
            self.wake.append(result._event.set)

    def abort(self, error: BaseException) -> None:
        if not self._result.ready():
            self._finish(False, error)

    def finished(self) -> bool:
        return self._result.ready()


class _IMapJob(_Job):
    """``imap``/``imap_unordered``: pulls items lazily; results wait in a buffer for the consumer."""

    _share_cache = 8  # an endless iterable of arrays must not pile up in memory

    def __init__(self, fn: Any, mode: int, iterable: Iterable[Any], chunksize: int | None, ordered: bool, processes: int, progress: Progress, desc: str) -> None:
        try:
            length: int | None = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            length = None
        super().__init__(fn, mode, progress, length, desc)
        self.total = length
        self._iterator = iter(iterable)
        self._ordered = ordered
        # multiprocessing's default chunksize for imap is 1: take it as "adapt" too.
        self._sizer = _ChunkSizer(chunksize, length, processes, adaptive=chunksize is None or chunksize == 1)
        self._pulled = 0
        self._exhausted = False
        self.cancelled = False
        self._cond = threading.Condition()
        # ordered: start -> (values, failures); unordered: deque of (values, failures)
        self._chunks: dict[int, tuple[list[Any] | None, dict[int, Any] | None, int]] = {}
        self._ready: deque[tuple[list[Any] | None, dict[int, Any] | None, int]] = deque()
        self._buffer: deque[tuple[bool, Any]] = deque()
        self._consumed = 0  # items handed to the consumer (ordered: the next index)
        self._end: int | None = None  # total number of items, once the iterable is exhausted
        self._aborted: BaseException | None = None
        self.done = 0

    def next_chunk(self, pool: _PoolCore) -> tuple[int, list[Any]] | None:
        if self.cancelled or self._aborted is not None:
            return None
        if self.retry:
            return self.retry.pop()
        if self._exhausted:
            return None
        size = self._sizer.size
        items: list[Any] = []
        start = self._pulled
        try:
            for item in self._iterator:
                items.append(item)
                if len(items) >= size:
                    break
            else:
                self._exhausted = True
        except Exception as e:  # the iterable raised: that position fails, and the job ends there
            self._exhausted = True
            if not self._sizer.adaptive:
                # A chunk size given: as in multiprocessing, the chunk being pulled fails
                # whole (its items are not run) and the error comes at its first position.
                items = []
            index = start + len(items)
            self._pulled = index + 1
            with self._cond:
                self._store(index, None, {0: with_remote_traceback(e, "")}, 1)
                self._end = self._pulled
                self.done += 1
                self._cond.notify_all()
            if not items:
                return None
            return start, items
        self._pulled += len(items)
        if self._exhausted:
            with self._cond:
                self._end = self._pulled
                self._cond.notify_all()
            self._iterator = iter(())
        if not items:
            return None
        return start, items

    def _store(self, start: int, values: list[Any] | None, failures: dict[int, Any] | None, count: int) -> None:
        if self._ordered:
            self._chunks[start] = (values, failures, count)
        else:
            self._ready.append((values, failures, count))

    def on_chunk(self, start: int, count: int, values: list[Any] | None, failures: dict[int, Any] | None, elapsed: float) -> bool:
        if values is not None:
            self._sizer.observe(count, elapsed)
        if failures:
            failures = {i: f if isinstance(f, BaseException) else f.exception(self.name) for i, f in failures.items()}
        with self._cond:
            self._store(start, values, failures, count)
            self.done += count
            if self.wake is None:
                self._cond.notify_all()
        if self.wake is not None:
            self.wake.append(self._notify)
        self._progress(count)
        finished = self.finished()
        if finished:
            self._close_progress()
        return finished

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def finished(self) -> bool:
        return (self._exhausted or self.cancelled or self._aborted is not None) and self.done >= self._pulled

    def abort(self, error: BaseException) -> None:
        with self._cond:
            self._aborted = error
            self._cond.notify_all()
        self._close_progress()

    # consumer side ---------------------------------------------------------

    def _refill(self) -> bool:
        """Move the next ready chunk's items into the buffer; False if none is ready."""
        if self._ordered:
            entry = self._chunks.pop(self._consumed, None)
        else:
            entry = self._ready.popleft() if self._ready else None
        if entry is None:
            return False
        values, failures, count = entry
        for i in range(count):
            if failures and i in failures:
                self._buffer.append((False, failures[i]))
            else:
                self._buffer.append((True, values[i] if values is not None else None))
        self._consumed += count
        return True

    def next(self, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._buffer and not self._refill():
                if self._end is not None and self._consumed >= self._end:
                    raise StopIteration
                if self._aborted is not None:
                    raise self._aborted
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"no result within {timeout} s")
                self._cond.wait(left)
            ok, value = self._buffer.popleft()
        if ok:
            return value
        raise value


class IMapIterator:
    """The iterator ``imap``/``imap_unordered`` return; ``next(timeout)`` as in ``multiprocessing``.

    Dropping it stops the job: no more items are taken from the iterable.
    """

    def __init__(self, job: _IMapJob, pool: _PoolCore | None = None) -> None:
        self._job = job
        self._pool = pool

    def __repr__(self) -> str:
        job = self._job
        total = "?" if job.total is None else job.total
        kind = "imap" if job._ordered else "imap_unordered"
        return f"<actorkit.util.multiprocessing.IMapIterator {kind} {job.name} done={job.done}/{total} yielded={job._consumed - len(job._buffer)}>"

    def __iter__(self) -> IMapIterator:
        return self

    def __next__(self) -> Any:
        return self.next(None)

    def next(self, timeout: float | None = None) -> Any:
        """The next result; ``TimeoutError`` if none comes within ``timeout`` seconds.

        Interrupted (Ctrl-C) while it waits, the rest of the job is cancelled.
        """
        try:
            return self._job.next(timeout)
        except BaseException as e:
            if not isinstance(e, Exception) and self._pool is not None:
                self._pool.cancel(self._job)
            raise

    def __del__(self) -> None:
        self._job.cancelled = True


def _pickling_error(error: SerializationError, fn: Any, items: list[Any]) -> BaseException:
    """What ``multiprocessing`` raises for an argument that cannot be pickled: the pickler's own error.

    ``error`` (actorkit's, naming the culprit) is added to it as a note.  Only
    run when sending failed, so the hot path pays nothing.
    """
    import cloudpickle

    for value in (fn, *items):
        try:
            cloudpickle.dumps(value)
        except Exception as original:
            if hasattr(original, "add_note"):  # Python 3.11+
                original.add_note(f"(actorkit: {error.culprit_type} cannot be sent to a pool process: {error.reason})")
            return original.with_traceback(None)
    cause = error.__cause__
    return cause if isinstance(cause, Exception) and not isinstance(cause, SerializationError) else error


class _Unsent:
    """Stands for a result that could not be sent back, in ``MaybeEncodingError``'s message."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _encoding_error(error: SerializationError, name: str, start: int) -> MaybeEncodingError:
    """``multiprocessing``'s error for a chunk whose results cannot be pickled back to the caller.

    ``error`` is about the value ``run`` returned: ``(values, failures, seconds)``,
    so its path starts ``[0][i]`` for the chunk's ``i``-th result.
    """
    steps = error.steps
    index = None
    if len(steps) >= 2 and steps[0] == "[0]" and steps[1][:1] == "[" and steps[1][1:-1].isdigit():
        index = int(steps[1][1:-1])
    if index is None:
        reason = error
        value = _Unsent(f"<the results of {name}()>")
    else:
        reason = error.about(f"the result of {name}() for item {start + index}", steps[2:])
        value = _Unsent(f"<the result of {name}() for item {start + index}: holds {_an(error.culprit_type)}>")
    encoding_error = MaybeEncodingError(reason, value)
    encoding_error.__cause__ = reason
    return encoding_error


def _an(name: str) -> str:
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _report_callback_error() -> None:
    print("Exception in a Pool callback:", file=sys.stderr)
    traceback.print_exc()


# --------------------------------------------------------------------------
# The dispatcher
# --------------------------------------------------------------------------


class _Slot:
    """One of the pool's processes, as the dispatcher sees it."""

    __slots__ = ("actor", "started", "completed", "inflight", "calls", "known", "forget", "retiring", "dead", "killed")

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.started = 0  # calls sent (maxtasksperchild counts these)
        self.completed = 0
        self.inflight = 0
        # Its calls in flight, in the order sent: the first is the one it runs (it runs one at a time).
        self.calls: list[_Call] = []
        self.known: set[int] = set()  # function tokens this actor has
        self.forget: list[int] = []  # tokens to tell it to drop
        self.retiring = False  # reached maxtasksperchild: replace once idle
        self.dead = False
        self.killed = False  # by the pool, to stop an interrupted job's chunk


class _Call(NamedTuple):
    """One chunk in flight in one actor."""

    slot: _Slot
    job: _Job
    start: int
    items: list[Any]  # as the job gave them (to send again if the actor is killed before it runs them)


_EV_JOB, _EV_DONE, _EV_CLOSE, _EV_TERMINATE, _EV_CANCEL = range(5)


class _PoolCore:
    """The pool's state and its dispatcher thread (kept apart from ``Pool`` so that ``Pool`` can be collected)."""

    def __init__(
        self,
        processes: int,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        maxtasksperchild: int | None,
        actor_options: dict[str, Any],
    ) -> None:
        self.processes = processes
        self._actor_class = _PoolWorkerActor.options(**actor_options) if actor_options else _PoolWorkerActor
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasks = maxtasksperchild
        self.state = _RUN
        self.broken: BaseException | None = None
        self._lock = threading.Lock()
        self._events: _queue.SimpleQueue[tuple[Any, ...]] = _queue.SimpleQueue()
        # Waiting callers to wake, once the dispatcher holds no reference to what it handled.
        self._wake: list[Callable[[], Any]] = []
        self._jobs: deque[_Job] = deque()  # jobs with chunks left to send
        self._unfinished: set[_Job] = set()
        self._functions: OrderedDict[int, tuple[Any, int]] = OrderedDict()
        self._tokens = itertools.count(1)
        self.actors_started = 0
        self._chunk_s = 1.0  # moving average of the time a chunk takes in its actor
        self.slots = [self._new_slot() for _ in range(processes)]
        try:
            actorkit.get([slot.actor.pid.remote() for slot in self.slots])
        except ActorDiedError as e:
            self._kill_all()
            error = e.cause if e.cause is not None else e
            raise unwrap_task_error(error) from None
        self._thread = threading.Thread(target=self._loop, name="actorkit-pool-dispatcher", daemon=True)
        self._thread.start()

    def _new_slot(self) -> _Slot:
        self.actors_started += 1
        return _Slot(self._actor_class.remote(self._initializer, self._initargs))

    # ---------------------------------------------------------- user threads

    def submit(self, job: _Job) -> None:
        with self._lock:
            if self.broken is not None:
                raise RuntimeError(f"the pool is broken: {self.broken!r}") from self.broken
            if self.state != _RUN:
                raise ValueError("Pool not running")
            if not actorkit.is_initialized():
                raise RuntimeError("actorkit was shut down: this pool's processes are gone; create a new Pool")
            job.wake = self._wake
            self._events.put((_EV_JOB, job))

    def cancel(self, job: _Job) -> None:
        """Stop ``job`` (its caller was interrupted): send none of its chunks, stop the running ones.

        Returns at once (it may run in a KeyboardInterrupt's wake); the dispatcher does the
        work before it takes the next job, so a map submitted next finds the processes free.
        """
        self._events.put((_EV_CANCEL, job))

    def close(self) -> None:
        with self._lock:
            if self.state == _RUN:
                self.state = _CLOSE
                self._events.put((_EV_CLOSE,))

    def terminate(self) -> None:
        with self._lock:
            if self.state == _TERMINATE:
                return
            self.state = _TERMINATE
            self._events.put((_EV_TERMINATE,))
        self.join()

    def join(self) -> None:
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def in_flight(self) -> int:
        return sum(slot.inflight for slot in self.slots)

    # ----------------------------------------------------- dispatcher thread

    def _loop(self) -> None:
        closing = False
        try:
            while True:
                event = self._events.get()
                while True:
                    kind = event[0]
                    if kind == _EV_JOB:  # (no local names for it: they would keep it alive)
                        self._jobs.append(event[1])
                        self._unfinished.add(event[1])
                    elif kind == _EV_DONE:
                        self._on_done(event[1], event[2])
                    elif kind == _EV_CLOSE:
                        closing = True
                    elif kind == _EV_CANCEL:
                        self._cancel(event[1])
                    else:
                        self._abort_all(RuntimeError("the pool was terminated"))
                        self._wake_callers()
                        self._kill_all(graceful=True)
                        return
                    try:
                        event = self._events.get_nowait()
                    except _queue.Empty:
                        break
                # Wake the callers only now that the last event (a chunk's arguments and results)
                # is dropped: once a map returns, the pool holds none of its objects.
                event = None
                self._wake_callers()
                self._dispatch()
                self._wake_callers()  # jobs that failed as they were sent (an argument that does not pickle)
                if closing and not self._unfinished and not self.in_flight():
                    self._kill_all(graceful=True)
                    return
        except BaseException as e:  # the runtime went away, or a bug: fail everything, visibly
            with self._lock:
                self.broken = e
            self._abort_all(RuntimeError(f"the pool's dispatcher failed: {e!r}"))
            self._wake_callers()
            try:
                self._kill_all()
            except BaseException:
                pass

    def _wake_callers(self) -> None:
        wake, self._wake[:] = list(self._wake), []
        for notify in wake:
            notify()

    def _abort_all(self, error: BaseException) -> None:
        for job in list(self._unfinished):
            job.abort(error)
        self._unfinished.clear()
        self._jobs.clear()

    def _cancel(self, job: _Job) -> None:
        job.interrupted = True
        if isinstance(job, _IMapJob):
            job.cancelled = True
        if job in self._unfinished:
            job.abort(RuntimeError(f"{job.name}: its caller was interrupted, and the rest of it cancelled"))
            self._unfinished.discard(job)
        if job in self._jobs:
            self._jobs.remove(job)
        for slot in list(self.slots):
            self._kill_if_interrupted(slot)

    def _kill_if_interrupted(self, slot: _Slot) -> None:
        """Replace ``slot``'s process if it runs an interrupted job's chunk.

        A running actor call cannot be interrupted, and the chunk may block for
        good (it was interrupted for a reason): the process is killed and a new
        one started at once.  The chunks of other jobs queued behind it never
        ran: they are sent again.
        """
        if not slot.calls or not slot.calls[0].job.interrupted or slot.killed or slot not in self.slots:
            return
        if not actorkit.is_initialized():
            return  # shut down: the processes went with the node (never start a new one)
        slot.killed = slot.dead = True
        try:
            actorkit.kill(slot.actor)
        except Exception:
            pass  # already gone
        self.slots[self.slots.index(slot)] = self._new_slot()

    def _kill_all(self, graceful: bool = False) -> None:
        """End the processes: ``graceful``, idle ones exit (atexit handlers run), the others are killed.

        A graceful exit takes milliseconds; one still going after
        ``_EXIT_GRACE_S`` (a blocking atexit handler) is killed.
        """
        slots, self.slots = self.slots, []
        if not actorkit.is_initialized():
            return  # shut down already: the processes went with the node (never start a new one)
        exits: list[tuple[_Slot, Any]] = []
        for slot in slots:
            if graceful and not slot.dead and slot.inflight == 0:
                try:
                    exits.append((slot, slot.actor.exit.remote()))
                    continue
                except Exception:
                    pass
            try:
                actorkit.kill(slot.actor)
            except Exception:
                pass  # already gone (or the runtime is shut down)
        if exits:
            try:
                actorkit.wait([ref for _, ref in exits], num_returns=len(exits), timeout=_EXIT_GRACE_S)
            except Exception:
                pass
            for slot, _ in exits:  # gone already, or stuck in an atexit handler
                try:
                    actorkit.kill(slot.actor)
                except Exception:
                    pass

    def _take_chunk(self) -> tuple[_Job, int, list[Any]] | None:
        while self._jobs:
            job = self._jobs[0]
            chunk = job.next_chunk(self)
            if chunk is not None:
                return job, chunk[0], chunk[1]
            self._jobs.popleft()
            if job.finished():
                job._close_progress()
                self._unfinished.discard(job)
        return None

    def _dispatch(self) -> None:
        # One chunk per free actor per sweep, so that few chunks still spread over all actors.
        depth = _DEEP if self._chunk_s < _SHORT_CHUNK_S else _DEPTH
        sent = True
        while sent and self._jobs:
            sent = False
            for slot in self.slots:
                if slot.inflight >= depth or slot.retiring or slot.dead:
                    continue
                taken = self._take_chunk()
                if taken is None:
                    return
                self._send(slot, *taken)
                sent = True

    def _token(self, fn: Any) -> int:
        entry = self._functions.get(id(fn))
        if entry is not None and entry[0] is fn:
            self._functions.move_to_end(id(fn))
            return entry[1]
        token = next(self._tokens)
        self._functions[id(fn)] = (fn, token)
        while len(self._functions) > _FUNCTION_CACHE:
            _, (_, old) = self._functions.popitem(last=False)
            for slot in self.slots:
                if old in slot.known:
                    slot.known.discard(old)
                    slot.forget.append(old)
        return token

    def _send(self, slot: _Slot, job: _Job, start: int, items: list[Any]) -> None:
        count = len(items)
        try:
            token = self._token(job.fn)
            fn = None if token in slot.known else job.fn
            forget, slot.forget = slot.forget, []
            original = items
            items, shared = job.share_large(items)
            ref = slot.actor.run.remote(token, fn, forget, job.mode, items, shared)
        except Exception as e:  # e.g. an argument that cannot be pickled
            error = _pickling_error(e, job.fn, original) if isinstance(e, SerializationError) else e
            if job.on_chunk(start, count, None, dict.fromkeys(range(count), error), 0.0):
                self._retire(job)
            return
        slot.known.add(token)
        slot.inflight += 1
        slot.started += 1
        if self._maxtasks is not None and slot.started >= self._maxtasks:
            slot.retiring = True
        call = _Call(slot, job, start, original)
        slot.calls.append(call)
        events = self._events
        ref.future().add_done_callback(lambda future, call=call: events.put((_EV_DONE, call, future)))

    def _on_done(self, call: _Call, future: Any) -> None:
        slot, job, start, items = call
        count = len(items)
        slot.inflight -= 1
        slot.calls.remove(call)
        try:
            values, failures, elapsed = future.result()
        except BaseException as e:  # the call itself failed: every item of the chunk fails
            if slot.killed:  # by the pool, for an interrupted job: this chunk never ran, or is not wanted
                if job in self._unfinished and not job.interrupted:
                    job.retry.append((start, items))
                    if job not in self._jobs:
                        self._jobs.append(job)
                return
            if isinstance(e, ActorDiedError):
                slot.dead = True
                if e.cause is not None and slot.completed == 0:
                    raise unwrap_task_error(e.cause) from e  # the initializer failed: the pool is broken
            error = unwrap_task_error(e)
            if isinstance(error, SerializationError) and error.subject.endswith("run() returned"):
                error = _encoding_error(error, job.name, start)  # a result that cannot be sent back
            finished = job.on_chunk(start, count, None, dict.fromkeys(range(count), error), 0.0)
        else:
            slot.completed += 1
            self._chunk_s = 0.8 * self._chunk_s + 0.2 * elapsed
            finished = job.on_chunk(start, count, values, failures, elapsed)
        if finished:
            self._retire(job)
        if (slot.retiring or slot.dead) and slot.inflight == 0 and slot in self.slots:
            self._replace(slot)
        else:
            self._kill_if_interrupted(slot)  # its next call is an interrupted job's

    def _retire(self, job: _Job) -> None:
        """Forget a finished job (it holds its results: the pool must not keep them alive)."""
        self._unfinished.discard(job)
        try:
            self._jobs.remove(job)
        except ValueError:
            pass

    def _replace(self, slot: _Slot) -> None:
        if not actorkit.is_initialized():
            raise RuntimeError("actorkit was shut down")
        index = self.slots.index(slot)
        if not slot.dead:  # retired (maxtasksperchild), idle: it exits as a multiprocessing worker does
            try:
                slot.actor.exit.remote()
            except Exception:
                try:
                    actorkit.kill(slot.actor)
                except Exception:
                    pass
        self.slots[index] = self._new_slot()


# --------------------------------------------------------------------------
# The public Pool
# --------------------------------------------------------------------------


def _check_chunksize(chunksize: int | None) -> None:
    if chunksize is not None and (isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1):
        raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")


class Pool:
    """A pool of ``processes`` actor processes with ``multiprocessing.Pool``'s interface.

    Args:
        processes: how many processes (actors); default: the cluster's CPUs.
        initializer: called as ``initializer(*initargs)`` once in each process
            when it starts (again in each replacement process).
        initargs: arguments of ``initializer``.
        maxtasksperchild: replace a process after it has run this many calls
            (chunks), as ``multiprocessing`` does; ``None``: never.
        context: accepted for compatibility and ignored (actorkit only spawns).
        ray_address: the cluster to connect to if this process is not
            connected yet (default: ``ACTORKIT_ADDRESS`` or ``RAY_ADDRESS``
            if set, else start a local node with ``processes`` CPUs).
        ray_remote_args: options for the actors (``num_cpus``, ``resources``, ...).
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        ray_address: str | None = None,
        ray_remote_args: dict[str, Any] | None = None,
    ) -> None:
        if processes is not None and (isinstance(processes, bool) or not isinstance(processes, int) or processes < 1):
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if maxtasksperchild is not None and (
            isinstance(maxtasksperchild, bool) or not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        ensure_initialized(ray_address, num_cpus=processes)
        self._processes = processes or cluster_cpus()
        self._core = _PoolCore(
            self._processes, initializer, tuple(initargs or ()), maxtasksperchild, dict(ray_remote_args or {})
        )
        self._finalizer = weakref.finalize(self, _PoolCore.terminate, self._core)

    def __repr__(self) -> str:
        core = self._core
        state = core.state if core.broken is None else "BROKEN"
        return (
            f"<actorkit.util.multiprocessing.Pool state={state} processes={self._processes} "
            f"pending_jobs={len(core._unfinished)} in_flight={core.in_flight()} "
            f"processes_started={core.actors_started}>"
        )

    def __reduce__(self) -> Any:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled; pass a Queue or an actor handle instead"
        )

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None and core.state == _RUN:
            warnings.warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self, stacklevel=2)

    def _check_running(self) -> None:
        if self._core.state != _RUN:
            raise ValueError("Pool not running")

    def _check_may_block(self) -> None:
        if threading.current_thread() is self._core._thread:
            raise RuntimeError(
                "a Pool callback cannot wait for a result of its own pool (callbacks run in the "
                "pool's dispatcher thread); use the _async methods without waiting instead"
            )

    def _wait(self, result: AsyncResult) -> Any:
        """The result of a blocking call; interrupted (Ctrl-C) meanwhile, the rest of it is cancelled.

        Otherwise the interrupted call would go on in the background, and the
        next call would wait behind it.
        """
        try:
            return result.get()
        except BaseException as e:
            if not isinstance(e, Exception) and not result.ready():
                self._core.cancel(result._job)
            raise

    # ---------------------------------------------------------------- apply

    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: dict[str, Any] | None = None) -> Any:
        """``func(*args, **kwds)`` in one of the pool's processes; blocks for the result."""
        self._check_may_block()
        return self._wait(self.apply_async(func, args, kwds))

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:
        """Like ``apply`` but returns an ``AsyncResult`` at once."""
        self._check_running()
        sizer = _ChunkSizer(1, 1, self._processes, adaptive=False)
        result = AsyncResult(
            func, _ARGS_KWARGS, [(tuple(args), dict(kwds or {}))], sizer, callback, error_callback, single=True, desc="apply"
        )
        self._core.submit(result._job)
        return result

    # ------------------------------------------------------------------ map

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        mode: int,
        chunksize: int | None,
        callback: Callable[[Any], Any] | None,
        error_callback: Callable[[BaseException], Any] | None,
        progress: Progress,
        desc: str,
    ) -> AsyncResult:
        self._check_running()
        _check_chunksize(chunksize)
        items = list(iterable)
        sizer = _ChunkSizer(chunksize, len(items), self._processes, adaptive=chunksize is None)
        result = AsyncResult(func, mode, items, sizer, callback, error_callback, progress=progress, desc=desc)
        if items:
            self._core.submit(result._job)
        return result

    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int | None = None, *, progress: Progress = False) -> list[Any]:
        """``[func(x) for x in iterable]``, computed in the pool; blocks for the list.

        ``chunksize=None`` adapts the chunk size to the items' cost; ``progress``
        shows a bar (``True``: on a terminal only; ``"force"``: always).
        """
        self._check_may_block()
        return self._wait(self._map_async(func, iterable, _ONE_ARG, chunksize, None, None, progress, "map"))

    def map_async(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
        *,
        progress: Progress = False,
    ) -> AsyncResult:
        """Like ``map`` but returns an ``AsyncResult`` at once."""
        return self._map_async(func, iterable, _ONE_ARG, chunksize, callback, error_callback, progress, "map")

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]], chunksize: int | None = None, *, progress: Progress = False) -> list[Any]:
        """``[func(*args) for args in iterable]``, computed in the pool."""
        self._check_may_block()
        return self._wait(self._map_async(func, iterable, _STAR_ARGS, chunksize, None, None, progress, "starmap"))

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
        *,
        progress: Progress = False,
    ) -> AsyncResult:
        """Like ``starmap`` but returns an ``AsyncResult`` at once."""
        return self._map_async(func, iterable, _STAR_ARGS, chunksize, callback, error_callback, progress, "starmap")

    def _imap(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int | None, ordered: bool, progress: Progress) -> IMapIterator:
        self._check_running()
        _check_chunksize(chunksize)
        desc = "imap" if ordered else "imap_unordered"
        job = _IMapJob(func, _ONE_ARG, iterable, chunksize, ordered, self._processes, progress, desc)
        self._core.submit(job)
        return IMapIterator(job, self._core)

    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int | None = None, *, progress: Progress = False) -> IMapIterator:
        """An iterator over ``func(x)`` for each ``x``, in order, computed as the iterable is consumed.

        ``chunksize`` None (default) or 1 adapts the chunk size, starting at one
        item; larger values are used as given (see the module's docstring).
        """
        return self._imap(func, iterable, chunksize, True, progress)

    def imap_unordered(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int | None = None, *, progress: Progress = False) -> IMapIterator:
        """Like ``imap``, but results come in the order they are ready."""
        return self._imap(func, iterable, chunksize, False, progress)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Accept no more work; the processes exit once the pending work is done."""
        self._core.close()

    def terminate(self) -> None:
        """Stop at once: kill the processes; pending results fail with ``RuntimeError``."""
        self._finalizer()

    def join(self) -> None:
        """Wait for the processes to exit; call ``close()`` or ``terminate()`` first."""
        if self._core.state == _RUN:
            raise ValueError("Pool is still running")
        self._core.join()
