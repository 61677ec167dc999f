"""The node's bookkeeping, unit by unit, in this process: no node, no worker, no segment.

The resource ledger (fixed-point amounts, GPU slots, CPUs lent by a task
blocked in get()), the queue of ready tasks, and the read-only
``statistics()`` and the ``repr()`` of the node's components.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading

import pytest

from actorkit.direct import Hub, HubStatistics, Link
from actorkit.gate import Gate, GateStatistics
from actorkit.members import Members, MembersStatistics, NodeRecord
from actorkit.object_store import ObjectStore, ObjectStoreStatistics
from actorkit.object_transfer import TransferServer, TransferStatistics
from actorkit.scheduler import (
    UNIT,
    LedgerStatistics,
    ReadyQueue,
    ReadyQueueStatistics,
    ResourceLedger,
    demand_of,
    from_units,
    shape_of,
)


def _frozen(statistics: object) -> None:
    """A statistics value cannot be changed: a NamedTuple or a frozen dataclass."""
    field = (statistics._fields if hasattr(statistics, "_fields") else [f.name for f in dataclasses.fields(statistics)])[0]  # type: ignore[arg-type, attr-defined]
    with pytest.raises((AttributeError, dataclasses.FrozenInstanceError)):
        setattr(statistics, field, 0)


# ------------------------------------------------------------------ fixed point


def test_fractional_demands_add_up_exactly():
    ledger = ResourceLedger({"CPU": 1})
    tenth = demand_of({"CPU": 0.1})
    held = [ledger.acquire(tenth) for _ in range(10)]  # 0.1 ten times is 1.0, not 0.9999999
    assert ledger.available["CPU"] == 0
    assert not ledger.fits(demand_of({"CPU": 0.0001}))
    for allocation in held:
        ledger.release(allocation)
    assert ledger.available == ledger.total == {"CPU": UNIT}


def test_demand_of_drops_zero_amounts_and_shape_of_is_computed_once_per_shape():
    assert demand_of({"CPU": 1, "GPU": 0, "memory": 0.5}) == {"CPU": UNIT, "memory": UNIT // 2}
    first = shape_of({"custom": 2, "CPU": 1})
    assert first == ({"custom": 2 * UNIT, "CPU": UNIT}, (("CPU", UNIT), ("custom", 2 * UNIT)))
    assert shape_of({"custom": 2, "CPU": 1}) is first


def test_amounts_read_back_as_ints_when_whole():
    assert from_units(2 * UNIT) == 2 and type(from_units(2 * UNIT)) is int
    assert from_units(UNIT + UNIT // 2) == 1.5
    assert ResourceLedger.snapshot({"CPU": 3 * UNIT, "GPU": UNIT // 4}) == {"CPU": 3, "GPU": 0.25}


# ------------------------------------------------------------------ acquire, release, fits


def test_acquire_takes_and_release_gives_back_every_resource():
    ledger = ResourceLedger({"CPU": 4, "memory": 1000, "disk": 2})
    demand = demand_of({"CPU": 3, "memory": 600, "disk": 1})
    assert ledger.fits(demand)
    allocation = ledger.acquire(demand)
    assert ledger.available == {"CPU": UNIT, "memory": 400 * UNIT, "disk": UNIT}
    assert not ledger.fits(demand)  # one CPU and 400 of memory are left
    assert ledger.fits(demand_of({"CPU": 1, "memory": 400, "disk": 1}))
    ledger.release(allocation)
    assert ledger.available == ledger.total


def test_a_resource_the_node_lacks_never_fits_and_is_named_as_missing():
    ledger = ResourceLedger({"CPU": 2, "GPU": 2})
    assert not ledger.fits(demand_of({"CPU": 1, "tpu": 1}))
    assert ledger.missing(demand_of({"CPU": 1, "tpu": 1})) == {"tpu": 1}
    assert ledger.missing(demand_of({"CPU": 3})) == {"CPU": 3}
    assert ledger.missing(demand_of({"CPU": 2, "GPU": 2})) == {}
    # More than one GPU, but not whole: no GPU slot arrangement can ever hold it.
    assert ledger.missing(demand_of({"GPU": 1.5})) == {"GPU": 1.5}


# ------------------------------------------------------------------ GPUs


def test_whole_gpus_get_whole_free_ids():
    ledger = ResourceLedger({"CPU": 1, "GPU": 4})
    first = ledger.acquire(demand_of({"GPU": 2}))
    second = ledger.acquire(demand_of({"GPU": 1}))
    assert first.gpu_ids == [0, 1] and second.gpu_ids == [2]
    ledger.release(first)
    assert first.gpus == []  # released once: a second release gives nothing back
    third = ledger.acquire(demand_of({"GPU": 3}))
    assert third.gpu_ids == [0, 1, 3]
    assert not ledger.fits(demand_of({"GPU": 1}))


def test_fractional_gpus_share_the_fullest_gpu_and_keep_whole_ones_free():
    ledger = ResourceLedger({"GPU": 2})
    halves = [ledger.acquire(demand_of({"GPU": 0.5})) for _ in range(2)]
    assert [a.gpu_ids for a in halves] == [[0], [0]]  # packed on GPU 0
    whole = ledger.acquire(demand_of({"GPU": 1}))
    assert whole.gpu_ids == [1]
    assert ledger.statistics().gpu_free == (0, 0)


def test_a_fraction_fits_only_where_one_gpu_has_that_much_free():
    ledger = ResourceLedger({"GPU": 2})
    ledger.acquire(demand_of({"GPU": 0.6}))
    ledger.acquire(demand_of({"GPU": 0.6}))
    assert ledger.available["GPU"] == 8000  # 0.8 free in all ...
    assert not ledger.fits(demand_of({"GPU": 0.5}))  # ... but 0.4 on each GPU
    assert ledger.fits(demand_of({"GPU": 0.4}))
    # A whole GPU needs a GPU with nothing on it.
    ledger = ResourceLedger({"GPU": 2})
    ledger.acquire(demand_of({"GPU": 0.1}))
    ledger.acquire(demand_of({"GPU": 1}))
    assert ledger.available["GPU"] == 9000 and not ledger.fits(demand_of({"GPU": 0.95}))


# ------------------------------------------------------------------ CPUs lent while blocked


def test_cpus_lent_by_a_blocked_task_serve_another_and_are_taken_back():
    ledger = ResourceLedger({"CPU": 1, "GPU": 1})
    parent = ledger.acquire(demand_of({"CPU": 1, "GPU": 1}))
    child_demand = demand_of({"CPU": 1})
    assert not ledger.fits(child_demand)
    ledger.lend_cpus(parent)
    ledger.lend_cpus(parent)  # lending twice lends once
    assert parent.cpus_lent and ledger.available == {"CPU": UNIT, "GPU": 0}  # GPUs stay held
    child = ledger.acquire(child_demand)
    ledger.reclaim_cpus(parent)  # taken back though the child holds them: over-committed
    assert not parent.cpus_lent and ledger.available["CPU"] == -UNIT
    ledger.reclaim_cpus(parent)  # nothing more to take back
    assert ledger.available["CPU"] == -UNIT
    ledger.release(child)
    ledger.release(parent)
    assert ledger.available == ledger.total


def test_releasing_a_task_whose_cpus_are_lent_gives_them_back_once():
    ledger = ResourceLedger({"CPU": 2})
    allocation = ledger.acquire(demand_of({"CPU": 2}))
    ledger.lend_cpus(allocation)
    ledger.release(allocation)  # it ended while blocked: its CPUs were back already
    assert ledger.available == {"CPU": 2 * UNIT}


def test_lending_needs_cpus_to_lend():
    ledger = ResourceLedger({"CPU": 1, "GPU": 1})
    gpu_only = ledger.acquire(demand_of({"GPU": 1}))
    ledger.lend_cpus(gpu_only)
    assert not gpu_only.cpus_lent and ledger.available == {"CPU": UNIT, "GPU": 0}


# ------------------------------------------------------------------ ledger statistics


def test_ledger_statistics_are_a_read_only_snapshot():
    ledger = ResourceLedger({"CPU": 2, "GPU": 2, "custom": 1})
    ledger.acquire(demand_of({"CPU": 0.5, "GPU": 0.25}))
    stats = ledger.statistics()
    assert isinstance(stats, LedgerStatistics)
    assert stats == LedgerStatistics({"CPU": 2, "GPU": 2, "custom": 1}, {"CPU": 1.5, "GPU": 1.75, "custom": 1}, (0.75, 1))
    _frozen(stats)
    with pytest.raises(TypeError):
        stats.available["CPU"] = 100  # type: ignore[index]
    ledger.acquire(demand_of({"CPU": 1}))
    assert stats.available["CPU"] == 1.5  # taken before: unchanged
    assert ledger.statistics().available["CPU"] == 0.5
    assert "available={'CPU': 0.5, 'GPU': 1.75, 'custom': 1}" in repr(ledger)
    assert "total={'CPU': 2, 'GPU': 2, 'custom': 1}" in repr(ledger)


# ------------------------------------------------------------------ the ready queue


class _Task:
    """What the queue reads of a task: its demand's shape, nesting depth and submission order."""

    def __init__(self, seq: int, shape: tuple = (("CPU", UNIT),), depth: int = 0) -> None:
        self.seq, self.shape, self.depth = seq, shape, depth

    def __repr__(self) -> str:
        return f"t{self.seq}"


