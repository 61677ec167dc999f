"""The connection to the node: sending in an order it can trust, batching, requests, failure.

Every message to the node goes through ``send_many``, which puts in front of
it, in one frame, what is pending::

    ADDREF (new refs) · buffered messages (Shared.outgoing) · DECREF (released refs) · the messages

so that a submission pins its arguments before a release of them arrives.
``send_soon`` buffers a message while submissions are unanswered (a loop of
``remote()`` calls), or sends it at once when none is (its caller is about to
wait for it).  The flusher thread sends what waits when woken: for the first
buffered message, for released refs (after ``RELEASE_DELAY_S``), and for what
other components buffer under the lock (a send must not be made under it).

``request`` asks the node something (named actors, kill, alloc, "sync") and
waits for its REPLY.  ``fail`` records why the node is lost and wakes everyone
waiting for it: blocked gets, futures, requests, a worker's revocations.
What the node sends is read by the hub thread and handed to ``Client``
(``core.py``), which passes each message to the component it is for.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from .. import protocol as P
from ..context import forked_error
from ..direct import Hub, Link
from ..exceptions import GetTimeoutError, NodeDiedError
from .refs import RELEASED, RefCounts
from .shared import Shared

_STOP = object()
FLUSH = object()  # wakes the flusher to send buffered messages
# Released references are not urgent: most travel with the next message this
# process sends anyway. Waking the flusher for each would cost a thread switch
# per dropped ref; it waits this long first, gathering the rest.
RELEASE_DELAY_S = 0.005


class Reply:
    """A request waiting for the node's REPLY."""

    __slots__ = ("event", "ok", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.ok = False
        self.value: Any = None

    def __repr__(self) -> str:
        return f"<Reply {('ok' if self.ok else 'error') if self.event.is_set() else 'pending'}>"


class ConnectionStatistics(NamedTuple):
    closed: bool
    failed: bool
    messages_buffered: int  # waiting for the next send or the flusher
    submissions_unanswered: int  # through the node: while any is, submissions are buffered
    requests_pending: int  # sent, REPLY not back
    functions_exported: int
    unsynced: bool  # the node has not confirmed reading what it was told of objects


class Connection:
    """Sends to the node in order, batches submissions, asks it things, records its loss."""

    def __init__(
        self,
        shared: Shared,
        refs: RefCounts,
        node: Link,
        hub: Hub,
        on_lost: Callable[[], None] | None = None,
        release_delay: float = RELEASE_DELAY_S,
    ) -> None:
        self._shared = shared
        self._lock = shared.lock
        self._refs = refs
        self.node = node  # the node's connection (Client makes it: it reads what comes)
        self.hub = hub  # reads the node's connection and every direct link
        self._on_lost = on_lost  # called once if the node goes away (not on close())
        self._release_delay = release_delay
        self._pid = shared.pid
        # Re-entrant: output forwarding may send from inside a send (a finalizer that prints).
        self._send_lock = threading.RLock()
        self._outgoing = shared.outgoing
        self._unanswered = shared.unanswered
        self._waiters = shared.waiters
        self._callbacks = shared.callbacks
        self._replies: dict[int, Reply] = {}
        self._request_ids = itertools.count(1)
        self._exported: set[bytes] = set()
        self._wake = shared.wake
        self._flusher = threading.Thread(target=self._flush_loop, name="actorkit-ref-flusher", daemon=True)

    def __repr__(self) -> str:
        state = "closed" if self._shared.closed else "failed" if self._shared.failure is not None else "open"
        return (
            f"<Connection {state} to {self._shared.node_address} buffered={len(self._outgoing)} "
            f"unanswered={len(self._unanswered)} requests={len(self._replies)}>"
        )

    def statistics(self) -> ConnectionStatistics:
        shared = self._shared
        with self._lock:
            return ConnectionStatistics(
                shared.closed,
                shared.failure is not None,
                len(self._outgoing),
                len(self._unanswered),
                len(self._replies),
                len(self._exported),
                shared.unsynced,
            )

    def start(self) -> None:
        """Start reading what the node sends, and the flusher."""
        self.hub.add(self.node)
        self._flusher.start()

    # ------------------------------------------------------------ sending

    def send_many(self, messages: list[tuple[Any, ...]]) -> None:
        """Send ``messages`` after what is pending, in an order the node can trust.

        New references first, then buffered messages, then released
        references (a submission pins its arguments before a release of them
        arrives), then ``messages``.
        """
        with self._send_lock:
            with self._lock:
                self.check_open()
                addrefs, decrefs = self._refs.take_locked()
                head: list[tuple[Any, ...]] = []
                if addrefs:
                    head.append((P.ADDREF, addrefs))
                if self._outgoing:
                    head.extend(self._outgoing)
                    self._outgoing.clear()
                if decrefs:
                    head.append((P.DECREF, decrefs))
            if not head and not messages:
                return
            try:
                self.node.send(head + messages if head else messages)
            except OSError as e:
                self.fail(NodeDiedError(f"lost the connection to the node: {e}"))
                raise self._shared.failure from e  # type: ignore[misc]

    def check_open(self) -> None:
        if os.getpid() != self._pid:
            raise forked_error(self._pid)
        shared = self._shared
        if shared.closed:
            raise RuntimeError("actorkit was shut down; call actorkit.init() to start again")
        if shared.failure is not None:
            raise shared.failure

    def send(self, message: tuple[Any, ...]) -> None:
        self.send_many([message])

    def send_soon(self, message: tuple[Any, ...], at_once: bool | None = None) -> None:
        """Buffer ``message`` if submissions are in flight (the flusher or the next
        send delivers it shortly); otherwise (or ``at_once``) send it now."""
        with self._lock:
            self.check_open()
            if at_once is None:
                at_once = not self._unanswered
            if at_once:
                now = True  # after anything buffered: send_many() keeps the order
            else:
                now = False
                self._outgoing.append(message)
                wake = len(self._outgoing) == 1
        if now:
            self.send_many([message])
        elif wake:
            self._wake.put(FLUSH)

    def sync(self) -> None:
        """Return once the node has read what this process told it of objects (see DirectCalls.submit)."""
        with self._lock:
            needed, self._shared.unsynced = self._shared.unsynced, False
        if needed:
            self.request("sync")
        else:
            self.flush()

    def flush(self) -> None:
        """Deliver buffered messages now (before blocking on their results)."""
        if self._outgoing:
            self.send_many([])

    def flush_soon(self) -> None:
        """Have the flusher send what was buffered (for callers that may hold the lock)."""
        self._wake.put(FLUSH)

    def needs_export(self, function_id: bytes) -> bool:
        """True the first time: the caller sends the function's bytes with this message."""
        if function_id in self._exported:
            return False
        self._exported.add(function_id)
        return True

    def _flush_loop(self) -> None:
        while True:
            item = self._wake.get()
            if item is RELEASED:
                try:
                    # Gather more releases, unless submissions wait to be flushed.
                    item = self._wake.get(timeout=self._release_delay)
                except queue.Empty:
                    pass
                self._refs.released_woken()
            if item is _STOP:
                return
            try:
                self.send_many([])
            except BaseException:
                return

    # ------------------------------------------------------------ requests

    def request(self, operation: str, *args: Any, timeout: float | None = 60.0) -> Any:
        """Ask the node to do ``operation`` and wait for its answer (raising its error)."""
        request_id = next(self._request_ids)
        reply = Reply()
        with self._lock:
            self._replies[request_id] = reply
        self.send_many([(P.REQUEST, request_id, operation, args)])
        if not reply.event.wait(timeout):
            with self._lock:
                self._replies.pop(request_id, None)
            raise GetTimeoutError(f"the node did not answer {operation!r} within {timeout} s")
        if not reply.ok:
            if reply.value is None:
                raise self._shared.failure or NodeDiedError("the node went away")
            raise reply.value
        return reply.value

    def ping(self) -> Reply:
        """Send a "sync" request without waiting; its reply's event is set when the node answers."""
        request_id = next(self._request_ids)
        reply = Reply()
        with self._lock:
            self._replies[request_id] = reply
        self.send_many([(P.REQUEST, request_id, "sync", ())])
        return reply

    def on_reply(self, request_id: int, ok: bool, value: Any) -> None:
        with self._lock:
            reply = self._replies.pop(request_id, None)
        if reply is not None:
            reply.ok, reply.value = ok, value
            reply.event.set()

    # ------------------------------------------------------------ failure

    def describe_node(self) -> str:
        """`` at ADDRESS`` if known, for errors."""
        address = self._shared.node_address
        return f" at {P.describe(address)}" if address is not None else ""

    def on_node_lost(self, _link: Link) -> None:
        if not self._shared.closed:
            self.fail(
                NodeDiedError(f"the actorkit node server{self.describe_node()} closed the connection: it died or was stopped")
            )

    def fail(self, error: BaseException) -> None:
        """The node is lost (or this client closed): record why, and wake whoever waits for it."""
        shared = self._shared
        with self._lock:
            if shared.failure is None:
                shared.failure = error
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
            for waiters in self._waiters.values():
                for waiter in waiters:
                    waiter.wake(shared.wake_w)
            replies = list(self._replies.values())
            self._replies.clear()
        for reply in replies:
            reply.event.set()
        shared.revocations.failed()
        for pending in callbacks:
            for callback in pending:
                callback(None)  # type: ignore[arg-type]
        if self._on_lost is not None and not shared.closed:
            self._on_lost()

    def close(self) -> None:
        """Stop the flusher and the hub (which closes the node's connection too)."""
        self._wake.put(_STOP)
        self.hub.close()
