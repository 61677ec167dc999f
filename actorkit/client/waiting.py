"""get() and wait(): blocking until objects are ready, without trusting a silent node forever.

A caller registers a ``Waiter`` on every object it misses (SUBSCRIBE for those
no READY is due for yet) and blocks on its event, which ``Objects.on_ready``
sets.  While it waits:

- If all it waits for comes on one connection (the node's, or one direct
  link), it reads that connection itself (``_read_link``): that spares the hub
  thread's wake-up and a handoff per round trip.  Other threads that wake it
  write to the wake pipe it polls besides the connection.
- A worker's task that blocks tells the node (BLOCKED / UNBLOCKED), which
  lends its CPUs to others meanwhile, and may take back tasks lined up behind
  it (``Revocations``).
- Without a timeout, it asks the node for a sign of life every
  ``PROBE_AFTER_S``; no answer within ``PROBE_TIMEOUT_S`` fails the client
  with NodeDiedError instead of waiting forever.  Nothing of this runs unless
  a caller has waited that long.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from .. import protocol as P
from ..direct import Link, Loopback
from ..exceptions import GetTimeoutError, NodeDiedError, ObjectLostError
from ..object_ref import ObjectRef
from ..payload import Payload
from .connection import Connection, Reply
from .objects import Objects
from .shared import Shared, Waiter

# A get()/wait() without a timeout that has waited PROBE_AFTER_S asks the node
# for a sign of life (a "sync" request); with no answer within PROBE_TIMEOUT_S
# the node is reported dead (stopped, hung) instead of the caller waiting
# forever.
PROBE_AFTER_S = float(os.environ.get("ACTORKIT_NODE_PROBE_AFTER_S", "") or 10.0)
PROBE_TIMEOUT_S = float(os.environ.get("ACTORKIT_NODE_PROBE_TIMEOUT_S", "") or 20.0)


class WaitStatistics(NamedTuple):
    objects_waited_for: int  # objects some blocked get()/wait() misses
    waiters: int  # blocked get()/wait()s
    reading_a_link: bool  # a waiting thread reads a connection itself now
    blocks_unanswered: int  # a worker's BLOCKED whose REVOKED has not come back
    gets: int


class Waits:
    """get()/wait(): waiters, a worker's blocking, probing the node, reading a link in the caller's thread."""

    def __init__(self, shared: Shared, conn: Connection, objects: Objects) -> None:
        self._shared = shared
        self._lock = shared.lock
        self._conn = conn
        self._objects = objects
        self._hub = conn.hub
        self._node = conn.node
        self._ready = shared.ready
        self._mappings = shared.mappings
        self._subscribed = shared.subscribed
        self._waiters = shared.waiters
        self._direct = shared.calls
        self._revocations = shared.revocations
        self._stats = shared.stats
        self._wake_r = shared.wake_r
        self._link_reading = threading.Lock()  # one thread at a time reads a connection in get()
        # Set by a worker while a task runs, so that a blocking get() lends its CPUs.
        self.in_task = False
        self.task_blocked = False  # set when that task waited in get(): see TaskExecutor._send_result
        # A worker's: called as that task starts to wait; returns what to call when it stops.
        self.on_block: Callable[[], Callable[[], None] | None] | None = None

    def __repr__(self) -> str:
        reading = " reading a link" if self._link_reading.locked() else ""
        return f"<Waits objects={len(self._waiters)} gets={self._stats['gets']}{reading}>"

    def statistics(self) -> WaitStatistics:
        with self._lock:
            waiters = {id(w) for ws in self._waiters.values() for w in ws}
            return WaitStatistics(
                len(self._waiters),
                len(waiters),
                self._link_reading.locked(),
                self._revocations.unanswered,
                self._stats["gets"],
            )

    def was_revoked(self, task_id: bytes) -> bool:
        """Whether the node took ``task_id`` back (a worker asks before running it)."""
        return self._revocations.was_revoked(task_id, self._shared)

    # ------------------------------------------------------------- get

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        object_ids = [r._id for r in refs]
        ready = self.wait_ready(object_ids, len(set(object_ids)), timeout)
        if self._shared.closed:
            raise RuntimeError("actorkit was shut down while waiting")
        if len(ready) < len(set(object_ids)):
            not_ready = [r for r in refs if r._id not in ready]
            shown = ", ".join(map(repr, not_ready[:3])) + (", ..." if len(not_ready) > 3 else "")
            raise GetTimeoutError(
                f"get() timed out after {timeout} s: {len(not_ready)} of {len(refs)} "
                f"objects not ready ({shown})"
            )
        self._stats["gets"] += 1
        return [self._value(object_id) for object_id in object_ids]

    def _value(self, object_id: bytes, stale: Payload | None = None) -> Any:
        with self._lock:
            data = self._ready[object_id]
        try:
            value = self._objects.decode_object(object_id, data)
        except FileNotFoundError:
            # The node spilled the object to disk since this process cached its
            # payload: ask again, the node restores it.
            self._ask_again(object_id)
            return self._value(object_id)
        except ObjectLostError:
            # Its copy was on a node that died: the node may be making it again
            # (lineage). Ask once more; the same payload again means it is lost.
            if data == stale or data.segment is None:
                raise
            self._ask_again(object_id)
            return self._value(object_id, stale=data)
        if data.is_error:
            raise value
        return value

    def _ask_again(self, object_id: bytes) -> None:
        with self._lock:
            self._ready.pop(object_id, None)
            self._mappings.pop(object_id, None)
            self._subscribed.discard(object_id)
        self.wait_ready([object_id], 1, None)

    # ------------------------------------------------------------- wait

    def wait_ready(self, object_ids: list[bytes], num_ready: int, timeout: float | None) -> set[bytes]:
        """Block until ``num_ready`` of ``object_ids`` are ready here (or timeout); return the ready ones."""
        unique = set(object_ids)
        with self._lock:
            self._conn.check_open()
            missing = [o for o in unique if o not in self._ready]
            needed = num_ready - (len(unique) - len(missing))
            subscribe = [o for o in missing if o not in self._subscribed]
            self._subscribed.update(subscribe)
            waiter = None
            if needed > 0:
                waiter = Waiter(needed)
                for object_id in missing:
                    self._waiters.setdefault(object_id, []).append(waiter)
        try:
            if subscribe:
                self._conn.send_many([(P.SUBSCRIBE, subscribe)])
            if waiter is not None:
                self._conn.flush()
                self._block_on(waiter, missing, timeout)
        finally:
            if waiter is not None:
                with self._lock:
                    for object_id in missing:
                        waiters = self._waiters.get(object_id)
                        if waiters and waiter in waiters:
                            waiters.remove(waiter)
                            if not waiters:
                                del self._waiters[object_id]
        with self._lock:
            if self._shared.failure is not None and not self._shared.closed:
                raise self._shared.failure
            return {o for o in unique if o in self._ready}

    def _block_on(self, waiter: Waiter, missing: list[bytes], timeout: float | None) -> None:
        # A worker's task that blocks lends its CPUs to the node meanwhile, so
        # that nested tasks can run even when they outnumber the CPUs.
        resume = None
        blocked = False
        try:
            # A cancellation (SIGINT) halfway through either end would leave the watcher of
            # the links running, or the node thinking this task blocked: it waits for both.
            with _no_interrupt():
                if self.in_task:
                    self.task_blocked = True
                    if self.on_block is not None:
                        resume = self.on_block()
                    self._revocations.blocked()
                    self._conn.send((P.BLOCKED,))
                    blocked = True
            link = self._link_of(missing)
            if timeout is None:
                self._wait_probing(waiter, link)
            else:
                if link is not None:
                    timeout = self._read_link(link, waiter, timeout)  # type: ignore[arg-type]
                waiter.event.wait(timeout)
        finally:
            with _no_interrupt():
                try:
                    if resume is not None:
                        resume()
                finally:
                    if blocked:
                        self._conn.send((P.UNBLOCKED,))

    def _wait_probing(self, waiter: Waiter, link: Link | Loopback | None) -> None:
        """Wait for ``waiter`` without a deadline, but not for a node that stopped answering.

        Every PROBE_AFTER_S of waiting, ask the node to answer ("sync"); no
        answer within PROBE_TIMEOUT_S fails this client with NodeDiedError
        (which wakes every waiter).  A node that answers may take as long as
        its tasks need.
        """
        shared = self._shared
        probe: Reply | None = None
        probe_deadline = 0.0
        while not waiter.event.is_set() and shared.failure is None:
            if probe is None:
                wait = PROBE_AFTER_S
            else:
                wait = max(0.0, min(probe_deadline - time.monotonic(), PROBE_AFTER_S))
            if link is not None:
                left = self._read_link(link, waiter, wait)  # type: ignore[arg-type]  # a Loopback: see _read_link
                if left:
                    waiter.event.wait(left)
            else:
                waiter.event.wait(wait)
            if waiter.event.is_set() or shared.failure is not None:
                return
            if probe is not None and probe.event.is_set():
                probe = None  # it answered: it lives
            if probe is None:
                probe = self._conn.ping()
                probe_deadline = time.monotonic() + PROBE_TIMEOUT_S
            elif time.monotonic() >= probe_deadline:
                self._conn.fail(NodeDiedError(self._stopped_answering()))
                return

    def _stopped_answering(self) -> str:
        return (
            f"the actorkit node{self._conn.describe_node()} stopped answering: get()/wait() had waited "
            f"{PROBE_AFTER_S:g} s and the node did not answer a ping within {PROBE_TIMEOUT_S:g} s (is its "
            f"process stopped, e.g. by SIGSTOP, or hung?). Call actorkit.shutdown() and init() again; "
            f"ACTORKIT_NODE_PROBE_AFTER_S and ACTORKIT_NODE_PROBE_TIMEOUT_S set these limits"
        )

    def _link_of(self, object_ids: list[bytes]) -> Link | Loopback | None:
        """The one connection all of ``object_ids`` are to come on: a direct link, or the node's."""
        link: Link | Loopback | None = None
        for object_id in object_ids:
            call = self._direct.get(object_id[:-4])
            comes_on = self._node if call is None or call.via_node else call.link
            if comes_on is None:
                return None  # it waits for a lease: which link it will come on is not known
            if link is not None and comes_on is not link:
                return None
            link = comes_on
        return link

    def _read_link(self, link: Link, waiter: Waiter, timeout: float | None) -> float | None:
        """Wait for ``waiter`` reading ``link`` on this thread; return what is left of ``timeout``.

        ``link`` may be a Loopback (an actor waiting for its call to itself): the hub
        never holds one, so that ``suspend`` refuses it and this only returns.
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        if not self._link_reading.acquire(blocking=False):
            return timeout  # another thread does: wait for the hub's wake-up
        try:
            hub = self._hub
            if not hub.suspend(link):
                return timeout
            try:
                poller = link.poller
                if poller is None:
                    poller = link.poller = select.poll()
                    poller.register(link.sock, select.POLLIN)
                    poller.register(self._wake_r, select.POLLIN)
                waiter.reader = threading.get_ident()
                while not waiter.event.is_set():
                    wait = left()
                    events = poller.poll(None if wait is None else wait * 1000)
                    if not events:
                        break  # timed out
                    for fd, _ in events:
                        if fd == self._wake_r:
                            os.read(self._wake_r, 512)  # woken by another thread: check the waiter
                        elif not hub.read(link):
                            return left()  # lost: its calls come through the node now
            finally:
                waiter.reader = None
                hub.resume(link)
        finally:
            self._link_reading.release()
        return left()

    def close(self) -> None:
        """Close the wake pipe, once no thread polls it any more."""
        with self._link_reading:
            self._shared.close_pipe()


@contextlib.contextmanager
def _no_interrupt() -> Iterator[None]:
    """Hold SIGINT back on the main thread (where a cancellation raises KeyboardInterrupt)
    while the block runs; it is raised once the block is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
