"""Actors and helpers shared by the actor and fault tests."""

from __future__ import annotations

import asyncio
import os
import select

import actorkit as ray


def process_exited(pid: int, timeout: float) -> bool:
    """Block until process ``pid`` has exited (True), or ``timeout`` passed (False).

    Waits on a pidfd: no polling.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # already gone (and reaped)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


@ray.remote
class SignalActor:
    """A one-shot signal (like Ray's test SignalActor): ``wait`` returns once ``send`` ran."""

    def __init__(self):
        self.ready = asyncio.Event()
        self.waiting = 0
        self.waiters_changed = asyncio.Condition()

    async def send(self):
        self.ready.set()

    async def wait(self):
        async with self.waiters_changed:
            self.waiting += 1
            self.waiters_changed.notify_all()
        await self.ready.wait()
        return "signalled"

    async def wait_for_waiters(self, n):
        """Return once ``n`` calls are blocked in ``wait``."""
        async with self.waiters_changed:
            await self.waiters_changed.wait_for(lambda: self.waiting >= n)
        return self.waiting
