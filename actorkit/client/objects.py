"""Objects: putting values, the table of ready ones, decoding them, futures.

``put`` serializes a value into a payload (small values inline, large
buffers in shared memory: a segment the node recycles when it has one, see
``allocate``), keeps it in the ready table and sends PUT.  Every READY the
node sends lands in ``on_ready``, as does every answer of a direct call
(``DirectCalls``): the payload is kept while this process holds a ref to the
object, and whoever waits for it is woken (a blocked get(), a future).

``decode_object`` turns a payload into its value: an array in it views the
object's shared memory (mapped once per process) and holds the object like a
ref while it lives.  An object made on another machine of a cluster is copied
here first (``object_transfer.localize_from``).
"""

from __future__ import annotations

import concurrent.futures
import mmap
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

from .. import payload as payload_codec
from .. import protocol as P
from .. import shm
from ..exceptions import ObjectLostError
from ..object_ref import ObjectRef
from ..object_store import POOL_MIN_SIZE
from ..object_transfer import localize_from
from ..payload import Payload
from ..serialization import serialize, serialize_put
from .calls import CallTable
from .connection import Connection
from .leases import Leases
from .refs import RefCounts
from .shared import Shared


class ObjectStatistics(NamedTuple):
    ready: int  # payloads held, of objects this process holds refs to
    mapped: int  # of those, mapped shared memory
    subscribed: int  # objects READY is to come for
    futures_waiting: int  # objects with callbacks (futures) waiting
    puts: int


