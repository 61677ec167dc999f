"""The node's components, driven message by message in this process: no node process, no workers.

A ``Node`` is built around fake connections and fake worker processes; each
test feeds it the messages its clients would send and checks what it sends
back and what its tables hold.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
from collections import deque
from typing import Any

import pytest

from actorkit import protocol as P
from actorkit.exceptions import TaskCancelledError, WorkerCrashedError
from actorkit.node import ClientState, Node, TaskRecord
from actorkit.node.actors import ready_calls
from actorkit.node_process import NodeConfig
from actorkit.payload import Payload, from_wire, to_wire
from actorkit.task_spec import TaskSpec, return_id, spec_to_wire

INLINE = Payload(b"x", None, 0, (), None, ())


class FakeConn:
    """A client's connection as the node uses it: what it queues is kept in ``sent``."""

    def __init__(self, family: int = socket.AF_UNIX) -> None:
        self.sock, self._peer = socket.socketpair(family if family == socket.AF_UNIX else socket.AF_UNIX)
        self.family = family
        self.sent: list[tuple[Any, ...]] = []

    def queue(self, message: tuple[Any, ...]) -> None:
        self.sent.append(message)

    def close(self) -> None:
        self.sock.close()
        self._peer.close()

    def kinds(self) -> list[int]:
        return [m[0] for m in self.sent]

    def take(self, kind: int) -> list[tuple[Any, ...]]:
        found = [m for m in self.sent if m[0] == kind]
        self.sent = [m for m in self.sent if m[0] != kind]
        return found


class FakeProcess:
    sentinel = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exitcode: int | None = None
        self.killed = False

    def is_alive(self) -> bool:
        return self.exitcode is None

    def kill(self) -> None:
        self.killed = True
        self.exitcode = -9

    def join(self, _timeout: float | None = None) -> None:
        pass


class FakeGate:
    addresses = ["unused"]
    stats: dict[str, int] = {}

    def start(self, _on_accept: Any) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def node():
    with tempfile.TemporaryDirectory() as session_dir:
        config = NodeConfig(
            node_id="n" * 32, session="unittest", session_dir=session_dir, authkey=b"k",
            resources={"CPU": 2}, object_store_memory=1 << 20, owner_pid=0,
        )
        node = Node(config, FakeGate(), [])
        clients: list[ClientState] = []
        node.connect = lambda *args: _connect(node, clients, *args)  # type: ignore[attr-defined]
        yield node
        for client in clients:
            client.conn.close()
        node.loop.close()


def _connect(node: Node, clients: list[ClientState], role: str, pid: int, worker_id: int = 0,
             prefix: bytes = b"") -> ClientState:
    client = ClientState(FakeConn())  # type: ignore[arg-type]
    clients.append(client)
    node.loop.serve(client)
    node.loop.handlers[P.HELLO](client, (P.HELLO, role, pid, worker_id, b"job1", "ns", prefix))
    return client


def _worker(node: Node, worker_id: int) -> ClientState:
    node.pool.adopt(worker_id, FakeProcess(1000 + worker_id))
    return node.connect("worker", 1000 + worker_id, worker_id)  # type: ignore[attr-defined]


def _spec(task_id: bytes, deps: tuple[bytes, ...] = (), max_retries: int = 0, **more: Any) -> TaskSpec:
    fields: dict[str, Any] = dict(
        task_id=task_id, job_id=b"job1", name="f", function_id=b"fn", function_bytes=b"code",
        args=INLINE, deps=deps, num_returns=1, resources={"CPU": 1}, max_retries=max_retries,
        retry_exceptions=False, runtime_env=None,
    )
    fields.update(more)
    return TaskSpec(**fields)


def _submit(node: Node, client: ClientState, spec: TaskSpec) -> None:
    node.loop.handlers[P.SUBMIT](client, P.submit(P.SUBMIT, spec_to_wire(spec)))


def _turn(node: Node) -> None:
    if node.scheduler.needed:
        node.scheduler.schedule()


def _value(message: tuple[Any, ...]) -> Any:
    payload = from_wire(message[2])
    assert payload.data is not None
    return pickle.loads(payload.data)


