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
node are unanswered: see ``direct_calls.py`` (the transport is
``actorkit/direct.py``).  A driver's tasks go the same way to
workers the node lent it (LEASE), waiting here for room on one: see
``LeaseManager.lend`` (node/leases.py) and ``leases.py``.  The node does not know the results
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

The parts, each in its own module, sharing one lock and the tables of
``Shared`` by reference (``shared.py``)::

    Client (here) ── routes submissions; hands what the node sends to the part it is for
      Connection    connection.py    sends in order, batches, flusher, requests, failure
      RefCounts     refs.py          counts refs, ADDREF / DECREF, the release queue
      CallTable     calls.py         direct calls in flight, what the node knows of their results
      Leases        leases.py        lent workers and the tasks waiting for room on them
      Objects       objects.py       put, the ready table, decoding, futures
      DirectCalls   direct_calls.py  routes to actors, their links, answers on links, cancel
      Waits         waiting.py       get()/wait(): waiters, blocking, probing, reading a link

Each part is made after those it calls (in that order); the one call back,
from a lent worker's link to ``DirectCalls``, is handed to ``Leases`` by it.
What callers use most (get, submit's helpers, refs) is bound here straight
to the part's method: no hop through this class on a hot path.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any, NamedTuple

from .. import payload as payload_codec
from .. import protocol as P
from ..direct import Hub, Link
from ..metrics_batch import MetricBatch
from ..object_ref import ObjectRef
from ..scheduler import shape_of
from ..task_spec import TaskSpec, spec_to_wire
from .calls import CallStatistics, CallTable
from .connection import Connection, ConnectionStatistics
from .direct_calls import DirectCalls, DirectStatistics
from .leases import Leases, LeaseStatistics
from .objects import Objects, ObjectStatistics
from .refs import RefCounts, RefStatistics
from .shared import Shared
from .waiting import Waits, WaitStatistics


class ClientStatistics(NamedTuple):
    """``Client.statistics()``: one record per part."""

    connection: ConnectionStatistics
    refs: RefStatistics
    calls: CallStatistics
    leases: LeaseStatistics
    objects: ObjectStatistics
    direct: DirectStatistics
    waits: WaitStatistics


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
        self.job_id = job_id
        self.role = role
        self.worker_id = worker_id
        self._on_message = on_message  # the role's handler for non-object messages
        self._pid = os.getpid()
        # In a worker, the task it runs when the node never saw it (sent by a lessee):
        # the parent of the tasks it submits.
        self.parent_task: bytes | None = None
        shared = self._shared = Shared(session, store_capacity, authkey, transfer_address)
        self.stats = shared.stats  # submitted, direct, puts, gets
        self._lock = shared.lock

        refs = self._refs = RefCounts(shared, self)
        node = Link(sock, self._on_node_messages, self._on_node_lost)
        conn = self._conn = Connection(shared, refs, node, Hub(), on_lost)
        conn.send_many([(P.HELLO, role, os.getpid(), worker_id, job_id, namespace, shared.id_prefix)])
        calls = self._calls = CallTable(shared, conn, refs)
        leases = self._leases = Leases(shared, conn, refs, calls)
        objects = self._objects = Objects(shared, conn, refs, calls, leases)
        direct = self._direct = DirectCalls(shared, conn, refs, calls, leases, objects)
        waits = self._waits = Waits(shared, conn, objects)

        # What callers use, bound straight to the part that does it.
        self.new_task_id = shared.new_task_id
        self.send = conn.send
        self.send_soon = conn.send_soon
        self.metrics = MetricBatch(conn.send_soon)  # this process's records of actorkit.util.metrics
        self.sync = conn.sync
        self.flush = conn.flush
        self.request = conn.request
        self.needs_export = conn.needs_export
        self.adopt_ref = refs.adopt_ref
        self.release_ref = refs.release_ref
        self.own_actor = refs.own  # the counted reference behind a handle to an actor this process just created
        self.escaping = calls.escaping
        self.return_idle_leases = leases.return_idle_leases
        self.put = objects.put
        self.put_serialized = objects.put_serialized
        self.encode = objects.encode
        self.allocate = objects.allocate
        self.decode_object = objects.decode_object
        self.future = objects.future
        self.call_self_through = direct.call_self_through
        self.forget_route = direct.forget_route
        self.cancel_direct = direct.cancel
        self.get = waits.get
        self.wait_ready = waits.wait_ready
        self.was_revoked = waits.was_revoked
        self._may_lease = leases.may_lease
        self._link_to = direct.link_to
        self._submit_direct = direct.submit
        self._own = refs.own

        self.node_connection = (conn.hub, node)  # for a worker's mailbox to borrow
        conn.start()  # what the node sends is read from here on

    # ------------------------------------------------------------ settings

    @property
    def session(self) -> str:
        return self._shared.session

    @session.setter
    def session(self, value: str) -> None:
        self._shared.session = value

    @property
    def store_capacity(self) -> int:
        return self._shared.store_capacity

    @store_capacity.setter
    def store_capacity(self, value: int) -> None:
        self._shared.store_capacity = value

    @property
    def node_address(self) -> Any:
        """Where the node was reached, for errors (set by whoever connected)."""
        return self._shared.node_address

    @node_address.setter
    def node_address(self, value: Any) -> None:
        self._shared.node_address = value

    @property
    def closed(self) -> bool:
        return self._shared.closed

    @property
    def failure(self) -> BaseException | None:
        """Why this client lost its node (NodeDiedError), or None while it has it."""
        return self._shared.failure

    # A worker's flags for the task it runs (see Waits).
    @property
    def in_task(self) -> bool:
        return self._waits.in_task

    @in_task.setter
    def in_task(self, value: bool) -> None:
        self._waits.in_task = value

    @property
    def task_blocked(self) -> bool:
        return self._waits.task_blocked

    @task_blocked.setter
    def task_blocked(self, value: bool) -> None:
        self._waits.task_blocked = value

    @property
    def on_block(self) -> Callable[[], Callable[[], None] | None] | None:
        return self._waits.on_block

    @on_block.setter
    def on_block(self, value: Callable[[], Callable[[], None] | None] | None) -> None:
        self._waits.on_block = value

    def __repr__(self) -> str:
        state = "closed" if self.closed else "failed" if self.failure is not None else "connected"
        return (
            f"<Client {self.role} pid={self._pid} {state} refs={len(self._shared.local_refs)} "
            f"submitted={self.stats['submitted']} direct={self.stats['direct']} in_flight={len(self._shared.calls)} "
            f"leases={len(self._leases.by_shape)} puts={self.stats['puts']} gets={self.stats['gets']}>"
        )

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            self._conn.statistics(),
            self._refs.statistics(),
            self._calls.statistics(),
            self._leases.statistics(),
            self._objects.statistics(),
            self._direct.statistics(),
            self._waits.statistics(),
        )

    # ------------------------------------------------------------ submitting

    def submit(self, spec: TaskSpec, kind: int = P.SUBMIT) -> list[ObjectRef]:
        """Send a task (or, with ``kind=ACTOR_CALL``, an actor call); refs to its results."""
        if kind == P.ACTOR_CALL:
            link = self._link_to(spec.actor_id)  # type: ignore[arg-type]
            if link is not None:
                return self._submit_direct(spec, link)
        elif self._leases.by_shape:
            shape = shape_of(spec.resources)[1]
            if self._may_lease(spec, shape):
                return self._submit_direct(spec, None, shape)
        return_ids = spec.return_ids()
        shared = self._shared
        with self._lock:
            if spec.function_bytes is not None:
                shared.unsynced = True  # a lent worker asks the node for the function
            shared.subscribed.update(return_ids)  # the node sends results to their submitter
            unanswered = shared.unanswered
            idle = not unanswered
            if return_ids:
                unanswered.add(return_ids[0])
            if kind == P.ACTOR_CALL:
                # Calls to this actor go direct only once these are answered: order is kept.
                actor_id: bytes = spec.actor_id  # type: ignore[assignment]
                node_calls = shared.node_calls
                node_calls[actor_id] = node_calls.get(actor_id, 0) + 1
                if return_ids:
                    shared.node_call_of[return_ids[0]] = actor_id
        own = self._own
        refs = [own(object_id) for object_id in return_ids]
        parent = self.parent_task if kind == P.SUBMIT else None
        self.send_soon(P.submit(kind, spec_to_wire(spec), False, parent), at_once=idle)
        self.stats["submitted"] += 1
        return refs

    # ------------------------------------------------------------ receiving

    def _on_node_messages(self, _link: Link, messages: list[tuple[Any, ...]]) -> None:
        """What the node sent (read by the hub thread, or a caller waiting in get()):
        each message to the part it is for."""
        try:
            for message in messages:
                kind = message[0]
                if kind == P.READY:
                    _, object_id, wire = message
                    self._objects.on_ready(object_id, payload_codec.from_wire(wire))
                elif kind == P.REPLY:
                    _, request_id, ok, value = message
                    self._conn.on_reply(request_id, ok, value)
                elif kind == P.ACTOR_ROUTE:
                    _, actor_id, address, session = message
                    self._direct.on_route(actor_id, address, session)
                elif kind == P.LEASE:
                    _, lease_id, worker_id, address, session, shape = message
                    self._leases.on_lease(lease_id, worker_id, address, session, shape)
                elif kind == P.LEASE_REVOKE:
                    _, lease_id = message
                    self._leases.on_lease_revoke(lease_id)
                elif kind == P.REVOKED:
                    _, task_ids = message
                    self._shared.revocations.answered(task_ids)
                elif self._on_message is not None:
                    self._on_message(message)
        except BaseException as e:  # a bug: make it visible to every waiter
            self._conn.fail(e)
            raise

    def _on_node_lost(self, link: Link) -> None:
        self._conn.on_node_lost(link)

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Disconnect; waiters get an error, later calls a clear one."""
        if self._shared.closed:
            return
        try:
            self.metrics.flush()
        except Exception:
            pass  # the node is gone already: nothing to report to
        self.metrics.close()
        # Nothing more is sent: the node drops this process's references when
        # it disconnects, and a send could block behind a node that has stopped.
        self._shared.closed = True
        self._conn.fail(RuntimeError("actorkit was shut down while waiting"))
        self._conn.close()  # the flusher, and the hub: it closes the node's connection too
        self._waits.close()  # the wake pipe, once no thread polls it
