"""The task table: every task the node has admitted and not yet finished.

A task is admitted (``add``), pins what it uses, waits for its arguments
(the object directory wakes it), goes to the scheduler, runs on a worker
and ends (``on_done``): retried, or finished with its results set as
objects.  Actor calls go through the same table but are queued at their
actor (``actors.py``), and an actor's creation is a task like any other
until its ``__init__`` returns.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import node_state, shm
from ..exceptions import ObjectLostError, WorkerCrashedError
from ..payload import Payload, from_wire
from ..strategy import in_group
from ..task_spec import TaskSpec, cancelled_error, spec_from_wire
from .records import ClientState, TaskRecord, WorkerState

if TYPE_CHECKING:
    from .server import Node


class TaskStatistics(NamedTuple):
    tasks_pending: int
    tasks_running: int
    tasks_finished: int
    tasks_retried: int
    tasks_rebuilt: int  # run again for a result lost with its node
    lineage: int  # finished tasks kept to rebuild such results
    functions: int


class Lineage:
    """How to make a finished task's results again: kept while one of them lives only in a
    member node's memory, which dies with that node."""

    __slots__ = ("spec", "owner", "retries_left", "alive")

    def __init__(self, spec: TaskSpec, owner: ClientState, retries_left: int, alive: int) -> None:
        self.spec = spec
        self.owner = owner
        self.retries_left = retries_left
        self.alive = alive  # of its results, not freed yet


