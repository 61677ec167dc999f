"""``Queue``: a first-in, first-out queue shared by tasks and actors (Ray's ``ray.util.queue``).

The items live in one asyncio actor; a ``Queue`` object is only a handle to
it, so it pickles small and can be passed to tasks and actors, which all see
the same queue::

    q = Queue(maxsize=100)

    @ray.remote
    def consumer(q):
        try:
            while True:
                handle(q.get(timeout=1))
        except Empty:
            pass

    q.put_nowait_batch(range(10))
    ray.get([consumer.remote(q) for _ in range(2)])

Semantics follow Ray's queue (and the standard library's ``queue.Queue``):

* ``put``/``get`` block by default; ``block=False`` raises ``Full``/``Empty`` at
  once, ``timeout=s`` raises them after ``s`` seconds.  Blocking happens in the
  actor (on its event loop), so a blocked ``get`` holds no thread and no CPU.
* ``put_nowait_batch``/``get_nowait_batch`` move many items in one call, all or
  nothing: ``Full`` if the batch does not fit, ``Empty`` if fewer items are there.
* ``Empty`` and ``Full`` derive from ``queue.Empty`` and ``queue.Full``.
* Items are stored as values (pickled once when put).  Several consumers
  blocked on one empty queue are served in the order they started waiting.
* The actor holds no CPU (``num_cpus=0``, override with ``actor_options``).  It
  lives while a ``Queue`` handle to it exists anywhere, or until ``shutdown()``.
"""

from __future__ import annotations

import queue as _stdlib_queue
from collections.abc import Iterable
from typing import Any

from ..actor import ActorHandle, exit_actor
from ..api import get as _get
from ..api import kill, remote, wait

__all__ = ["Empty", "Full", "Queue"]


class Empty(_stdlib_queue.Empty):
    """``get`` found the queue empty (no blocking, or the timeout passed)."""


class Full(_stdlib_queue.Full):
    """``put`` found the queue full (no blocking, or the timeout passed)."""


# Replies of the actor: (True, value) or (False, message) for Empty/Full.
_Reply = tuple[bool, Any]


class _QueueActor:
    """The actor that holds the items: an ``asyncio.Queue`` on the actor's event loop."""

    def __init__(self, maxsize: int) -> None:
        import asyncio

        self.maxsize = maxsize
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    async def put(self, item: Any, timeout: float | None = None) -> _Reply:
        import asyncio

        if timeout is None:
            await self.queue.put(item)
            return True, None
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            return False, f"the queue stayed full for {timeout} s"
        return True, None

    async def get(self, timeout: float | None = None) -> _Reply:
        import asyncio

        if timeout is None:
            return True, await self.queue.get()
        try:
            return True, await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return False, f"the queue stayed empty for {timeout} s"

    def put_nowait(self, item: Any) -> _Reply:
        if self.queue.full():
            return False, f"the queue is full (maxsize={self.maxsize})"
        self.queue.put_nowait(item)
        return True, None

    def put_nowait_batch(self, items: list[Any]) -> _Reply:
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            return False, (
                f"Cannot add {len(items)} items to queue of size {self.queue.qsize()} "
                f"and maxsize {self.maxsize}."
            )
        for item in items:
            self.queue.put_nowait(item)
        return True, None

    def get_nowait(self) -> _Reply:
        if self.queue.empty():
            return False, "the queue is empty"
        return True, self.queue.get_nowait()

    def get_nowait_batch(self, num_items: int) -> _Reply:
        if num_items > self.queue.qsize():
            return False, f"Cannot get {num_items} items from queue of size {self.queue.qsize()}."
        return True, [self.queue.get_nowait() for _ in range(num_items)]

    def shutdown(self) -> None:
        exit_actor()


_QueueActorClass = remote(num_cpus=0)(_QueueActor)


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


