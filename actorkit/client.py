"""The client side of a node: one per process (the driver, each worker).

Data flow (one task, driver and worker on the same node)::

    driver                        node event loop                 worker
    f.remote(x) ── SUBMIT ──────▶ deps ready? resources free? ──▶ EXECUTE
    get(ref) ──── SUBSCRIBE ────▶ (waits for the object)           runs f(x)
                                  stores result, READY ◀────────── DONE
    value ◀──────── READY ──────  (to every subscriber)

The hub thread (``direct.py``) reads everything the node sends and fills the
table of ready objects; callers block on an event until what they wait for
is there.  A caller that waits for objects that all come on one connection
(the node's, or one direct link) reads that connection itself meanwhile,
which spares a thread wake-up and handoff per round trip.  Small values
travel inside READY; large ones stay in shared memory and are mapped by the
reader.

Actor calls go straight to the actor's process once the node has said where
it listens (ACTOR_ROUTE) and none of this process's calls to it through the
node are unanswered: see ``direct.py``.  A driver's tasks go the same way to
workers the node lent it (LEASE), waiting here for room on one: see
``Node._lend`` and the "lent workers" section below.  The node does not know the results
of direct calls; the first time a ref to one leaves this process (pickled
into arguments, an object or a result), the client publishes it: PUT if it
is back, PROMISE if not (then PUT when it arrives).  A large result, or one
holding refs, comes through the node instead (OWNED_RESULT), so that the
node owns its memory and its refs from the start.  If the link breaks, the
calls still unanswered on it are resent through the node, marked lost.

Reference counting: the node counts each process holding a ref once.  This
client counts its live ObjectRefs per object and tells the node on the first
(ADDREF) and after the last (DECREF).  ``ObjectRef.__del__`` only puts the id
on a queue that is safe to use from finalizers; a flusher thread and every
send drain it, so no lock is taken inside ``__del__``.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import mmap
import os
import queue
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from . import payload as payload_codec
from . import protocol as P
from .direct import Hub, Link, Loopback
from .exceptions import GetTimeoutError, NodeDiedError, ObjectLostError
from .metrics_batch import MetricBatch
from .object_ref import ObjectRef
from .payload import Payload
from .run_times import RunTimes
from .scheduler import shape_of
from .task_spec import TaskSpec, cancelled_error, spec_to_wire

_STOP = object()
_FLUSH = object()  # wakes the flusher to send buffered submissions
_RELEASED = object()  # wakes the flusher to send released references, after a moment
# Released references are not urgent: most travel with the next message this
# process sends anyway. Waking the flusher for each would cost a thread switch
# per dropped ref; it waits this long first, gathering the rest.
RELEASE_DELAY_S = 0.005
# A lent worker gets its next tasks while it runs one, so that it never waits
# for the round trip to this process: but only for a function known to be short
# (these many runs on leases, averaging under that long), as a task sent behind
# a long one waits for it even if another worker comes free.
# The deeper for the shorter tasks, as long as what waits on a worker is about
# that much work: a worker that never waits for this process is never woken.
LEASE_QUEUE_S = 0.005
LEASE_MAX_DEPTH = 16
# Tasks wait for a lease's room in this process, and the thread that reads the
# answers sends them: never more arguments at once than a socket's buffer
# takes (a worker reads them only once it is free), so that this thread is
# never left blocked in a send.
LEASE_MAX_INLINE = 1 << 16
# A get()/wait() without a timeout that has waited PROBE_AFTER_S asks the node
# for a sign of life (a "sync" request); with no answer within PROBE_TIMEOUT_S
# the node is reported dead (stopped, hung) instead of the caller waiting
# forever.  Nothing of this runs unless a caller has waited that long.
PROBE_AFTER_S = float(os.environ.get("ACTORKIT_NODE_PROBE_AFTER_S", "") or 10.0)
PROBE_TIMEOUT_S = float(os.environ.get("ACTORKIT_NODE_PROBE_TIMEOUT_S", "") or 20.0)


class _Reply:
    """A request waiting for the node's REPLY."""

    __slots__ = ("event", "ok", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.ok = False
        self.value: Any = None


class _Waiter:
    """One blocked get()/wait(): how many more objects it needs, and its wake-up."""

    __slots__ = ("remaining", "event", "reader")

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining
        self.event = threading.Event()
        # Set while its thread reads a connection itself: other threads that wake
        # it must also write to the client's wake pipe, which that thread polls.
        self.reader: int | None = None

    def wake(self, wake_fd: int) -> None:
        self.event.set()
        if self.reader is not None and self.reader != threading.get_ident():
            os.write(wake_fd, b"\0")


class _Lease:
    """A worker the node lent this process for tasks of one shape (see ``Node._lend``)."""

    __slots__ = (
        "lease_id", "worker_id", "address", "shape", "inflight", "inflight_bytes", "function", "revoked", "answered_at",
    )

    def __init__(self, lease_id: int, worker_id: int, address: str, shape: Any) -> None:
        self.lease_id = lease_id
        self.worker_id = worker_id
        self.address = address
        self.shape = shape
        self.inflight = 0  # tasks sent on it and not answered yet
        self.inflight_bytes = 0  # their arguments: a busy worker reads none of them until it is free
        self.function = b""  # the function of those tasks: only its own wait behind one
        self.revoked = False  # the node wants it back: returned once none is in flight
        self.answered_at = 0.0  # when its last task was answered: when the next one started

    def __repr__(self) -> str:
        state = "revoked" if self.revoked else f"{self.inflight} in flight"
        return f"<Lease worker {self.worker_id} {dict(self.shape)} {state}>"

    def add(self, spec: TaskSpec) -> None:
        """``spec`` is sent on this lease."""
        self.inflight += 1
        self.inflight_bytes += _inline_size(spec)
        self.function = spec.function_id

    def remove(self, spec: TaskSpec) -> None:
        """``spec`` is answered, or handed back."""
        self.inflight -= 1
        self.inflight_bytes -= _inline_size(spec)


def _inline_size(spec: TaskSpec) -> int:
    """How many bytes of arguments ``spec`` carries in its own frame."""
    return len(spec.args.data or b"")


class _DirectCall:
    """An actor call, or a task for a lent worker, sent on a direct link (or waiting for
    a lease: ``link`` and ``lease`` None) and not answered yet."""

    __slots__ = ("spec", "link", "return_ids", "hold", "cancelled", "lease", "sent_at", "via_node")

    def __init__(
        self, spec: TaskSpec, link: Link | Loopback | None, return_ids: list[bytes], hold: tuple[bytes, ...]
    ) -> None:
        self.spec = spec  # resent through the node if the link breaks
        self.link = link
        self.return_ids = return_ids
        self.hold = hold  # counted refs kept until the answer: arguments, and the actor itself
        self.cancelled = False
        self.lease: _Lease | None = None  # for a task: the lease it went on
        self.sent_at = 0.0  # for a task: when it went, to learn which functions are short
        self.via_node = False  # answered through the node (OWNED_RESULT): its READY is on the way


class Client:
    """A process's connection to its node: submits tasks, puts and gets objects."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        session: str,
        job_id: bytes,
        role: str,
        worker_id: int | None = None,
        namespace: str | None = None,
        store_capacity: int = 1 << 62,
        authkey: bytes = b"",
        transfer_address: Any = None,
        on_message: Callable[[tuple[Any, ...]], None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.session = session
        self.store_capacity = store_capacity
        self.authkey = authkey
        # This machine's TransferServer when it is not the node's (on a member node of a
        # cluster): it fetches objects made on other machines, and this process's
        # segments are that member's, never recycled ones of the node's.
        self.transfer_address = transfer_address
        self._localize: Callable[[bytes, Payload], Payload] | None = None
        self.job_id = job_id
        self.role = role
        self.worker_id = worker_id
        self._on_message = on_message  # the role's handler for non-object messages
        self._on_lost = on_lost  # called once if the node goes away (not on close())
        self._pid = os.getpid()
        # Re-entrant: output forwarding may send from inside a send (a finalizer that prints).
        self._send_lock = threading.RLock()
        self._lock = threading.RLock()
        self._waiters: dict[bytes, list[_Waiter]] = {}
        self._replies: dict[int, _Reply] = {}
        self._request_ids = itertools.count(1)
        # A worker that blocked waits for the node's REVOKED answer before it
        # starts another task: tasks lined up behind it may have been taken back.
        self._revocations = threading.Condition(threading.Lock())
        self._unanswered_blocks = 0
        self._revoked: set[bytes] = set()
        self._ready: dict[bytes, Payload] = {}
        self._mappings: dict[bytes, mmap.mmap] = {}
        self._subscribed: set[bytes] = set()
        self._callbacks: dict[bytes, list[Callable[[Payload], None]]] = {}
        self._local_refs: dict[bytes, int] = {}
        self._addrefs: list[bytes] = []
        # Submissions wait here until the next send or the flusher: a loop of
        # remote() calls then travels in a few frames rather than one each.
        self._outgoing: list[tuple[Any, ...]] = []
        # Submissions whose results have not come back: while there are none, a
        # submission is sent at once (its caller is about to wait for it); while
        # there are, it is buffered (its caller is submitting a batch).
        self._unanswered: set[bytes] = set()
        self._releases: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wake: queue.SimpleQueue[Any] = queue.SimpleQueue()  # the flusher's
        self._release_wake_pending = False
        self._exported: set[bytes] = set()
        # Direct actor calls (see the module docstring).
        self.actor_id: bytes | None = None  # set in an actor's process (see call_self_through)
        self._loopback: Loopback | None = None
        self._routes: dict[bytes, str] = {}  # actor id -> where it listens, not connected yet
        self._links: dict[bytes, Link] = {}  # actor id -> connected link
        self._node_calls: dict[bytes, int] = {}  # actor id -> its calls through the node not answered
        self._node_call_of: dict[bytes, bytes] = {}  # first return id of such a call -> actor id
        self._direct: dict[bytes, _DirectCall] = {}  # task id -> unanswered direct call, in the order sent
        self._pending_direct: set[bytes] = set()  # results of unanswered direct calls
        self._local_only: set[bytes] = set()  # results of direct calls, back, unknown to the node
        self._promised: set[bytes] = set()  # pending direct results the node was told of
        # Workers lent by the node (see the module docstring).
        self._leases: dict[Any, list[_Lease]] = {}  # task shape -> leases to send such tasks on, not revoked
        self._lent: dict[int, _Lease] = {}  # lease id -> every lease held, revoked ones included
        # Tasks for lent workers, waiting for room on a lease of their shape (sent in order).
        self._backlog: dict[Any, deque[_DirectCall]] = {}
        self._wanted: set[Any] = set()  # shapes this process asked the node for one more lease of
        self._pumping: dict[Any, bool] = {}  # shape -> a thread sends its tasks; True: look again after
        self._blocking: set[bytes] = set()  # functions seen waiting in get() on a lent worker
        self._run_times = RunTimes()  # of tasks on leases
        self.metrics = MetricBatch(self.send_soon)  # this process's records of actorkit.util.metrics
        self._worker_links: dict[int, Link] = {}  # worker id -> connection, kept for its next lease
        # In a worker, the task it runs when the node never saw it (sent by a lessee):
        # the parent of the tasks it submits.
        self.parent_task: bytes | None = None
        # This process told the node of objects (put, publish, addref) since the node
        # last confirmed it had read everything: a direct call must not overtake that.
        self._unsynced = False
        self._link_reading = threading.Lock()  # one thread at a time reads a connection in get()
        self._wake_r, self._wake_w = os.pipe()
        self._id_prefix = os.urandom(8)
        self._counter = itertools.count(1)
        self._failure: BaseException | None = None
        self.closed = False
        self.node_address: Any = None  # where the node was reached, for errors (set by whoever connected)
        # Set by a worker while a task runs, so that a blocking get() lends its CPUs.
        self.in_task = False
        self.task_blocked = False  # set when that task waited in get(): see TaskExecutor._send_result
        # A worker's: called as that task starts to wait; returns what to call when it stops.
        self.on_block: Callable[[], Callable[[], None] | None] | None = None
        self.stats = {"submitted": 0, "direct": 0, "puts": 0, "gets": 0}
        self._node = Link(sock, self._on_node_messages, self._on_node_lost)
        self._send([(P.HELLO, role, os.getpid(), worker_id, job_id, namespace, self._id_prefix)])
        self._hub = Hub()
        self._hub.add(self._node)
        self.node_connection = (self._hub, self._node)  # for a worker's mailbox to borrow
        self._flusher = threading.Thread(target=self._flush_loop, name="actorkit-ref-flusher", daemon=True)
        self._flusher.start()

    @property
    def failure(self) -> BaseException | None:
        """Why this client lost its node (NodeDiedError), or None while it has it."""
        return self._failure

    def __repr__(self) -> str:
        state = "closed" if self.closed else "connected"
        return (
            f"<Client {self.role} pid={os.getpid()} {state} refs={len(self._local_refs)} "
            f"submitted={self.stats['submitted']} direct={self.stats['direct']} links={len(self._links)} "
            f"puts={self.stats['puts']}>"
        )

    # ----------------------------------------------------------------- ids

    def new_task_id(self) -> bytes:
        return self._id_prefix + next(self._counter).to_bytes(4, "big")

    # ------------------------------------------------------------ sending

    def _send(self, messages: list[tuple[Any, ...]]) -> None:
        """Send ``messages`` after what is pending, in an order the node can trust.

        New references first, then buffered submissions, then released
        references (a submission pins its arguments before a release of them
        arrives), then ``messages``.
        """
        with self._send_lock:
            with self._lock:
                self._check_open()
                decrefs = self._drain_releases_locked()
                head: list[tuple[Any, ...]] = []
                if self._addrefs:
                    head.append((P.ADDREF, self._addrefs))
                    self._addrefs = []
                if self._outgoing:
                    head.extend(self._outgoing)
                    self._outgoing = []
                if decrefs:
                    head.append((P.DECREF, decrefs))
            if not head and not messages:
                return
            try:
                self._node.send(head + messages if head else messages)
            except OSError as e:
                self._fail(NodeDiedError(f"lost the connection to the node: {e}"))
                raise self._failure from e  # type: ignore[misc]

    def _check_open(self) -> None:
        if os.getpid() != self._pid:
            from .runtime import forked_error

            raise forked_error(self._pid)
        if self.closed:
            raise RuntimeError("actorkit was shut down; call actorkit.init() to start again")
        if self._failure is not None:
            raise self._failure

    def send(self, message: tuple[Any, ...]) -> None:
        self._send([message])

    def send_soon(self, message: tuple[Any, ...], at_once: bool | None = None) -> None:
        """Buffer ``message`` if submissions are in flight (the flusher or the next
        send delivers it shortly); otherwise (or ``at_once``) send it now."""
        with self._lock:
            self._check_open()
            if at_once is None:
                at_once = not self._unanswered
            if at_once:
                now = True  # after anything buffered: _send() keeps the order
            else:
                now = False
                self._outgoing.append(message)
                wake = len(self._outgoing) == 1
        if now:
            self._send([message])
        elif wake:
            self._wake.put(_FLUSH)

    def sync(self) -> None:
        """Return once the node has read what this process told it of objects (see _submit_direct)."""
        with self._lock:
            needed, self._unsynced = self._unsynced, False
        if needed:
            self.request("sync")
        else:
            self.flush()

    def flush(self) -> None:
        """Deliver buffered messages now (before blocking on their results)."""
        if self._outgoing:
            self._send([])

    # ------------------------------------------------------ reference counts

    def adopt_ref(self, object_id: bytes) -> ObjectRef:
        """A ref met while unpickling: count it, telling the node if it is new here."""
        self._count_ref(object_id)
        return ObjectRef(object_id, self)

    def _count_ref(self, object_id: bytes) -> None:
        with self._lock:
            n = self._local_refs.get(object_id, 0)
            self._local_refs[object_id] = n + 1
            if n == 0:
                self._addrefs.append(object_id)
                self._unsynced = True

    def _pin_view(self, object_id: bytes) -> Callable[[], None]:
        """A value viewing the object's shared memory holds it like a ref (as in Ray)."""
        self._count_ref(object_id)
        return lambda: self.release_ref(object_id)

    def _own_ref(self, object_id: bytes) -> ObjectRef:
        """A ref the node already counts as held by this process (put, submit)."""
        with self._lock:
            self._local_refs[object_id] = self._local_refs.get(object_id, 0) + 1
        return ObjectRef(object_id, self)

    def release_ref(self, object_id: bytes) -> None:
        # Called from ObjectRef.__del__: SimpleQueue.put is safe there.
        if not self.closed and os.getpid() == self._pid:
            self._releases.put(object_id)
            if not self._release_wake_pending:
                self._release_wake_pending = True
                self._wake.put(_RELEASED)

    def _drain_releases_locked(self) -> list[bytes]:
        decrefs = []
        while True:
            try:
                object_id = self._releases.get_nowait()
            except queue.Empty:
                return decrefs
            n = self._local_refs.get(object_id, 0) - 1
            if n > 0:
                self._local_refs[object_id] = n
                continue
            self._local_refs.pop(object_id, None)
            self._unanswered.discard(object_id)  # its result may never come: nobody wants it
            self._ready.pop(object_id, None)
            self._mappings.pop(object_id, None)
            self._subscribed.discard(object_id)
            if object_id in self._local_only:
                self._local_only.discard(object_id)  # the node never knew it
            elif object_id not in self._pending_direct or object_id in self._promised:
                decrefs.append(object_id)
            # else: the node has not heard of it yet; its arrival settles it

    def _flush_loop(self) -> None:
        while True:
            item = self._wake.get()
            if item is _RELEASED:
                try:
                    # Gather more releases, unless submissions wait to be flushed.
                    item = self._wake.get(timeout=RELEASE_DELAY_S)
                except queue.Empty:
                    pass
                self._release_wake_pending = False
            if item is _STOP:
                return
            try:
                self._send([])
            except BaseException:
                return

    # ------------------------------------------------------------ receiving

    def _on_node_messages(self, _link: Link, messages: list[tuple[Any, ...]]) -> None:
        try:
            for message in messages:
                if message[0] == P.READY:
                    self._on_ready(message[1], payload_codec.from_wire(message[2]))
                elif message[0] == P.REPLY:
                    self._on_reply(message[1], message[2], message[3])
                elif message[0] == P.ACTOR_ROUTE:
                    self._on_route(message[1], message[2], message[3])
                elif message[0] == P.LEASE:
                    self._on_lease(*message[1:])
                elif message[0] == P.LEASE_REVOKE:
                    self._on_lease_revoke(message[1])
                elif message[0] == P.REVOKED:
                    with self._revocations:
                        self._revoked.update(message[1])
                        self._unanswered_blocks -= 1
                        self._revocations.notify_all()
                elif self._on_message is not None:
                    self._on_message(message)
        except BaseException as e:  # a bug: make it visible to every waiter
            self._fail(e)
            raise

    def _on_node_lost(self, _link: Link) -> None:
        if not self.closed:
            where = f" at {P.describe(self.node_address)}" if self.node_address is not None else ""
            self._fail(NodeDiedError(f"the actorkit node server{where} closed the connection: it died or was stopped"))

    def _on_ready(self, object_id: bytes, payload: Payload) -> None:
        answered = None
        with self._lock:
            self._unanswered.discard(object_id)
            actor_id = self._node_call_of.pop(object_id, None)
            if actor_id is not None:
                left = self._node_calls[actor_id] - 1
                if left:
                    self._node_calls[actor_id] = left
                else:
                    del self._node_calls[actor_id]
            if object_id in self._pending_direct:
                answered = self._answered_through_node(object_id)
            callbacks = self._callbacks.pop(object_id, None)
            if object_id in self._local_refs:
                self._ready[object_id] = payload
            for waiter in self._waiters.pop(object_id, ()):
                waiter.remaining -= 1
                if waiter.remaining == 0:
                    waiter.wake(self._wake_w)
        if answered is not None:
            self._answered(answered)
        for callback in callbacks or ():
            try:
                callback(payload)
            except Exception:  # a callback's failure must not stop the reader
                import traceback

                traceback.print_exc()

    def _on_reply(self, request_id: int, ok: bool, value: Any) -> None:
        with self._lock:
            reply = self._replies.pop(request_id, None)
        if reply is not None:
            reply.ok, reply.value = ok, value
            reply.event.set()

    def request(self, operation: str, *args: Any, timeout: float | None = 60.0) -> Any:
        """Ask the node to do ``operation`` and wait for its answer (raising its error)."""
        request_id = next(self._request_ids)
        reply = _Reply()
        with self._lock:
            self._replies[request_id] = reply
        self._send([(P.REQUEST, request_id, operation, args)])
        if not reply.event.wait(timeout):
            with self._lock:
                self._replies.pop(request_id, None)
            raise GetTimeoutError(f"the node did not answer {operation!r} within {timeout} s")
        if not reply.ok:
            if reply.value is None:
                raise self._failure or NodeDiedError("the node went away")
            raise reply.value
        return reply.value

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = error
            callbacks = self._callbacks
            self._callbacks = {}
            for waiters in self._waiters.values():
                for waiter in waiters:
                    waiter.wake(self._wake_w)
            replies = list(self._replies.values())
            self._replies.clear()
        for reply in replies:
            reply.event.set()
        with self._revocations:
            self._unanswered_blocks = 0
            self._revocations.notify_all()
        for pending in callbacks.values():
            for callback in pending:
                callback(None)  # type: ignore[arg-type]
        if self._on_lost is not None and not self.closed:
            self._on_lost()

    # -------------------------------------------------------------- objects

    def put(self, value: Any) -> ObjectRef:
        from .serialization import serialize_put

        return self.put_serialized(serialize_put(value))

    def encode(self, value: Any, is_error: bool = False) -> Payload:
        """A payload for ``value``, its large parts in (recycled) shared memory."""
        from .serialization import serialize

        return payload_codec.from_serialized(serialize(value), self.session, is_error, self.allocate)

    def allocate(self, size: int) -> tuple[str, mmap.mmap]:
        """A writable segment for an object of ``size`` bytes: recycled if the node has one."""
        from . import shm
        from .object_store import POOL_MIN_SIZE

        self._check_open()  # a segment made after shutdown would outlive the session
        if size > self.store_capacity:
            raise ValueError(
                f"cannot store an object of {size:,} bytes: the object store holds "
                f"{self.store_capacity:,} bytes. Start with a larger init(object_store_memory=...), "
                f"or split the object."
            )
        if size >= POOL_MIN_SIZE and self.transfer_address is None:
            recycled = self.request("alloc", size)
            if recycled is not None:
                name, _capacity = recycled
                return name, shm.open_writable(name, size)
            if size > shm.free_bytes():
                raise ValueError(
                    f"cannot store an object of {size:,} bytes: only {shm.free_bytes():,} bytes "
                    f"are free in {shm.SHM_DIR}. Free memory, or split the object."
                )
        return shm.create(self.session, size)

    def put_serialized(self, serialized: Any) -> ObjectRef:
        object_id = self.new_task_id() + b"\0\0\0\0"
        data = payload_codec.from_serialized(serialized, self.session, allocate=self.allocate)
        with self._lock:
            self._ready[object_id] = data
            self._unsynced = True
        ref = self._own_ref(object_id)
        try:
            self._send([(P.PUT, object_id, payload_codec.to_wire(data))])
        except BaseException:
            if data.segment is not None:
                from . import shm

                shm.unlink(data.segment)  # the node never got it: nobody else would free it
            raise
        self.stats["puts"] += 1
        return ref

    def submit(self, spec: TaskSpec, kind: int = P.SUBMIT) -> list[ObjectRef]:
        """Send a task (or, with ``kind=ACTOR_CALL``, an actor call); refs to its results."""
        if kind == P.ACTOR_CALL:
            link = self._direct_link(spec.actor_id)  # type: ignore[arg-type]
            if link is not None:
                return self._submit_direct(spec, link)
        elif self._leases:
            shape = shape_of(spec.resources)[1]
            if self._may_lease(spec, shape):
                return self._submit_direct(spec, None, shape)
        return_ids = spec.return_ids()
        with self._lock:
            if spec.function_bytes is not None:
                self._unsynced = True  # a lent worker asks the node for the function
            self._subscribed.update(return_ids)  # the node sends results to their submitter
            idle = not self._unanswered
            if return_ids:
                self._unanswered.add(return_ids[0])
            if kind == P.ACTOR_CALL:
                # Calls to this actor go direct only once these are answered: order is kept.
                actor_id: bytes = spec.actor_id  # type: ignore[assignment]
                self._node_calls[actor_id] = self._node_calls.get(actor_id, 0) + 1
                if return_ids:
                    self._node_call_of[return_ids[0]] = actor_id
        refs = [self._own_ref(object_id) for object_id in return_ids]
        message: tuple[Any, ...] = (kind, spec_to_wire(spec))
        if self.parent_task is not None and kind == P.SUBMIT:
            message += (False, self.parent_task)
        self.send_soon(message, at_once=idle)
        self.stats["submitted"] += 1
        return refs

    # ---------------------------------------------------- direct actor calls

    def call_self_through(self, actor_id: bytes, on_call: Callable[[Any, list[tuple[Any, ...]]], None]) -> None:
        """In an actor's process: its calls to itself go to ``on_call`` (its mailbox)."""
        self.actor_id = actor_id
        self._loopback = Loopback(actor_id, on_call, self._on_link_messages)  # type: ignore[arg-type]

    def _on_route(self, actor_id: bytes, address: str, session: str) -> None:
        # Only an actor on this machine: its address is a unix socket here.
        if session == self.session:
            with self._lock:
                self._routes[actor_id] = address

    def forget_route(self, actor_id: bytes) -> None:
        """Send no more calls to ``actor_id`` directly (it is being killed)."""
        with self._lock:
            self._routes.pop(actor_id, None)
            self._links.pop(actor_id, None)  # its unanswered calls are resent when it closes

    def _direct_link(self, actor_id: bytes) -> Link | Loopback | None:
        """The link to send a call to ``actor_id`` on, or None to send it through the node."""
        if actor_id == self.actor_id:
            return self._loopback
        link = self._links.get(actor_id)
        if link is not None or actor_id not in self._routes:
            return link
        with self._lock:
            if self._node_calls.get(actor_id):
                return None  # a call sent through the node could be overtaken
            address = self._routes.pop(actor_id, None)
        if address is None:
            return self._links.get(actor_id)
        try:
            link = self._hub.connect(address, self.authkey, actor_id, self._on_link_messages, self._on_link_lost)
        except (OSError, EOFError):
            return None  # the actor is gone or restarting: the node knows what to do
        with self._lock:
            self._links[actor_id] = link
        return link

    # ---------------------------------------------------------- lent workers
    #
    # A task of a shape this process holds a lease of waits in ``_backlog`` (its
    # results already promised to it, as for any direct call) until a lease of
    # that shape has room, and goes straight to that worker.  While tasks wait,
    # this process asks the node for one more lease of their shape at a time.
    # The node asks leases back once others' tasks wait for resources: the
    # tasks still waiting here then go through the node (``_requeue_locked``).

    def _on_lease(self, lease_id: int, worker_id: int, address: str, session: str, shape: Any) -> None:
        lease = _Lease(lease_id, worker_id, address, shape)
        with self._lock:
            wished = shape in self._wanted
            self._wanted.discard(shape)
            link = self._worker_links.get(worker_id)
            usable = session == self.session and not self.closed  # else a unix socket on another machine
            if wished and not self._backlog.get(shape):
                usable = False  # asked for tasks that no longer wait: of no use now
        if usable and link is None:
            try:
                link = self._hub.connect(address, self.authkey, None, self._on_link_messages, self._on_link_lost)
            except (OSError, EOFError):
                usable = False  # it died, or never listened: the node has the rest to say
        with self._lock:
            # A link found closed here was lost before it was known as this worker's:
            # nobody resends what goes on it.  Once known, its loss is seen (_on_link_lost).
            if usable and link is not None and not link.closed and not self.closed:
                link.lent_worker = worker_id
                self._worker_links[worker_id] = link
                self._leases.setdefault(shape, []).append(lease)
                self._lent[lease_id] = lease
                usable = True
            else:
                usable = False
                release = self._requeue_locked(shape)
        if usable:
            self._pump(shape)
        else:
            self._give_back(lease)
            self._resent(release)

    def _on_lease_revoke(self, lease_id: int) -> None:
        with self._lock:
            lease = self._lent.get(lease_id)
            if lease is None:
                return  # given back already (the return crossed the revocation), or its worker died
            lease.revoked = True
            self._unlist_locked(lease)
            idle = lease.inflight == 0
            if idle:
                del self._lent[lease_id]
            release = self._requeue_locked(lease.shape)
        if idle:
            self._give_back(lease)  # else once its tasks are answered
        self._resent(release)

    def _unlist_locked(self, lease: _Lease) -> None:
        """Send nothing more on ``lease``."""
        leases = self._leases.get(lease.shape)
        if leases is not None and lease in leases:
            leases.remove(lease)
            if not leases:
                del self._leases[lease.shape]

    def _drop_lease_locked(self, lease: _Lease) -> None:
        """Hold ``lease`` no more (the caller gives it back, or its worker died)."""
        self._lent.pop(lease.lease_id, None)
        self._unlist_locked(lease)

    def _give_back(self, lease: _Lease) -> None:
        # Through the flusher: callers may hold the client's lock, which a send must not be taken under.
        with self._lock:
            self._wanted.discard(lease.shape)  # the node drops the wish on the return (Node._on_lease_return)
            if self.closed:
                return
            self._outgoing.append((P.LEASE_RETURN, lease.worker_id, lease.lease_id))
        self._wake.put(_FLUSH)

    def _may_lease(self, spec: TaskSpec, shape: Any) -> bool:
        """Whether ``spec`` may wait here for a lent worker rather than go through the node."""
        return (
            bool(self._leases.get(shape))
            and spec.function_bytes is None  # the node must see the function first
            and spec.may_go_direct()
            and _inline_size(spec) < LEASE_MAX_INLINE
            # The node starts a task once its arguments are ready, not a worker waiting in get().
            and all(object_id in self._ready for object_id in spec.deps)
            # It would need a sync, whose answer this thread (a callback's) would have to read.
            and not ((self._unsynced or self._outgoing) and self._hub.handling())
        )

    def _roomiest_locked(self, shape: Any, spec: TaskSpec) -> _Lease | None:
        """The lease of ``shape`` with the fewest tasks in flight, if it has room for
        ``spec``: it is idle, or runs its function, known to be short and never to wait
        in get() (a task sent behind one could be what it waits for)."""
        function_id, size = spec.function_id, _inline_size(spec)
        average = self._run_times.short_average(function_id)
        depth = 1
        if average is not None and function_id not in self._blocking:
            depth = max(2, min(LEASE_MAX_DEPTH, int(LEASE_QUEUE_S / average) if average else LEASE_MAX_DEPTH))
        best = None
        for lease in self._leases.get(shape, ()):
            if lease.inflight == 0 or (
                lease.function == function_id
                and lease.inflight < depth
                and lease.inflight_bytes + size <= LEASE_MAX_INLINE
            ):
                if best is None or lease.inflight < best.inflight:
                    best = lease
        return best

    def _pump(self, shape: Any) -> None:
        """Send tasks waiting for a lease of ``shape`` to leases with room (one frame per
        worker); ask for one more lease if some still wait.  From any thread, unlocked.

        One thread at a time sends a shape's tasks (another one's call only asks it
        to look again): a worker then gets them in the order they were taken, which
        is the order it runs them in (see ``_on_link_lost``).
        """
        with self._lock:
            if shape in self._pumping:
                self._pumping[shape] = True
                return
            self._pumping[shape] = False
        try:
            while True:
                self._pump_once(shape)
                with self._lock:
                    if not self._pumping[shape]:
                        del self._pumping[shape]
                        return
                    self._pumping[shape] = False
        except BaseException:
            with self._lock:
                self._pumping.pop(shape, None)
            raise

    def _pump_once(self, shape: Any) -> None:
        ask = False
        sends: dict[Link, list[_DirectCall]] = {}
        with self._lock:
            backlog = self._backlog.get(shape)
            while backlog and not self.closed:
                lease = self._roomiest_locked(shape, backlog[0].spec)
                if lease is None:
                    ask = shape not in self._wanted
                    self._wanted.add(shape)
                    break
                call = backlog.popleft()
                call.lease = lease
                lease.add(call.spec)
                link = call.link = self._worker_links[lease.worker_id]
                sends.setdefault(link, []).append(call)
            if backlog is not None and not backlog:
                del self._backlog[shape]
        now = time.monotonic()
        for link, calls in sends.items():
            for call in calls:
                call.sent_at = now
            try:
                link.send([(P.SUBMIT, spec_to_wire(call.spec)) for call in calls])
            except OSError:
                pass  # it died: its reader sees it close after the answers it sent, and resends the rest
            self.stats["direct"] += len(calls)
        if ask:
            try:
                self._send([(P.LEASE_REQUEST, shape)])
            except BaseException:
                with self._lock:
                    self._wanted.discard(shape)
                if self._failure is None:
                    raise
                # The node is gone: waiters hear of it.

    def _requeue_locked(self, shape: Any) -> list[bytes] | None:
        """Once no lease of ``shape`` is left, send the tasks waiting for one through the node.

        Returns the refs to let go of once that is sent (see ``_resent``), or None.
        """
        if self._leases.get(shape) or shape not in self._backlog:
            return None
        release: list[bytes] = []
        for call in self._backlog.pop(shape):
            release.extend(self._through_node_locked(call, False))
        return release

    def _resent(self, release: Iterable[bytes] | None) -> None:
        """Let go of what calls sent through the node instead held, after they are sent."""
        if release is None:
            return
        for object_id in release:
            self.release_ref(object_id)  # drained after the buffered submissions: the node pins first
        self._wake.put(_FLUSH)

    def _through_node_locked(self, call: _DirectCall, lost: Any) -> tuple[bytes, ...]:
        """Buffer ``call`` to go through the node instead; returns what it held."""
        del self._direct[call.spec.task_id]
        unheld = []
        for object_id in call.return_ids:
            self._pending_direct.discard(object_id)
            self._promised.discard(object_id)
            if object_id not in self._local_refs:
                unheld.append(object_id)  # the node will count it held: let go after
        actor_id = call.spec.actor_id
        if actor_id is None:
            self._outgoing.append((P.SUBMIT, spec_to_wire(call.spec), lost))
        else:
            self._node_calls[actor_id] = self._node_calls.get(actor_id, 0) + 1
            if call.return_ids:
                self._node_call_of[call.return_ids[0]] = actor_id
            self._outgoing.append((P.ACTOR_CALL, spec_to_wire(call.spec), lost))
        if unheld:
            self._outgoing.append((P.DECREF, unheld))
        return call.hold

    def _answered(self, call: _DirectCall, pump: bool = True) -> Any:
        """A direct call is answered: let go of what it held, and of its lease if it was
        asked back.  Sends what waits for its lease, unless ``pump`` is False: then
        returns the shape to ``_pump`` (or None), for a caller that settles several."""
        for object_id in call.hold:
            self.release_ref(object_id)
        lease = call.lease
        if lease is None:
            return None
        with self._lock:
            lease.remove(call.spec)
            now = time.monotonic()
            # From when it started: when it was sent, or when the one before it on the worker ended.
            took = now - max(call.sent_at, lease.answered_at)
            lease.answered_at = now
            self._run_times.record(call.spec.function_id, took)
            give_back = lease.revoked and lease.inflight == 0 and self._lent.pop(lease.lease_id, None) is lease
        if give_back:
            self._give_back(lease)
            return None
        if not pump:
            return lease.shape
        self._pump(lease.shape)
        return None

    def return_idle_leases(self) -> None:
        """Give back every idle lent worker (before asking the node what is free)."""
        with self._lock:
            asked = bool(self._wanted)
        self._return_idle_leases()
        if asked:
            # A lease granted for a wish may be on its way: it comes before the
            # answer to this, and goes back at once (see _on_lease).
            self.request("sync")

    def _return_idle_leases(self) -> None:
        release: list[bytes] = []
        with self._lock:
            idle = [lease for lease in self._lent.values() if lease.inflight == 0]
            for lease in idle:
                self._drop_lease_locked(lease)
                self._wanted.discard(lease.shape)  # as in _give_back
            for shape in {lease.shape for lease in idle}:
                release.extend(self._requeue_locked(shape) or ())
        self._resent(release)
        if idle:
            # Sent now, not through the flusher: the caller asks the node what is
            # free next, or disconnects (see runtime.shutdown).
            self._send([(P.LEASE_RETURN, lease.worker_id, lease.lease_id) for lease in idle])

    # ------------------------------------------------------------ direct calls

    def _submit_direct(self, spec: TaskSpec, link: Link | Loopback | None, shape: Any = None) -> list[ObjectRef]:
        """Send ``spec`` on ``link`` (an actor's call), or (``link`` None) queue it for a
        lease of ``shape``."""
        return_ids = spec.return_ids()
        hold = (*spec.deps, *spec.args.contained)
        if spec.actor_id is not None:
            hold += (spec.actor_id,)
        with self._lock:
            self._check_open()
            for object_id in hold:
                self._count_ref(object_id)
            call = self._direct[spec.task_id] = _DirectCall(spec, link, return_ids, hold)
            self._pending_direct.update(return_ids)
            self._subscribed.update(return_ids)  # they come on the link, unasked
            # Buffered submissions too: the actor may wait for their results.
            sync, self._unsynced = self._unsynced or bool(self._outgoing), False
        refs = [self._own_ref(object_id) for object_id in return_ids]
        if sync:
            # The worker asks the node for the refs in the arguments (and a lent
            # worker for the function), on its own connection: the node must have
            # read what this process sent first.
            try:
                self.request("sync")
            except BaseException:
                self._withdraw(spec.task_id)
                raise
        self.stats["submitted"] += 1
        with self._lock:
            release = None
            if link is None and self._leases.get(shape):
                self._backlog.setdefault(shape, deque()).append(call)
            elif link is None or getattr(link, "closed", False):
                # Its lease was asked back, or its link lost before this call was on it
                # (once on it, its loss resends the call): through the node.
                release = self._through_node_locked(call, False)
        if release is not None:
            self._resent(release)
        elif link is None:
            self._pump(shape)
        else:
            try:
                link.send([(P.ACTOR_CALL, spec_to_wire(spec))])
            except OSError:
                pass  # it died: its reader sees it close after the answers it sent, and resends the rest
            self.stats["direct"] += 1
        return refs

    def _withdraw(self, task_id: bytes) -> None:
        """Forget a direct call that was never sent."""
        with self._lock:
            call = self._direct.pop(task_id, None)
            if call is None:
                return
            self._unsynced = True  # the sync that failed is still owed
            for object_id in call.return_ids:
                self._pending_direct.discard(object_id)
                self._subscribed.discard(object_id)
        self._answered(call)

    def _on_link_messages(self, link: Link, messages: list[tuple[Any, ...]]) -> None:
        shapes = set()
        try:
            for message in messages:
                if message[0] == P.DONE:
                    if len(message) > 4 and message[4]:
                        self._waited(message[1])
                    if len(message) > 5 and link.actor_id is not None:
                        # Its actor's process is exiting (sys.exit): later calls go through
                        # the node, which holds them for the restarted actor, if any.
                        self.forget_route(link.actor_id)
                    payloads = [payload_codec.from_wire(w) for w in message[2]]
                    shapes.add(self._complete_direct(message[1], payloads, False))
                elif message[0] == P.OWNED_RESULT:
                    with self._lock:
                        call = self._direct.get(message[1])
                        if call is not None:
                            call.via_node = True
                elif message[0] == P.REVOKED:
                    shapes.add(self._handed_back(message[1]))
        finally:
            shapes.discard(None)
            for shape in shapes:
                self._pump(shape)  # once for the frame: what a worker answered at once, it gets in one frame

    def _handed_back(self, task_ids: list[bytes]) -> Any:
        """A lent worker whose task waits in get() handed back the tasks sent behind it
        (``TaskExecutor.give_back_queued``): they wait for a lease again, first in line.
        Returns the shape to pump."""
        cancelled = []
        with self._lock:
            calls = [self._direct[t] for t in task_ids if t in self._direct]
            if not calls:
                return None
            self._blocking.add(calls[0].spec.function_id)
            shape = calls[0].lease.shape  # type: ignore[union-attr]
            backlog = self._backlog.setdefault(shape, deque())
            for call in reversed(calls):
                call.lease.remove(call.spec)  # type: ignore[union-attr]
                call.lease = call.link = None
                if call.cancelled:
                    cancelled.append(call)
                else:
                    backlog.appendleft(call)
            if not backlog:
                del self._backlog[shape]
            release = self._requeue_locked(shape)
        for call in cancelled:
            self._complete_cancelled(call)
        self._resent(release)
        return shape

    def _waited(self, task_id: bytes) -> None:
        """A task on a lent worker waited in get(): send none of its function behind one."""
        with self._lock:
            call = self._direct.get(task_id)
            if call is not None:
                self._blocking.add(call.spec.function_id)

    def _complete_direct(self, task_id: bytes, payloads: list[Payload], pump: bool = True) -> Any:
        """A direct call's answer came on its link (see ``_answered`` for ``pump``)."""
        with self._lock:
            call = self._direct.pop(task_id, None)
            if call is None:
                return None
        if call.cancelled and payloads and payloads[0].is_error:
            payloads = [self._cancelled(call.spec)] * len(payloads)
        for object_id, payload in zip(call.return_ids, payloads):
            publish: list[tuple[Any, ...]] = []
            with self._lock:
                self._pending_direct.discard(object_id)
                held = object_id in self._local_refs
                if held:
                    self._ready[object_id] = payload
                if object_id in self._promised:
                    # Others may wait for it at the node, whether or not this process still does.
                    self._promised.discard(object_id)
                    publish.append((P.PUT, object_id, payload_codec.to_wire(payload)))
                    if not held:
                        publish.append((P.DECREF, [object_id]))
                elif held:
                    self._local_only.add(object_id)
            for message in publish:
                self.send_soon(message, at_once=False)  # the first wakes the flusher
            self._on_ready(object_id, payload)
        return self._answered(call, pump)

    def _answered_through_node(self, object_id: bytes) -> _DirectCall | None:
        """A direct call's result came as the node's READY (OWNED_RESULT); called locked.
        Returns the call, for the caller to settle (``_answered``) once unlocked."""
        self._pending_direct.discard(object_id)
        self._promised.discard(object_id)
        if object_id not in self._local_refs:
            # The node counts this process as holding it, and it no longer does.
            self._outgoing.append((P.DECREF, [object_id]))
            self._wake.put(_FLUSH)
        return self._direct.pop(object_id[:-4], None)

    def _on_link_lost(self, link: Link) -> None:
        """The link closed (the worker's process died): resend its unanswered calls through the node.

        Marked lost, so that the node retries them within ``max_task_retries``
        (an actor's call) or ``max_retries`` (a task), or fails them.  A task
        cancelled with ``force=True`` (which kills its worker) is cancelled here.
        """
        releases: list[bytes] = []
        cancelled: list[_DirectCall] = []
        with self._lock:
            actor_id = link.actor_id
            if actor_id is not None and self._links.get(actor_id) is link:
                del self._links[actor_id]
            shapes = set()
            if link.lent_worker is not None:
                # The node ends the lease when it sees the worker's process exit.
                self._worker_links.pop(link.lent_worker, None)
                for lease in [lease for lease in self._lent.values() if lease.worker_id == link.lent_worker]:
                    self._drop_lease_locked(lease)
                    shapes.add(lease.shape)
            # Those answered through the node are not lost: the node's READY is on its way.
            lost = [call for call in self._direct.values() if call.link is link and not call.via_node]
            for i, call in enumerate(lost):
                if call.cancelled and call.lease is not None:
                    cancelled.append(call)
                    continue
                if actor_id is not None:
                    # On that process: the node tells whether it has seen it die yet.
                    mark = link.address or True
                else:
                    # A worker runs its tasks in the order sent (see _pump): only the first had started.
                    mark = i == 0
                releases.extend(self._through_node_locked(call, mark))
            for shape in shapes:
                releases.extend(self._requeue_locked(shape) or ())
            if self.closed or not (lost or releases):
                return
        for call in cancelled:
            self._complete_cancelled(call)
        for object_id in releases:
            self.release_ref(object_id)  # the node pins what the resent calls use first
        try:
            self._send([])
        except BaseException:
            pass  # the node is gone too: waiters hear of it from the hub

    def cancel_direct(self, task_id: bytes, force: bool, recursive: bool) -> bool:
        """Cancel an unanswered direct call (True), or say it is not one (False)."""
        with self._lock:
            call = self._direct.get(task_id)
            if call is None:
                return False
            if call.via_node:
                return True  # it has ended: its result is on its way
            lease = call.lease
            waiting = call.link is None  # for a lease: never sent
            if force and lease is None and not waiting:
                raise ValueError("force=True is not supported for actor tasks; use kill() to stop an actor")
            call.cancelled = True
            if waiting:
                shape = shape_of(call.spec.resources)[1]
                backlog = self._backlog.get(shape)
                if backlog is not None and call in backlog:
                    backlog.remove(call)
                    if not backlog:
                        del self._backlog[shape]
        if waiting:
            self._complete_cancelled(call)
            return True
        if lease is not None:
            if recursive:
                # The node never saw the task, but it did see the tasks it submitted.
                self.request("cancel_children", task_id, force)
            # Through the node: a worker reads its links only between tasks.
            self.request("cancel_lent", lease.worker_id, task_id, force)
            return True
        try:
            call.link.send([(P.CANCEL, task_id)])  # type: ignore[union-attr]
        except OSError:
            pass  # the worker died: the call is resent through the node, which fails it
        return True

    def _complete_cancelled(self, call: _DirectCall) -> None:
        """Answer ``call`` here, as cancelled: it will never be answered otherwise."""
        self._complete_direct(call.spec.task_id, [self._cancelled(call.spec)] * call.spec.num_returns)

    def _cancelled(self, spec: TaskSpec) -> Payload:
        return payload_codec.encode(cancelled_error(spec), self.session, is_error=True)

    def escaping(self, object_id: bytes) -> None:
        """A ref to ``object_id`` is leaving this process: the node must know the object.

        Called while pickling; what it queues goes out before the message
        that carries the ref, which is sent through this client too.
        """
        if object_id not in self._pending_direct and object_id not in self._local_only:
            return
        with self._lock:
            if object_id in self._local_only:
                self._local_only.discard(object_id)
                message: tuple[Any, ...] = (P.PUT, object_id, payload_codec.to_wire(self._ready[object_id]))
            elif object_id in self._pending_direct and object_id not in self._promised:
                self._promised.add(object_id)
                message = (P.PROMISE, [object_id])
            else:
                return
            self._outgoing.append(message)
            self._unsynced = True

    def own_actor(self, actor_id: bytes) -> ObjectRef:
        """The counted reference behind a handle to an actor this process just created."""
        return self._own_ref(actor_id)

    def was_revoked(self, task_id: bytes) -> bool:
        """Whether the node took ``task_id`` back (a worker asks before running it)."""
        with self._revocations:
            while self._unanswered_blocks > 0 and self._failure is None:
                self._revocations.wait()
            if task_id in self._revoked:
                self._revoked.discard(task_id)
                return True
            return False

    def needs_export(self, function_id: bytes) -> bool:
        """True the first time: the caller sends the function's bytes with this message."""
        if function_id in self._exported:
            return False
        self._exported.add(function_id)
        return True

    def wait_ready(self, object_ids: list[bytes], num_ready: int, timeout: float | None) -> set[bytes]:
        """Block until ``num_ready`` of ``object_ids`` are ready here (or timeout); return the ready ones."""
        unique = set(object_ids)
        with self._lock:
            self._check_open()
            missing = [o for o in unique if o not in self._ready]
            needed = num_ready - (len(unique) - len(missing))
            subscribe = [o for o in missing if o not in self._subscribed]
            self._subscribed.update(subscribe)
            waiter = None
            if needed > 0:
                waiter = _Waiter(needed)
                for object_id in missing:
                    self._waiters.setdefault(object_id, []).append(waiter)
        try:
            if subscribe:
                self._send([(P.SUBSCRIBE, subscribe)])
            if waiter is not None:
                self.flush()
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
            if self._failure is not None and not self.closed:
                raise self._failure
            return {o for o in unique if o in self._ready}

    def _block_on(self, waiter: _Waiter, missing: list[bytes], timeout: float | None) -> None:
        # A worker's task that blocks lends its CPUs to the node meanwhile, so
        # that nested tasks can run even when they outnumber the CPUs.
        lent = self.in_task
        resume = None
        if lent:
            self.task_blocked = True
            if self.on_block is not None:
                resume = self.on_block()
            with self._revocations:
                self._unanswered_blocks += 1
            self.send((P.BLOCKED,))
        try:
            link = self._link_of(missing)
            if timeout is None:
                self._wait_probing(waiter, link)
            else:
                if link is not None:
                    timeout = self._read_link(link, waiter, timeout)
                waiter.event.wait(timeout)
        finally:
            try:
                if resume is not None:
                    resume()
            finally:
                if lent:
                    self.send((P.UNBLOCKED,))

    def _wait_probing(self, waiter: _Waiter, link: Link | Loopback | None) -> None:
        """Wait for ``waiter`` without a deadline, but not for a node that stopped answering.

        Every PROBE_AFTER_S of waiting, ask the node to answer ("sync"); no
        answer within PROBE_TIMEOUT_S fails this client with NodeDiedError
        (which wakes every waiter).  A node that answers may take as long as
        its tasks need.
        """
        probe: _Reply | None = None
        probe_deadline = 0.0
        while not waiter.event.is_set() and self._failure is None:
            if probe is None:
                wait = PROBE_AFTER_S
            else:
                wait = max(0.0, min(probe_deadline - time.monotonic(), PROBE_AFTER_S))
            if link is not None:
                left = self._read_link(link, waiter, wait)
                if left:
                    waiter.event.wait(left)
            else:
                waiter.event.wait(wait)
            if waiter.event.is_set() or self._failure is not None:
                return
            if probe is not None and probe.event.is_set():
                probe = None  # it answered: it lives
            if probe is None:
                probe = self._start_probe()
                probe_deadline = time.monotonic() + PROBE_TIMEOUT_S
            elif time.monotonic() >= probe_deadline:
                self._fail(NodeDiedError(self._stopped_answering()))
                return

    def _start_probe(self) -> _Reply:
        """Send a "sync" request; its reply's event is set when the node answers."""
        request_id = next(self._request_ids)
        reply = _Reply()
        with self._lock:
            self._replies[request_id] = reply
        self._send([(P.REQUEST, request_id, "sync", ())])
        return reply

    def _stopped_answering(self) -> str:
        where = f" at {P.describe(self.node_address)}" if self.node_address is not None else ""
        return (
            f"the actorkit node{where} stopped answering: get()/wait() had waited {PROBE_AFTER_S:g} s and "
            f"the node did not answer a ping within {PROBE_TIMEOUT_S:g} s (is its process stopped, e.g. "
            f"by SIGSTOP, or hung?). Call actorkit.shutdown() and init() again; "
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

    def _read_link(self, link: Link, waiter: _Waiter, timeout: float | None) -> float | None:
        """Wait for ``waiter`` reading ``link`` on this thread; return what is left of ``timeout``."""
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

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        object_ids = [r._id for r in refs]
        ready = self.wait_ready(object_ids, len(set(object_ids)), timeout)
        if self.closed:
            raise RuntimeError("actorkit was shut down while waiting")
        if len(ready) < len(set(object_ids)):
            not_ready = [r for r in refs if r._id not in ready]
            shown = ", ".join(map(repr, not_ready[:3])) + (", ..." if len(not_ready) > 3 else "")
            raise GetTimeoutError(
                f"get() timed out after {timeout} s: {len(not_ready)} of {len(refs)} "
                f"objects not ready ({shown})"
            )
        self.stats["gets"] += 1
        return [self._value(object_id) for object_id in object_ids]

    def _value(self, object_id: bytes) -> Any:
        with self._lock:
            data = self._ready[object_id]
        try:
            value = self.decode_object(object_id, data)
        except FileNotFoundError:
            # The node spilled the object to disk since this process cached its
            # payload: ask again, the node restores it.
            with self._lock:
                self._ready.pop(object_id, None)
                self._mappings.pop(object_id, None)
                self._subscribed.discard(object_id)
            self.wait_ready([object_id], 1, None)
            return self._value(object_id)
        if data.is_error:
            raise value
        return value

    def decode_object(self, object_id: bytes, data: Payload) -> Any:
        """The value of an object; arrays in it view its shared memory and pin it."""
        if data.segment is None:
            return payload_codec.decode(data)
        from . import shm

        if shm.session_of(data.segment) != self.session:
            data = self._localized(object_id, data)
        with self._lock:
            mapping = self._mappings.get(object_id)
            if mapping is None:
                # One mapping per object and process: every get() of it shares the memory.
                mapping = self._mappings[object_id] = shm.attach(data.segment, data.segment_size)
        return payload_codec.decode(data, mapping, pin=lambda: self._pin_view(object_id))

    def _localized(self, object_id: bytes, data: Payload) -> Payload:
        """A copy on this machine of an object made on another node of the cluster."""
        if self._localize is None:
            from .object_transfer import localize_from

            address = self.transfer_address or self.request("info").get("transfer_address")
            if address is None:
                raise ObjectLostError(f"object {object_id.hex()} is held by another node, which this node cannot reach")
            self._localize = localize_from(address, self.authkey)
        local = self._localize(object_id, data)
        with self._lock:
            if object_id in self._ready:
                self._ready[object_id] = local
        return local

    def future(self, ref: ObjectRef) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        object_id = ref._id

        def complete(data: Payload | None) -> None:
            if fut.done():
                return  # cancelled by its user meanwhile
            try:
                if data is None:
                    fut.set_exception(self._failure or ObjectLostError(f"{ref!r} was lost"))
                    return
                try:
                    value = self.decode_object(object_id, data)
                except BaseException as e:
                    fut.set_exception(e)
                    return
                if data.is_error:
                    fut.set_exception(value)
                else:
                    fut.set_result(value)
            except concurrent.futures.InvalidStateError:
                pass  # cancelled between the check and the set

        with self._lock:
            data = self._ready.get(object_id)
            if data is None:
                self._callbacks.setdefault(object_id, []).append(complete)
            subscribe = data is None and object_id not in self._subscribed
            if subscribe:
                self._subscribed.add(object_id)
        if data is not None:
            complete(data)
            return fut
        # Keep the ref alive until the future completes.
        fut.add_done_callback(lambda _f, _keep=ref: None)
        if subscribe:
            self._send([(P.SUBSCRIBE, [object_id])])
        else:
            self.flush()
        return fut

    # -------------------------------------------------------------- closing

    def close(self) -> None:
        """Disconnect; waiters get an error, later calls a clear one."""
        if self.closed:
            return
        try:
            self.metrics.flush()
        except Exception:
            pass  # the node is gone already: nothing to report to
        self.metrics.close()
        # Nothing more is sent: the node drops this process's references when
        # it disconnects, and a send could block behind a node that has stopped.
        self.closed = True
        self._fail(RuntimeError("actorkit was shut down while waiting"))
        self._wake.put(_STOP)
        self._hub.close()  # closes the node's connection too
        with self._link_reading:  # no thread polls the wake pipe any more
            os.close(self._wake_r)
            os.close(self._wake_w)