def test_a_task_waits_for_its_argument_then_runs_and_its_result_reaches_the_driver(node):
    driver = node.connect("driver", 1, 0, b"D" * 8)
    worker = _worker(node, 1)
    dep = b"D" * 8 + b"\0\0\0\1"
    node.loop.handlers[P.PROMISE](driver, (P.PROMISE, [dep]))
    _submit(node, driver, _spec(b"T" * 12, deps=(dep,)))
    _turn(node)
    assert worker.conn.sent == [] and node.tasks.pending[b"T" * 12].unresolved == 1

    node.loop.handlers[P.PUT](driver, (P.PUT, dep, to_wire(INLINE)))
    _turn(node)
    (execute,) = worker.conn.take(P.EXECUTE)
    assert execute[1][0] == b"T" * 12 and execute[2] == b"code" and set(execute[3]) == {dep}

    result = Payload(b"r", None, 0, (), None, ())
    node.loop.handlers[P.DONE](worker, P.done(b"T" * 12, [to_wire(result)], False))
    ready = driver.conn.take(P.READY)
    assert [(m[1], from_wire(m[2]).data) for m in ready] == [(return_id(b"T" * 12, 0), b"r")]
    assert node.tasks.pending == {} and node.tasks.statistics().tasks_finished == 1
    # Nothing else waits: the worker stays lent to the driver, with the task's CPU.
    (lease,) = driver.conn.take(P.LEASE)
    assert lease[2] == 1 and node.leases.statistics().lent == 1
    assert node.head.ledger.available["CPU"] == 10_000


def test_a_function_is_sent_once_per_worker(node):
    driver = node.connect("driver", 1, 0, b"D" * 8)
    worker = _worker(node, 1)
    for n in range(2):
        task_id = b"T" * 11 + bytes([n])
        _submit(node, driver, _spec(task_id, max_retries=1))
        _turn(node)
        (execute,) = worker.conn.take(P.EXECUTE)
        assert execute[2] == (b"code" if n == 0 else None)
        node.loop.handlers[P.LEASE_RETURN](driver, (P.LEASE_RETURN, 1, n + 1))  # no lease: ignored
        node.loop.handlers[P.DONE](worker, P.done(task_id, [to_wire(INLINE)], False))
        for lease in driver.conn.take(P.LEASE):
            node.loop.handlers[P.LEASE_RETURN](driver, (P.LEASE_RETURN, lease[2], lease[1]))
    assert node.leases.statistics().lent == 0 and node.pool.workers[1].idle


def test_a_retryable_failure_goes_back_to_the_front_of_the_queue(node):
    driver = node.connect("driver", 1, 0, b"D" * 8)
    worker = _worker(node, 1)
    _submit(node, driver, _spec(b"T" * 12, max_retries=1, retry_exceptions=True))
    _turn(node)
    worker.conn.take(P.EXECUTE)
    node.loop.handlers[P.DONE](worker, P.done(b"T" * 12, [to_wire(INLINE)], True))
    assert driver.conn.take(P.READY) == []
    assert node.tasks.statistics().tasks_retried == 1 and len(node.scheduler.ready) == 1
    _turn(node)
    assert len(worker.conn.take(P.EXECUTE)) == 1
    assert node.tasks.pending[b"T" * 12].retries_left == 0


def test_a_crashed_worker_fails_its_task_when_no_retry_is_left(node):
    driver = node.connect("driver", 1, 0, b"D" * 8)
    _worker(node, 1)
    _submit(node, driver, _spec(b"T" * 12))
    _turn(node)
    process = node.pool.workers[1].process
    process.exitcode = -11
    node.pool.worker_exited(node.pool.workers[1])
    (ready,) = driver.conn.take(P.READY)
    error = _value(ready)
    assert isinstance(error, WorkerCrashedError) and "SIGSEGV" in str(error) and "pid 1001" in str(error)
    assert node.pool.workers == {} and node.head.ledger.available["CPU"] == 20_000


def test_cancelling_a_queued_task_answers_it_as_cancelled(node):
    driver = node.connect("driver", 1, 0, b"D" * 8)
    _submit(node, driver, _spec(b"T" * 12))  # no worker: it stays queued
    _turn(node)
    node.tasks.request_cancel(driver, b"T" * 12, False, False)
    (ready,) = driver.conn.take(P.READY)
    assert isinstance(_value(ready), TaskCancelledError)
    assert len(node.scheduler.ready) == 0 and node.tasks.pending == {}


