"""Plain classes behind the utilities' actors (private).

They live here, undecorated, so that they pickle by reference: the public
names (``actorkit.util.SignalActor``) are the ``@remote`` versions.
"""

from __future__ import annotations

from typing import Any


class SignalActor:
    """An event shared by tasks and actors: ``wait()`` blocks until ``send()``.

    An asyncio actor, so any number of ``wait`` calls block at once without
    holding a thread each; it holds no CPU (``num_cpus=0``), so waiting tasks
    never keep the cluster from running the work that will send the signal.
    """

    def __init__(self) -> None:
        import asyncio

        self.ready_event = asyncio.Event()
        self.num_waiters = 0

    def send(self, clear: bool = False) -> None:
        """Wake every current waiter; with ``clear=True`` later waiters block again."""
        self.ready_event.set()
        if clear:
            self.ready_event.clear()

    async def wait(self, should_wait: bool = True) -> None:
        """Block until the signal is sent (at once if it was sent and not cleared)."""
        if should_wait:
            self.num_waiters += 1
            try:
                await self.ready_event.wait()
            finally:
                self.num_waiters -= 1

    async def cur_num_waiters(self) -> int:
        """How many ``wait`` calls are blocked now (to wait for waiters without sleeping)."""
        return self.num_waiters

    def clear(self) -> None:
        """Reset the signal: later ``wait`` calls block until the next ``send``."""
        self.ready_event.clear()

    def is_set(self) -> Any:
        return self.ready_event.is_set()