GPU_SHAPE = (("GPU", UNIT),)


def _order(queue: ReadyQueue) -> list[list[int]]:
    return [[t.seq for t in tasks] for tasks in queue.heads()]


def test_tasks_of_one_shape_wait_in_submission_order():
    queue = ReadyQueue()
    for seq in range(3):
        queue.push(_Task(seq))
    assert len(queue) == 3 and _order(queue) == [[0, 1, 2]]
    (tasks,) = queue.heads()
    assert queue.pop_from(tasks).seq == 0
    assert len(queue) == 2 and _order(queue) == [[1, 2]]


def test_shapes_take_turns_by_their_earliest_task_and_nested_tasks_go_first():
    queue = ReadyQueue()
    queue.push(_Task(1, GPU_SHAPE))
    queue.push(_Task(2))
    queue.push(_Task(3, GPU_SHAPE))
    assert _order(queue) == [[1, 3], [2]]  # the GPU shape's head came first
    queue.push(_Task(4, depth=1))  # a child of a task blocked in get()
    queue.push(_Task(5, depth=2))  # and a grandchild
    assert _order(queue) == [[5], [4], [1, 3], [2]]
    assert queue.statistics() == ReadyQueueStatistics(tasks=5, shapes=4, deepest=2)


def test_a_task_pushed_to_the_front_is_next_of_its_shape():
    queue = ReadyQueue()
    queue.push(_Task(5))
    queue.push(_Task(6, GPU_SHAPE))
    queue.push(_Task(2), front=True)  # e.g. a retry, or a task taken back from a lease
    assert _order(queue) == [[2, 5], [6]]
    queue.push(_Task(9, GPU_SHAPE), front=True)  # its later seq puts its shape behind
    assert _order(queue) == [[2, 5], [9, 6]]