def test_objects_count_each_holder_once_and_free_what_they_contain(node):
    objects = node.objects
    a, b = node.connect("driver", 1, 0, b"A" * 8), node.connect("driver", 2, 0, b"B" * 8)
    inner, outer = b"i" * 12, b"o" * 12
    objects.held_by(a, inner)
    objects.set(inner, INLINE)
    objects.held_by(a, outer)
    objects.held_by(a, outer)
    objects.set(outer, Payload(b"o", None, 0, (), None, (inner,)))
    objects.hold(b, outer)
    assert objects[outer].refcount == 2 and objects[inner].refcount == 2
    objects.on_decref(a, (P.DECREF, [inner, outer]))
    assert outer in objects and objects[inner].refcount == 1  # still inside outer
    objects.on_decref(b, (P.DECREF, [outer]))
    assert inner not in objects and outer not in objects
    assert objects.statistics().objects_freed == 2


def test_a_subscriber_gets_the_value_once_it_is_set(node):
    driver = node.connect("driver", 1, 0, b"D" * 8)
    other = node.connect("driver", 2, 0, b"E" * 8)
    object_id = b"D" * 8 + b"\0\0\0\7"
    node.loop.handlers[P.PROMISE](driver, (P.PROMISE, [object_id]))
    node.loop.handlers[P.SUBSCRIBE](other, (P.SUBSCRIBE, [object_id, b"gone" * 3]))
    (lost,) = other.conn.take(P.READY)
    assert lost[1] == b"gone" * 3 and "gone" in str(_value(lost))
    node.loop.handlers[P.PUT](driver, (P.PUT, object_id, to_wire(INLINE)))
    assert [m[1] for m in other.conn.take(P.READY)] == [object_id]


def test_leases_are_revoked_when_tasks_wait_and_granted_when_none_do(node):
    driver = node.connect("driver", 1, 0, b"D" * 8)
    _worker(node, 1)
    _worker(node, 2)
    shape = (("CPU", 10_000),)
    node.loop.handlers[P.LEASE_REQUEST](driver, (P.LEASE_REQUEST, shape))
    node.loop.handlers[P.LEASE_REQUEST](driver, (P.LEASE_REQUEST, shape))
    assert node.leases.statistics().wishes == 1  # one wish per shape
    _turn(node)
    (lease,) = driver.conn.take(P.LEASE)
    assert node.head.ledger.available["CPU"] == 10_000
    # Another driver's tasks now find no room once the second CPU is taken too.
    other = node.connect("driver", 2, 0, b"E" * 8)
    _submit(node, other, _spec(b"T" * 12))
    _submit(node, other, _spec(b"U" * 12))
    _turn(node)
    assert [m[1] for m in driver.conn.take(P.LEASE_REVOKE)] == [lease[1]]
    node.loop.handlers[P.LEASE_RETURN](driver, (P.LEASE_RETURN, lease[2], lease[1]))
    _turn(node)
    assert node.leases.statistics().lent == 0 and len(node.tasks.running) == 2


def test_a_driver_that_disconnects_lets_go_of_everything(node):
    driver = node.connect("driver", 1, 0, b"D" * 8)
    object_id = b"D" * 8 + b"\0\0\0\1"
    node.loop.handlers[P.PUT](driver, (P.PUT, object_id, to_wire(INLINE)))
    node.loop.handlers[P.LEASE_REQUEST](driver, (P.LEASE_REQUEST, (("CPU", 10_000),)))
    node.disconnect(driver)
    assert object_id not in node.objects and node.leases.wishes == [] and node.drivers == {}
    assert node.loop.statistics().clients == 0


def test_ready_calls_keep_each_callers_order():
    a, b = object(), object()

    def call(owner: object, unresolved: int) -> TaskRecord:
        task = TaskRecord.__new__(TaskRecord)
        task.owner, task.unresolved = owner, unresolved  # type: ignore[assignment]
        return task

    waiting_a, later_a, ready_b, later_b = call(a, 1), call(a, 0), call(b, 0), call(b, 0)
    queue = deque([waiting_a, later_a, ready_b, later_b])
    assert list(ready_calls(queue)) == [ready_b, later_b]
    assert list(queue) == [waiting_a, later_a]


def test_statistics_are_named_and_reprs_say_what_they_hold(node):
    stats = node.statistics()
    for name in ("tasks_finished", "tasks_retried", "workers_started", "leases", "objects", "turns"):
        assert name in stats
    for component in (node.loop, node.objects, node.tasks, node.scheduler, node.pool, node.leases, node.actors):
        text = repr(component)
        assert text.startswith("<" + type(component).__name__) and "=" in text
        with pytest.raises(AttributeError):
            component.statistics().__setattr__("x", 1)
    assert os.getpid() == node.info()["pid"]
