"""The client's parts on their own: no node, no process, no socket.

The lease queue (which lease a task goes to, how deep a lent worker's queue
may be, what revoking and giving back a lease leaves behind) and reference
counting (ADDREF on the first ref, DECREF after the last, after the flusher's
delay), built from ``actorkit.client``'s components with stand-ins for the
node's connection and the links to lent workers.
"""

from __future__ import annotations

import threading
import time

import pytest

from actorkit import payload as payload_codec
from actorkit import protocol as P
from actorkit.client.calls import CallTable
from actorkit.client.connection import Connection
from actorkit.client.direct_calls import DirectCalls
from actorkit.client.leases import LEASE_MAX_DEPTH, LEASE_MAX_INLINE, Lease, Leases
from actorkit.client.objects import Objects
from actorkit.client.refs import RefCounts
from actorkit.client.shared import Shared
from actorkit.client.waiting import Waits
from actorkit.payload import Payload
from actorkit.run_times import SHORT_RUNS
from actorkit.scheduler import shape_of
from actorkit.task_spec import TaskSpec

SESSION = "0123abcd"
SHAPE = shape_of({"CPU": 1.0})[1]


class FakeLink:
    """Stands in for a direct.Link: records what is sent on it, as (time, messages)."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.actor_id = None
        self.lent_worker: int | None = None
        self.closed = False
        self.frames: list[tuple[float, list[tuple]]] = []
        self.sent_event = threading.Event()

    def send(self, messages: list[tuple]) -> None:
        self.frames.append((time.monotonic(), list(messages)))
        self.sent_event.set()

    def messages(self, kind: int | None = None) -> list[tuple]:
        found = [m for _, frame in self.frames for m in frame]
        return found if kind is None else [m for m in found if m[0] == kind]


class FakeNodeLink(FakeLink):
    """The node's connection: answers every REQUEST at once (ok, None), as a live node does a "sync"."""

    def __init__(self) -> None:
        super().__init__("node")
        self.conn: Connection | None = None

    def send(self, messages: list[tuple]) -> None:
        super().send(messages)
        for message in messages:
            if message[0] == P.REQUEST:
                self.conn.on_reply(message[1], True, None)  # type: ignore[union-attr]


class FakeHub:
    """Stands in for direct.Hub: ``connect`` hands out FakeLinks, reads nothing."""

    def __init__(self) -> None:
        self.links: dict[str, FakeLink] = {}

    def connect(self, address, authkey, actor_id, on_messages, on_lost) -> FakeLink:
        link = self.links[address] = FakeLink(address)
        return link

    def add(self, link) -> None:
        pass

    def handling(self) -> int:
        return 0

    def close(self) -> None:
        pass


class Owner:
    """What ObjectRefs made by RefCounts point back to (the Client, in a process)."""

    refs: RefCounts

    def release_ref(self, object_id: bytes) -> None:
        self.refs.release_ref(object_id)

    def escaping(self, object_id: bytes) -> None:
        pass


class Parts:
    """The client's components around a fake node connection (no Client, no Waits)."""

    def __init__(self, release_delay: float = 0.005) -> None:
        self.shared = Shared(SESSION, 1 << 30, b"", None)
        owner = Owner()
        self.refs = owner.refs = RefCounts(self.shared, owner)  # type: ignore[arg-type]
        self.node = FakeNodeLink()
        self.hub = FakeHub()
        self.conn = self.node.conn = Connection(
            self.shared, self.refs, self.node, self.hub, release_delay=release_delay  # type: ignore[arg-type]
        )
        self.calls = CallTable(self.shared, self.conn, self.refs)
        self.leases = Leases(self.shared, self.conn, self.refs, self.calls)
        self.objects = Objects(self.shared, self.conn, self.refs, self.calls, self.leases)
        self.direct = DirectCalls(self.shared, self.conn, self.refs, self.calls, self.leases, self.objects)
        self._ids = 0

    def close(self) -> None:
        self.shared.closed = True
        self.conn.close()
        self.shared.close_pipe()

    def spec(self, function: bytes = b"f", args: bytes = b"args") -> TaskSpec:
        task_id = self.shared.new_task_id()
        payload = Payload(args, None, 0, (), None, ())
        return TaskSpec(task_id, b"job", "f", function, None, payload, (), 1, {"CPU": 1.0}, 0, False, None)

    def lend(self, lease_id: int, worker_id: int, session: str = SESSION) -> FakeLink | None:
        self.leases.on_lease(lease_id, worker_id, f"worker-{worker_id}.sock", session, SHAPE)
        return self.hub.links.get(f"worker-{worker_id}.sock")

    def submit(self, spec: TaskSpec) -> list:
        assert self.leases.may_lease(spec, SHAPE)
        return self.direct.submit(spec, None, SHAPE)

    def answer(self, link: FakeLink, spec: TaskSpec, value: object = None) -> None:
        wire = payload_codec.to_wire(payload_codec.encode(value, SESSION))
        self.direct.on_link_messages(link, [P.done(spec.task_id, [wire], False)])  # type: ignore[arg-type]


