"""Placing ready tasks: which node, which worker, now or behind a running task.

A ready task waits in the ``ReadyQueue`` (by priority: nested tasks first,
then in order).  Each loop turn that something changed, ``schedule`` walks the
queue's heads: a task goes to an idle worker on a node with room for it; with
room but no idle worker, more workers start and it waits; with no room, it
may be lined up behind a running task of the same short function (so that
its worker starts it the moment the current one ends, as Ray reuses a worker
lease), or it waits.  Waiting tasks make lent workers come back
(``leases.py``); when nothing waits, drivers' wishes for leases are granted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..exceptions import ActorUnschedulableError, TaskUnschedulableError
from ..members import NodeRecord
from ..run_times import SHORT_S, RunTimes
from ..scheduler import ReadyQueue, choose_node, unplaceable
from ..strategy import affinity, in_group
from .records import ClientState, TaskRecord, WorkerState

if TYPE_CHECKING:
    from .server import Node

# Tasks lined up on a busy worker beyond the one it runs. Two keep a worker
# fed across the round trip to the node; more would starve idle workers.
PIPELINE_DEPTH = 2


class SchedulerStatistics(NamedTuple):
    tasks_ready: int
    tasks_lined_up: int
    passes: int


class Scheduler:
    """The ready queue and the placement of what is in it."""

    def __init__(self, nodes: dict[str, NodeRecord], head: NodeRecord, warn: Callable[[ClientState, str], None]) -> None:
        self.ready = ReadyQueue()
        self.needed = False  # something changed that may let a task start: schedule this turn
        self.placeable: set[tuple[Any, Any]] = set()  # (shape, strategy) some live node can run
        self.run_times = RunTimes()  # of tasks run through the node, for lining up
        self._nodes = nodes
        self._head = head
        self._warn = warn
        self._lined_up = 0
        self._passes = 0

    def bind(self, node: Node) -> None:
        self.tasks = node.tasks
        self.pool = node.pool
        self.leases = node.leases
        self.actors = node.actors
        self.placement_groups = node.placement_groups
        self._total_resources = lambda: node.resources()["total"]

    def __repr__(self) -> str:
        return f"<Scheduler ready={len(self.ready)} lined_up={self._lined_up} passes={self._passes}>"

    def statistics(self) -> SchedulerStatistics:
        return SchedulerStatistics(len(self.ready), self._lined_up, self._passes)

    def nodes_changed(self) -> None:
        self.placeable.clear()
        self.needed = True

    def enqueue(self, task: TaskRecord) -> None:
        """Queue a task whose arguments are set, once some node could ever run it."""
        strategy = task.spec.strategy
        gone = self._named_node_gone(task)
        if gone:
            self.unschedulable(task, gone)
            return
        key = (task.shape, strategy)
        missing = None if key in self.placeable else unplaceable(task.demand, strategy, self._nodes.values())
        if missing == {}:
            self.placeable.add(key)  # until the nodes change: it was worked out per task before
        elif missing:
            self._warn(
                task.owner,
                f"Warning: task {task.spec.name} needs {missing}, more than any node has "
                f"({self._total_resources()}); it waits until a node that has them joins.",
            )
        self.ready.push(task)
        self.needed = True

    def never_placeable(self, task: TaskRecord) -> bool:
        """Whether no live node could ever run ``task`` (it names a dead node, or needs more
        than any live node has)."""
        if self._named_node_gone(task):
            return True
        if in_group(task.spec.strategy) is not None:
            return False  # its group's bundles decide
        return bool(unplaceable(task.demand, task.spec.strategy, self._nodes.values()))

    def _named_node_gone(self, task: TaskRecord) -> str:
        """Why ``task`` can never run if it must run on a node that is dead or unknown, else ""."""
        named = affinity(task.spec.strategy)
        if named is None or named[1]:
            return ""
        target = self._nodes.get(named[0])
        if target is not None and target.alive:
            return ""
        state = "dead" if target else "unknown"
        return f"its NodeAffinitySchedulingStrategy names node {named[0]}, which is {state}"

    def unschedulable(self, task: TaskRecord, why: str) -> None:
        spec = task.spec
        error_payload = self.tasks.objects.error_payload
        if spec.method == "__init__":
            actor = self.actors.by_id[spec.actor_id]  # type: ignore[index]
            self.tasks.finish(task, [])
            placing = ActorUnschedulableError(f"The actor {actor.spec.class_name} cannot be placed: {why}.")
            self.actors.bury(actor, error_payload(placing))
            return
        error = TaskUnschedulableError(f"task {spec.name} cannot run: {why}")
        self.tasks.finish(task, [error_payload(error)] * spec.num_returns)

    def schedule(self) -> None:
        self.needed = False
        self._passes += 1
        self.placement_groups.place_pending()  # reservations first: a group waits for all of its bundles
        pool = self.pool
        idle: dict[NodeRecord, list[WorkerState]] = {}
        for each in pool.workers.values():
            if each.idle:
                idle.setdefault(each.node, []).append(each)
        grown: set[NodeRecord] = set()
        starved = False
        nodes = self._nodes.values()
        head = self._head if len(self._nodes) == 1 else None  # alone: no choice to make
        for tasks in self.ready.heads():
            while tasks:
                task = tasks[0]
                if in_group(task.spec.strategy) is not None:
                    if not self._start_in_group(task, tasks, idle, grown):
                        break
                    continue
                if head is not None:
                    node = head if head.ledger.fits(task.demand) else None
                else:
                    submitter = task.owner.worker
                    local = submitter.node if submitter is not None else self._head
                    node = choose_node(task.demand, task.spec.strategy, nodes, local, idle.__contains__)
                worker: WorkerState | None = _idle_for(task, idle[node]) if node is not None and idle.get(node) else None
                if worker is not None:
                    self.ready.pop_from(tasks)
                    pool.start(task, worker)
                    if not idle[node]:  # type: ignore[index]
                        del idle[node]  # type: ignore[arg-type]
                    continue
                if node is not None:
                    # Resources are free but no worker is: start more. Meanwhile
                    # the task waits, so that free CPUs mean parallel tasks.
                    if node not in grown:
                        pool.grow(node)
                        grown.add(node)
                    break
                # Resources are all taken: line the task up behind a running one of
                # the same shape, so that its worker starts it the moment the
                # current one ends.
                worker = self._pipeline_target(task)
                if worker is None:
                    starved = True
                    break
                self.ready.pop_from(tasks)
                self._lined_up += 1
                pool.line_up(task, worker)
        if starved and self.leases.lent:
            self.leases.revoke_all()
        elif self.leases.wishes and not self.ready:
            self.leases.grant_wishes(idle.get(self._head, []))

    def _start_in_group(
        self, task: TaskRecord, tasks: Any, idle: dict[NodeRecord, list[WorkerState]], grown: set[NodeRecord]
    ) -> bool:
        """Start a task of a placement group on its bundle's node; False if it must wait."""
        where = self.placement_groups.ledger_for(task)
        if isinstance(where, str):
            self.ready.pop_from(tasks)
            self.unschedulable(task, where)
            return True
        if where is None:
            return False  # the group is not placed yet, or its bundles are busy
        node, ledger = where
        worker = _idle_for(task, idle[node]) if idle.get(node) else None
        if worker is None:
            if node not in grown:
                self.pool.grow(node, wanted=1)  # the bundle's resources are not the node's free ones
                grown.add(node)
            return False
        self.ready.pop_from(tasks)
        self.pool.start(task, worker, ledger)
        if not idle[node]:
            del idle[node]
        return True

    def _pipeline_target(self, task: TaskRecord) -> WorkerState | None:
        if task.spec.actor_id is not None or task.spec.max_calls:
            return None  # an actor's creation takes its worker for good: never lined up
        if task.spec.strategy is not None:
            return None  # placed by its strategy, not by whichever worker frees first
        now = time.monotonic()
        short_average = self.run_times.short_average
        for worker in self.pool.workers.values():
            running = worker.task
            if (
                running is not None
                and short_average(running.spec.function_id) is not None
                and now - running.started_at < SHORT_S  # short this time too
                and len(worker.queued) < PIPELINE_DEPTH
                and not worker.blocked
                and not worker.retiring
                and running.spec.max_calls == 0
                and worker.actor is None
                and worker.client is not None
                and running.shape == task.shape
                # The same function: a task never waits behind an unrelated one that
                # happens to block this time (its runs on a lent worker go unseen here).
                and running.spec.function_id == task.spec.function_id
                and running.allocation is not None
            ):
                return worker
        return None


def _idle_for(task: TaskRecord, idle: list[WorkerState]) -> WorkerState | None:
    """An idle worker that may run ``task`` (taken from ``idle``), or None."""
    if not task.spec.resources.get("GPU"):
        return idle.pop()
    for i in range(len(idle) - 1, -1, -1):
        if not idle[i].ran_cpu_work:
            return idle.pop(i)
    return None  # a fresh one starts (see WorkerPool.grow)
