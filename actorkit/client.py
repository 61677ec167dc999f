"""The client side of a node: one per process (the driver, each worker).

Data flow (one task, driver and worker on the same node)::

    driver                        node event loop                 worker
    f.remote(x) ── SUBMIT ──────▶ deps ready? resources free? ──▶ EXECUTE
    get(ref) ──── SUBSCRIBE ────▶ (waits for the object)           runs f(x)
                                  stores result, READY ◀────────── DONE
    value ◀──────── READY ──────  (to every subscriber)

A receiver thread reads everything the node sends and fills the table of
ready objects; callers block on a condition until what they wait for is
there.  Small values travel inside READY; large ones stay in shared memory
and are mapped by the reader.

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
import threading
from collections.abc import Callable
from typing import Any

from . import payload as payload_codec
from . import protocol as P
from .exceptions import GetTimeoutError, NodeDiedError, ObjectLostError
from .object_ref import ObjectRef
from .payload import Payload
from .task_spec import TaskSpec, spec_to_wire

_STOP = object()
_FLUSH = object()  # wakes the flusher to send buffered submissions
_RELEASED = object()  # wakes the flusher to send released references, after a moment
# Released references are not urgent: most travel with the next message this
# process sends anyway. Waking the flusher for each would cost a thread switch
# per dropped ref; it waits this long first, gathering the rest.
RELEASE_DELAY_S = 0.005


class _Reply:
    """A request waiting for the node's REPLY."""

    __slots__ = ("event", "ok", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.ok = False
        self.value: Any = None


class _Waiter:
    """One blocked get()/wait(): how many more objects it needs, and its wake-up."""

    __slots__ = ("remaining", "event")

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining
        self.event = threading.Event()


class Client:
    """A process's connection to its node: submits tasks, puts and gets objects."""

    def __init__(
        self,
        channel: P.Channel,
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
        self._channel = channel
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
        self._id_prefix = os.urandom(8)
        self._counter = itertools.count(1)
        self._failure: BaseException | None = None
        self.closed = False
        # Set by a worker while a task runs, so that a blocking get() lends its CPUs.
        self.in_task = False
        self.stats = {"submitted": 0, "puts": 0, "gets": 0}
        self._send([(P.HELLO, role, os.getpid(), worker_id, job_id, namespace)])
        self._receiver = threading.Thread(target=self._receive_loop, name="actorkit-receiver", daemon=True)
        self._flusher = threading.Thread(target=self._flush_loop, name="actorkit-ref-flusher", daemon=True)
        self._receiver.start()
        self._flusher.start()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "connected"
        return (
            f"<Client {self.role} pid={os.getpid()} {state} refs={len(self._local_refs)} "
            f"submitted={self.stats['submitted']} puts={self.stats['puts']}>"
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
                self._channel.send(head + messages if head else messages)
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
            if at_once and not self._outgoing:
                now = True
            else:
                now = False
                self._outgoing.append(message)
                wake = len(self._outgoing) == 1
        if now:
            self._send([message])
        elif wake:
            self._wake.put(_FLUSH)

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
            decrefs.append(object_id)

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

    def _receive_loop(self) -> None:
        try:
            while True:
                for message in self._channel.recv():
                    if message[0] == P.READY:
                        self._on_ready(message[1], payload_codec.from_wire(message[2]))
                    elif message[0] == P.REPLY:
                        self._on_reply(message[1], message[2], message[3])
                    elif message[0] == P.REVOKED:
                        with self._revocations:
                            self._revoked.update(message[1])
                            self._unanswered_blocks -= 1
                            self._revocations.notify_all()
                    elif self._on_message is not None:
                        self._on_message(message)
        except (P.ChannelClosed, OSError) as e:
            if not self.closed:
                self._fail(NodeDiedError(f"the node server closed the connection ({e})"))
        except BaseException as e:  # a bug: make it visible to every waiter
            self._fail(e)
            raise

    def _on_ready(self, object_id: bytes, payload: Payload) -> None:
        with self._lock:
            self._unanswered.discard(object_id)
            callbacks = self._callbacks.pop(object_id, None)
            if object_id in self._local_refs:
                self._ready[object_id] = payload
            for waiter in self._waiters.pop(object_id, ()):
                waiter.remaining -= 1
                if waiter.remaining == 0:
                    waiter.event.set()
        for callback in callbacks or ():
            try:
                callback(payload)
            except Exception:  # a callback's failure must not stop the receiver
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
                    waiter.event.set()
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
        from .serialization import serialize

        return self.put_serialized(serialize(value))

    def encode(self, value: Any, is_error: bool = False) -> Payload:
        """A payload for ``value``, its large parts in (recycled) shared memory."""
        from .serialization import serialize

        return payload_codec.from_serialized(serialize(value), self.session, is_error, self.allocate)

    def allocate(self, size: int) -> tuple[str, mmap.mmap]:
        """A writable segment for an object of ``size`` bytes: recycled if the node has one."""
        from . import shm
        from .object_store import POOL_MIN_SIZE

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
        ref = self._own_ref(object_id)
        self._send([(P.PUT, object_id, payload_codec.to_wire(data))])
        self.stats["puts"] += 1
        return ref

    def submit(self, spec: TaskSpec, kind: int = P.SUBMIT) -> list[ObjectRef]:
        """Send a task (or, with ``kind=ACTOR_CALL``, an actor call); refs to its results."""
        return_ids = spec.return_ids()
        with self._lock:
            self._subscribed.update(return_ids)  # the node sends results to their submitter
            idle = not self._unanswered
            if return_ids:
                self._unanswered.add(return_ids[0])
        refs = [self._own_ref(object_id) for object_id in return_ids]
        self.send_soon((kind, spec_to_wire(spec)), at_once=idle)
        self.stats["submitted"] += 1
        return refs

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
                self._block_on(waiter, timeout)
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

    def _block_on(self, waiter: _Waiter, timeout: float | None) -> None:
        # A worker's task that blocks lends its CPUs to the node meanwhile, so
        # that nested tasks can run even when they outnumber the CPUs.
        lent = self.in_task
        if lent:
            with self._revocations:
                self._unanswered_blocks += 1
            self.send((P.BLOCKED,))
        try:
            waiter.event.wait(timeout)
        finally:
            if lent:
                self.send((P.UNBLOCKED,))

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
        # Nothing more is sent: the node drops this process's references when
        # it disconnects, and a send could block behind a node that has stopped.
        self.closed = True
        self._fail(RuntimeError("actorkit was shut down while waiting"))
        self._wake.put(_STOP)
        self._channel.close()
        if threading.current_thread() is not self._receiver:
            self._receiver.join(timeout=5)