@pytest.fixture
def parts():
    p = Parts()
    yield p
    p.close()


def task_ids(link: FakeLink) -> list[bytes]:
    return [m[1][0] for m in link.messages(P.SUBMIT)]


def make_short(parts: Parts, function: bytes, took: float) -> None:
    for _ in range(SHORT_RUNS):
        parts.leases._run_times.record(function, took)


# ------------------------------------------------------------------ leases


def test_a_task_goes_to_the_roomiest_lease(parts):
    a, b = parts.lend(1, 11), parts.lend(2, 12)
    first, second, third = parts.spec(), parts.spec(), parts.spec()
    parts.submit(first)
    parts.submit(second)
    # Nothing is known of f: one task per worker, and the two went to different ones.
    assert task_ids(a) == [first.task_id] and task_ids(b) == [second.task_id]
    parts.submit(third)  # no room: it waits here, and one more lease is asked for
    assert task_ids(a) + task_ids(b) == [first.task_id, second.task_id]
    assert parts.node.messages(P.LEASE_REQUEST) == [(P.LEASE_REQUEST, SHAPE)]
    stats = parts.leases.statistics()
    assert (stats.leases_held, stats.tasks_in_flight, stats.tasks_waiting, stats.shapes_wanted) == (2, 2, 1, 1)
    parts.answer(b, second)  # b has room first: the waiting task goes there
    assert task_ids(b) == [second.task_id, third.task_id] and task_ids(a) == [first.task_id]
    assert parts.leases.statistics().tasks_waiting == 0


def test_the_fewest_in_flight_wins_among_leases_with_room(parts):
    parts.lend(1, 11), parts.lend(2, 12), parts.lend(3, 13)
    busy, less_busy, idle = parts.leases.by_shape[SHAPE]
    make_short(parts, b"f", 0.001)
    for lease, n in ((busy, 3), (less_busy, 1), (idle, 0)):
        for _ in range(n):
            lease.add(parts.spec())
    assert parts.leases.roomiest_locked(SHAPE, parts.spec()) is idle
    idle.add(parts.spec())
    idle.add(parts.spec())
    assert parts.leases.roomiest_locked(SHAPE, parts.spec()) is less_busy


@pytest.mark.parametrize(
    "took, depth",
    [
        (None, 1),  # not known to be short: never lined up behind another
        (0.004, 2),  # short, but 5 ms of work is one more
        (0.0012, 4),  # about 5 ms of work lined up
        (0.0001, LEASE_MAX_DEPTH),  # capped
    ],
)
def test_how_many_tasks_a_lent_worker_gets_at_once(parts, took, depth):
    parts.lend(1, 11)
    (lease,) = parts.leases.by_shape[SHAPE]
    if took is not None:
        make_short(parts, b"f", took)
    for _ in range(depth):
        assert parts.leases.roomiest_locked(SHAPE, parts.spec()) is lease
        lease.add(parts.spec())
    assert parts.leases.roomiest_locked(SHAPE, parts.spec()) is None
    # Only the same function lines up behind it.
    lease.inflight = 1
    assert parts.leases.roomiest_locked(SHAPE, parts.spec(function=b"g")) is None


