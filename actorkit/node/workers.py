"""The worker pool: starting, feeding, retiring and burying worker processes.

Workers are spawned processes that connect back to the node (HELLO).  One
per CPU is kept warm; more start when ready tasks have resources but no idle
worker, and those beyond the warm pool exit after ``IDLE_WORKER_TIMEOUT_S``
idle.  A worker's death is seen on its process sentinel: whatever it ran is
retried or failed (``tasks.py``), or its actor restarts (``actors.py``).
"""

from __future__ import annotations

import itertools
import selectors
import signal
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import protocol as P
from ..members import NodeRecord, RemoteProcess
from ..node_config import NodeConfig
from ..scheduler import ResourceLedger
from ..task_spec import spec_to_wire
from ..worker_process import release_pipes, spawn_worker
from .records import ClientState, TaskRecord, WorkerState

if TYPE_CHECKING:
    from .server import Node

# Idle workers beyond the warm pool (one per CPU) exit after this long.
IDLE_WORKER_TIMEOUT_S = 5.0


class PoolStatistics(NamedTuple):
    workers: int
    workers_idle: int
    workers_started: int
    workers_retired: int


class WorkerPool:
    """Worker id -> ``WorkerState`` for every worker process of the cluster."""

    def __init__(self, config: NodeConfig, nodes: dict[str, NodeRecord], head: NodeRecord, first_id: int) -> None:
        self.workers: dict[int, WorkerState] = {}
        self._config = config
        self._nodes = nodes
        self._head = head
        self._ids = itertools.count(first_id)
        self._surplus: list[WorkerState] = []  # idle workers beyond the warm pool, as of this loop turn
        self._started = 0
        self._retired = 0

    def bind(self, node: Node) -> None:
        self.loop = node.loop
        self.send = node.loop.send
        self.tasks = node.tasks
        self.scheduler = node.scheduler
        self.leases = node.leases
        self.actors = node.actors
        self.objects = node.objects
        self.members = node.members
        self._disconnect = node.disconnect

    def __repr__(self) -> str:
        idle = sum(1 for w in self.workers.values() if w.idle)
        return f"<WorkerPool workers={len(self.workers)} idle={idle} started={self._started}>"

    def statistics(self) -> PoolStatistics:
        idle = sum(1 for w in self.workers.values() if w.idle)
        return PoolStatistics(len(self.workers), idle, self._started, self._retired)

    # ------------------------------------------------------------ processes

    def adopt(self, worker_id: int, process: Any, node: NodeRecord | None = None) -> None:
        worker = self.workers[worker_id] = WorkerState(worker_id, process, node or self._head)
        self._started += 1
        if process.sentinel is not None:
            self.loop.watch(process.sentinel, lambda: self.worker_exited(worker))

    def connected(self, client: ClientState, worker_id: int) -> None:
        """A worker said HELLO on ``client``."""
        worker = self.workers.get(worker_id)
        if worker is None:  # a worker we already gave up on
            self.send(client, (P.EXIT,))
            return
        worker.client = client
        client.worker = worker
        if isinstance(worker.process, RemoteProcess):
            worker.process.pid = client.pid  # a member node's worker: known by its HELLO
        self.scheduler.needed = True

    def grow(self, node: NodeRecord, wanted: int = 0) -> None:
        """Start workers on ``node`` for the ready tasks, and the drivers' wishes for
        leases, that its resources allow to run now (and ``wanted`` more, for tasks
        that run on resources a placement group reserved there)."""
        workers = [w for w in self.workers.values() if w.node is node]
        starting = sum(1 for w in workers if w.client is None)
        unblocked = sum(1 for w in workers if not w.blocked and w.actor is None)
        available = dict(node.ledger.available)

        def fits(demand: dict[str, int]) -> bool:
            if any(available.get(n, 0) < u for n, u in demand.items()):
                return False
            for n, u in demand.items():
                available[n] -= u
            return True

        runnable = wanted
        for tasks in self.scheduler.ready.heads():
            for task in tasks:
                if not fits(task.demand):
                    break
                runnable += 1
                if runnable > starting + 64:
                    break
        if node is self._head:  # leases are lent on the head only (see LeaseManager.grant_wishes)
            runnable += sum(1 for _client, shape in self.leases.wishes if fits(dict(shape)))
        limit = node.warm_workers * 4 + 16
        for _ in range(min(runnable - starting, limit - unblocked)):
            self._spawn(node)

    def _spawn(self, node: NodeRecord) -> None:
        worker_id = next(self._ids)
        if node is self._head:
            self.adopt(worker_id, spawn_worker(self._config, worker_id))
        else:
            self.adopt(worker_id, self.members.spawn(node, worker_id), node)

    def retire(self, worker: WorkerState) -> None:
        worker.retiring = True
        self._retired += 1
        if worker.client is not None:
            self.send(worker.client, (P.EXIT,))

    def timeout(self) -> float | None:
        """When the next idle worker beyond the warm pool is due to exit, from now (None: never)."""
        if not self._surplus:
            return None
        return max(0.0, min(w.idle_since for w in self._surplus) + IDLE_WORKER_TIMEOUT_S - time.monotonic())

    def retire_idle(self) -> None:
        """Retire the idle workers beyond each node's warm pool that have idled long enough."""
        if len(self.workers) <= sum(n.warm_workers for n in self._nodes.values() if n.alive):
            self._surplus = []  # the usual case, checked every loop turn: nothing to count
            return
        surplus = []
        for node in self._nodes.values():
            pool = [w for w in self.workers.values() if w.node is node and w.actor is None and not w.retiring]
            # A worker that created live actors keeps them alive: it is never retired for idling.
            if len(pool) > node.warm_workers:
                idle = sorted((w for w in pool if w.idle and not w.client.owned_actors), key=lambda w: w.idle_since)  # type: ignore[union-attr]
                surplus.extend(idle[: len(pool) - node.warm_workers])
        now = time.monotonic()
        for worker in surplus:
            if now - worker.idle_since >= IDLE_WORKER_TIMEOUT_S:
                self.retire(worker)
        # What is left of it holds the next deadline, for timeout().
        self._surplus = [w for w in surplus if not w.retiring]

    # ------------------------------------------------------------ work

    def start(self, task: TaskRecord, worker: WorkerState, ledger: ResourceLedger | None = None) -> None:
        """Run ``task`` on idle ``worker``, with resources taken from its node (or ``ledger``:
        a placement group's bundle there)."""
        if task.spec.strategy == "SPREAD":
            worker.node.spread += 1
        if not task.spec.resources.get("GPU"):
            worker.ran_cpu_work = True
        task.allocation = (ledger or worker.node.ledger).acquire(task.demand)
        task.worker = worker
        task.started_at = time.monotonic()
        task.pid = worker.process.pid or 0
        worker.task = task
        self.tasks.running[task.spec.task_id] = task
        self._send_task(task, worker, task.allocation.gpu_ids)

    def line_up(self, task: TaskRecord, worker: WorkerState) -> None:
        """Send ``task`` to busy ``worker``, to start when its current task ends (same shape)."""
        task.worker = worker
        worker.queued.append(task)
        self.tasks.running[task.spec.task_id] = task
        self._send_task(task, worker, worker.task.allocation.gpu_ids)  # type: ignore[union-attr]

    def _send_task(self, task: TaskRecord, worker: WorkerState, gpu_ids: list[int]) -> None:
        spec = task.spec
        function_bytes = None
        if spec.function_id not in worker.loaded:
            function_bytes = self.tasks.functions[spec.function_id]
            worker.loaded.add(spec.function_id)
        arguments = self.objects.arguments_of(spec)
        assert worker.client is not None
        if spec.method == "__init__":
            actor = self.actors.by_id[spec.actor_id]  # type: ignore[index]
            actor.worker = worker
            worker.actor = actor
            message = (P.BECOME_ACTOR, actor.spec._replace(function_bytes=None), function_bytes, arguments, gpu_ids)
            self.send(worker.client, message)
            return
        self.send(worker.client, (P.EXECUTE, spec_to_wire(spec), function_bytes, arguments, gpu_ids))

    def task_ended(self, worker: WorkerState, task: TaskRecord) -> None:
        """``worker`` answered ``task``: the next task lined up on it has started, or it is idle."""
        worker.blocked = False
        worker.task = None
        now = time.monotonic()
        self.scheduler.run_times.record(task.spec.function_id, now - task.started_at)
        if worker.queued:
            # The next task lined up on this worker has already started: it
            # inherits the allocation (same shape), nothing to release or acquire.
            successor = worker.queued.popleft()
            successor.allocation, task.allocation = task.allocation, None
            successor.started_at = now
            successor.pid = task.pid
            worker.task = successor
        else:
            worker.idle_since = now
        if task.spec.max_calls:
            calls = worker.calls[task.spec.function_id] = worker.calls.get(task.spec.function_id, 0) + 1
            if calls >= task.spec.max_calls:
                self.retire(worker)  # recycled, for code that leaks memory or GPU state

    def cancel_on(self, worker: WorkerState, task_id: bytes, force: bool = False) -> None:
        """Ask ``worker`` to interrupt ``task_id`` if it runs it, or to skip it if lined up."""
        if worker.client is not None:
            self.send(worker.client, P.cancel(task_id, force))

    def on_blocked(self, client: ClientState, _message: tuple[Any, ...]) -> None:
        worker = client.worker
        if worker is None:
            return
        # Tasks lined up behind a blocked one might be what it waits for: take
        # them back. The worker runs nothing more until it has read this answer.
        revoked = list(worker.queued)
        worker.queued.clear()
        for task in reversed(revoked):
            task.worker = None
            self.tasks.running.pop(task.spec.task_id, None)
            self.scheduler.ready.push(task, front=True)
        self.send(client, (P.REVOKED, [t.spec.task_id for t in revoked]))
        allocation = worker.holding
        if allocation is not None:
            worker.blocked = True
            allocation.ledger.lend_cpus(allocation)
        self.scheduler.needed = True

    def on_unblocked(self, client: ClientState, _message: tuple[Any, ...]) -> None:
        worker = client.worker
        if worker is None:
            return
        allocation = worker.holding
        if allocation is not None:
            worker.blocked = False
            allocation.ledger.reclaim_cpus(allocation)

    # ------------------------------------------------------------ deaths

    def worker_exited(self, worker: WorkerState) -> None:
        process = worker.process
        if process.sentinel is not None:
            self.loop.unwatch(process.sentinel)
        # The sentinel closes as the process exits, a moment before it can be
        # reaped: wait that moment, to report how it died.
        process.join(1.0)
        release_pipes(process)  # reaped: its pipes are of no more use (the GC would close them late)
        self.workers.pop(worker.worker_id, None)
        if worker.client is not None:
            # What it wrote before dying (a DONE, say) still counts.
            for _ in range(64):
                if worker.client.closed:
                    break
                self.loop.on_client_io(worker.client, selectors.EVENT_READ)
            self._disconnect(worker.client)
        if worker.lessee is not None:
            self.leases.end(worker)  # its lessee resends what it had sent it (see the client's leases)
        self.scheduler.needed = True
        if self.loop.stopping:
            return
        if worker.actor is not None:
            self.actors.process_exited(worker.actor, worker, how_it_died(process))
        else:
            self.tasks.worker_died(worker, how_it_died(process))


def how_it_died(process: Any) -> str:
    return getattr(process, "death", "") or describe_exit(process.exitcode)


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "it stopped answering"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"it exited with code {exitcode}"
