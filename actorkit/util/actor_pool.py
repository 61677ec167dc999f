"""``ActorPool``: schedule work over a fixed set of actors (Ray's ``ray.util.ActorPool``).

The pool never creates actors: it is given handles and hands each submitted
value to an idle actor through ``fn(actor, value)``, which must return the
ObjectRef of a call on that actor.  Values submitted while every actor is
busy wait in the pool (in the driver) and go to the first actor that frees
up; an actor is free again once its result has been taken with
``get_next``/``get_next_unordered``.  So at most one call per actor is in
flight, and results are taken either in submission order (``get_next``,
``map``) or in completion order (``get_next_unordered``, ``map_unordered``).

    actors = [Worker.remote() for _ in range(4)]
    pool = ActorPool(actors)
    print(list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4])))  # [2, 4, 6, 8]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import actorkit
from actorkit.actor import ActorHandle

SubmitFn = Callable[[Any, Any], Any]


def _key(future: Any) -> Any:
    """A hashable key for a call's result (a ref, or a list of refs for num_returns > 1)."""
    return tuple(future) if isinstance(future, list) else future


def _first_ref(future: Any) -> actorkit.ObjectRef:
    return future[0] if isinstance(future, (list, tuple)) else future


class ActorPool:
    """A pool of actors that takes work items and returns their results.

    Args:
        actors: the actor handles to use; the pool owns none of them (add more
            with ``push``, take idle ones out with ``pop_idle``).
    """

    def __init__(self, actors: Iterable[ActorHandle]) -> None:
        self._idle_actors: list[ActorHandle] = list(actors)
        # result key -> (task index, actor running it)
        self._future_to_actor: dict[Any, tuple[int, ActorHandle]] = {}
        # task index -> result (ref or list of refs)
        self._index_to_future: dict[int, Any] = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: deque[tuple[SubmitFn, Any]] = deque()

    def __repr__(self) -> str:
        busy = len(self._future_to_actor)
        return (
            f"<actorkit.util.ActorPool actors={len(self._idle_actors) + busy} idle={len(self._idle_actors)} "
            f"in_flight={busy} queued={len(self._pending_submits)}>"
        )

    # ------------------------------------------------------------ submitting

    def submit(self, fn: SubmitFn, value: Any) -> None:
        """Schedule ``fn(actor, value)`` on an idle actor, or queue it until one is free.

        ``fn`` must call a method of ``actor`` and return its ObjectRef.
        """
        if self._idle_actors:
            actor = self._idle_actors.pop()
            future = fn(actor, value)
            index = self._next_task_index
            self._future_to_actor[_key(future)] = (index, actor)
            self._index_to_future[index] = future
            self._next_task_index += 1
        else:
            self._pending_submits.append((fn, value))

    def map(self, fn: SubmitFn, values: Iterable[Any]) -> Iterator[Any]:
        """Apply ``fn(actor, value)`` to every value; yield the results in the order of ``values``.

        Results of earlier submissions not yet taken are discarded first, as in Ray.
        """
        self._discard_pending_results()
        for value in values:
            self.submit(fn, value)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn: SubmitFn, values: Iterable[Any]) -> Iterator[Any]:
        """Like ``map``, but yield each result as soon as it is ready."""
        self._discard_pending_results()
        for value in values:
            self.submit(fn, value)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    def _discard_pending_results(self) -> None:
        while self.has_next():
            try:
                self.get_next(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass

    # --------------------------------------------------------------- results

    def has_next(self) -> bool:
        """Whether any submitted value's result has not been taken yet."""
        return bool(self._future_to_actor)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order, blocking until it is ready.

        Raises ``TimeoutError`` after ``timeout`` seconds; the result then stays
        the next one, unless ``ignore_if_timedout=True`` drops it (its actor is
        returned to the pool).  Raises ``StopIteration`` when nothing is pending.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        future = self._index_to_future[self._next_return_index]
        timed_out = False
        if timeout is not None:
            ready, _ = actorkit.wait([_first_ref(future)], timeout=timeout)
            if not ready:
                if not ignore_if_timedout:
                    raise TimeoutError(f"Timed out waiting for result after {timeout} s")
                timed_out = True
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(_key(future))
        self._return_actor(actor)
        if timed_out:
            raise TimeoutError(f"Timed out waiting for result after {timeout} s; the task {future} has been ignored.")
        return actorkit.get(future)

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """Any next result, as soon as one is ready (completion order).

        Raises ``TimeoutError`` if none is ready within ``timeout`` seconds (the
        results stay pending), and ``StopIteration`` when nothing is pending.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        by_ref = {_first_ref(f): key for key, f in ((k, self._index_to_future[i]) for k, (i, _) in self._future_to_actor.items())}
        ready, _ = actorkit.wait(list(by_ref), num_returns=1, timeout=timeout)
        if not ready:
            raise TimeoutError(f"Timed out waiting for result after {timeout} s")
        key = by_ref[ready[0]]
        index, actor = self._future_to_actor.pop(key)
        future = self._index_to_future.pop(index)
        self._next_return_index = max(self._next_return_index, index + 1)
        self._return_actor(actor)
        return actorkit.get(future)

    # ---------------------------------------------------------------- actors

    def _return_actor(self, actor: ActorHandle) -> None:
        self._idle_actors.append(actor)
        if self._pending_submits:
            self.submit(*self._pending_submits.popleft())

    def has_free(self) -> bool:
        """Whether an actor is idle and no submitted value is waiting for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> ActorHandle | None:
        """Remove an idle actor from the pool and return it (``None`` if none is free)."""
        if self.has_free():
            return self._idle_actors.pop()
        return None

    def push(self, actor: ActorHandle) -> None:
        """Add an actor to the pool; it takes queued work at once."""
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)