def test_remove_takes_a_task_out_wherever_it_waits():
    queue = ReadyQueue()
    tasks = [_Task(0), _Task(1, GPU_SHAPE), _Task(2)]
    for task in tasks:
        queue.push(task)
    assert queue.remove(tasks[1]) is True
    assert len(queue) == 2 and _order(queue) == [[0, 2]]  # an emptied shape is not a head
    assert queue.remove(tasks[1]) is False and len(queue) == 2
    assert queue.remove(_Task(0)) is False  # another task, though of the same seq
    assert queue.remove(tasks[0]) and queue.remove(tasks[2])
    assert len(queue) == 0 and list(queue.heads()) == []
    assert queue.statistics() == ReadyQueueStatistics(0, 0, 0)


def test_ready_queue_repr_and_statistics():
    queue = ReadyQueue()
    queue.push(_Task(0, depth=3))
    queue.push(_Task(1))
    stats = queue.statistics()
    _frozen(stats)
    assert stats == ReadyQueueStatistics(tasks=2, shapes=2, deepest=3)
    assert repr(queue) == "<ReadyQueue tasks=2 shapes=2 deepest=3>"


# ------------------------------------------------------------------ the components' statistics


def test_object_store_statistics(tmp_path):
    freed: list[str] = []
    store = ObjectStore("sess1234", 64 << 20, str(tmp_path), freed.append)
    stats = store.statistics()
    assert isinstance(stats, ObjectStoreStatistics)
    assert stats == ObjectStoreStatistics(0, 64 << 20, 0, 0, 0, 0, 0, 0, 0, 0)
    _frozen(stats)
    store.used = 5 << 20  # as a stored object would count
    assert store.statistics().used == 5 << 20 and stats.used == 0
    assert repr(store) == "<ObjectStore used=5 MiB of 64 MiB pool=0 spilled=0>"


