"""The records the node's components share: one per object, task, actor, connection, worker.

Components hold these by reference (a task's record sits in the task table,
the ready queue, its worker's queue and its actor's queue at once); they
carry state, not behaviour.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..members import NodeRecord
from ..payload import Payload
from ..scheduler import Allocation, shape_of
from ..task_spec import ActorSpec, TaskSpec, forever

if TYPE_CHECKING:
    from .. import protocol as P


class ObjectEntry:
    """An object the node knows: its value once set, who holds it, who waits for it."""

    __slots__ = ("payload", "refcount", "subscribers", "dependents")

    def __init__(self) -> None:
        self.payload: Payload | None = None
        self.refcount = 0  # holding clients, plus objects that contain it and tasks that use it
        self.subscribers: list[ClientState] | None = None  # to send READY to once set
        self.dependents: list[TaskRecord] | None = None  # tasks waiting for it as an argument

    def __repr__(self) -> str:
        state = "set" if self.payload is not None else "pending"
        return f"<ObjectEntry {state} refcount={self.refcount}>"


class TaskRecord:
    """A task, an actor's creation (``spec.method == "__init__"``) or an actor method call."""

    __slots__ = (
        "spec", "owner", "demand", "shape", "seq", "unresolved", "worker", "allocation", "retries_left",
        "parent", "depth", "cancelled", "done", "started_at", "return_ids", "pid",
    )

    def __init__(self, spec: TaskSpec, owner: ClientState, seq: int) -> None:
        self.spec = spec
        self.owner = owner
        self.demand, self.shape = shape_of(spec.resources)
        self.seq = seq
        self.unresolved = 0  # arguments not set yet
        self.worker: WorkerState | None = None
        self.allocation: Allocation | None = None
        self.retries_left = spec.max_retries
        self.parent: bytes | None = None  # the task that submitted this one, if any
        self.depth = 0  # how deeply nested: 0 for tasks a driver submitted
        self.cancelled = False
        self.done = False
        self.started_at = 0.0
        self.return_ids = spec.return_ids()
        self.pid = 0  # of the process it ran in, for the state API

    def __repr__(self) -> str:
        return f"<Task {self.spec.name} {self.spec.task_id.hex()}>"


class ActorState:
    """One actor: its process, its calls, its fate."""

    __slots__ = (
        "spec", "owner", "state", "worker", "queue", "inflight", "restarts_left", "death", "allocation", "ending",
        "direct_address", "routed", "exit_reason", "last_exit",
    )

    def __init__(self, spec: ActorSpec, owner: ClientState) -> None:
        self.spec = spec
        self.owner = owner
        self.state = "PENDING"  # PENDING -> ALIVE (-> RESTARTING -> ALIVE)* -> DEAD
        self.worker: WorkerState | None = None
        self.queue: deque[TaskRecord] = deque()  # calls not yet sent to the process, in order
        self.inflight: dict[bytes, TaskRecord] = {}  # sent, not yet answered
        self.restarts_left = forever(spec.max_restarts)
        self.death: Payload | None = None  # the ActorDiedError given to callers once dead
        self.allocation: Allocation | None = None
        self.ending = False  # no handle is left: end once the pending calls are done
        self.direct_address: str | None = None  # where its process takes direct calls
        self.routed: set[ClientState] = set()  # callers told that address
        self.exit_reason: str | None = None  # why its process is about to exit (sys.exit in a method)
        self.last_exit: tuple[str | None, str] = (None, "")  # the direct address of its last process, how it ended

    def __repr__(self) -> str:
        return f"<Actor {self.spec.class_name} {self.spec.actor_id.hex()[:12]} {self.state}>"


class ClientState:
    """A connected driver, worker or member node, as the node sees it."""

    __slots__ = (
        "conn", "role", "pid", "job_id", "held", "worker", "writing", "closed", "member", "id_prefix", "leases",
        "promised", "owned_actors",
    )

    def __init__(self, conn: P.NodeConn) -> None:
        self.conn = conn
        self.role = "unknown"
        self.pid = 0
        self.job_id = b""
        self.held: set[bytes] = set()  # objects (and actor handles) it holds: each counted once
        self.worker: WorkerState | None = None
        self.writing = False  # its socket is watched for room to write
        self.closed = False
        self.member: NodeRecord | None = None  # for a member node's connection
        self.id_prefix = b""  # how its task ids begin: whose direct call a result is
        self.leases: dict[Any, set[WorkerState]] = {}  # task shape -> the workers lent to it for such tasks
        self.promised: set[bytes] = set()  # results of its direct calls it said are coming (PROMISE), not here yet
        self.owned_actors: set[bytes] = set()  # live, non-detached actors it created: they die with it

    def __repr__(self) -> str:
        return f"<{self.role} pid={self.pid}>"


class WorkerState:
    """One worker process: what it runs, what it holds, whom it is lent to."""

    __slots__ = (
        "worker_id", "process", "client", "task", "queued", "loaded", "blocked", "actor",
        "calls", "retiring", "idle_since", "node", "lessee", "lease", "lease_id", "lease_shape", "lease_revoked",
        "ran_cpu_work",
    )

    def __init__(self, worker_id: int, process: Any, node: NodeRecord) -> None:
        self.worker_id = worker_id
        self.process = process
        self.node = node
        self.client: ClientState | None = None  # once it has connected
        self.task: TaskRecord | None = None
        # Tasks sent ahead of time, run when ``task`` ends, inheriting its allocation.
        self.queued: deque[TaskRecord] = deque()
        self.loaded: set[bytes] = set()  # function ids it has been sent
        self.blocked = False
        self.actor: ActorState | None = None  # set once the worker is dedicated to an actor
        self.calls: dict[bytes, int] = {}  # function id -> calls, for max_calls
        self.retiring = False  # told to exit: takes no more work
        self.idle_since = time.monotonic()
        # Lent to a caller, which sends it tasks of one shape directly (see leases.py).
        self.lessee: ClientState | None = None
        self.lease: Allocation | None = None  # what it holds while lent
        self.lease_id = 0  # which lending: a late LEASE_RETURN must not end the next one
        self.lease_shape: Any = None
        self.lease_revoked = False  # asked back; the lessee returns it once its tasks are answered
        # A GPU task runs only where CUDA cannot have started yet without its
        # CUDA_VISIBLE_DEVICES: in a fresh worker or one that ran GPU work only.
        self.ran_cpu_work = False

    @property
    def holding(self) -> Allocation | None:
        """What the worker's work holds: its task's (an actor's creation too), its actor's, or its lease's."""
        if self.task is not None:
            return self.task.allocation
        if self.actor is not None:
            return self.actor.allocation
        return self.lease

    @property
    def idle(self) -> bool:
        """Connected and free for a task: not running, not an actor's, not lent, not leaving."""
        return (
            self.client is not None and self.task is None and self.actor is None
            and self.lessee is None and not self.retiring
        )

    def __repr__(self) -> str:
        pid = self.process.pid
        doing = f"running {self.task.spec.name}" if self.task else "idle"
        if self.lessee is not None:
            doing = f"lent to {self.lessee!r}"
        if self.actor is not None:
            doing = f"actor {self.actor.spec.class_name}"
        return f"<Worker {self.worker_id} pid={pid} {doing}>"