class TaskTable:
    """Task id -> ``TaskRecord`` for every unfinished task; the function table; the history."""

    def __init__(self) -> None:
        self.pending: dict[bytes, TaskRecord] = {}  # every task not finished yet, by id
        self.running: dict[bytes, TaskRecord] = {}  # sent to a worker (lined up there too), not answered
        self.children: dict[bytes, list[bytes]] = {}  # task id -> tasks it submitted
        self.functions: dict[bytes, bytes] = {}  # function id -> its pickled function, sent once per worker
        self.history = node_state.TaskHistory()  # the last tasks that finished, for the state API
        self.lineage: dict[bytes, Lineage] = {}  # task id -> how to rebuild its results (see rebuild)
        self.rebuilt = 0
        self._seq = itertools.count()
        self.finished_count = 0
        self.retried = 0

    def bind(self, node: Node) -> None:
        self.objects = node.objects
        self.scheduler = node.scheduler
        self.pool = node.pool
        self.leases = node.leases
        self.actors = node.actors
        self.streams = node.streams
        self._head_session = node.config.session

    def __repr__(self) -> str:
        return f"<TaskTable pending={len(self.pending)} running={len(self.running)} finished={self.finished_count}>"

    def statistics(self) -> TaskStatistics:
        return TaskStatistics(
            len(self.pending), len(self.running), self.finished_count, self.retried, self.rebuilt,
            len(self.lineage), len(self.functions),
        )

    def new_record(self, spec: TaskSpec, owner: ClientState) -> TaskRecord:
        task = TaskRecord(spec, owner, next(self._seq))
        if in_group(spec.strategy) is not None:
            task.shape = task.shape + (spec.strategy[:3],)  # queued apart: it waits for its group, not for others
        return task

    # ------------------------------------------------------------ admission

    def on_submit(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, spec_wire, lost, parent = message
        self.add(client, spec_from_wire(spec_wire), lost, parent)

    def add(self, client: ClientState, spec: TaskSpec, lost: Any = False, parent: bytes | None = None) -> TaskRecord | None:
        """Admit a task, actor creation or actor call: pin what it uses, wait for its arguments."""
        if spec.function_bytes is not None:
            self.functions.setdefault(spec.function_id, spec.function_bytes)
            spec = spec._replace(function_bytes=None)
        task = self.new_record(spec, client)
        self.pending[spec.task_id] = task
        submitter = client.worker
        if submitter is not None and submitter.task is not None and submitter.actor is None:
            task.parent = submitter.task.spec.task_id
            task.depth = submitter.task.depth + 1
        elif parent is not None:
            # Submitted by a task a driver sent straight to a lent worker (only drivers get leases).
            task.parent, task.depth = parent, 1
        if task.parent is not None:
            self.children.setdefault(task.parent, []).append(spec.task_id)
        objects = self.objects
        for object_id in task.return_ids:
            # The submitter gets the results unasked (it is their owner, as in Ray): a
            # get() right after remote() then needs no message of its own. The entry is
            # already there if the client promised it (a direct call resent after its
            # link broke).
            objects.held_by(client, object_id, send_it=True)
        if not objects.pin_arguments(task):
            gone = next(object_id for object_id in spec.deps if object_id not in objects)
            error = ObjectLostError(f"argument {gone.hex()} of {spec.name} was freed or lost")
            self.finish(task, [objects.error_payload(error)] * spec.num_returns, pinned_deps=False)
            return None
        if spec.actor_id is not None and spec.method != "__init__":
            self.actors.enqueue_call(task, lost)
            return task
        if lost:
            # Its lent worker died before answering: a retry, if any is left.
            if task.retries_left <= 0:
                crash = WorkerCrashedError(crash_message(spec, "a worker process lent to its caller", "died"))
                self.finish(task, [objects.error_payload(crash)] * spec.num_returns)
                return task
            task.retries_left -= 1
            self.retried += 1
        if task.unresolved == 0:
            self.make_ready(task)
        return task

    def make_ready(self, task: TaskRecord) -> None:
        """All of ``task``'s arguments are set: to its actor, or to the scheduler."""
        if task.done:
            return  # cancelled while it waited for its arguments
        if task.spec.actor_id is not None and task.spec.method != "__init__":
            self.actors.pump(self.actors.by_id.get(task.spec.actor_id))
            return
        failed = self.objects.failed_argument(task.spec)
        if failed is not None:
            # Errors flow through: the task fails with its argument's error.
            self.finish(task, [failed] * task.spec.num_returns)
            return
        self.scheduler.enqueue(task)

    # ------------------------------------------------------------ outcomes

    def on_done(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, task_id, wires, retryable, _blocked, _exiting = message
        payloads = [from_wire(p) for p in wires]
        worker = client.worker
        if worker is not None and worker.actor is not None:
            self.actors.call_done(worker.actor, task_id, payloads)
            return
        task = self.running.pop(task_id, None)
        ran_here = worker is not None and task is not None and worker.task is task
        if ran_here:
            self.pool.task_ended(worker, task)  # type: ignore[arg-type]
        if task is None:
            self.release_all(payloads)
            return
        retry = retryable and task.retries_left and not task.cancelled
        if retry or not ran_here or not self.leases.lend(worker, task):  # type: ignore[arg-type]
            self.release_allocation(task)
        if retry:
            self.retry(task)
            self.release_all(payloads)
        else:
            self.finished_count += 1
            self.finish(task, payloads)
        self.scheduler.needed = True

    def retry(self, task: TaskRecord) -> None:
        task.retries_left -= 1
        self.retried += 1
        self.scheduler.ready.push(task, front=True)

    def worker_died(self, worker: WorkerState, how: str) -> None:
        """``worker``, not an actor's, died: what it had lined up goes back in line, what it ran is retried or fails."""
        for queued in reversed(worker.queued):
            # Lined up but never started: back in line, no retry used.
            queued.worker = None
            self.running.pop(queued.spec.task_id, None)
            self.scheduler.ready.push(queued, front=True)
        worker.queued.clear()
        task = worker.task
        if task is None:
            return
        self.running.pop(task.spec.task_id, None)
        self.release_allocation(task)
        if task.retries_left and not task.cancelled:
            self.retry(task)
        else:
            who = f"the worker process (pid {worker.process.pid})"
            error = WorkerCrashedError(crash_message(task.spec, who, f"died: {how}"))
            self.finish(task, [self.objects.error_payload(error)] * task.spec.num_returns)

    def release_allocation(self, task: TaskRecord) -> None:
        if task.allocation is not None:
            task.allocation.ledger.release(task.allocation)
            task.allocation = None
        task.worker = None

    def release_all(self, payloads: list[Payload]) -> None:
        """Results nobody will read (a late or repeated answer): free their memory."""
        for payload in payloads:
            self.objects.store.release_unowned(payload)

    def finish(self, task: TaskRecord, payloads: list[Payload], pinned_deps: bool = True) -> None:
        """``task`` is over: set its results (an error, if cancelled) and let go of what it pinned."""
        if task.done:
            self.release_all(payloads)
            return
        task.done = True
        spec = task.spec
        self.pending.pop(spec.task_id, None)
        self.history.finished(task, payloads)
        if task.parent is not None:
            siblings = self.children.get(task.parent)
            if siblings is not None and spec.task_id in siblings:
                siblings.remove(spec.task_id)
                if not siblings:
                    del self.children[task.parent]
        objects = self.objects
        if task.cancelled and (not payloads or payloads[0].is_error):
            payloads = [objects.error_payload(cancelled_error(spec))] * spec.num_returns
        if spec.generator == "streaming":
            self.streams.task_ended(spec.task_id, payloads)
        for object_id, payload in zip(task.return_ids, payloads):
            objects.set(object_id, payload)
        if payloads and not payloads[0].is_error and not task.cancelled:
            self._remember(task, payloads)
        if pinned_deps:
            for object_id in spec.deps:
                objects.decref(object_id)
        for object_id in spec.args.contained:
            objects.decref(object_id)
        objects.store.release_unowned(spec.args)  # large arguments had a segment of their own

    # ------------------------------------------------------------ lineage
    #
    # An object in a member node's shared memory is lost with that node.  As in
    # Ray, the task that made it is run again (its retries allowing) instead of
    # its readers getting ObjectLostError: the node keeps the spec of each
    # finished task with such a result, until its results are freed.

    def _remember(self, task: TaskRecord, payloads: list[Payload]) -> None:
        spec = task.spec
        if (
            spec.actor_id is not None  # an actor's state made it: running the method again is not the same
            or spec.generator is not None
            or spec.args.segment is not None  # large arguments: their segment is freed at finish
            or task.retries_left <= 0
        ):
            return
        head = self._head_session
        if any(p.segment is not None and shm.session_of(p.segment) != head for p in payloads):
            self.lineage[spec.task_id] = Lineage(spec, task.owner, task.retries_left, len(payloads))

    def forget_lineage(self, object_id: bytes) -> None:
        """``object_id`` was freed: once all of its task's results are, the task is forgotten."""
        lineage = self.lineage.get(object_id[:-4])
        if lineage is not None:
            lineage.alive -= 1
            if lineage.alive <= 0:
                del self.lineage[lineage.spec.task_id]

    def rebuild(self, object_id: bytes) -> bool:
        """Run again the task that made ``object_id`` (lost with its node); False if it cannot be."""
        task_id = object_id[:-4]
        if task_id in self.pending:
            return True  # already running again (another of its results was lost too)
        lineage = self.lineage.pop(task_id, None)
        if lineage is None:
            return False
        task = self.new_record(lineage.spec, lineage.owner)
        if self.scheduler.never_placeable(task):
            return False
        task.retries_left = lineage.retries_left - 1
        self.pending[task_id] = task
        self.retried += 1
        self.rebuilt += 1
        if not self.objects.pin_arguments(task):
            gone = next(o for o in task.spec.deps if o not in self.objects)
            error = ObjectLostError(
                f"object {object_id.hex()} was lost with its node and cannot be rebuilt: "
                f"argument {gone.hex()} of {task.spec.name}, the task that made it, was freed"
            )
            self.finish(task, [self.objects.error_payload(error)] * task.spec.num_returns, pinned_deps=False)
            return True
        if task.unresolved == 0:
            self.make_ready(task)
        return True

    # ------------------------------------------------------------ cancellation

    def request_cancel_children(self, client: ClientState, task_id: bytes, force: bool) -> None:
        """Cancel, recursively, the tasks ``task_id`` submitted (a caller asks for this
        itself for a task it sent straight to a lent worker: the node never saw it)."""
        for child in list(self.children.get(task_id, ())):
            self.request_cancel(client, child, force, True)

    def request_cancel(self, client: ClientState, task_id: bytes, force: bool, recursive: bool) -> None:
        task = self.pending.get(task_id)
        if task is None:
            return  # finished already: nothing to do, as in Ray
        if force and task.spec.actor_id is not None:
            raise ValueError("force=True is not supported for actor tasks; use kill() to stop an actor")
        if recursive:
            self.request_cancel_children(client, task_id, force)
        self.cancel(task, force)

    def cancel(self, task: TaskRecord, force: bool) -> None:
        task.cancelled = True
        spec = task.spec
        if spec.actor_id is not None:
            actor = self.actors.by_id.get(spec.actor_id)
            if actor is not None:
                self.actors.cancel_call(actor, task)
                return
        worker = task.worker
        if worker is None:
            # Queued (ready, or waiting for its arguments): it will never run.
            self.scheduler.ready.remove(task)
            self.finish(task, [])
        elif task in worker.queued:
            # Lined up on a worker but not started: it will skip it.
            worker.queued.remove(task)
            self.running.pop(spec.task_id, None)
            self.pool.cancel_on(worker, spec.task_id)
            self.finish(task, [])
        elif force:
            worker.process.kill()  # its exit reports the task as cancelled, not retried
        else:
            self.pool.cancel_on(worker, spec.task_id)


def crash_message(spec: TaskSpec, who: str, how: str) -> str:
    return (
        f"{who} running task {spec.name} {how}. The task was tried {spec.max_retries + 1} time(s); "
        f"raise max_retries to retry more, and check the task for crashes (segfaults, out of memory, os._exit)."
    )
