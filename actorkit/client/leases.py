"""Workers the node lent this process: the queue of tasks waiting for room on one.

A driver's task of a shape this process holds a lease of (see
``LeaseManager.lend`` (node/leases.py)) waits in the backlog, its results already promised to it as
for any direct call, until a lease of that shape has room, and goes straight
to that worker on its link::

    submit ─▶ backlog[shape] ─ pump ─▶ roomiest lease ─ SUBMIT on its link ─▶ lent worker
                 │  no room: LEASE_REQUEST (one more lease of the shape at a time)
                 └─ no lease left (revoked, lost): through the node (requeue_locked)

A lease has room when it is idle, or when it runs a function known to be
short (``RunTimes``) that never waited in get(): then up to a depth that
keeps about ``LEASE_QUEUE_S`` of work lined up on the worker, so that it never
waits for the round trip to this process.  The node asks a lease back
(LEASE_REVOKE) once others' tasks wait for resources: it is given back
(LEASE_RETURN) once none of its tasks is in flight.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, NamedTuple

from .. import protocol as P
from ..direct import Link, OnLost, OnMessages
from ..run_times import RunTimes
from ..task_spec import TaskSpec, spec_to_wire
from .calls import CallTable, DirectCall
from .connection import Connection
from .refs import RefCounts
from .shared import Shared

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


class Lease:
    """A worker the node lent this process for tasks of one shape (see ``LeaseManager.lend`` (node/leases.py))."""

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
        return f"<Lease {self.lease_id} worker {self.worker_id} {dict(self.shape)} {state}>"

    def add(self, spec: TaskSpec) -> None:
        """``spec`` is sent on this lease."""
        self.inflight += 1
        self.inflight_bytes += inline_size(spec)
        self.function = spec.function_id

    def remove(self, spec: TaskSpec) -> None:
        """``spec`` is answered, or handed back."""
        self.inflight -= 1
        self.inflight_bytes -= inline_size(spec)


def inline_size(spec: TaskSpec) -> int:
    """How many bytes of arguments ``spec`` carries in its own frame."""
    return len(spec.args.data or b"")


class LeaseStatistics(NamedTuple):
    leases_held: int  # revoked ones whose tasks are not all answered included
    leases_usable: int  # not revoked: tasks may be sent on them
    tasks_in_flight: int  # on lent workers
    tasks_waiting: int  # in the backlog, for room on a lease
    shapes_wanted: int  # one more lease asked for
    worker_links: int  # kept for a worker's next lease
    functions_timed: int
    functions_blocking: int  # seen waiting in get(): never lined up behind


class Leases:
    """The lent workers of this process and the tasks waiting for room on them."""

    def __init__(self, shared: Shared, conn: Connection, refs: RefCounts, calls: CallTable) -> None:
        self._shared = shared
        self._lock = shared.lock
        self._conn = conn
        self._hub = conn.hub
        self._refs = refs
        self._calls = calls
        self.by_shape: dict[Any, list[Lease]] = {}  # task shape -> leases to send such tasks on, not revoked
        self._lent: dict[int, Lease] = {}  # lease id -> every lease held, revoked ones included
        # Tasks for lent workers, waiting for room on a lease of their shape (sent in order).
        self._backlog: dict[Any, deque[DirectCall]] = {}
        self._wanted: set[Any] = set()  # shapes this process asked the node for one more lease of
        self._pumping: dict[Any, bool] = {}  # shape -> a thread sends its tasks; True: look again after
        self._blocking: set[bytes] = set()  # functions seen waiting in get() on a lent worker
        self._run_times = RunTimes()  # of tasks on leases
        self._worker_links: dict[int, Link] = {}  # worker id -> connection, kept for its next lease
        self._outgoing = shared.outgoing
        self._ready = shared.ready
        self._stats = shared.stats
        # How the links to lent workers are read: by DirectCalls, as every direct link
        # (set by it: it is made after this, as it sends on leases).
        self.link_handlers: tuple[OnMessages, OnLost] | None = None

    def __repr__(self) -> str:
        return (
            f"<Leases held={len(self._lent)} shapes={len(self.by_shape)} "
            f"waiting={sum(len(q) for q in self._backlog.values())} wanted={len(self._wanted)}>"
        )

    def statistics(self) -> LeaseStatistics:
        with self._lock:
            return LeaseStatistics(
                len(self._lent),
                sum(len(leases) for leases in self.by_shape.values()),
                sum(lease.inflight for lease in self._lent.values()),
                sum(len(backlog) for backlog in self._backlog.values()),
                len(self._wanted),
                len(self._worker_links),
                len(self._run_times),
                len(self._blocking),
            )

    # ----------------------------------------------------- from the node

    def on_lease(self, lease_id: int, worker_id: int, address: str, session: str, shape: Any) -> None:
        lease = Lease(lease_id, worker_id, address, shape)
        with self._lock:
            wished = shape in self._wanted
            self._wanted.discard(shape)
            link = self._worker_links.get(worker_id)
            usable = session == self._shared.session and not self._shared.closed  # else a unix socket on another machine
            if wished and not self._backlog.get(shape):
                usable = False  # asked for tasks that no longer wait: of no use now
        if usable and link is None:
            on_messages, on_lost = self.link_handlers  # type: ignore[misc]
            try:
                link = self._hub.connect(address, self._shared.authkey, None, on_messages, on_lost)
            except (OSError, EOFError):
                usable = False  # it died, or never listened: the node has the rest to say
        with self._lock:
            # A link found closed here was lost before it was known as this worker's:
            # nobody resends what goes on it.  Once known, its loss is seen (DirectCalls.on_link_lost).
            if usable and link is not None and not link.closed and not self._shared.closed:
                link.lent_worker = worker_id
                self._worker_links[worker_id] = link
                self.by_shape.setdefault(shape, []).append(lease)
                self._lent[lease_id] = lease
                usable = True
            else:
                usable = False
                release = self.requeue_locked(shape)
        if usable:
            self.pump(shape)
        else:
            self._give_back(lease)
            self._calls.resent(release)

    def on_lease_revoke(self, lease_id: int) -> None:
        with self._lock:
            lease = self._lent.get(lease_id)
            if lease is None:
                return  # given back already (the return crossed the revocation), or its worker died
            lease.revoked = True
            self._unlist_locked(lease)
            idle = lease.inflight == 0
            if idle:
                del self._lent[lease_id]
            release = self.requeue_locked(lease.shape)
        if idle:
            self._give_back(lease)  # else once its tasks are answered
        self._calls.resent(release)

    def _unlist_locked(self, lease: Lease) -> None:
        """Send nothing more on ``lease``."""
        leases = self.by_shape.get(lease.shape)
        if leases is not None and lease in leases:
            leases.remove(lease)
            if not leases:
                del self.by_shape[lease.shape]

    def _drop_lease_locked(self, lease: Lease) -> None:
        """Hold ``lease`` no more (the caller gives it back, or its worker died)."""
        self._lent.pop(lease.lease_id, None)
        self._unlist_locked(lease)

    def _give_back(self, lease: Lease) -> None:
        # Through the flusher: callers may hold the client's lock, which a send must not be taken under.
        with self._lock:
            self._wanted.discard(lease.shape)  # the node drops the wish on the return (LeaseManager.on_lease_return)
            if self._shared.closed:
                return
            self._outgoing.append((P.LEASE_RETURN, lease.worker_id, lease.lease_id))
        self._conn.flush_soon()

    # ----------------------------------------------------- sending tasks

    def may_lease(self, spec: TaskSpec, shape: Any) -> bool:
        """Whether ``spec`` may wait here for a lent worker rather than go through the node."""
        return (
            bool(self.by_shape.get(shape))
            and spec.function_bytes is None  # the node must see the function first
            and spec.may_go_direct()
            and inline_size(spec) < LEASE_MAX_INLINE
            # The node starts a task once its arguments are ready, not a worker waiting in get().
            and all(object_id in self._ready for object_id in spec.deps)
            # It would need a sync, whose answer this thread (a callback's) would have to read.
            and not ((self._shared.unsynced or self._outgoing) and self._hub.handling())
        )

    def queue_locked(self, call: DirectCall, shape: Any) -> bool:
        """Line ``call`` up for a lease of ``shape`` (then ``pump`` it); False if none is left."""
        if not self.by_shape.get(shape):
            return False
        self._backlog.setdefault(shape, deque()).append(call)
        return True

    def roomiest_locked(self, shape: Any, spec: TaskSpec) -> Lease | None:
        """The lease of ``shape`` with the fewest tasks in flight, if it has room for
        ``spec``: it is idle, or runs its function, known to be short and never to wait
        in get() (a task sent behind one could be what it waits for)."""
        function_id, size = spec.function_id, inline_size(spec)
        average = self._run_times.short_average(function_id)
        depth = 1
        if average is not None and function_id not in self._blocking:
            depth = max(2, min(LEASE_MAX_DEPTH, int(LEASE_QUEUE_S / average) if average else LEASE_MAX_DEPTH))
        best = None
        for lease in self.by_shape.get(shape, ()):
            if lease.inflight == 0 or (
                lease.function == function_id
                and lease.inflight < depth
                and lease.inflight_bytes + size <= LEASE_MAX_INLINE
            ):
                if best is None or lease.inflight < best.inflight:
                    best = lease
        return best

    def pump(self, shape: Any) -> None:
        """Send tasks waiting for a lease of ``shape`` to leases with room (one frame per
        worker); ask for one more lease if some still wait.  From any thread, unlocked.

        One thread at a time sends a shape's tasks (another one's call only asks it
        to look again): a worker then gets them in the order they were taken, which
        is the order it runs them in (see ``DirectCalls.on_link_lost``).
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
        sends: dict[Link, list[DirectCall]] = {}
        with self._lock:
            backlog = self._backlog.get(shape)
            while backlog and not self._shared.closed:
                lease = self.roomiest_locked(shape, backlog[0].spec)
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
                link.send([P.submit(P.SUBMIT, spec_to_wire(call.spec)) for call in calls])
            except OSError:
                pass  # it died: its reader sees it close after the answers it sent, and resends the rest
            self._stats["direct"] += len(calls)
        if ask:
            try:
                self._conn.send_many([(P.LEASE_REQUEST, shape)])
            except BaseException:
                with self._lock:
                    self._wanted.discard(shape)
                if self._shared.failure is None:
                    raise
                # The node is gone: waiters hear of it.

    def requeue_locked(self, shape: Any) -> list[bytes] | None:
        """Once no lease of ``shape`` is left, send the tasks waiting for one through the node.

        Returns the refs to let go of once that is sent (see ``CallTable.resent``), or None.
        """
        if self.by_shape.get(shape) or shape not in self._backlog:
            return None
        release: list[bytes] = []
        for call in self._backlog.pop(shape):
            release.extend(self._calls.through_node_locked(call, False))
        return release

    # ----------------------------------------------------- answers

    def answered(self, call: DirectCall, pump: bool = True) -> Any:
        """A direct call is answered: let go of what it held, and of its lease if it was
        asked back.  Sends what waits for its lease, unless ``pump`` is False: then
        returns the shape to ``pump`` (or None), for a caller that settles several."""
        for object_id in call.hold:
            self._refs.release_ref(object_id)
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
        self.pump(lease.shape)
        return None

    def blocking_locked(self, function_id: bytes) -> None:
        """A task of ``function_id`` waited in get() on a lent worker: line none up behind one."""
        self._blocking.add(function_id)

    def take_back_locked(self, calls: list[DirectCall]) -> tuple[Any, list[DirectCall], list[bytes] | None]:
        """A lent worker whose task waits in get() handed back ``calls``, sent behind it
        (``TaskExecutor.give_back_queued``): they wait for a lease again, first in line.
        Returns their shape, those cancelled meanwhile (to be answered as such) and what
        to let go of (``CallTable.resent``)."""
        cancelled = []
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
        return shape, cancelled, self.requeue_locked(shape)

    def unqueue_locked(self, call: DirectCall, shape: Any) -> None:
        """``call`` waiting for a lease of ``shape`` is cancelled: it goes nowhere."""
        backlog = self._backlog.get(shape)
        if backlog is not None and call in backlog:
            backlog.remove(call)
            if not backlog:
                del self._backlog[shape]

    def worker_lost_locked(self, worker_id: int) -> set[Any]:
        """The link to lent worker ``worker_id`` closed: its leases end (the node ends them
        when it sees its process exit).  Returns their shapes, to requeue."""
        shapes = set()
        self._worker_links.pop(worker_id, None)
        for lease in [lease for lease in self._lent.values() if lease.worker_id == worker_id]:
            self._drop_lease_locked(lease)
            shapes.add(lease.shape)
        return shapes

    # ----------------------------------------------------- giving back

    def return_idle_leases(self) -> None:
        """Give back every idle lent worker (before asking the node what is free)."""
        release: list[bytes] = []
        with self._lock:
            asked = bool(self._wanted)
            idle = [lease for lease in self._lent.values() if lease.inflight == 0]
            for lease in idle:
                self._drop_lease_locked(lease)
                self._wanted.discard(lease.shape)  # as in _give_back
            for shape in {lease.shape for lease in idle}:
                release.extend(self.requeue_locked(shape) or ())
        self._calls.resent(release)
        if idle:
            # Sent now, not through the flusher: the caller asks the node what is
            # free next, or disconnects (see runtime.shutdown).
            self._conn.send_many([(P.LEASE_RETURN, lease.worker_id, lease.lease_id) for lease in idle])
        if asked:
            # A lease granted for a wish may be on its way: it comes before the
            # answer to this, and goes back at once (see on_lease).
            self._conn.request("sync")