class Queue:
    """A first-in, first-out queue in an actor, usable from any task, actor or driver.

    Args:
        maxsize: the most items the queue holds; 0 (default) means no limit.
        actor_options: options for the queue's actor (``.options(...)``), e.g.
            ``{"name": "jobs", "lifetime": "detached"}`` or ``{"num_cpus": 1}``.
    """

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        self.maxsize = maxsize
        self.actor: ActorHandle | None = _QueueActorClass.options(**(actor_options or {})).remote(maxsize)

    def __repr__(self) -> str:
        if self.actor is None:
            return f"<actorkit.util.queue.Queue maxsize={self.maxsize} shut down>"
        return f"<actorkit.util.queue.Queue maxsize={self.maxsize} actor={self.actor._actor_id.hex()}>"

    def _handle(self) -> ActorHandle:
        if self.actor is None:
            raise RuntimeError("this Queue was shut down")
        return self.actor

    # ----------------------------------------------------------------- sizes

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue."""
        return _get(self._handle().qsize.remote())

    def qsize(self) -> int:
        """The number of items in the queue."""
        return self.size()

    def empty(self) -> bool:
        """Whether the queue is empty (may change at once: other processes use it too)."""
        return _get(self._handle().empty.remote())

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items."""
        return _get(self._handle().full.remote())

    # ------------------------------------------------------------------- put

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``; if the queue is full, wait for room (up to ``timeout`` seconds).

        Raises ``Full`` when the queue is full and ``block`` is False, or when
        the timeout passes; ``ValueError`` if ``timeout`` is negative.
        """
        if not block:
            ok, message = _get(self._handle().put_nowait.remote(item))
        else:
            _check_timeout(timeout)
            ok, message = _get(self._handle().put.remote(item, timeout))
        if not ok:
            raise Full(message)

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """``put`` for asyncio code: awaits instead of blocking the thread."""
        if not block:
            ok, message = await self._handle().put_nowait.remote(item)
        else:
            _check_timeout(timeout)
            ok, message = await self._handle().put.remote(item, timeout)
        if not ok:
            raise Full(message)

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``: raises ``Full`` at once if there is no room."""
        self.put(item, block=False)

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Add all of ``items`` in order, in one call; raises ``Full`` (adding none) if they do not fit."""
        if not isinstance(items, Iterable):
            raise TypeError("Argument 'items' must be an Iterable")
        ok, message = _get(self._handle().put_nowait_batch.remote(list(items)))
        if not ok:
            raise Full(message)

    # ------------------------------------------------------------------- get

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the next item; if the queue is empty, wait (up to ``timeout`` seconds).

        Raises ``Empty`` when the queue is empty and ``block`` is False, or when
        the timeout passes; ``ValueError`` if ``timeout`` is negative.
        """
        if not block:
            ok, value = _get(self._handle().get_nowait.remote())
        else:
            _check_timeout(timeout)
            ok, value = _get(self._handle().get.remote(timeout))
        if not ok:
            raise Empty(value)
        return value

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """``get`` for asyncio code: awaits instead of blocking the thread."""
        if not block:
            ok, value = await self._handle().get_nowait.remote()
        else:
            _check_timeout(timeout)
            ok, value = await self._handle().get.remote(timeout)
        if not ok:
            raise Empty(value)
        return value

    def get_nowait(self) -> Any:
        """``get(block=False)``: raises ``Empty`` at once if there is no item."""
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Remove and return ``num_items`` items in order; raises ``Empty`` (taking none) if fewer are there."""
        if isinstance(num_items, bool) or not isinstance(num_items, int):
            raise TypeError("Argument 'num_items' must be an int")
        if num_items < 0:
            raise ValueError("'num_items' must be nonnegative")
        ok, value = _get(self._handle().get_nowait_batch.remote(num_items))
        if not ok:
            raise Empty(value)
        return value

    # -------------------------------------------------------------- shutdown

    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """End the queue's actor; its items are dropped, and later calls raise ``RuntimeError``.

        With ``force=False`` the actor is asked to exit (calls it is serving
        fail with ``ActorDiedError``); if it has not within ``grace_period_s``
        seconds it is killed.  ``force=True`` kills it at once.  Other copies
        of this ``Queue`` (in tasks, actors) then fail with ``ActorDiedError``.
        """
        actor, self.actor = self.actor, None
        if actor is None:
            return
        if force:
            kill(actor, no_restart=True)
            return
        done = actor.shutdown.remote()
        ready, _ = wait([done], timeout=grace_period_s)
        if not ready:
            kill(actor, no_restart=True)
