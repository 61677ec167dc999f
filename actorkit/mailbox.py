"""A worker's mailbox: the work its main thread (or an actor's dispatcher) serves.

Two kinds of senders fill it.  The client's hub thread puts the node's
messages (EXECUTE, BECOME_ACTOR, EXIT).  Callers' direct links (see
``direct.py``) carry actor calls; nobody reads those for the mailbox: the
thread that takes work out of it reads them itself when it has nothing else
to do.  So a direct call wakes the thread that will run it straight from its
socket, with no thread in between, and calls from each link are taken in the
order they were sent.

The node's connection is the hub's to read (a running task needs its answers
and its cancellations), but while the mailbox is empty its consumer borrows
it (``lend``): the node's next EXECUTE then wakes the worker's main thread
directly too.
"""

from __future__ import annotations

import os
import selectors
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from . import protocol as P
from .direct import Hub, Link


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
        self._lender: tuple[Hub, Link] | None = None
        self._borrowed = False
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

    def lend(self, hub: Hub, link: Link) -> None:
        """Let the consumer read ``link`` (the node's connection) while it waits; ``hub`` reads it otherwise."""
        self._lender = (hub, link)

    def add_link(self, link: Link) -> None:
        """Read ``link`` for work from now on (from any thread: epoll sees it at once)."""
        self.stats["links"] += 1
        self._selector.register(link.sock, selectors.EVENT_READ, link)
        self.put(_NOTHING)  # the consumer's select() started before the link was there

    def get(self) -> Any:
        """The next item; while there is none, read the links (called by one thread).

        Items taken from the links are returned only once the links have been
        read during this call: a cancellation a caller sent while an earlier
        call ran is then seen before the call it cancels starts.
        """
        polled = not self.stats["links"]  # no link: only put() brings work
        while True:
            with self._lock:
                while polled and self._items:
                    item = self._items.popleft()
                    if item is not _NOTHING:
                        self._give_back()
                        return item
                queued = bool(self._items)
            # Work may already wait on a link (tasks sent ahead): take it without
            # first borrowing the node's connection, which costs four syscalls.
            events = self._selector.select(0)
            polled = True
            if not events:
                with self._lock:
                    if queued or self._items:
                        continue
                    self._sleeping = True
                self._borrow()
                events = self._selector.select()
            with self._lock:
                self._sleeping = False  # what the links bring is put by this thread: no wake-up
            for key, _ in events:
                link = key.data
                if link is None:
                    _drain(self._wake_r)
                elif self._borrowed and link is self._lender[1]:  # type: ignore[index]
                    if not self._lender[0].read(link):  # type: ignore[index]
                        self._borrowed = False  # closed (and dropped by the hub)
                        self._selector.unregister(link.sock)
                        self._lender[0].resume(link)  # type: ignore[index]
                else:
                    self._read(link)

    def poll(self) -> None:
        """Read what the links hold now, without waiting: on the consumer's thread while it
        runs an item, so that a cancellation sent meanwhile is seen (``is_canceled()``)."""
        self._read_links(self._selector.select(0))  # the node's connection is the hub's while an item runs

    def _read_links(self, events: list[tuple[Any, int]]) -> None:
        """Read the links ``events`` name, off the consumer's wait (``poll``, ``watch``)."""
        for key, _ in events:
            if key.data is None:
                _drain(self._wake_r)  # the consumer is not asleep: nothing to wake
            else:
                self._read(key.data)

    def take(self, wanted: Callable[[Any], bool]) -> list[Any]:
        """Remove and return the queued items that are ``wanted``."""
        with self._lock:
            taken = [item for item in self._items if item is not _NOTHING and wanted(item)]
            for item in taken:
                self._items.remove(item)
        return taken

    def watch(self) -> Callable[[], None]:
        """Read the links on another thread while the consumer's item waits (for
        what they bring then, see ``TaskExecutor.give_back_queued``); returns the
        function that stops it, to call before the consumer reads them again."""
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                self._read_links(self._selector.select())

        watcher = threading.Thread(target=run, name="actorkit-mailbox-watch", daemon=True)
        watcher.start()

        def end() -> None:
            stop.set()
            os.write(self._wake_w, b"\0")
            interrupted = None
            while watcher.is_alive():
                try:
                    watcher.join()
                except KeyboardInterrupt as e:  # a cancellation: raised once the links are the consumer's again
                    interrupted = e
            if interrupted is not None:
                raise interrupted

        return end

    def _borrow(self) -> None:
        if self._lender is None or self._borrowed:
            return
        hub, link = self._lender
        if hub.suspend(link):
            self._borrowed = True
            self._selector.register(link.sock, selectors.EVENT_READ, link)

    def _give_back(self) -> None:
        if self._borrowed:
            self._borrowed = False
            hub, link = self._lender  # type: ignore[misc]
            self._selector.unregister(link.sock)
            hub.resume(link)

    def _read(self, link: Link) -> None:
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
