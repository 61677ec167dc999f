"""The ledger of direct calls: what is in flight on links, and what the node knows of it.

A direct call (an actor call on the actor's link, or a task on a worker the
node lent this process) is unknown to the node, and so are its results, until
a ref to one leaves this process (``escaping``): then the client publishes it,
PUT if it is back, PROMISE if not (then PUT when it arrives).  This module
keeps the records of that and the moves between "direct" and "through the
node" that every other component makes under the lock:

- ``through_node_locked``: a call that cannot stay direct (its lease was asked
  back, its link lost) is buffered to go through the node instead.
- ``answered_through_node_locked``: a large result, or one holding refs, came
  through the node (OWNED_RESULT, then the node's READY).
- ``node_call_locked``: an actor's calls through the node are counted, and its calls
  go direct only once none is unanswered, so that none overtakes another.

Nothing here sends: what is buffered goes with the next send or the flusher.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import payload as payload_codec
from .. import protocol as P
from ..direct import Link, Loopback
from ..task_spec import TaskSpec, spec_to_wire
from .connection import Connection
from .refs import RefCounts
from .shared import Shared

if TYPE_CHECKING:
    from .leases import Lease  # leases.py imports this module


class DirectCall:
    """An actor call, or a task for a lent worker, sent on a direct link (or waiting for
    a lease: ``link`` and ``lease`` None) and not answered yet."""

    __slots__ = ("spec", "link", "return_ids", "hold", "cancelled", "lease", "sent_at", "via_node", "held")

    def __init__(
        self, spec: TaskSpec, link: Link | Loopback | None, return_ids: list[bytes], hold: tuple[bytes, ...]
    ) -> None:
        self.spec = spec  # resent through the node if the link breaks
        self.link = link
        self.return_ids = return_ids
        self.hold = hold  # counted refs kept until the answer: arguments, and the actor itself
        self.cancelled = False
        self.lease: Lease | None = None  # for a task: the lease it went on
        self.sent_at = 0.0  # for a task: when it went, to learn which functions are short
        self.via_node = False  # answered through the node (OWNED_RESULT): its READY is on the way
        self.held = False  # an actor call kept here until its arguments are (see DirectCalls.submit)

    def __repr__(self) -> str:
        where = "through the node" if self.via_node else self.link if self.link is not None else "waiting for a lease"
        return f"<DirectCall {self.spec.name} {self.spec.task_id.hex()} {where}{' cancelled' if self.cancelled else ''}>"


class CallStatistics(NamedTuple):
    in_flight: int  # direct calls not answered (waiting for a lease included)
    results_pending: int  # their results
    results_local_only: int  # results back, unknown to the node
    results_promised: int  # pending results the node was told of
    actors_with_node_calls: int  # actors whose calls through the node are unanswered
    node_calls_unanswered: int


class CallTable:
    """Direct calls in flight, and what the node has been told of their results."""

    def __init__(self, shared: Shared, conn: Connection, refs: RefCounts) -> None:
        self._shared = shared
        self._lock = shared.lock
        self._conn = conn
        self._refs = refs
        self.by_task = shared.calls  # task id -> unanswered direct call, in the order sent
        self._pending_direct = shared.pending_direct
        self._local_only = shared.local_only
        self._promised = shared.promised
        self._node_calls = shared.node_calls
        self._node_call_of = shared.node_call_of
        self._local_refs = shared.local_refs
        self._ready = shared.ready
        self._outgoing = shared.outgoing

    def __repr__(self) -> str:
        return (
            f"<CallTable in_flight={len(self.by_task)} pending={len(self._pending_direct)} "
            f"local_only={len(self._local_only)} promised={len(self._promised)} node_calls={len(self._node_calls)}>"
        )

    def statistics(self) -> CallStatistics:
        with self._lock:
            return CallStatistics(
                len(self.by_task),
                len(self._pending_direct),
                len(self._local_only),
                len(self._promised),
                len(self._node_calls),
                sum(self._node_calls.values()),
            )

    def node_call_locked(self, actor_id: bytes, return_ids: list[bytes]) -> None:
        """A call to ``actor_id`` goes through the node: later ones go direct only once it is answered."""
        self._node_calls[actor_id] = self._node_calls.get(actor_id, 0) + 1
        if return_ids:
            self._node_call_of[return_ids[0]] = actor_id

    def through_node_locked(self, call: DirectCall, lost: Any) -> tuple[bytes, ...]:
        """Buffer ``call`` to go through the node instead; returns what it held."""
        del self.by_task[call.spec.task_id]
        unheld = []
        for object_id in call.return_ids:
            self._pending_direct.discard(object_id)
            self._promised.discard(object_id)
            if object_id not in self._local_refs:
                unheld.append(object_id)  # the node will count it held: let go after
        actor_id = call.spec.actor_id
        if actor_id is None:
            self._outgoing.append(P.submit(P.SUBMIT, spec_to_wire(call.spec), lost))
        else:
            self.node_call_locked(actor_id, call.return_ids)
            self._outgoing.append(P.submit(P.ACTOR_CALL, spec_to_wire(call.spec), lost))
        if unheld:
            self._outgoing.append((P.DECREF, unheld))
        return call.hold

    def resent(self, release: Iterable[bytes] | None) -> None:
        """Let go of what calls sent through the node instead held, after they are sent."""
        if release is None:
            return
        for object_id in release:
            self._refs.release_ref(object_id)  # drained after the buffered submissions: the node pins first
        self._conn.flush_soon()

    def answered_through_node_locked(self, object_id: bytes) -> DirectCall | None:
        """A direct call's result came as the node's READY (OWNED_RESULT).
        Returns the call, for the caller to settle (``Leases.answered``) once unlocked."""
        self._pending_direct.discard(object_id)
        self._promised.discard(object_id)
        if object_id not in self._local_refs:
            # The node counts this process as holding it, and it no longer does.
            self._outgoing.append((P.DECREF, [object_id]))
            self._conn.flush_soon()
        return self.by_task.pop(object_id[:-4], None)

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
            self._shared.unsynced = True