def test_gate_statistics_and_repr(tmp_path):
    path = os.path.join(str(tmp_path), "g.sock")
    gate = Gate([path], os.urandom(32))
    try:
        stats = gate.statistics()
        assert stats == GateStatistics(listening=1, accepted=0, refused=0, dropped=0)
        _frozen(stats)
        assert path in repr(gate) and "accepted=0 refused=0 dropped=0" in repr(gate)
    finally:
        gate.close()
    assert repr(gate).startswith("<Gate closed")


def test_hub_counts_links_added_and_lost():
    hub = Hub()
    ours, theirs = socket.socketpair()
    lost = threading.Event()
    link = Link(ours, lambda link, messages: None, lambda link: lost.set(), actor_id=b"\x01" * 16)
    try:
        assert repr(link) == f"<Link to actor {'01' * 6} fd={ours.fileno()}>"
        hub.add(link)
        assert hub.statistics() == HubStatistics(links=1, suspended=0, added=1, lost=0)
        theirs.close()  # the actor's side goes away: the hub's thread notices
        assert lost.wait(10)
        stats = hub.statistics()
        assert stats == HubStatistics(links=0, suspended=0, added=1, lost=1)
        _frozen(stats)
        assert repr(hub) == "<Hub links=0 suspended=0 added=1 lost=1>"
        assert repr(link) == f"<Link to actor {'01' * 6} closed>"
    finally:
        hub.close()
    assert repr(hub).startswith("<Hub closed")


def _record(node_id: str, session: str, client: object = None, **info: object) -> NodeRecord:
    return NodeRecord({"node_id": node_id, "session": session, "resources": {"CPU": 2}, **info}, client)  # type: ignore[arg-type]


def test_members_statistics_and_node_records():
    head = _record("a" * 28, "s-head", hostname="box")
    members = Members(None, head)  # type: ignore[arg-type]  (its node is only used to send)
    assert members.statistics() == MembersStatistics(nodes=1, alive=1, copies=0, spread=0)
    member = _record("b" * 28, "s-member", client=object(), pid=4321)
    members.by_session[member.session] = member
    member.alive, member.death = False, "it stopped answering"
    head.spread = 3
    members.copies[b"x"] = {"s-member"}
    stats = members.statistics()
    assert stats == MembersStatistics(nodes=2, alive=1, copies=1, spread=3)
    _frozen(stats)
    assert repr(members) == "<Members nodes=2 alive=1 copies=1 spread=3>"
    assert repr(head).startswith("<NodeRecord aaaaaaaa head box alive <ResourceLedger")
    assert "member pid=4321" in repr(member) and "dead (it stopped answering)" in repr(member)


def test_transfer_server_statistics():
    server = TransferServer("sess5678", os.urandom(32), [("127.0.0.1", 0)], {}, lambda object_id: None)
    try:
        assert server.statistics() == TransferStatistics(0, 0, 0, 0, 0, 0)
        server.peers = {"other": ("127.0.0.1", 1)}
        server.stats["served_bytes"] += 100
        stats = server.statistics()
        assert stats == TransferStatistics(copies=0, fetching=0, peers=1, served_bytes=100, fetched_bytes=0, fetches=0)
        _frozen(stats)
        assert repr(server) == "<TransferServer sess5678 copies=0 fetching=0 peers=1 served=100B fetched=0B in 0>"
    finally:
        server.close()
