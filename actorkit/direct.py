"""Direct actor calls: the transport between a caller and an actor's process.

A method call normally travels caller -> node -> actor -> node -> caller: four
socket hops and two passes through the node's event loop.  Once a caller knows
where an actor listens, it sends the call straight to the actor's process and
the result comes straight back: two hops, and the node is not involved::

    caller                                    actor's process
    h.m.remote(x) ─ ACTOR_CALL ─────────────▶ hub thread ─▶ mailbox ─▶ m(x)
    get(ref) ◀───── DONE ───────────────────  (a small result that holds no refs)
                       or  OWNED_RESULT ─▶ node ─ READY ─▶ caller
                                              (a large result, or one holding refs:
                                               the node keeps it, as for any task)

How a caller comes to call directly, and what it owes the node in return (its
results are unknown to the node until a ref to one leaves the process), is
the client's business: see ``Client.submit``.  This module only moves frames:

- ``Link``: one connection; blocking sends from any thread.
- ``Hub``: the thread that reads a caller's links.  An actor's process
  listens behind the same authenticated ``Gate`` as the node, and the thread
  that takes its work reads the links callers open (``mailbox.py``).

A thread blocked in ``get()`` on the answer of a direct call reads that
call's link itself (``Hub.suspend``/``resume``): waking it straight from the
socket saves the hub thread's wake-up and a handoff, about a third of a
synchronous call.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from . import protocol as P

OnMessages = Callable[["Link", list[tuple[Any, ...]]], None]
OnLost = Callable[["Link"], None]


def socket_path(session_dir: str, pid: int) -> str:
    """Where the worker process ``pid`` of the node with ``session_dir`` takes direct calls."""
    return os.path.join(session_dir, f"worker-{pid}.sock")


class HubStatistics(NamedTuple):
    links: int  # open now
    suspended: int  # read for now by a caller waiting on it, not by the hub
    added: int  # since start
    lost: int  # since start: closed by the other side, or dropped


class Link:
    """One direct connection between a caller and an actor's process."""

    def __init__(self, sock: socket.socket, on_messages: OnMessages, on_lost: OnLost, actor_id: bytes | None = None) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.reader = P.FrameReader(sock)
        self.read_lock = threading.Lock()  # whoever reads: the hub, or a waiting caller
        self.on_messages = on_messages
        self.on_lost = on_lost
        self.actor_id = actor_id  # on the caller's side: the actor it reaches
        self.lent_worker: int | None = None  # on the caller's side: the lent worker it reaches
        self.address: str | None = None  # on the caller's side: where it connected
        self.poller: Any = None  # for the caller's thread that reads it while it waits (Waits._read_link)
        self.closed = False  # set before its on_lost is called
        self._send_lock = threading.Lock()

    def __repr__(self) -> str:
        whom = f"actor {self.actor_id.hex()[:12]}" if self.actor_id else "caller"
        if self.lent_worker is not None:
            whom = f"lent worker {self.lent_worker}"
        return f"<Link to {whom} {'closed' if self.closed else f'fd={self.sock.fileno()}'}>"

    def send(self, messages: list[tuple[Any, ...]]) -> None:
        frame = P.encode(messages)
        with self._send_lock:
            self.sock.sendall(frame)

    def close(self) -> None:
        self.closed = True
        P.shut(self.sock)
        self.sock.close()


class Loopback:
    """An actor's link to itself: its calls to itself go straight into its own mailbox.

    So they are queued before the method that makes them returns, ahead of any
    call its caller sends after seeing that method's result.
    """

    def __init__(self, actor_id: bytes, on_call: OnMessages, on_answer: OnMessages) -> None:
        self.actor_id = actor_id
        self._on_call = on_call
        self._on_answer = on_answer

    def __repr__(self) -> str:
        return f"<Loopback actor {self.actor_id.hex()[:12]}>"

    def send(self, messages: list[tuple[Any, ...]]) -> None:
        for message in messages:
            if message[0] == P.DONE:
                self._on_answer(self, [message])  # type: ignore[arg-type]
            else:
                self._on_call(self, [message])  # type: ignore[arg-type]


class Hub:
    """Reads every direct link of this process on one thread, started on first use."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._links: set[Link] = set()
        self._suspended: set[Link] = set()  # read by another thread for now
        self._closed = False
        self._handling = threading.local()  # per thread: inside read()'s handler, how deep
        self.stats = {"links": 0, "lost": 0}

    def __repr__(self) -> str:
        s = self.statistics()
        state = " closed" if self._closed else ""
        return f"<Hub{state} links={s.links} suspended={s.suspended} added={s.added} lost={s.lost}>"

    def statistics(self) -> HubStatistics:
        # No lock: len() is atomic, and repr() must not wait (or deadlock) on one.
        return HubStatistics(len(self._links), len(self._suspended), self.stats["links"], self.stats["lost"])

    def connect(self, address: str, authkey: bytes, actor_id: bytes | None, on_messages: OnMessages, on_lost: OnLost) -> Link:
        """A link to the worker listening at ``address`` (OSError or EOFError if it is gone)."""
        link = Link(P.connect(address, authkey), on_messages, on_lost, actor_id)
        link.address = address
        self.add(link)
        return link

    def add(self, link: Link) -> None:
        with self._lock:
            if self._closed:
                link.close()
                raise OSError("the connection is closed")
            self._links.add(link)
            self.stats["links"] += 1
            # Registering from another thread is safe: epoll and kqueue see it at once.
            self._selector.register(link.sock, selectors.EVENT_READ, link)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="actorkit-direct", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    return  # close() woke us
                link = key.data
                if link.read_lock.acquire(blocking=False):
                    try:
                        self.read(link)
                    finally:
                        link.read_lock.release()
                # else: a caller waiting for an answer on it reads it (see suspend)

    def read(self, link: Link) -> bool:
        """Read what ``link`` has (its read lock held) and handle it; False once it is lost."""
        try:
            messages = link.reader.feed()
        except P.ChannelClosed:
            self.drop(link)
            link.on_lost(link)
            return False
        if messages:
            self._handling.depth = self.handling() + 1
            try:
                link.on_messages(link, messages)
            finally:
                self._handling.depth -= 1
        return True

    def handling(self) -> int:
        """Whether this thread runs a handler of what a link brought (a callback, say):
        it must not wait for an answer that only a read by this very thread would bring."""
        return getattr(self._handling, "depth", 0)

    def suspend(self, link: Link) -> bool:
        """Stop reading ``link`` (its caller will); False if it is closed already."""
        with self._lock:
            if link not in self._links or link in self._suspended:
                return False  # closed, or another thread reads it (and will hand on what it reads)
            self._suspended.add(link)
            self._selector.unregister(link.sock)
        link.read_lock.acquire()  # waits out a read the hub had started
        if link not in self._links:  # that read found it closed
            self.resume(link)
            return False
        return True

    def resume(self, link: Link) -> None:
        link.read_lock.release()
        with self._lock:
            self._suspended.discard(link)
            if link in self._links:
                self._selector.register(link.sock, selectors.EVENT_READ, link)

    def drop(self, link: Link) -> None:
        with self._lock:
            if link not in self._links:
                return
            self._links.discard(link)
            self.stats["lost"] += 1
            if link not in self._suspended:
                self._selector.unregister(link.sock)
        link.close()

    def close(self) -> None:
        """Close every link and stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            links = list(self._links)
            self._links.clear()
        os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for link in links:
            link.close()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
