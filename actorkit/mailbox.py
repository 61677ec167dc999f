"""A worker's mailbox: the work its main thread (or an actor's dispatcher) serves.

Two kinds of senders fill it.  The client's receiver thread puts the node's
messages (EXECUTE, BECOME_ACTOR, EXIT).  Callers' direct links (see
``direct.py``) carry actor calls; nobody reads those for the mailbox: the
thread that takes work out of it reads them itself when it has nothing else
to do.  So a direct call wakes the thread that will run it straight from its
socket, with no thread in between, and calls from each link are taken in the
order they were sent.
"""

from __future__ import annotations

import os
import selectors
import threading
from collections import deque
from typing import Any

from .direct import Link


class Mailbox:
    """A blocking queue whose consumer also reads the direct links it was given."""

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._sleeping = False  # the consumer waits in select(): a put() must wake it
        self.stats = {"put": 0, "links": 0, "from_links": 0}

    def __repr__(self) -> str:
        return f"<Mailbox queued={len(self._items)} {self.stats}>"

    def put(self, item: Any) -> None:
        """Queue ``item`` (from any thread)."""
        with self._lock:
            self._items.append(item)
            self.stats["put"] += 1
            wake, self._sleeping = self._sleeping, False
        if wake:
            os.write(self._wake_w, b"\0")

    def add_link(self, link: Link) -> None:
        """Read ``link`` for work from now on (from any thread: epoll sees it at once)."""
        self.stats["links"] += 1
        self._selector.register(link.sock, selectors.EVENT_READ, link)
        self.put(_NOTHING)  # the consumer's select() started before the link was there

    def get(self) -> Any:
        """The next item; while there is none, read the links (called by one thread)."""
        while True:
            with self._lock:
                while self._items:
                    item = self._items.popleft()
                    if item is not _NOTHING:
                        return item
                self._sleeping = True
            events = self._selector.select()
            with self._lock:
                self._sleeping = False  # what the links bring is put by this thread: no wake-up
            for key, _ in events:
                link = key.data
                if link is None:
                    _drain(self._wake_r)
                else:
                    self._read(link)

    def _read(self, link: Link) -> None:
        from . import protocol as P

        try:
            messages = link.reader.feed()
        except P.ChannelClosed:
            self._selector.unregister(link.sock)
            link.close()
            link.on_lost(link)
            return
        if messages:
            self.stats["from_links"] += len(messages)
            link.on_messages(link, messages)  # puts the calls (this thread, no wake-up needed)


_NOTHING = object()  # a put() that only wakes the consumer


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
