"""Actors: their creation, their calls through the node, their deaths and restarts.

An actor is created by a task (its ``__init__``) that takes a worker for
good.  Once ``__init__`` returns (ACTOR_READY) the actor is ALIVE and takes
calls: through the node (queued here, sent in each caller's order as their
arguments are set), and, once the node has told a caller where the process
listens (ACTOR_ROUTE), straight from that caller (``direct.py``).  When its
process dies the actor restarts while ``max_restarts`` allows, its calls in
flight retried while ``max_task_retries`` allows; else it is DEAD and every
call gets the ``ActorDiedError`` that says why.  An actor ends when no handle
to it is left (its id is counted like an object), unless named or detached.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import protocol as P
from ..exceptions import ActorDiedError
from ..payload import Payload, from_wire
from ..scheduler import demand_of
from ..task_spec import ActorSpec, TaskSpec, forever, spec_to_wire
from .records import ActorState, ClientState, TaskRecord, WorkerState

if TYPE_CHECKING:
    from .server import Node

ActorHandleInfo = tuple[bytes, str, dict[str, int]]  # (actor id, class name, methods): what a handle needs


class ActorStatistics(NamedTuple):
    actors: int
    actors_alive: int
    named: int
    calls_queued: int
    calls_in_flight: int


class ActorDirectory:
    """Actor id -> ``ActorState``, and the names of named actors per namespace."""

    def __init__(self, namespaces: dict[bytes, str]) -> None:
        self.by_id: dict[bytes, ActorState] = {}
        self.by_name: dict[tuple[str, str], bytes] = {}  # (namespace, name) -> actor id
        self._namespaces = namespaces  # job id -> its namespace

    def bind(self, node: Node) -> None:
        self.send = node.loop.send
        self.objects = node.objects
        self.tasks = node.tasks
        self.scheduler = node.scheduler

    def __repr__(self) -> str:
        alive = sum(1 for a in self.by_id.values() if a.state == "ALIVE")
        return f"<ActorDirectory actors={len(self.by_id)} alive={alive} named={len(self.by_name)}>"

    def statistics(self) -> ActorStatistics:
        actors = self.by_id.values()
        return ActorStatistics(
            len(self.by_id),
            sum(1 for a in actors if a.state == "ALIVE"),
            len(self.by_name),
            sum(len(a.queue) for a in actors),
            sum(len(a.inflight) for a in actors),
        )

    # ------------------------------------------------------------ creation

    def on_create_actor(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, spec = message
        self.create(client, spec)

    def create(self, client: ClientState, spec: ActorSpec) -> ActorState:
        if spec.namespace is None:
            spec = spec._replace(namespace=self._namespaces.get(spec.job_id, ""))
        actor = self.by_id[spec.actor_id] = ActorState(spec, client)
        if spec.function_bytes is not None:
            self.tasks.functions.setdefault(spec.function_id, spec.function_bytes)
            actor.spec = spec._replace(function_bytes=None)
        if spec.name is not None:
            self.by_name[(spec.namespace, spec.name)] = spec.actor_id  # type: ignore[index]
        if not spec.detached:
            client.owned_actors.add(spec.actor_id)
        # The actor's id is counted like an object: handles are its references.
        self.objects.held_by(client, spec.actor_id)
        self.tasks.add(client, creation_spec(actor.spec))
        return actor

    def on_actor_ready(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, actor_id, direct_address = message
        actor = self.by_id[actor_id]
        task = self.tasks.running.pop(actor_id, None)
        if actor.worker is not None:
            actor.worker.task = None
        if task is not None:
            # Placement needed free resources; from now on the actor holds only its own.
            if task.allocation is not None and task.allocation.demand == demand_of(actor.spec.resources):
                actor.allocation, task.allocation = task.allocation, None
            else:
                # From where it was placed: its node, or its placement group's bundle.
                ledger = task.allocation.ledger if task.allocation is not None else actor.worker.node.ledger  # type: ignore[union-attr]
                self.tasks.release_allocation(task)
                actor.allocation = ledger.acquire(demand_of(actor.spec.resources))
            self.tasks.finish(task, [])
        if actor.state == "DEAD":
            return  # killed while starting
        actor.direct_address = direct_address
        actor.routed = set()
        actor.state = "ALIVE"
        self.pump(actor)
        self.scheduler.needed = True

    def on_actor_failed(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, actor_id, wire = message
        actor, death = self.by_id[actor_id], from_wire(wire)
        task = self.tasks.running.pop(actor_id, None)
        if task is not None:
            self.tasks.release_allocation(task)
            self.tasks.finish(task, [])
        self.bury(actor, death)  # a failing __init__ is not retried, as in Ray

    def on_actor_exit(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, actor_id, why = message
        actor = self.by_id[actor_id]
        if why is not None:
            # sys.exit() in a method: the process ends like a crash (restarts allowed);
            # its exit, seen next, tells callers why.
            actor.exit_reason = why
            return
        self.bury(actor, self.died(actor, "it called exit_actor()"))

    # ------------------------------------------------------------ calls

    def enqueue_call(self, task: TaskRecord, lost: Any = False) -> None:
        actor = self.by_id.get(task.spec.actor_id)  # type: ignore[arg-type]
        if actor is None or actor.state == "DEAD":
            death = actor.death if actor is not None else None
            if death is None:
                error = ActorDiedError(f"no actor {task.spec.actor_id.hex()} lives on this node")  # type: ignore[union-attr]
                death = self.objects.error_payload(error)
            self.tasks.finish(task, [death] * task.spec.num_returns)
            return
        task.retries_left = forever(actor.spec.max_task_retries)
        if lost and not (actor.state == "ALIVE" and lost == actor.direct_address and actor.exit_reason is None):
            # Sent directly to a process that died before answering: a retry, if any is left.
            # (Unless this loop has not seen that process die yet: the call then goes to
            # it like any other, and its death retries the call once, with the others.)
            if task.retries_left <= 0:
                address, died = actor.last_exit
                if actor.exit_reason is not None and lost == actor.direct_address:
                    address, died = lost, actor.exit_reason  # exiting, not seen gone yet
                died = died if address == lost else "its process died"
                error_payload = self.died(actor, f"{died} before this call finished, and max_task_retries allows no retry")
                self.tasks.finish(task, [error_payload] * task.spec.num_returns)
                return
            task.retries_left -= 1
        actor.queue.append(task)
        self.pump(actor)

    def pump(self, actor: ActorState | None) -> None:
        """Send the actor its calls whose arguments are ready, each caller's in its order.

        Order is kept per caller, as in Ray: a call waiting for its arguments holds
        back its caller's later calls only, not the ready calls of other callers.
        """
        if actor is None or actor.state != "ALIVE" or actor.worker is None or actor.worker.client is None:
            return
        if actor.exit_reason is not None:
            return  # its process is exiting: the calls wait for the restarted actor (or fail with it)
        queue = actor.queue
        while queue and queue[0].unresolved == 0:
            self._send_call(actor, queue.popleft())
        if queue:  # the first waits for its arguments: other callers' ready calls go ahead
            for task in ready_calls(queue):
                self._send_call(actor, task)

    def _send_call(self, actor: ActorState, task: TaskRecord) -> None:
        worker = actor.worker
        assert worker is not None and worker.client is not None
        spec = task.spec
        failed = self.objects.failed_argument(spec)
        if failed is not None:
            self.tasks.finish(task, [failed] * spec.num_returns)
            return
        arguments = self.objects.arguments_of(spec)
        actor.inflight[spec.task_id] = task
        task.started_at = time.monotonic()
        task.pid = worker.process.pid or 0
        self.send(worker.client, (P.EXECUTE, spec_to_wire(spec), None, arguments, []))
        owner = task.owner
        if actor.direct_address is not None and owner not in actor.routed and not owner.closed:
            # Its later calls may go straight to the process (see direct.py).
            actor.routed.add(owner)
            if owner is not worker.client:
                self.send(owner, (P.ACTOR_ROUTE, spec.actor_id, actor.direct_address, worker.node.session))

    def call_done(self, actor: ActorState, task_id: bytes, payloads: list[Payload]) -> None:
        task = actor.inflight.pop(task_id, None)
        if task is None:
            self.tasks.release_all(payloads)
            return
        self.tasks.finished_count += 1
        self.tasks.finish(task, payloads)
        if actor.ending and not actor.inflight and not actor.queue:
            self.kill(actor, "no handle to it is left")

    def cancel_call(self, actor: ActorState, task: TaskRecord) -> None:
        """Cancel a call: dropped if still queued here, interrupted if its actor runs it."""
        if task in actor.queue:
            actor.queue.remove(task)
            self.tasks.finish(task, [])
        elif task.spec.task_id in actor.inflight and actor.worker is not None and actor.worker.client is not None:
            self.send(actor.worker.client, P.cancel(task.spec.task_id))

    # ------------------------------------------------------------ deaths

    def died(self, actor: ActorState, why: str) -> Payload:
        """The ``ActorDiedError`` its callers get, saying ``why``."""
        spec = actor.spec
        error = ActorDiedError(f"The actor {spec.class_name} ({spec.actor_id.hex()}) is dead: {why}.")
        return self.objects.error_payload(error)

    def bury(self, actor: ActorState, death: Payload) -> None:
        """Mark the actor dead for good; every pending and later call gets ``death``."""
        if actor.state == "DEAD":
            return
        actor.state = "DEAD"
        actor.death = death
        actor.owner.owned_actors.discard(actor.spec.actor_id)
        if actor.allocation is not None:
            actor.allocation.ledger.release(actor.allocation)
            actor.allocation = None
        spec = actor.spec
        if spec.name is not None and self.by_name.get((spec.namespace, spec.name)) == spec.actor_id:  # type: ignore[arg-type]
            del self.by_name[(spec.namespace, spec.name)]  # type: ignore[arg-type]
        calls = list(actor.inflight.values()) + list(actor.queue)
        actor.inflight.clear()
        actor.queue.clear()
        for task in calls:
            self.tasks.finish(task, [death] * task.spec.num_returns)
        self.scheduler.needed = True

    def kill(self, actor: ActorState, why: str) -> None:
        self.bury(actor, self.died(actor, why))
        worker = actor.worker
        if worker is not None and worker.process.is_alive():
            worker.process.kill()

    def out_of_scope(self, actor_id: bytes) -> None:
        """The last handle to ``actor_id`` is gone (if it is an actor's id)."""
        actor = self.by_id.get(actor_id)
        if actor is None or actor.spec.name is not None or actor.spec.detached or actor.state == "DEAD":
            return
        actor.ending = True
        if not actor.inflight and not actor.queue and actor.state == "ALIVE":
            self.kill(actor, "no handle to it is left")

    def driver_exited(self, job_id: bytes) -> None:
        for actor in list(self.by_id.values()):
            if actor.spec.job_id == job_id and not actor.spec.detached:
                self.kill(actor, "its driver exited")

    def owner_gone(self, owner: ClientState) -> None:
        """The process that created these actors is gone: they share its fate, as in Ray
        (detached actors excepted)."""
        for actor_id in list(owner.owned_actors):
            actor = self.by_id.get(actor_id)
            if actor is not None:
                why = f"its owner died: the {owner.role} process (pid {owner.pid}) that created it exited"
                self.kill(actor, why)
        owner.owned_actors.clear()

    def process_exited(self, actor: ActorState, worker: WorkerState, how: str) -> None:
        actor.worker = None
        creation = self.tasks.running.pop(actor.spec.actor_id, None)
        if creation is not None:
            self.tasks.release_allocation(creation)
        if actor.allocation is not None:
            actor.allocation.ledger.release(actor.allocation)
            actor.allocation = None
        self.scheduler.needed = True
        if actor.state == "DEAD":
            return
        reason, actor.exit_reason = actor.exit_reason, None
        died = reason or f"its process died ({how})"
        actor.last_exit = (actor.direct_address, died)  # for direct calls it had, resent by their callers
        if actor.restarts_left <= 0 or actor.ending:
            why = reason or f"its process (pid {worker.process.pid}) died unexpectedly: {how}"
            if creation is not None:
                self.tasks.finish(creation, [])
            self.bury(actor, self.died(actor, why))
            return
        actor.restarts_left -= 1
        actor.state = "RESTARTING"
        retry = []
        for task in actor.inflight.values():
            if task.retries_left > 0:
                task.retries_left -= 1
                retry.append(task)
            else:
                error = self.died(actor, f"{died} before this call finished, and max_task_retries allows no retry")
                self.tasks.finish(task, [error] * task.spec.num_returns)
        actor.inflight.clear()
        actor.queue.extendleft(reversed(retry))
        if creation is None:
            creation = self.tasks.new_record(creation_spec(actor.spec), actor.owner)
        self.scheduler.ready.push(creation, front=True)

    # ------------------------------------------------------------ requests

    def _handle(self, client: ClientState, actor: ActorState) -> ActorHandleInfo:
        """Count ``client`` as holding a handle to ``actor``; describe the handle."""
        self.objects.hold(client, actor.spec.actor_id)
        return actor.spec.actor_id, actor.spec.class_name, actor.spec.methods

    def request_create_actor(self, client: ClientState, spec: ActorSpec) -> ActorHandleInfo:
        if spec.namespace is None:
            spec = spec._replace(namespace=self._namespaces.get(spec.job_id, ""))
        existing = self.by_name.get((spec.namespace, spec.name))  # type: ignore[arg-type]
        if existing is not None:
            if not spec.get_if_exists:
                raise ValueError(
                    f"The name {spec.name!r} (namespace={spec.namespace!r}) is already taken by "
                    f"another actor. Use a different name, pass get_if_exists=True, or get the "
                    f"existing actor with get_actor({spec.name!r}, namespace={spec.namespace!r})."
                )
            return self._handle(client, self.by_id[existing])
        actor = self.create(client, spec)
        return actor.spec.actor_id, spec.class_name, spec.methods

    def request_get_actor(self, client: ClientState, name: str, namespace: str | None, job_id: bytes) -> ActorHandleInfo:
        if namespace is None:
            namespace = self._namespaces.get(job_id, "")
        actor_id = self.by_name.get((namespace, name))
        if actor_id is None:
            raise ValueError(
                f"Failed to look up actor with name {name!r} in namespace {namespace!r}: no live "
                f"actor has that name there (it may have died, or been created in another namespace)."
            )
        return self._handle(client, self.by_id[actor_id])

    def request_kill(self, client: ClientState, actor_id: bytes, no_restart: bool) -> None:
        actor = self.by_id.get(actor_id)
        if actor is None or actor.state == "DEAD":
            return
        if no_restart or actor.restarts_left <= 0:
            self.kill(actor, "it was killed by kill()")
        elif actor.worker is not None:
            actor.worker.process.kill()  # its exit restarts it


def creation_spec(spec: ActorSpec) -> TaskSpec:
    """The task that runs an actor's ``__init__``: placed with the actor's placement resources."""
    return TaskSpec(
        task_id=spec.actor_id,
        job_id=spec.job_id,
        name=f"{spec.class_name}.__init__",
        function_id=spec.function_id,
        function_bytes=None,
        args=spec.args,
        deps=spec.deps,
        num_returns=0,
        resources=spec.placement,
        max_retries=0,
        retry_exceptions=False,
        runtime_env=spec.runtime_env,
        actor_id=spec.actor_id,
        method="__init__",
        strategy=spec.strategy,
    )


def ready_calls(queue: deque[TaskRecord]) -> deque[TaskRecord]:
    """Take out of ``queue`` (in order) the calls that may go now: their arguments are
    ready and no earlier call of the same caller still waits for its own."""
    waiting: set[ClientState] = set()
    ready: deque[TaskRecord] = deque()
    kept: deque[TaskRecord] = deque()
    for task in queue:
        if task.unresolved or task.owner in waiting:
            waiting.add(task.owner)
            kept.append(task)
        else:
            ready.append(task)
    queue.clear()
    queue.extend(kept)
    return ready