class Objects:
    """put/encode/allocate, the ready table, decoding payloads, futures."""

    def __init__(self, shared: Shared, conn: Connection, refs: RefCounts, calls: CallTable, leases: Leases) -> None:
        self._shared = shared
        self._lock = shared.lock
        self._conn = conn
        self._refs = refs
        self._calls = calls
        self._leases = leases
        self._localize: Callable[[bytes, Payload], Payload] | None = None
        self._ready = shared.ready
        self._mappings = shared.mappings
        self._subscribed = shared.subscribed
        self._callbacks = shared.callbacks
        self._waiters = shared.waiters
        self._wake_w = shared.wake_w
        self._local_refs = shared.local_refs
        self._unanswered = shared.unanswered
        self._pending_direct = shared.pending_direct
        self._node_calls = shared.node_calls
        self._node_call_of = shared.node_call_of
        self._stats = shared.stats

    def __repr__(self) -> str:
        return (
            f"<Objects ready={len(self._ready)} mapped={len(self._mappings)} subscribed={len(self._subscribed)} "
            f"puts={self._stats['puts']}>"
        )

    def statistics(self) -> ObjectStatistics:
        with self._lock:
            return ObjectStatistics(
                len(self._ready), len(self._mappings), len(self._subscribed), len(self._callbacks), self._stats["puts"]
            )

    # -------------------------------------------------------------- putting

    def put(self, value: Any) -> ObjectRef:
        return self.put_serialized(serialize_put(value))

    def encode(self, value: Any, is_error: bool = False) -> Payload:
        """A payload for ``value``, its large parts in (recycled) shared memory."""
        return payload_codec.from_serialized(serialize(value), self._shared.session, is_error, self.allocate)

    def allocate(self, size: int) -> tuple[str, mmap.mmap]:
        """A writable segment for an object of ``size`` bytes: recycled if the node has one."""
        self._conn.check_open()  # a segment made after shutdown would outlive the session
        shared = self._shared
        if size > shared.store_capacity:
            raise ValueError(
                f"cannot store an object of {size:,} bytes: the object store holds "
                f"{shared.store_capacity:,} bytes. Start with a larger init(object_store_memory=...), "
                f"or split the object."
            )
        if size >= POOL_MIN_SIZE and shared.transfer_address is None:
            recycled = self._conn.request("alloc", size)
            if recycled is not None:
                name, _capacity = recycled
                return name, shm.open_writable(name, size)
            if size > shm.free_bytes():
                raise ValueError(
                    f"cannot store an object of {size:,} bytes: only {shm.free_bytes():,} bytes "
                    f"are free in {shm.SHM_DIR}. Free memory, or split the object."
                )
        return shm.create(shared.session, size)

    def put_serialized(self, serialized: Any, is_error: bool = False) -> ObjectRef:
        """Store an already serialized value (with ``is_error``, an error ``get()`` raises)."""
        object_id = self._shared.new_task_id() + b"\0\0\0\0"
        data = payload_codec.from_serialized(serialized, self._shared.session, is_error, allocate=self.allocate)
        with self._lock:
            self._ready[object_id] = data
            self._shared.unsynced = True
        ref = self._refs.own(object_id)
        try:
            self._conn.send_many([(P.PUT, object_id, payload_codec.to_wire(data))])
        except BaseException:
            if data.segment is not None:
                shm.unlink(data.segment)  # the node never got it: nobody else would free it
            raise
        self._stats["puts"] += 1
        return ref

    # -------------------------------------------------------------- arriving

    def on_ready(self, object_id: bytes, payload: Payload) -> None:
        """``object_id`` is ready (the node's READY, or a direct call's answer): keep its
        payload if it is held here, and wake whoever waits for it."""
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
                answered = self._calls.answered_through_node_locked(object_id)
            callbacks = self._callbacks.pop(object_id, None)
            if object_id in self._local_refs:
                self._ready[object_id] = payload
            for waiter in self._waiters.pop(object_id, ()):
                waiter.remaining -= 1
                if waiter.remaining == 0:
                    waiter.wake(self._wake_w)
        if answered is not None:
            self._leases.answered(answered)
        for callback in callbacks or ():
            try:
                callback(payload)
            except Exception:  # a callback's failure must not stop the reader
                traceback.print_exc()

    # -------------------------------------------------------------- reading

    def decode_object(self, object_id: bytes, data: Payload) -> Any:
        """The value of an object; arrays in it view its shared memory and pin it."""
        if data.segment is None:
            return payload_codec.decode(data)
        if shm.session_of(data.segment) != self._shared.session:
            data = self._localized(object_id, data)
        with self._lock:
            mapping = self._mappings.get(object_id)
            if mapping is None:
                # One mapping per object and process: every get() of it shares the memory.
                mapping = self._mappings[object_id] = shm.attach(data.segment, data.segment_size)  # type: ignore[arg-type]
        return payload_codec.decode(data, mapping, pin=lambda: self._refs.pin_view(object_id))

    def _localized(self, object_id: bytes, data: Payload) -> Payload:
        """A copy on this machine of an object made on another node of the cluster."""
        if self._localize is None:
            address = self._shared.transfer_address or self._conn.request("info").get("transfer_address")
            if address is None:
                raise ObjectLostError(f"object {object_id.hex()} is held by another node, which this node cannot reach")
            self._localize = localize_from(address, self._shared.authkey)
        local = self._localize(object_id, data)
        with self._lock:
            if object_id in self._ready:
                self._ready[object_id] = local
        return local

    def when_ready(self, object_ids: list[bytes], callback: Callable[[], None]) -> None:
        """Call ``callback()`` (on the thread that reads the answer) once each of
        ``object_ids`` not here yet is (once for each)."""
        self._on_arrival(object_ids, lambda _payload: callback())

    def _on_arrival(self, object_ids: list[bytes], callback: Callable[[Payload | None], None]) -> list[Payload | None]:
        """Register ``callback(payload)`` for each of ``object_ids`` not here yet, asking the
        node for those it will not send unasked; the payloads of those here already (else None)."""
        here: list[Payload | None] = []
        subscribe = []
        with self._lock:
            for object_id in object_ids:
                data = self._ready.get(object_id)
                here.append(data)
                if data is not None:
                    continue
                self._callbacks.setdefault(object_id, []).append(callback)
                if object_id not in self._subscribed:
                    self._subscribed.add(object_id)
                    subscribe.append(object_id)
        if subscribe:
            self._conn.send_many([(P.SUBSCRIBE, subscribe)])
        elif None in here:
            self._conn.flush()
        return here

    def future(self, ref: ObjectRef) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        object_id = ref._id

        def complete(data: Payload | None) -> None:
            if fut.done():
                return  # cancelled by its user meanwhile
            try:
                if data is None:
                    fut.set_exception(self._shared.failure or ObjectLostError(f"{ref!r} was lost"))
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

        # Keep the ref alive until the future completes.
        fut.add_done_callback(lambda _f, _keep=ref: None)  # type: ignore[misc]
        (data,) = self._on_arrival([object_id], complete)
        if data is not None:
            complete(data)
        return fut
