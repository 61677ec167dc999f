"""Direct calls: actor calls straight to the actor's process, tasks straight to lent workers.

Actor calls go to the actor's process once the node has said where it
listens (ACTOR_ROUTE) and none of this process's calls to it through the node
are unanswered; the link is opened on the first such call.  A driver's task
goes the same way to a worker the node lent it (``Leases``).  The answer (DONE)
comes back on the link and is handled here: its payloads land in the ready
table (``Objects.on_ready``) and the call is settled (``Leases.answered``).
A large result, or one holding refs, comes through the node instead
(OWNED_RESULT on the link, then the node's READY).

An actor call whose arguments are not all here yet is kept here until they
are, and this process's later calls to that actor wait behind it (``_held``):
sent at once, it would make the actor wait for them, and hold back the ready
calls of its other callers.  Order is kept per caller, as in Ray.

If a link breaks, the calls still unanswered on it are resent through the
node, marked lost, so that the node retries or fails them.  The transport
itself (``Link``, ``Hub``, ``Loopback``) is ``actorkit.direct``; the ledger of
calls in flight, and what the node is told of their results, is ``calls.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from .. import payload as payload_codec
from .. import protocol as P
from ..direct import Link, Loopback
from ..object_ref import ObjectRef
from ..payload import Payload
from ..scheduler import shape_of
from ..task_spec import TaskSpec, cancelled_error, spec_to_wire
from .calls import CallTable, DirectCall
from .connection import Connection
from .leases import Leases
from .objects import Objects
from .refs import RefCounts
from .shared import Shared


class DirectStatistics(NamedTuple):
    routes: int  # actors known to listen here, not connected yet
    actor_links: int  # connected links to actors
    calls_in_flight: int  # direct calls not answered (actor calls and lent workers' tasks)
    calls_held: int  # actor calls kept here until their arguments are (and those behind them)
    sent: int  # direct calls sent, since the start


class DirectCalls:
    """Routes to actors, their links, and every answer that comes on a direct link."""

    def __init__(
        self, shared: Shared, conn: Connection, refs: RefCounts, calls: CallTable, leases: Leases, objects: Objects
    ) -> None:
        self._shared = shared
        self._lock = shared.lock
        self._conn = conn
        self._hub = conn.hub
        self._refs = refs
        self._calls = calls
        self._leases = leases
        self._objects = objects
        self.actor_id: bytes | None = None  # set in an actor's process (see call_self_through)
        self._loopback: Loopback | None = None
        self._routes: dict[bytes, str] = {}  # actor id -> where it listens, not connected yet
        self._links: dict[bytes, Link] = {}  # actor id -> connected link
        self._direct = shared.calls
        self._node_calls = shared.node_calls
        self._pending_direct = shared.pending_direct
        self._promised = shared.promised
        self._local_only = shared.local_only
        self._local_refs = shared.local_refs
        self._ready = shared.ready
        self._subscribed = shared.subscribed
        self._outgoing = shared.outgoing
        self._stats = shared.stats
        self._held: dict[bytes, deque[DirectCall]] = {}  # actor id -> calls not sent yet, in order
        self._pumping: dict[bytes, bool] = {}  # actor id -> a thread sends its held calls; True: look again
        leases.link_handlers = (self.on_link_messages, self.on_link_lost)  # lent workers' links are read here

    def __repr__(self) -> str:
        return f"<DirectCalls routes={len(self._routes)} links={len(self._links)} in_flight={len(self._direct)}>"

    def statistics(self) -> DirectStatistics:
        with self._lock:
            held = sum(len(q) for q in self._held.values())
            return DirectStatistics(len(self._routes), len(self._links), len(self._direct), held, self._stats["direct"])

    # ------------------------------------------------------------- routes

    def call_self_through(self, actor_id: bytes, on_call: Callable[[Any, list[tuple[Any, ...]]], None]) -> None:
        """In an actor's process: its calls to itself go to ``on_call`` (its mailbox)."""
        self.actor_id = actor_id
        self._loopback = Loopback(actor_id, on_call, self.on_link_messages)  # type: ignore[arg-type]

    def on_route(self, actor_id: bytes, address: str, session: str) -> None:
        # Only an actor on this machine: its address is a unix socket here.
        if session == self._shared.session:
            with self._lock:
                self._routes[actor_id] = address

    def forget_route(self, actor_id: bytes) -> None:
        """Send no more calls to ``actor_id`` directly (it is being killed)."""
        with self._lock:
            self._routes.pop(actor_id, None)
            self._links.pop(actor_id, None)  # its unanswered calls are resent when it closes

    def link_to(self, actor_id: bytes) -> Link | Loopback | None:
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
            link = self._hub.connect(address, self._shared.authkey, actor_id, self.on_link_messages, self.on_link_lost)
        except (OSError, EOFError):
            return None  # the actor is gone or restarting: the node knows what to do
        with self._lock:
            self._links[actor_id] = link
        return link

    # ------------------------------------------------------------- sending

    def submit(self, spec: TaskSpec, link: Link | Loopback | None, shape: Any = None) -> list[ObjectRef]:
        """Send ``spec`` on ``link`` (an actor's call), or (``link`` None) queue it for a
        lease of ``shape``."""
        return_ids = spec.return_ids()
        hold = (*spec.deps, *spec.args.contained)
        if spec.actor_id is not None:
            hold += (spec.actor_id,)
        shared = self._shared
        with self._lock:
            self._conn.check_open()
            for object_id in hold:
                self._refs.count(object_id)
            call = self._direct[spec.task_id] = DirectCall(spec, link, return_ids, hold)
            self._pending_direct.update(return_ids)
            self._subscribed.update(return_ids)  # they come on the link, unasked
            # Buffered submissions too: the actor may wait for their results.
            sync, shared.unsynced = shared.unsynced or bool(self._outgoing), False
        own = self._refs.own
        refs = [own(object_id) for object_id in return_ids]
        if sync:
            # The worker asks the node for the refs in the arguments (and a lent
            # worker for the function), on its own connection: the node must have
            # read what this process sent first.
            try:
                self._conn.request("sync")
            except BaseException:
                self._withdraw(spec.task_id)
                raise
        self._stats["submitted"] += 1
        with self._lock:
            release = None
            actor_id = spec.actor_id
            if link is not None and actor_id is not None and (actor_id in self._held or not self._here_locked(spec)):
                self._held.setdefault(actor_id, deque()).append(call)
                call.held = True
            elif link is None and self._leases.queue_locked(call, shape):
                pass
            elif link is None or getattr(link, "closed", False):
                # Its lease was asked back, or its link lost before this call was on it
                # (once on it, its loss resends the call): through the node.
                release = self._calls.through_node_locked(call, False)
        if release is not None:
            self._calls.resent(release)
        elif call.held:
            missing = [object_id for object_id in spec.deps if object_id not in self._ready]
            if missing:
                self._objects.when_ready(missing, lambda: self._send_held(actor_id))  # type: ignore[arg-type]
            self._send_held(actor_id)  # type: ignore[arg-type]
        elif link is None:
            self._leases.pump(shape)
        else:
            try:
                link.send([P.submit(P.ACTOR_CALL, spec_to_wire(spec))])
            except OSError:
                pass  # it died: its reader sees it close after the answers it sent, and resends the rest
            self._stats["direct"] += 1
        return refs

    def _here_locked(self, spec: TaskSpec) -> bool:
        ready = self._ready
        return all(object_id in ready for object_id in spec.deps)

    def _send_held(self, actor_id: bytes) -> None:
        """Send the held calls to ``actor_id`` whose arguments are here, in order, up to the
        first that still waits (from any thread; one at a time sends, so order is kept)."""
        with self._lock:
            if actor_id in self._pumping:
                self._pumping[actor_id] = True  # the sending thread looks again before it stops
                return
            self._pumping[actor_id] = False
        while True:
            release: list[bytes] = []
            cancelled: list[DirectCall] = []
            with self._lock:
                queue = self._held.get(actor_id)
                ready: list[DirectCall] = []
                while queue and self._here_locked(queue[0].spec):
                    call = queue.popleft()
                    call.held = False
                    if call.cancelled:
                        cancelled.append(call)
                    elif self._direct.get(call.spec.task_id) is call:
                        ready.append(call)
                link = ready[0].link if ready else None
                if link is not None and getattr(link, "closed", False):
                    # Its link was lost (or dropped by kill()) while they waited: through the node.
                    for call in ready:
                        release.extend(self._calls.through_node_locked(call, False))
                    ready = []
            for call in cancelled:
                self._complete_cancelled(call)
            if release:
                self._calls.resent(release)
            if ready:
                try:
                    link.send([P.submit(P.ACTOR_CALL, spec_to_wire(c.spec)) for c in ready])  # type: ignore[union-attr]
                except OSError:
                    pass  # it died: its reader sees it close, and resends what it had not answered
                self._stats["direct"] += len(ready)
            with self._lock:
                if self._pumping[actor_id]:
                    self._pumping[actor_id] = False
                    continue
                del self._pumping[actor_id]
                queue = self._held.get(actor_id)
                if queue is not None and not queue:
                    del self._held[actor_id]  # only now: a call made meanwhile went behind the sent ones
                return

    def _withdraw(self, task_id: bytes) -> None:
        """Forget a direct call that was never sent."""
        with self._lock:
            call = self._direct.pop(task_id, None)
            if call is None:
                return
            self._shared.unsynced = True  # the sync that failed is still owed
            for object_id in call.return_ids:
                self._pending_direct.discard(object_id)
                self._subscribed.discard(object_id)
        self._leases.answered(call)

    # ------------------------------------------------------------- answers

    def on_link_messages(self, link: Link, messages: list[tuple[Any, ...]]) -> None:
        shapes: set[Any] = set()
        try:
            for message in messages:
                kind = message[0]
                if kind == P.DONE:
                    _, task_id, wires, _retryable, blocked, exiting = message
                    if blocked:
                        self._waited(task_id)
                    if exiting and link.actor_id is not None:
                        # Its actor's process is exiting (sys.exit): later calls go through
                        # the node, which holds them for the restarted actor, if any.
                        self.forget_route(link.actor_id)
                    payloads = [payload_codec.from_wire(w) for w in wires]
                    shapes.add(self._complete(task_id, payloads, False))
                elif kind == P.OWNED_RESULT:
                    _, task_id = message
                    with self._lock:
                        call = self._direct.get(task_id)
                        if call is not None:
                            call.via_node = True
                elif kind == P.REVOKED:
                    _, task_ids = message
                    shapes.add(self._handed_back(task_ids))
        finally:
            shapes.discard(None)
            for shape in shapes:
                self._leases.pump(shape)  # once for the frame: what a worker answered at once, it gets in one frame

    def _handed_back(self, task_ids: list[bytes]) -> Any:
        """A lent worker whose task waits in get() handed back the tasks sent behind it
        (see ``Leases.take_back_locked``).  Returns the shape to pump."""
        with self._lock:
            calls = [self._direct[t] for t in task_ids if t in self._direct]
            if not calls:
                return None
            shape, cancelled, release = self._leases.take_back_locked(calls)
        for call in cancelled:
            self._complete_cancelled(call)
        self._calls.resent(release)
        return shape

    def _waited(self, task_id: bytes) -> None:
        """A task on a lent worker waited in get(): send none of its function behind one."""
        with self._lock:
            call = self._direct.get(task_id)
            if call is not None:
                self._leases.blocking_locked(call.spec.function_id)

    def _complete(self, task_id: bytes, payloads: list[Payload], pump: bool = True) -> Any:
        """A direct call's answer came on its link (see ``Leases.answered`` for ``pump``)."""
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
                self._conn.send_soon(message, at_once=False)  # the first wakes the flusher
            self._objects.on_ready(object_id, payload)
        return self._leases.answered(call, pump)

    def on_link_lost(self, link: Link) -> None:
        """The link closed (the worker's process died): resend its unanswered calls through the node.

        Marked lost, so that the node retries them within ``max_task_retries``
        (an actor's call) or ``max_retries`` (a task), or fails them.  A task
        cancelled with ``force=True`` (which kills its worker) is cancelled here.
        """
        releases: list[bytes] = []
        cancelled: list[DirectCall] = []
        with self._lock:
            actor_id = link.actor_id
            if actor_id is not None and self._links.get(actor_id) is link:
                del self._links[actor_id]
            shapes: set[Any] = set()
            if link.lent_worker is not None:
                shapes = self._leases.worker_lost_locked(link.lent_worker)
            # Those answered through the node are not lost: the node's READY is on its way.
            lost = [call for call in self._direct.values() if call.link is link and not call.via_node and not call.held]
            if actor_id is not None:
                # Calls that never left: through the node, not lost (the process never saw them).
                for call in self._held.pop(actor_id, ()):
                    call.held = False
                    if self._direct.get(call.spec.task_id) is call:
                        releases.extend(self._calls.through_node_locked(call, False))
            for i, call in enumerate(lost):
                if call.cancelled and call.lease is not None:
                    cancelled.append(call)
                    continue
                if actor_id is not None:
                    # On that process: the node tells whether it has seen it die yet.
                    mark = link.address or True
                else:
                    # A worker runs its tasks in the order sent (see Leases.pump): only the first had started.
                    mark = i == 0
                releases.extend(self._calls.through_node_locked(call, mark))
            for shape in shapes:
                releases.extend(self._leases.requeue_locked(shape) or ())
            if self._shared.closed or not (lost or releases):
                return
        for call in cancelled:
            self._complete_cancelled(call)
        for object_id in releases:
            self._refs.release_ref(object_id)  # the node pins what the resent calls use first
        try:
            self._conn.send_many([])
        except BaseException:
            pass  # the node is gone too: waiters hear of it from the hub

    # ------------------------------------------------------------- cancelling

    def cancel(self, task_id: bytes, force: bool, recursive: bool) -> bool:
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
                self._leases.unqueue_locked(call, shape_of(call.spec.resources)[1])
        if waiting:
            self._complete_cancelled(call)
            return True
        if lease is not None:
            if recursive:
                # The node never saw the task, but it did see the tasks it submitted.
                self._conn.request("cancel_children", task_id, force)
            # Through the node: a worker reads its links only between tasks.
            self._conn.request("cancel_lent", lease.worker_id, task_id, force)
            return True
        try:
            call.link.send([P.cancel(task_id)])  # type: ignore[union-attr]
        except OSError:
            pass  # the worker died: the call is resent through the node, which fails it
        return True

    def _complete_cancelled(self, call: DirectCall) -> None:
        """Answer ``call`` here, as cancelled: it will never be answered otherwise."""
        self._complete(call.spec.task_id, [self._cancelled(call.spec)] * call.spec.num_returns)

    def _cancelled(self, spec: TaskSpec) -> Payload:
        return payload_codec.encode(cancelled_error(spec), self._shared.session, is_error=True)