def test_a_function_that_waited_in_get_is_never_lined_up(parts):
    parts.lend(1, 11)
    (lease,) = parts.leases.by_shape[SHAPE]
    make_short(parts, b"f", 0.0001)
    lease.add(parts.spec())
    assert parts.leases.roomiest_locked(SHAPE, parts.spec()) is lease
    parts.leases.blocking_locked(b"f")
    assert parts.leases.roomiest_locked(SHAPE, parts.spec()) is None


def test_large_arguments_are_not_lined_up_past_a_socket_buffer(parts):
    parts.lend(1, 11)
    (lease,) = parts.leases.by_shape[SHAPE]
    make_short(parts, b"f", 0.0001)
    big = parts.spec(args=b"x" * (LEASE_MAX_INLINE // 2 + 1))
    lease.add(big)
    assert parts.leases.roomiest_locked(SHAPE, parts.spec()) is lease
    assert parts.leases.roomiest_locked(SHAPE, parts.spec(args=big.args.data)) is None
    lease.remove(big)
    assert (lease.inflight, lease.inflight_bytes) == (0, 0)


def test_tasks_lined_up_on_a_worker_go_in_one_frame(parts):
    link = parts.lend(1, 11)
    make_short(parts, b"f", 0.001)
    specs = [parts.spec() for _ in range(4)]
    parts.leases._pumping[SHAPE] = False  # another thread is sending this shape's tasks: these wait for it
    for spec in specs:
        parts.submit(spec)
    assert link.frames == []
    del parts.leases._pumping[SHAPE]
    parts.leases.pump(SHAPE)
    assert [[m[1][0] for m in frame] for _, frame in link.frames] == [[s.task_id for s in specs]]


def test_a_revoked_lease_goes_back_once_its_task_is_answered(parts):
    link = parts.lend(1, 11)
    running, waiting = parts.spec(), parts.spec()
    parts.submit(running)
    parts.submit(waiting)  # no room on the only lease
    parts.conn.flush()
    parts.leases.on_lease_revoke(1)
    # Nothing more goes on it; what waited for it goes through the node instead.
    assert parts.leases.by_shape == {}
    assert [m[1][0] for m in parts.shared.outgoing if m[0] == P.SUBMIT] == [waiting.task_id]
    assert waiting.task_id not in parts.shared.calls and running.task_id in parts.shared.calls
    assert not [m for m in parts.shared.outgoing if m[0] == P.LEASE_RETURN]  # its task still runs
    assert parts.leases.statistics().leases_held == 1
    parts.answer(link, running)
    assert (P.LEASE_RETURN, 11, 1) in parts.shared.outgoing
    stats = parts.leases.statistics()
    assert (stats.leases_held, stats.leases_usable, stats.tasks_in_flight) == (0, 0, 0)
    assert task_ids(link) == [running.task_id]


def test_a_revoked_lease_waits_for_every_task_on_it(parts):
    link = parts.lend(1, 11)
    make_short(parts, b"f", 0.0012)
    first, second = parts.spec(), parts.spec()
    parts.submit(first)
    parts.submit(second)
    assert task_ids(link) == [first.task_id, second.task_id]
    parts.leases.on_lease_revoke(1)
    parts.answer(link, first)
    assert not [m for m in parts.shared.outgoing if m[0] == P.LEASE_RETURN]
    assert parts.leases.statistics().leases_held == 1
    parts.answer(link, second)
    assert [m for m in parts.shared.outgoing if m[0] == P.LEASE_RETURN] == [(P.LEASE_RETURN, 11, 1)]
    assert parts.leases.statistics().leases_held == 0


def test_an_idle_lease_goes_back_when_revoked_and_a_late_revocation_is_ignored(parts):
    parts.lend(1, 11)
    parts.leases.on_lease_revoke(1)
    assert parts.shared.outgoing == [(P.LEASE_RETURN, 11, 1)]
    parts.leases.on_lease_revoke(1)  # crossed its return
    assert parts.shared.outgoing == [(P.LEASE_RETURN, 11, 1)]
    assert parts.leases.statistics().leases_held == 0


def test_a_lease_of_no_use_is_given_back_at_once(parts):
    assert parts.lend(1, 11, session="elsewhere") is None  # a unix socket on another machine
    assert parts.shared.outgoing == [(P.LEASE_RETURN, 11, 1)]
    parts.shared.outgoing.clear()
    parts.leases._wanted.add(SHAPE)  # asked for, for tasks that have gone meanwhile
    parts.lend(2, 12)
    assert parts.shared.outgoing == [(P.LEASE_RETURN, 12, 2)]
    assert parts.leases.statistics().leases_held == 0 and parts.leases.statistics().shapes_wanted == 0


def test_return_idle_leases_keeps_the_busy_ones(parts):
    busy_link = parts.lend(1, 11)
    parts.lend(2, 12)
    spec = parts.spec()
    parts.submit(spec)
    assert task_ids(busy_link) == [spec.task_id]
    parts.leases.return_idle_leases()
    assert parts.node.messages(P.LEASE_RETURN) == [(P.LEASE_RETURN, 12, 2)]  # sent at once
    assert [lease.worker_id for lease in parts.leases.by_shape[SHAPE]] == [11]


def test_a_lost_lent_worker_resends_its_tasks_through_the_node(parts):
    link = parts.lend(1, 11)
    assert link.lent_worker == 11
    make_short(parts, b"f", 0.001)
    specs = [parts.spec() for _ in range(3)]
    for spec in specs:
        parts.submit(spec)
    assert task_ids(link) == [s.task_id for s in specs]
    link.closed = True
    parts.direct.on_link_lost(link)  # type: ignore[arg-type]
    resent = parts.node.messages(P.SUBMIT)
    # Only the first had started: the others are not marked lost (no retry is spent on them).
    assert [(m[1][0], m[2]) for m in resent] == [(specs[0].task_id, True), (specs[1].task_id, False), (specs[2].task_id, False)]
    assert parts.leases.statistics().leases_held == 0 and parts.shared.calls == {}


def test_handed_back_tasks_wait_first_in_line(parts):
    link = parts.lend(1, 11)
    make_short(parts, b"f", 0.0012)  # four at once on a worker
    specs = [parts.spec() for _ in range(4)]
    for spec in specs:
        parts.submit(spec)
    later = parts.spec()
    parts.submit(later)  # no room: it waits here
    assert task_ids(link) == [s.task_id for s in specs]
    # The first waits in get(): the worker hands back the three behind it.
    parts.direct.on_link_messages(link, [(P.REVOKED, [s.task_id for s in specs[1:]])])  # type: ignore[arg-type]
    backlog = parts.leases._backlog[SHAPE]
    assert [c.spec.task_id for c in backlog] == [s.task_id for s in specs[1:]] + [later.task_id]
    # f is known to wait now: nothing more is lined up behind it, one more lease is asked for.
    assert parts.leases.roomiest_locked(SHAPE, parts.spec()) is None
    assert task_ids(link) == [s.task_id for s in specs]
    assert parts.node.messages(P.LEASE_REQUEST) == [(P.LEASE_REQUEST, SHAPE)]
    assert parts.leases.statistics().tasks_in_flight == 1 and parts.leases.statistics().functions_blocking == 1


def test_lease_repr_says_what_it_is():
    lease = Lease(7, 3, "addr", SHAPE)
    assert "worker 3" in repr(lease) and "0 in flight" in repr(lease)
    lease.revoked = True
    assert "revoked" in repr(lease)


# ------------------------------------------------------------------ reference counts


def test_the_first_ref_is_told_to_the_node_once(parts):
    a, b = b"a" * 16, b"b" * 16
    parts.refs.count(a)
    parts.refs.count(a)
    parts.refs.count(b)
    parts.conn.send((P.SUBSCRIBE, []))
    assert parts.node.frames[-1][1] == [(P.ADDREF, [a, b]), (P.SUBSCRIBE, [])]
    parts.refs.count(a)
    parts.conn.send((P.SUBSCRIBE, []))
    assert parts.node.frames[-1][1] == [(P.SUBSCRIBE, [])]
    assert parts.shared.local_refs == {a: 3, b: 1}
    assert parts.refs.statistics().objects_held == 2 and parts.refs.statistics().refs_held == 4


def test_the_last_release_is_told_after_the_delay():
    parts = Parts(release_delay=0.3)
    try:
        parts.conn.start()
        object_id = b"o" * 16
        first, second = parts.refs.adopt_ref(object_id), parts.refs.adopt_ref(object_id)
        parts.conn.flush()
        parts.conn.send((P.SUBSCRIBE, []))
        assert parts.node.messages(P.ADDREF) == [(P.ADDREF, [object_id])]
        del first  # not the last: nothing to tell
        parts.node.sent_event.clear()
        time.sleep(0.5)
        assert parts.node.messages(P.DECREF) == []
        assert parts.shared.local_refs == {object_id: 1}
        released = time.monotonic()
        del second
        assert parts.node.sent_event.wait(5)
        at, frame = parts.node.frames[-1]
        assert frame == [(P.DECREF, [object_id])]
        assert at - released >= 0.25  # the flusher gathered releases for a while first
        assert object_id not in parts.shared.local_refs
    finally:
        parts.close()


def test_a_release_travels_with_the_next_message(parts):
    object_id = b"o" * 16
    parts.refs.count(object_id)
    parts.shared.ready[object_id] = payload_codec.encode(1, SESSION)
    parts.refs.release_ref(object_id)
    parts.conn.send((P.SUBSCRIBE, []))
    assert parts.node.frames[-1][1] == [(P.ADDREF, [object_id]), (P.DECREF, [object_id]), (P.SUBSCRIBE, [])]
    assert object_id not in parts.shared.ready  # forgotten with its last ref


def test_a_ref_dropped_and_taken_again_before_a_send_costs_nothing(parts):
    object_id = b"o" * 16
    parts.refs.count(object_id)
    parts.conn.flush()
    parts.conn.send((P.SUBSCRIBE, []))
    parts.refs.release_ref(object_id)
    parts.refs.count(object_id)
    parts.conn.send((P.SUBSCRIBE, []))
    assert parts.node.frames[-1][1] == [(P.SUBSCRIBE, [])]
    assert parts.shared.local_refs == {object_id: 1}


def test_the_node_hears_no_release_of_a_direct_result_it_never_knew(parts):
    pending, promised, back = b"p" * 16, b"q" * 16, b"r" * 16
    refs = [parts.refs.own(object_id) for object_id in (pending, promised, back)]  # direct results: no ADDREF
    parts.shared.pending_direct.update((pending, promised))
    parts.shared.promised.add(promised)
    parts.shared.local_only.add(back)
    del refs  # ObjectRef.__del__ releases them
    parts.conn.send((P.SUBSCRIBE, []))
    assert parts.node.frames[-1][1] == [(P.DECREF, [promised]), (P.SUBSCRIBE, [])]
    assert parts.shared.local_refs == {} and back not in parts.shared.local_only


def test_no_release_is_queued_after_close(parts):
    object_id = b"o" * 16
    parts.refs.count(object_id)
    parts.shared.closed = True
    parts.refs.release_ref(object_id)
    assert parts.refs.statistics().releases_queued == 0


# ------------------------------------------------------------------ statistics and repr


def test_every_part_says_what_it_holds(parts):
    link = parts.lend(1, 11)
    spec = parts.spec()
    refs = parts.submit(spec)
    assert parts.calls.statistics().in_flight == 1 and parts.calls.statistics().results_pending == 1
    assert parts.direct.statistics().calls_in_flight == 1 and parts.direct.statistics().sent == 1
    assert "in_flight=1" in repr(parts.calls) and "held=1" in repr(parts.leases)
    parts.answer(link, spec)
    assert parts.calls.statistics().in_flight == 0
    assert parts.objects.statistics().ready == 1  # its result, held by the ref submit returned
    assert parts.refs.statistics().objects_held == 1 and refs
    waits = Waits(parts.shared, parts.conn, parts.objects)
    assert waits.statistics().waiters == 0 and "Waits" in repr(waits)
    assert parts.conn.statistics().requests_pending == 0 and not parts.conn.statistics().failed
    for part in (parts.shared, parts.refs, parts.conn, parts.calls, parts.leases, parts.objects, parts.direct):
        assert repr(part).startswith("<" + type(part).__name__)
    with pytest.raises(AttributeError):
        parts.leases.statistics().leases_held = 3  # frozen
