"""The node server ("raylet"): scheduler, resource ledger, worker pool, object directory.

The node runs in its own spawned process as a spawn-context
``multiprocessing`` Manager server.  The Manager serves the control plane
(``NodeControl``: information, resources, stop), one thread per caller.  The
data plane (tasks and objects) is a separate listener served by one event
loop thread that owns all of the node's state::

    accept thread ──(authenticated sockets)──┐
    Manager threads ──(call_soon closures)───┼──▶ wakeup pipe ─┐
    client sockets (drivers, workers) ───────┴─────────────────┼─▶ selector ─▶ handlers
    worker process sentinels (death) ──────────────────────────┘      │
                                                   schedule() ◀───────┘ then flush outboxes

Nothing in the loop blocks: sockets are non-blocking and outgoing messages
are queued per client and written as one frame per loop turn.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import multiprocessing.connection
import os
import queue
import selectors
import shutil
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import node_state, shm
from . import protocol as P
from .direct import socket_path
from .exceptions import (
    ActorUnschedulableError,
    ObjectLostError,
    TaskUnschedulableError,
    WorkerCrashedError,
)
from .members import Members, NodeRecord, RemoteProcess
from .node_process import NodeConfig, release_pipes, spawn_worker
from .object_store import ObjectStore
from .payload import Payload, from_wire, to_wire
from .run_times import SHORT_S, RunTimes
from .scheduler import Allocation, ReadyQueue, choose_node, demand_of, shape_of, unplaceable
from .strategy import affinity
from .task_spec import (
    ActorSpec,
    TaskSpec,
    cancelled_error,
    forever,
    return_id,
    spec_from_wire,
    spec_to_wire,
)

if TYPE_CHECKING:
    from .gate import Gate
    from .object_transfer import TransferServer

# Tasks lined up on a busy worker beyond the one it runs. Two keep a worker
# fed across the round trip to the node; more would starve idle workers.
_PIPELINE_DEPTH = 2
# Only behind tasks known to be short: a task lined up behind a long one would
# wait for it even if another worker came free (or forever, behind one that
# waits for something the caller does only later).
# Idle workers beyond the warm pool (one per CPU) exit after this long.
IDLE_WORKER_TIMEOUT_S = 5.0


class ObjectEntry:
    __slots__ = ("payload", "refcount", "subscribers", "dependents")

    def __init__(self) -> None:
        self.payload: Payload | None = None
        self.refcount = 0
        self.subscribers: list[ClientState] | None = None
        self.dependents: list[TaskRecord] | None = None


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
        self.unresolved = 0
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


def _idle_for(task: TaskRecord, idle: list[WorkerState]) -> WorkerState | None:
    """An idle worker that may run ``task`` (taken from ``idle``), or None."""
    if not task.spec.resources.get("GPU"):
        return idle.pop()
    for i in range(len(idle) - 1, -1, -1):
        if not idle[i].ran_cpu_work:
            return idle.pop(i)
    return None  # a fresh one starts (see _grow_pool)


def _ready_calls(queue: deque[TaskRecord]) -> deque[TaskRecord]:
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


class ClientState:
    """A connected driver or worker, as the node sees it."""

    __slots__ = (
        "conn", "role", "pid", "job_id", "held", "worker", "writing", "closed", "member", "id_prefix", "leases",
    )

    def __init__(self, conn: P.NodeConn) -> None:
        self.conn = conn
        self.role = "unknown"
        self.pid = 0
        self.job_id = b""
        self.held: set[bytes] = set()
        self.worker: WorkerState | None = None
        self.writing = False
        self.closed = False
        self.member: NodeRecord | None = None  # for a member node's connection
        self.id_prefix = b""  # how its task ids begin: whose direct call a result is
        self.leases: dict[Any, set[WorkerState]] = {}  # task shape -> the workers lent to it for such tasks

    def __repr__(self) -> str:
        return f"<{self.role} pid={self.pid}>"


class WorkerState:
    __slots__ = (
        "worker_id", "process", "client", "task", "queued", "loaded", "blocked", "actor",
        "calls", "retiring", "idle_since", "node", "lessee", "lease", "lease_id", "lease_shape", "lease_revoked",
        "ran_cpu_work",
    )

    def __init__(self, worker_id: int, process: Any, node: NodeRecord) -> None:
        self.worker_id = worker_id
        self.process = process
        self.node = node
        self.client: ClientState | None = None
        self.task: TaskRecord | None = None
        # Tasks sent ahead of time, run when ``task`` ends, inheriting its allocation.
        self.queued: deque[TaskRecord] = deque()
        self.loaded: set[bytes] = set()
        self.blocked = False
        self.actor: ActorState | None = None  # set once the worker is dedicated to an actor
        self.calls: dict[bytes, int] = {}  # function id -> calls, for max_calls
        self.retiring = False  # told to exit: takes no more work
        self.idle_since = time.monotonic()
        # Lent to a caller, which sends it tasks of one shape directly (see _lend).
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

    def __repr__(self) -> str:
        pid = self.process.pid
        doing = f"running {self.task.spec.name}" if self.task else "idle"
        if self.lessee is not None:
            doing = f"lent to {self.lessee!r}"
        if self.actor is not None:
            doing = f"actor {self.actor.spec.class_name}"
        return f"<Worker {self.worker_id} pid={pid} {doing}>"


class Node:
    """All state of one node, owned by its event loop thread."""

    def __init__(self, config: NodeConfig, gate: Gate, workers: list[tuple[int, Any]]) -> None:
        self.config = config
        self.head = NodeRecord(
            {
                "node_id": config.node_id,
                "session": config.session,
                "hostname": socket.gethostname(),
                "address": config.tcp_address[0] if config.tcp_address else "127.0.0.1",
                "resources": config.resources,
                "pid": os.getpid(),
            },
            None,
        )
        self.nodes: dict[str, NodeRecord] = {config.node_id: self.head}
        self.members = Members(self, self.head)
        self.transfer: TransferServer | None = None
        if config.tcp_address is not None:
            # Part of a cluster: other nodes fetch the objects made here from this server.
            from .object_transfer import TransferServer

            self.transfer = TransferServer(
                config.session,
                config.authkey,
                [(config.tcp_address[0], 0)],
                {"node_id": config.node_id, "head": gate.addresses[-1]},
                lambda object_id: self.call_soon(lambda: self.members.add_copies(self.head, [object_id])),
            )
            self.head.transfer_address = self.transfer.address
        self.store = ObjectStore(
            config.session,
            config.object_store_memory,
            os.path.join(config.session_dir, "spill"),
            free_remote=self.members.free_segment,
        )
        self.objects: dict[bytes, ObjectEntry] = {}
        self.functions: dict[bytes, bytes] = {}
        self.drivers: dict[bytes, ClientState] = {}
        self.workers: dict[int, WorkerState] = {}
        self.running: dict[bytes, TaskRecord] = {}
        self.pending: dict[bytes, TaskRecord] = {}  # every task not finished yet, by id
        self.history = node_state.TaskHistory()  # the last tasks that finished, for the state API
        self.children: dict[bytes, list[bytes]] = {}  # task id -> tasks it submitted
        self.run_times = RunTimes()
        self.actors: dict[bytes, ActorState] = {}
        self.actor_names: dict[tuple[str, str], bytes] = {}
        self.namespaces: dict[bytes, str] = {}  # job id -> its namespace
        self.callers: dict[bytes, ClientState] = {}  # task id prefix -> the client that makes such ids
        self.placeable: set[tuple[Any, Any]] = set()  # (shape, strategy) some live node can run
        self.lent: set[WorkerState] = set()  # workers lent to callers (see _lend)
        self.lease_wishes: list[tuple[ClientState, Any]] = []  # (driver, shape) asking for one more lease
        self.ready = ReadyQueue()
        self.stats = {
            "tasks_finished": 0,
            "tasks_retried": 0,
            "tasks_lined_up": 0,
            "workers_started": 0,
            "workers_retired": 0,
            "leases": 0,
            "leases_revoked": 0,
            "objects_freed": 0,
        }
        self._seq = itertools.count()
        self._lease_ids = itertools.count(1)
        self._worker_ids = itertools.count(len(workers) + 1)
        self._dirty: set[ClientState] = set()
        self._schedule_needed = False
        self._surplus: list[WorkerState] = []  # idle workers beyond the warm pool, as of this loop turn
        self._stopping = False
        self._stop_requested = False
        self._stopped = threading.Event()
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wakeup)
        self._gate = gate
        for worker_id, process in workers:
            self._adopt_worker(worker_id, process)
        self._handlers: dict[int, Callable[[ClientState, tuple[Any, ...]], None]] = {
            P.HELLO: self._on_hello,
            P.SUBMIT: self._on_submit,
            P.PUT: self._on_put,
            P.SUBSCRIBE: self._on_subscribe,
            P.ADDREF: self._on_addref,
            P.DECREF: self._on_decref,
            P.DONE: self._on_done,
            P.BLOCKED: self._on_blocked,
            P.UNBLOCKED: self._on_unblocked,
            P.LOG: self._on_log,
            P.CREATE_ACTOR: self._on_create_actor,
            P.ACTOR_CALL: self._on_submit,
            P.ACTOR_READY: self._on_actor_ready,
            P.ACTOR_FAILED: self._on_actor_failed,
            P.ACTOR_EXIT: self._on_actor_exit,
            P.REQUEST: self._on_request,
            P.PROMISE: self._on_promise,
            P.OWNED_RESULT: self._on_owned_result,
            P.LEASE_RETURN: self._on_lease_return,
            P.LEASE_REQUEST: self._on_lease_request,
            **self.members.handlers,
        }
        self._requests: dict[str, Callable[..., Any]] = {
            "create_actor": self._request_create_actor,
            "get_actor": self._request_get_actor,
            "kill": self._request_kill,
            "cancel": self._request_cancel,
            "cancel_children": self._request_cancel_children,
            "function": self._request_function,
            "cancel_lent": self._request_cancel_lent,
            "alloc": lambda _client, size: self.store.allocate(size),
            "info": lambda _client: self.info(),
            "resources": lambda _client: self.resources(),
            "stats": lambda _client: self.statistics(),
            "nodes": lambda _client: [n.describe() for n in self.nodes.values()],
            "state": lambda _client, kind: node_state.snapshot(self, kind),
            "sync": lambda _client: None,  # answered after everything the client sent before it
        }

    def __repr__(self) -> str:
        return (
            f"<Node {self.config.node_id[:8]} workers={len(self.workers)} running={len(self.running)} "
            f"queued={len(self.ready)} objects={len(self.objects)}>"
        )

    # ------------------------------------------------------------ threads

    def start(self) -> None:
        if self.transfer is not None:
            self.transfer.start()
            self.members.broadcast_table()
        self._gate.start(lambda sock: self.call_soon(lambda: self._add_client(sock)))
        threading.Thread(target=self._run, name="actorkit-node-loop", daemon=True).start()

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the event loop thread (from any thread)."""
        self._calls.put(fn)
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is awake anyway

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run ``fn`` on the loop thread and return its result."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)

        self.call_soon(run)
        return fut.result(timeout)

    def _run(self) -> None:
        profile_path = os.environ.get("ACTORKIT_PROFILE_NODE")
        if profile_path:
            # For whoever tunes the node: cProfile statistics of the loop, written at stop.
            import cProfile

            profiler = cProfile.Profile()
            try:
                profiler.runcall(self._loop)
            finally:
                profiler.dump_stats(f"{profile_path}.{os.getpid()}")
        else:
            self._loop()

    def _loop(self) -> None:
        try:
            while not self._stopping:
                try:
                    for key, mask in self._selector.select(self._timeout()):
                        key.data(mask)
                    self.members.check_liveness()
                    if self._schedule_needed:
                        self._schedule()
                    self._retire_idle_workers()
                    self._flush()
                except Exception:
                    # A bug in one handler must not stop the node for every client:
                    # say where, and go on (the selector reports unhandled events again).
                    print("actorkit node: an event handler failed; the node goes on:", file=sys.stderr)
                    traceback.print_exc()
        except BaseException:
            traceback.print_exc()
            self._stopping = True
        finally:
            self._cleanup()

    def _on_wakeup(self, _mask: int) -> None:
        try:
            os.read(self._wake_r, 65536)
        except BlockingIOError:
            pass
        while True:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                return
            fn()

    # ------------------------------------------------------------ clients

    def _add_client(self, sock: socket.socket) -> None:
        client = ClientState(P.NodeConn(sock))
        self._selector.register(client.conn.sock, selectors.EVENT_READ, lambda mask: self._on_client_io(client, mask))

    def _on_client_io(self, client: ClientState, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            try:
                messages = client.conn.feed()
            except P.ChannelClosed:
                self._disconnect(client)
                return
            except Exception as e:  # a frame that does not unpickle to a list of messages
                self._drop_client(client, f"it sent a malformed frame ({type(e).__name__}: {e})")
                return
            handlers = self._handlers
            try:
                for message in messages:
                    handlers[message[0]](client, message)
            except Exception as e:
                # An unknown kind, a message of the wrong shape, or a handler's own
                # failure: it costs this connection, never the node and its other clients.
                if not isinstance(message, tuple) or not message or message[0] not in handlers:
                    self._drop_client(client, f"it sent a message of no known kind: {message!r:.200}")
                else:
                    self._drop_client(client, f"its message {message!r:.200} failed: {type(e).__name__}: {e}", True)
                return
        if mask & selectors.EVENT_WRITE and not client.closed:
            self._dirty.add(client)

    def _drop_client(self, client: ClientState, reason: str, show_traceback: bool = False) -> None:
        """Close a connection whose peer sent what the node cannot handle, saying why."""
        print(f"actorkit node: closing the connection of {client.role} pid {client.pid}: {reason}", file=sys.stderr)
        if show_traceback:
            traceback.print_exc()  # the message looked right: where it failed may be the node's bug
        sys.stderr.flush()
        self._disconnect(client)

    def _send(self, client: ClientState, message: tuple[Any, ...]) -> None:
        if not client.closed:
            client.conn.queue(message)
            self._dirty.add(client)

    send = _send  # for Members

    def request_schedule(self) -> None:
        self._schedule_needed = True

    def _flush(self) -> None:
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        for client in dirty:
            if client.closed:
                continue
            done = client.conn.flush()
            if done == client.writing:  # wanting to write changed
                client.writing = not done
                events = selectors.EVENT_READ | (0 if done else selectors.EVENT_WRITE)
                self._selector.modify(client.conn.sock, events, self._selector.get_key(client.conn.sock).data)

    def _disconnect(self, client: ClientState) -> None:
        if client.closed:
            return
        client.closed = True
        self._selector.unregister(client.conn.sock)
        client.conn.close()
        for object_id in client.held:
            self._decref(object_id)
        client.held.clear()
        if self.callers.get(client.id_prefix) is client:
            del self.callers[client.id_prefix]
        self.lease_wishes = [wish for wish in self.lease_wishes if wish[0] is not client]
        for workers in client.leases.values():
            for worker in workers:
                # It may still run a task the driver sent it, which the node cannot
                # see: it keeps what it holds until it exits, after that task.
                self._retire(worker)
        if client.role == "driver":
            self.drivers.pop(client.job_id, None)
            for actor in list(self.actors.values()):
                if actor.spec.job_id == client.job_id and not actor.spec.detached:
                    self._kill_actor(actor, "its driver exited")
            if client.pid == self.config.owner_pid and self.config.owner_pid:
                # The driver that started this node is gone (even if killed): stop.
                self._stopping = True
        elif client.member is not None:
            self.members.node_died(client.member, "its connection to the head closed")
        elif client.worker is not None and client.worker.process.is_alive():
            # A worker that hangs up is of no use any more; its sentinel reports the exit.
            client.worker.process.kill()

    def _on_hello(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, client.role, client.pid, worker_id, client.job_id, namespace = message[:6]
        if len(message) > 6:
            client.id_prefix = message[6]
            self.callers[client.id_prefix] = client
        if client.role == "driver":
            self.drivers[client.job_id] = client
            self.namespaces[client.job_id] = namespace
        elif client.role == "worker":
            worker = self.workers.get(worker_id)
            if worker is None:  # a worker we already gave up on
                self._send(client, (P.EXIT,))
                return
            worker.client = client
            client.worker = worker
            if isinstance(worker.process, RemoteProcess):
                worker.process.pid = client.pid
            self._schedule_needed = True

    # ------------------------------------------------------------ objects

    def _on_put(self, client: ClientState, message: tuple[Any, ...]) -> None:
        object_id, payload = message[1], from_wire(message[2])
        self._held_by(client, object_id)  # it may have promised it already (a direct call's result)
        self._set_object(object_id, payload)

    def _held_by(self, client: ClientState, object_id: bytes, send_it: bool = False) -> ObjectEntry:
        """The entry of ``object_id`` (made if new), counted once as held by ``client``;
        with ``send_it``, the client gets READY when the value is set."""
        entry = self.objects.get(object_id)
        if entry is None:
            entry = self.objects[object_id] = ObjectEntry()
        if object_id not in client.held:
            entry.refcount += 1
            client.held.add(object_id)
        if send_it:
            if entry.subscribers is None:
                entry.subscribers = [client]
            elif client not in entry.subscribers:
                entry.subscribers.append(client)
        return entry

    def _on_promise(self, client: ClientState, message: tuple[Any, ...]) -> None:
        # Results of the client's direct calls, not back yet: others may wait for them.
        for object_id in message[1]:
            self._held_by(client, object_id)

    def _on_owned_result(self, client: ClientState, message: tuple[Any, ...]) -> None:
        """A direct call's result that the node should own: held for, and sent to, its caller."""
        task_id, payloads = message[1], [from_wire(p) for p in message[2]]
        caller = self.callers.get(task_id[:8])
        for index, payload in enumerate(payloads):
            object_id = return_id(task_id, index)
            if caller is None or caller.closed:
                self.store.release_unowned(payload)
                continue
            self._held_by(caller, object_id, send_it=True)
            self._set_object(object_id, payload)

    def _set_object(self, object_id: bytes, payload: Payload) -> None:
        entry = self.objects.get(object_id)
        if entry is None or entry.payload is not None:
            # Nobody holds a ref any more (or a retried task ran twice): drop it.
            self.store.release_unowned(payload)
            return
        entry.payload = payload
        self.store.add(object_id, payload)
        for contained in payload.contained:
            self._incref(contained)
        if entry.subscribers:
            for subscriber in entry.subscribers:
                self._send(subscriber, (P.READY, object_id, to_wire(payload)))
            entry.subscribers = None
        if entry.dependents:
            for task in entry.dependents:
                task.unresolved -= 1
                if task.unresolved == 0:
                    self._make_ready(task)
            entry.dependents = None

    def _on_subscribe(self, client: ClientState, message: tuple[Any, ...]) -> None:
        for object_id in message[1]:
            entry = self.objects.get(object_id)
            if entry is None:
                lost = ObjectLostError(
                    f"object {object_id.hex()} is gone: it was freed or its owner died"
                )
                self._send(client, (P.READY, object_id, to_wire(self._error_payload(lost))))
            elif entry.payload is not None:
                self._send(client, (P.READY, object_id, to_wire(self._payload_of(object_id, entry))))
            elif entry.subscribers is None:
                entry.subscribers = [client]
            else:
                entry.subscribers.append(client)

    def _on_addref(self, client: ClientState, message: tuple[Any, ...]) -> None:
        held = client.held
        for object_id in message[1]:
            if object_id not in held and object_id in self.objects:
                held.add(object_id)
                self.objects[object_id].refcount += 1

    def _on_decref(self, client: ClientState, message: tuple[Any, ...]) -> None:
        held = client.held
        for object_id in message[1]:
            if object_id in held:
                held.discard(object_id)
                self._decref(object_id)

    def _incref(self, object_id: bytes) -> None:
        entry = self.objects.get(object_id)
        if entry is not None:
            entry.refcount += 1

    def _decref(self, object_id: bytes) -> None:
        pending = [object_id]
        while pending:
            freed_id = pending.pop()
            entry = self.objects.get(freed_id)
            if entry is None:
                continue
            entry.refcount -= 1
            if entry.refcount > 0:
                continue
            del self.objects[freed_id]
            self.stats["objects_freed"] += 1
            if freed_id in self.members.copies:
                self.members.object_freed(freed_id)
            if freed_id in self.actors:
                self._actor_out_of_scope(self.actors[freed_id])
            if entry.payload is not None:
                self.store.remove(freed_id, entry.payload)
                pending.extend(entry.payload.contained)

    def _payload_of(self, object_id: bytes, entry: ObjectEntry) -> Payload:
        """The payload to send out, restoring the object from disk if it was spilled."""
        if self._bring_back(object_id, entry):
            self.store.make_room(protect={object_id})
        return entry.payload  # type: ignore[return-value]

    def _deps_of(self, spec: Any) -> dict[bytes, Payload]:
        """A task's argument payloads, all in memory at once."""
        restored = [self._bring_back(object_id, self.objects[object_id]) for object_id in spec.deps]
        if any(restored):
            self.store.make_room(protect=set(spec.deps))
        return {object_id: self.objects[object_id].payload for object_id in spec.deps}  # type: ignore[misc]

    def _bring_back(self, object_id: bytes, entry: ObjectEntry) -> bool:
        """Restore a spilled object (True) or mark it recently used (False)."""
        assert entry.payload is not None
        if self.store.is_spilled(object_id):
            entry.payload = self.store.restore(object_id, entry.payload)
            return True
        self.store.touch(object_id)
        return False

    def _error_payload(self, error: BaseException) -> Payload:
        from .payload import encode  # pickling machinery, loaded only when needed

        return encode(error, self.config.session, is_error=True)

    # -------------------------------------------------------------- tasks

    def _on_submit(self, client: ClientState, message: tuple[Any, ...]) -> None:
        lost = len(message) > 2 and message[2]
        self._add_task(client, spec_from_wire(message[1]), lost, message[3] if len(message) > 3 else None)

    def _add_task(
        self, client: ClientState, spec: TaskSpec, lost: bool = False, parent: bytes | None = None
    ) -> TaskRecord | None:
        """Admit a task, actor creation or actor call: pin what it uses, wait for its arguments."""
        if spec.function_bytes is not None:
            self.functions.setdefault(spec.function_id, spec.function_bytes)
            spec = spec._replace(function_bytes=None)
        task = TaskRecord(spec, client, next(self._seq))
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
        for object_id in task.return_ids:
            # The submitter gets the results unasked (it is their owner, as in Ray): a
            # get() right after remote() then needs no message of its own. The entry is
            # already there if the client promised it (a direct call resent after its
            # link broke).
            self._held_by(client, object_id, send_it=True)
        for object_id in spec.args.contained:
            self._incref(object_id)
        for object_id in spec.deps:
            if object_id not in self.objects:
                gone = ObjectLostError(f"argument {object_id.hex()} of {spec.name} was freed or lost")
                self._finish(task, [self._error_payload(gone)] * spec.num_returns, pinned_deps=False)
                return None
        for object_id in spec.deps:
            entry = self.objects[object_id]
            entry.refcount += 1
            if entry.payload is None:
                if entry.dependents is None:
                    entry.dependents = [task]
                else:
                    entry.dependents.append(task)
                task.unresolved += 1
        if spec.actor_id is not None and spec.method != "__init__":
            self._enqueue_actor_call(task, lost)
            return task
        if lost:
            # Its lent worker died before answering: a retry, if any is left.
            if task.retries_left <= 0:
                error = WorkerCrashedError(_crash_message(spec, "a worker process lent to its caller", "died"))
                self._finish(task, [self._error_payload(error)] * spec.num_returns)
                return task
            task.retries_left -= 1
            self.stats["tasks_retried"] += 1
        if task.unresolved == 0:
            self._make_ready(task)
        return task

    def _make_ready(self, task: TaskRecord) -> None:
        if task.done:
            return  # cancelled while it waited for its arguments
        if task.spec.actor_id is not None and task.spec.method != "__init__":
            self._pump_actor(self.actors.get(task.spec.actor_id))
            return
        for object_id in task.spec.deps:
            dep = self.objects[object_id].payload
            if dep is not None and dep.is_error:
                # Errors flow through: the task fails with its argument's error.
                # (Error payloads are inline, so sharing one between objects is safe.)
                self._finish(task, [dep] * task.spec.num_returns)
                return
        strategy = task.spec.strategy
        named = affinity(strategy)
        if named is not None and not named[1]:
            target = self.nodes.get(named[0])
            if target is None or not target.alive:
                state = "dead" if target else "unknown"
                self._unschedulable(task, f"its NodeAffinitySchedulingStrategy names node {named[0]}, which is {state}")
                return
        key = (task.shape, strategy)
        missing = None if key in self.placeable else unplaceable(task.demand, strategy, self.nodes.values())
        if missing == {}:
            self.placeable.add(key)  # until the nodes change: it was worked out per task before
        elif missing:
            self._warn(
                task.owner,
                f"Warning: task {task.spec.name} needs {missing}, more than any node has "
                f"({self._total_resources()}); it waits until a node that has them joins.",
            )
        self.ready.push(task)
        self._schedule_needed = True

    def _unschedulable(self, task: TaskRecord, why: str) -> None:
        spec = task.spec
        if spec.method == "__init__":
            actor = self.actors[spec.actor_id]  # type: ignore[index]
            self._finish(task, [])
            self._bury(actor, self._error_payload(ActorUnschedulableError(f"The actor {actor.spec.class_name} cannot be placed: {why}.")))
            return
        error = TaskUnschedulableError(f"task {spec.name} cannot run: {why}")
        self._finish(task, [self._error_payload(error)] * spec.num_returns)

    def _schedule(self) -> None:
        self._schedule_needed = False
        idle: dict[NodeRecord, list[WorkerState]] = {}
        for worker in self.workers.values():
            if self._is_idle(worker):
                idle.setdefault(worker.node, []).append(worker)
        grown: set[NodeRecord] = set()
        starved = False
        nodes = self.nodes.values()
        head = self.head if len(self.nodes) == 1 else None  # alone: no choice to make
        for tasks in self.ready.heads():
            while tasks:
                task = tasks[0]
                if head is not None:
                    node = head if head.ledger.fits(task.demand) else None
                else:
                    submitter = task.owner.worker
                    local = submitter.node if submitter is not None else self.head
                    node = choose_node(task.demand, task.spec.strategy, nodes, local, idle.__contains__)
                worker = _idle_for(task, idle[node]) if node is not None and idle.get(node) else None
                if worker is not None:
                    self.ready.pop_from(tasks)
                    self._start(task, worker)
                    if not idle[node]:  # type: ignore[index]
                        del idle[node]  # type: ignore[arg-type]
                    continue
                if node is not None:
                    # Resources are free but no worker is: start more. Meanwhile
                    # the task waits, so that free CPUs mean parallel tasks.
                    if node not in grown:
                        self._grow_pool(node)
                        grown.add(node)
                    break
                # Resources are all taken: line the task up behind a running one of
                # the same shape, so that its worker starts it the moment the
                # current one ends (Ray reuses a worker lease the same way).
                worker = self._pipeline_target(task)
                if worker is None:
                    starved = True
                    break
                self.ready.pop_from(tasks)
                self._queue_behind(task, worker)
        if starved and self.lent:
            self._revoke_leases()
        elif self.lease_wishes and not self.ready:
            self._grant_wishes(idle.get(self.head, []))

    @staticmethod
    def _is_idle(worker: WorkerState) -> bool:
        return (
            worker.client is not None and worker.task is None and worker.actor is None
            and worker.lessee is None and not worker.retiring
        )

    def _timeout(self) -> float | None:
        """How long the loop may sleep: until an idle worker beyond the warm pool is due
        to exit, or a member node that stays silent is due to be declared dead."""
        deadlines = [w.idle_since + IDLE_WORKER_TIMEOUT_S for w in self._surplus]
        silent = self.members.next_deadline()
        if silent is not None:
            deadlines.append(silent + 0.01)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _surplus_idle_workers(self) -> list[WorkerState]:
        if len(self.workers) <= self._warm_workers:
            return []  # the usual case, checked every loop turn: nothing to count
        surplus = []
        for node in self.nodes.values():
            pool = [w for w in self.workers.values() if w.node is node and w.actor is None and not w.retiring]
            if len(pool) > node.warm_workers:
                idle = sorted((w for w in pool if self._is_idle(w)), key=lambda w: w.idle_since)
                surplus.extend(idle[: len(pool) - node.warm_workers])
        return surplus

    @property
    def _warm_workers(self) -> int:
        return sum(n.warm_workers for n in self.nodes.values() if n.alive)

    def _retire_idle_workers(self) -> None:
        now = time.monotonic()
        surplus = self._surplus_idle_workers()
        for worker in surplus:
            if now - worker.idle_since >= IDLE_WORKER_TIMEOUT_S:
                self._retire(worker)
        # What is left of it holds the next deadline, for _timeout().
        self._surplus = [w for w in surplus if not w.retiring]

    def _retire(self, worker: WorkerState) -> None:
        worker.retiring = True
        self.stats["workers_retired"] += 1
        if worker.client is not None:
            self._send(worker.client, (P.EXIT,))

    def _pipeline_target(self, task: TaskRecord) -> WorkerState | None:
        if task.spec.actor_id is not None or task.spec.max_calls:
            return None  # an actor's creation takes its worker for good: never lined up
        if task.spec.strategy is not None:
            return None  # placed by its strategy, not by whichever worker frees first
        now = time.monotonic()
        for worker in self.workers.values():
            running = worker.task
            if (
                running is not None
                and self.run_times.short_average(running.spec.function_id) is not None
                and now - running.started_at < SHORT_S  # short this time too
                and len(worker.queued) < _PIPELINE_DEPTH
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

    def _queue_behind(self, task: TaskRecord, worker: WorkerState) -> None:
        self.stats["tasks_lined_up"] += 1
        task.worker = worker
        worker.queued.append(task)
        self.running[task.spec.task_id] = task
        self._send_task(task, worker, worker.task.allocation.gpu_ids)  # type: ignore[union-attr]

    def _grow_pool(self, node: NodeRecord) -> None:
        """Start workers on ``node`` for the ready tasks, and the drivers' wishes for
        leases, that its resources allow to run now."""
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

        runnable = 0
        for tasks in self.ready.heads():
            for task in tasks:
                if not fits(task.demand):
                    break
                runnable += 1
                if runnable > starting + 64:
                    break
        if node is self.head:  # leases are lent on the head only (see _grant_wishes)
            runnable += sum(1 for _client, shape in self.lease_wishes if fits(dict(shape)))
        limit = node.warm_workers * 4 + 16
        for _ in range(min(runnable - starting, limit - unblocked)):
            self._spawn_worker(node)

    def _spawn_worker(self, node: NodeRecord) -> None:
        worker_id = next(self._worker_ids)
        if node is self.head:
            self._adopt_worker(worker_id, spawn_worker(self.config, worker_id))
        else:
            self._adopt_worker(worker_id, self.members.spawn(node, worker_id), node)

    def _adopt_worker(self, worker_id: int, process: Any, node: NodeRecord | None = None) -> None:
        worker = self.workers[worker_id] = WorkerState(worker_id, process, node or self.head)
        self.stats["workers_started"] += 1
        if process.sentinel is not None:
            self._selector.register(process.sentinel, selectors.EVENT_READ, lambda _m: self.worker_exited(worker))

    def _start(self, task: TaskRecord, worker: WorkerState) -> None:
        if task.spec.strategy == "SPREAD":
            worker.node.spread += 1
        if not task.spec.resources.get("GPU"):
            worker.ran_cpu_work = True
        task.allocation = worker.node.ledger.acquire(task.demand)
        task.worker = worker
        task.started_at = time.monotonic()
        task.pid = worker.process.pid or 0
        worker.task = task
        self.running[task.spec.task_id] = task
        self._send_task(task, worker, task.allocation.gpu_ids)

    def _send_task(self, task: TaskRecord, worker: WorkerState, gpu_ids: list[int]) -> None:
        spec = task.spec
        function_bytes = None
        if spec.function_id not in worker.loaded:
            function_bytes = self.functions[spec.function_id]
            worker.loaded.add(spec.function_id)
        deps = self._deps_of(spec)
        assert worker.client is not None
        if spec.method == "__init__":
            actor = self.actors[spec.actor_id]  # type: ignore[index]
            actor.worker = worker
            worker.actor = actor
            message = (P.BECOME_ACTOR, actor.spec._replace(function_bytes=None), function_bytes, _wire(deps), gpu_ids)
            self._send(worker.client, message)
            return
        self._send(worker.client, (P.EXECUTE, spec_to_wire(spec), function_bytes, _wire(deps), gpu_ids))

    def _on_done(self, client: ClientState, message: tuple[Any, ...]) -> None:
        task_id, payloads, retryable = message[1], [from_wire(p) for p in message[2]], message[3]
        worker = client.worker
        if worker is not None and worker.actor is not None:
            self._on_actor_call_done(worker.actor, task_id, payloads)
            return
        task = self.running.pop(task_id, None)
        ran_here = worker is not None and task is not None and worker.task is task
        if ran_here:
            worker.blocked = False
            worker.task = None
            now = time.monotonic()
            took = now - task.started_at
            self.run_times.record(task.spec.function_id, took)
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
                    self._retire(worker)  # recycled, for code that leaks memory or GPU state
        if task is None:
            for payload in payloads:
                self.store.release_unowned(payload)
            return
        retry = retryable and task.retries_left and not task.cancelled
        if retry or not ran_here or not self._lend(worker, task):  # type: ignore[arg-type]
            self._release_allocation(task)
        if retry:
            task.retries_left -= 1
            self.stats["tasks_retried"] += 1
            self.ready.push(task, front=True)
            for payload in payloads:
                self.store.release_unowned(payload)
        else:
            self.stats["tasks_finished"] += 1
            self._finish(task, payloads)
        self._schedule_needed = True

    def _release_allocation(self, task: TaskRecord) -> None:
        if task.allocation is not None:
            task.allocation.ledger.release(task.allocation)
            task.allocation = None
        task.worker = None

    def _finish(self, task: TaskRecord, payloads: list[Payload], pinned_deps: bool = True) -> None:
        if task.done:
            for payload in payloads:
                self.store.release_unowned(payload)
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
        if task.cancelled and (not payloads or payloads[0].is_error):
            payloads = [self._cancelled_payload(task)] * spec.num_returns
        for object_id, payload in zip(task.return_ids, payloads):
            self._set_object(object_id, payload)
        if pinned_deps:
            for object_id in spec.deps:
                self._decref(object_id)
        for object_id in spec.args.contained:
            self._decref(object_id)
        self.store.release_unowned(spec.args)  # large arguments had a segment of their own

    def _on_blocked(self, client: ClientState, _message: tuple[Any, ...]) -> None:
        worker = client.worker
        if worker is None:
            return
        # Tasks lined up behind a blocked one might be what it waits for: take
        # them back. The worker runs nothing more until it has read this answer.
        revoked = list(worker.queued)
        worker.queued.clear()
        for task in reversed(revoked):
            task.worker = None
            self.running.pop(task.spec.task_id, None)
            self.ready.push(task, front=True)
        self._send(client, (P.REVOKED, [t.spec.task_id for t in revoked]))
        allocation = worker.holding
        if allocation is not None:
            worker.blocked = True
            allocation.ledger.lend_cpus(allocation)
        self._schedule_needed = True

    def _on_unblocked(self, client: ClientState, _message: tuple[Any, ...]) -> None:
        worker = client.worker
        if worker is None:
            return
        allocation = worker.holding
        if allocation is not None:
            worker.blocked = False
            allocation.ledger.reclaim_cpus(allocation)

    def worker_exited(self, worker: WorkerState) -> None:
        process = worker.process
        if process.sentinel is not None:
            self._selector.unregister(process.sentinel)
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
                self._on_client_io(worker.client, selectors.EVENT_READ)
            self._disconnect(worker.client)
        if worker.lessee is not None:
            self._end_lease(worker)  # its lessee resends what it had sent it (see Client._on_link_lost)
        if worker.actor is not None and not self._stopping:
            self._on_actor_process_exit(worker.actor, worker, _how_it_died(process))
            return
        for queued in reversed(worker.queued):
            # Lined up but never started: back in line, no retry used.
            queued.worker = None
            self.running.pop(queued.spec.task_id, None)
            if not self._stopping:
                self.ready.push(queued, front=True)
        worker.queued.clear()
        task = worker.task
        if task is None or self._stopping:
            self._schedule_needed = True
            return
        self.running.pop(task.spec.task_id, None)
        self._release_allocation(task)
        if task.retries_left and not task.cancelled:
            task.retries_left -= 1
            self.stats["tasks_retried"] += 1
            self.ready.push(task, front=True)
        else:
            how = _how_it_died(process)
            error = WorkerCrashedError(_crash_message(task.spec, f"the worker process (pid {process.pid})", f"died: {how}"))
            self._finish(task, [self._error_payload(error)] * task.spec.num_returns)
        self._schedule_needed = True

    # -------------------------------------------------------------- leases
    #
    # A task through this loop costs two passes through it.  So when a task
    # ends and nothing else waits for resources, its worker stays lent to the
    # driver (with what the task held), and the driver sends its next tasks of
    # that shape straight to the worker, as it does an actor's calls (see
    # direct.py).  Tasks that wait for room on its leases wait in the driver,
    # which asks for one more lease at a time (a wish, granted when no task
    # waits here).  Once tasks wait here for resources, every lessee is asked
    # to give its workers back.

    def _lend(self, worker: WorkerState, task: TaskRecord) -> bool:
        """Lend ``worker``, which just ran ``task``, to the task's driver; False if not now."""
        owner = task.owner
        if (
            self.ready
            # The worker goes to the oldest wish for this shape instead (wishes
            # for others are granted from what is free, if they fit).
            or any(shape == task.shape for _client, shape in self.lease_wishes)
            or worker.task is not None
            or worker.retiring
            or worker.node is not self.head
            or task.allocation is None
            or not self._may_lend_to(owner)
            or owner.leases.get(task.shape)  # more only when it asks (_on_lease_request)
            or not task.spec.may_go_direct()
        ):
            return False
        allocation, task.allocation, task.worker = task.allocation, None, None
        self._lend_to(owner, worker, allocation, task.shape)
        return True

    @staticmethod
    def _may_lend_to(client: ClientState) -> bool:
        # A driver on this machine: one elsewhere could not connect to a worker's unix socket.
        return client.role == "driver" and not client.closed and client.conn.sock.family == socket.AF_UNIX

    def _lend_to(self, owner: ClientState, worker: WorkerState, allocation: Allocation, shape: Any) -> None:
        worker.lessee, worker.lease, worker.lease_shape = owner, allocation, shape
        worker.lease_id = next(self._lease_ids)
        owner.leases.setdefault(shape, set()).add(worker)
        self.lent.add(worker)
        self.stats["leases"] += 1
        address = socket_path(self.config.session_dir, worker.process.pid)
        self._send(owner, (P.LEASE, worker.lease_id, worker.worker_id, address, self.config.session, shape))

    def _on_lease_request(self, client: ClientState, message: tuple[Any, ...]) -> None:
        """A driver has tasks of a shape waiting for its leases: lend it one more once one is free."""
        shape = message[1]
        if self._may_lend_to(client) and (client, shape) not in self.lease_wishes:
            self.lease_wishes.append((client, shape))
            self._schedule_needed = True

    def _grant_wishes(self, idle: list[WorkerState]) -> None:
        """Lend idle workers to drivers that asked, oldest wish first, while resources allow
        (called when no task waits for resources: those come first)."""
        ledger = self.head.ledger
        wishes, self.lease_wishes = self.lease_wishes, []
        for client, shape in wishes:
            if client.closed:
                continue
            demand = dict(shape)
            if idle and ledger.fits(demand):
                self._lend_to(client, idle.pop(), ledger.acquire(demand), shape)
            else:
                self.lease_wishes.append((client, shape))
        if self.lease_wishes and not idle:
            self._grow_pool(self.head)  # for those that fit but found no free worker

    def _revoke_leases(self) -> None:
        for worker in self.lent:
            if not worker.lease_revoked:
                worker.lease_revoked = True
                self.stats["leases_revoked"] += 1
                self._send(worker.lessee, (P.LEASE_REVOKE, worker.lease_id))  # type: ignore[arg-type]

    def _on_lease_return(self, client: ClientState, message: tuple[Any, ...]) -> None:
        worker = self.workers.get(message[1])
        if worker is not None and worker.lessee is client and worker.lease_id == message[2]:
            # A driver gives a lease back when no task of its shape waits for one:
            # its wish for another is stale.
            self.lease_wishes = [w for w in self.lease_wishes if w[0] is not client or w[1] != worker.lease_shape]
            self._end_lease(worker)

    def _end_lease(self, worker: WorkerState) -> None:
        lent = worker.lessee.leases.get(worker.lease_shape)  # type: ignore[union-attr]
        if lent is not None:
            lent.discard(worker)
            if not lent:
                del worker.lessee.leases[worker.lease_shape]  # type: ignore[union-attr]
        self.lent.discard(worker)
        if worker.lease is not None:
            worker.lease.ledger.release(worker.lease)
        worker.lessee = worker.lease = worker.lease_shape = None
        worker.lease_revoked = worker.blocked = False
        worker.idle_since = time.monotonic()
        self._schedule_needed = True

    def _request_function(self, client: ClientState, function_id: bytes) -> bytes:
        """A function for a lent worker, whose caller sent the task without it."""
        if client.worker is not None:
            client.worker.loaded.add(function_id)
        return self.functions[function_id]

    def _request_cancel_lent(self, client: ClientState, worker_id: int, task_id: bytes, force: bool) -> None:
        """Cancel a task sent to a worker lent to ``client`` (with ``force``, its process goes)."""
        worker = self.workers.get(worker_id)
        if worker is None or worker.lessee is not client or worker.client is None:
            return  # dead already: the caller resends or cancels what it had sent it
        # The worker checks that it still runs that task: it may have moved on to the next.
        self._send(worker.client, (P.CANCEL, task_id, force))

    # -------------------------------------------------------------- actors

    def _on_create_actor(self, client: ClientState, message: tuple[Any, ...]) -> None:
        self._create_actor(client, message[1])

    def _create_actor(self, client: ClientState, spec: ActorSpec) -> ActorState:
        if spec.namespace is None:
            spec = spec._replace(namespace=self.namespaces.get(spec.job_id, ""))
        actor = self.actors[spec.actor_id] = ActorState(spec, client)
        if spec.function_bytes is not None:
            self.functions.setdefault(spec.function_id, spec.function_bytes)
            actor.spec = spec._replace(function_bytes=None)
        if spec.name is not None:
            self.actor_names[(spec.namespace, spec.name)] = spec.actor_id
        # The actor's id is counted like an object: handles are its references.
        handle = self.objects[spec.actor_id] = ObjectEntry()
        handle.refcount = 1
        client.held.add(spec.actor_id)
        self._add_task(client, self._creation_spec(actor))
        return actor

    def _creation_spec(self, actor: ActorState) -> TaskSpec:
        spec = actor.spec
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

    def _on_actor_ready(self, client: ClientState, message: tuple[Any, ...]) -> None:
        actor = self.actors[message[1]]
        task = self.running.pop(actor.spec.actor_id, None)
        if actor.worker is not None:
            actor.worker.task = None
        if task is not None:
            # Placement needed free resources; from now on the actor holds only its own.
            if task.allocation is not None and task.allocation.demand == demand_of(actor.spec.resources):
                actor.allocation, task.allocation = task.allocation, None
            else:
                self._release_allocation(task)
                actor.allocation = actor.worker.node.ledger.acquire(demand_of(actor.spec.resources))  # type: ignore[union-attr]
            self._finish(task, [])
        if actor.state == "DEAD":
            return  # killed while starting
        actor.direct_address = message[2] if len(message) > 2 else None
        actor.routed = set()
        actor.state = "ALIVE"
        self._pump_actor(actor)
        self._schedule_needed = True

    def _on_actor_failed(self, client: ClientState, message: tuple[Any, ...]) -> None:
        actor_id, death = message[1], from_wire(message[2])
        actor = self.actors[actor_id]
        task = self.running.pop(actor_id, None)
        if task is not None:
            self._release_allocation(task)
            self._finish(task, [])
        self._bury(actor, death)  # a failing __init__ is not retried, as in Ray

    def _on_actor_exit(self, client: ClientState, message: tuple[Any, ...]) -> None:
        actor = self.actors[message[1]]
        if len(message) > 2:
            # sys.exit() in a method: the process ends like a crash (restarts allowed);
            # its exit, seen next, tells callers why.
            actor.exit_reason = message[2]
            return
        self._bury(actor, self._actor_died(actor, "it called exit_actor()"))

    def _enqueue_actor_call(self, task: TaskRecord, lost: Any = False) -> None:
        actor = self.actors.get(task.spec.actor_id)  # type: ignore[arg-type]
        if actor is None or actor.state == "DEAD":
            death = actor.death if actor is not None else None
            if death is None:
                from .exceptions import ActorDiedError

                death = self._error_payload(ActorDiedError(f"no actor {task.spec.actor_id.hex()} lives on this node"))  # type: ignore[union-attr]
            self._finish(task, [death] * task.spec.num_returns)
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
                error = self._actor_died(actor, f"{died} before this call finished, and max_task_retries allows no retry")
                self._finish(task, [error] * task.spec.num_returns)
                return
            task.retries_left -= 1
        actor.queue.append(task)
        self._pump_actor(actor)

    def _pump_actor(self, actor: ActorState | None) -> None:
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
            for task in _ready_calls(queue):
                self._send_call(actor, task)

    def _send_call(self, actor: ActorState, task: TaskRecord) -> None:
        assert actor.worker is not None and actor.worker.client is not None
        spec = task.spec
        deps = self._deps_of(spec)
        failed = next((p for p in deps.values() if p is not None and p.is_error), None)
        if failed is not None:
            self._finish(task, [failed] * spec.num_returns)
            return
        actor.inflight[spec.task_id] = task
        task.started_at = time.monotonic()
        task.pid = actor.worker.process.pid or 0
        self._send(actor.worker.client, (P.EXECUTE, spec_to_wire(spec), None, _wire(deps), []))
        owner = task.owner
        if actor.direct_address is not None and owner not in actor.routed and not owner.closed:
            # Its later calls may go straight to the process (see direct.py).
            actor.routed.add(owner)
            if owner is not actor.worker.client:
                address = (P.ACTOR_ROUTE, spec.actor_id, actor.direct_address, actor.worker.node.session)
                self._send(owner, address)

    def _on_actor_call_done(self, actor: ActorState, task_id: bytes, payloads: list[Payload]) -> None:
        task = actor.inflight.pop(task_id, None)
        if task is None:
            for payload in payloads:
                self.store.release_unowned(payload)
            return
        self.stats["tasks_finished"] += 1
        self._finish(task, payloads)
        if actor.ending and not actor.inflight and not actor.queue:
            self._kill_actor(actor, "no handle to it is left")

    def _actor_died(self, actor: ActorState, why: str) -> Payload:
        from .exceptions import ActorDiedError

        spec = actor.spec
        return self._error_payload(
            ActorDiedError(f"The actor {spec.class_name} ({spec.actor_id.hex()}) is dead: {why}.")
        )

    def _bury(self, actor: ActorState, death: Payload) -> None:
        """Mark the actor dead for good; every pending and later call gets ``death``."""
        if actor.state == "DEAD":
            return
        actor.state = "DEAD"
        actor.death = death
        if actor.allocation is not None:
            actor.allocation.ledger.release(actor.allocation)
            actor.allocation = None
        spec = actor.spec
        if spec.name is not None and self.actor_names.get((spec.namespace, spec.name)) == spec.actor_id:
            del self.actor_names[(spec.namespace, spec.name)]
        calls = list(actor.inflight.values()) + list(actor.queue)
        actor.inflight.clear()
        actor.queue.clear()
        for task in calls:
            self._finish(task, [death] * task.spec.num_returns)
        self._schedule_needed = True

    def _kill_actor(self, actor: ActorState, why: str) -> None:
        self._bury(actor, self._actor_died(actor, why))
        worker = actor.worker
        if worker is not None and worker.process.is_alive():
            worker.process.kill()

    def _actor_out_of_scope(self, actor: ActorState) -> None:
        if actor.spec.name is not None or actor.spec.detached or actor.state == "DEAD":
            return
        actor.ending = True
        if not actor.inflight and not actor.queue and actor.state == "ALIVE":
            self._kill_actor(actor, "no handle to it is left")

    def _on_actor_process_exit(self, actor: ActorState, worker: WorkerState, how: str) -> None:
        actor.worker = None
        creation = self.running.pop(actor.spec.actor_id, None)
        if creation is not None:
            self._release_allocation(creation)
        if actor.allocation is not None:
            actor.allocation.ledger.release(actor.allocation)
            actor.allocation = None
        self._schedule_needed = True
        if actor.state == "DEAD":
            return
        reason, actor.exit_reason = actor.exit_reason, None
        died = reason or f"its process died ({how})"
        actor.last_exit = (actor.direct_address, died)  # for direct calls it had, resent by their callers
        if actor.restarts_left <= 0 or actor.ending:
            why = reason or f"its process (pid {worker.process.pid}) died unexpectedly: {how}"
            if creation is not None:
                self._finish(creation, [])
            self._bury(actor, self._actor_died(actor, why))
            return
        actor.restarts_left -= 1
        actor.state = "RESTARTING"
        retry = []
        for task in actor.inflight.values():
            if task.retries_left > 0:
                task.retries_left -= 1
                retry.append(task)
            else:
                error = self._actor_died(actor, f"{died} before this call finished, and max_task_retries allows no retry")
                self._finish(task, [error] * task.spec.num_returns)
        actor.inflight.clear()
        actor.queue.extendleft(reversed(retry))
        if creation is None:
            creation = TaskRecord(self._creation_spec(actor), actor.owner, next(self._seq))
        self.ready.push(creation, front=True)

    def _on_request(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, request_id, operation, args = message
        try:
            result = self._requests[operation](client, *args)
        except Exception as e:
            self._send(client, (P.REPLY, request_id, False, e))
        else:
            self._send(client, (P.REPLY, request_id, True, result))

    def _cancelled_payload(self, task: TaskRecord) -> Payload:
        return self._error_payload(cancelled_error(task.spec))

    def _request_cancel_children(self, client: ClientState, task_id: bytes, force: bool) -> None:
        """Cancel, recursively, the tasks ``task_id`` submitted (a caller asks for this
        itself for a task it sent straight to a lent worker: the node never saw it)."""
        for child in list(self.children.get(task_id, ())):
            self._request_cancel(client, child, force, True)

    def _request_cancel(self, client: ClientState, task_id: bytes, force: bool, recursive: bool) -> None:
        task = self.pending.get(task_id)
        if task is None:
            return  # finished already: nothing to do, as in Ray
        if force and task.spec.actor_id is not None:
            raise ValueError("force=True is not supported for actor tasks; use kill() to stop an actor")
        if recursive:
            self._request_cancel_children(client, task_id, force)
        self._cancel(task, force)

    def _cancel(self, task: TaskRecord, force: bool) -> None:
        task.cancelled = True
        spec = task.spec
        actor = self.actors.get(spec.actor_id) if spec.actor_id is not None else None
        if actor is not None:
            if task in actor.queue:
                actor.queue.remove(task)
                self._finish(task, [])
            elif spec.task_id in actor.inflight and actor.worker is not None and actor.worker.client is not None:
                self._send(actor.worker.client, (P.CANCEL, spec.task_id))
            return
        worker = task.worker
        if worker is None:
            # Queued (ready, or waiting for its arguments): it will never run.
            self.ready.remove(task)
            self._finish(task, [])
        elif task in worker.queued:
            # Lined up on a worker but not started: it will skip it.
            worker.queued.remove(task)
            self.running.pop(spec.task_id, None)
            self._send(worker.client, (P.CANCEL, spec.task_id))  # type: ignore[arg-type]
            self._finish(task, [])
        elif force:
            worker.process.kill()  # its exit reports the task as cancelled, not retried
        elif worker.client is not None:
            self._send(worker.client, (P.CANCEL, spec.task_id))

    def _holding(self, client: ClientState, actor: ActorState) -> tuple[bytes, str, dict[str, int]]:
        """Count ``client`` as holding a handle to ``actor``; describe the handle."""
        actor_id = actor.spec.actor_id
        if actor_id not in client.held and actor_id in self.objects:
            client.held.add(actor_id)
            self.objects[actor_id].refcount += 1
        return actor_id, actor.spec.class_name, actor.spec.methods

    def _request_create_actor(self, client: ClientState, spec: ActorSpec) -> tuple[bytes, str, dict[str, int]]:
        if spec.namespace is None:
            spec = spec._replace(namespace=self.namespaces.get(spec.job_id, ""))
        existing = self.actor_names.get((spec.namespace, spec.name))  # type: ignore[arg-type]
        if existing is not None:
            if not spec.get_if_exists:
                raise ValueError(
                    f"The name {spec.name!r} (namespace={spec.namespace!r}) is already taken by "
                    f"another actor. Use a different name, pass get_if_exists=True, or get the "
                    f"existing actor with get_actor({spec.name!r}, namespace={spec.namespace!r})."
                )
            return self._holding(client, self.actors[existing])
        actor = self._create_actor(client, spec)
        return actor.spec.actor_id, spec.class_name, spec.methods

    def _request_get_actor(
        self, client: ClientState, name: str, namespace: str | None, job_id: bytes
    ) -> tuple[bytes, str, dict[str, int]]:
        if namespace is None:
            namespace = self.namespaces.get(job_id, "")
        actor_id = self.actor_names.get((namespace, name))
        if actor_id is None:
            raise ValueError(
                f"Failed to look up actor with name {name!r} in namespace {namespace!r}: no live "
                f"actor has that name there (it may have died, or been created in another namespace)."
            )
        return self._holding(client, self.actors[actor_id])

    def _request_kill(self, client: ClientState, actor_id: bytes, no_restart: bool) -> None:
        actor = self.actors.get(actor_id)
        if actor is None or actor.state == "DEAD":
            return
        if no_restart or actor.restarts_left <= 0:
            self._kill_actor(actor, "it was killed by kill()")
        elif actor.worker is not None:
            actor.worker.process.kill()  # its exit restarts it

    # ---------------------------------------------------------------- logs

    def _on_log(self, client: ClientState, message: tuple[Any, ...]) -> None:
        worker = client.worker
        job_id = None
        if worker is not None:
            if worker.task is not None:
                job_id = worker.task.spec.job_id
            elif worker.lessee is not None:
                job_id = worker.lessee.job_id  # a driver: only drivers get leases
        targets = [self.drivers[job_id]] if job_id in self.drivers else list(self.drivers.values())
        forwarded = (P.PRINT,) + message[1:]
        for driver in targets:
            self._send(driver, forwarded)

    def _warn(self, client: ClientState, text: str) -> None:
        target = client if client.role == "driver" else next(iter(self.drivers.values()), None)
        if target is not None:
            self._send(target, (P.PRINT, "actorkit", os.getpid(), True, [text]))

    # ------------------------------------------------------------- control

    def info(self) -> dict[str, Any]:
        config = self.config
        return {
            "node_id": config.node_id,
            "session": config.session,
            "session_dir": config.session_dir,
            "data_address": config.data_address,
            "tcp_address": config.tcp_address,
            "object_store_memory": config.object_store_memory,
            "pid": os.getpid(),
            "transfer_address": self.head.transfer_address,
        }

    def statistics(self) -> dict[str, Any]:
        return dict(
            self.stats,
            **self.store.stats,
            workers=len(self.workers),
            objects=len(self.objects),
            store_used=self.store.used,
            gate=dict(self._gate.stats),
        )

    def resources(self) -> dict[str, dict[str, float]]:
        """The cluster's resources: every live node's added up."""
        total: dict[str, int] = {}
        available: dict[str, int] = {}
        for node in self.nodes.values():
            if node.alive:
                for name, units in node.ledger.total.items():
                    total[name] = total.get(name, 0) + units
                for name, units in node.ledger.available.items():
                    available[name] = available.get(name, 0) + units
        snapshot = self.head.ledger.snapshot
        return {"total": snapshot(total), "available": snapshot(available)}

    def _total_resources(self) -> dict[str, float]:
        return self.resources()["total"]

    def node_died(self, node: NodeRecord) -> None:
        """A member node is gone: its workers count as crashed, its objects as lost."""
        self.placeable.clear()
        if node.client is not None:
            self._disconnect(node.client)
        for worker in [w for w in self.workers.values() if w.node is node]:
            process = worker.process
            if isinstance(process, RemoteProcess) and not process.exited:
                process.exited = True
                process.death = f"its node {node.node_id[:12]} ({node.hostname}) died: {node.death}"
                self.worker_exited(worker)
        lost = ObjectLostError(
            f"the object was held by node {node.node_id[:12]} ({node.hostname}), which died: {node.death}"
        )
        for entry in self.objects.values():
            payload = entry.payload
            if payload is not None and payload.segment is not None and shm.session_of(payload.segment) == node.session:
                entry.payload = self._error_payload(lost)
                for contained in payload.contained:
                    self._decref(contained)
        self._schedule_needed = True

    def stop(self, requested: bool = False) -> None:
        """Stop the loop, workers and listener; remove the session's files."""
        self._stop_requested = requested
        if not self._stopping:
            self._stopping = True
            self.call_soon(lambda: None)
        self._stopped.wait(30)

    def _cleanup(self) -> None:
        """Stop every worker, then remove every segment and file of the session.

        Each step runs even if an earlier one fails (this also runs after a bug
        has broken the loop): nothing may be left behind.
        """
        workers = list(self.workers.values())
        try:
            # Drivers still sending get an error rather than block on a full socket.
            for driver in list(self.drivers.values()):
                if not driver.closed:
                    driver.closed = True
                    driver.conn.close()
            for worker in workers:
                idle = worker.task is None and worker.actor is None and worker.lessee is None
                if idle and worker.client is not None and not worker.client.closed:
                    self._send(worker.client, (P.EXIT,))
                else:
                    # Booting, running a task, or an actor: stopped at once, as Ray does.
                    worker.process.terminate()
            self.members.stop_all()
            self._flush()
        except Exception:
            traceback.print_exc()
        finally:
            try:
                _join_all([w.process for w in workers if w.process.sentinel is not None], timeout=2.0)
            finally:
                self._gate.close()
                if self.transfer is not None:
                    self.transfer.close()
                try:
                    self.store.clear()
                finally:
                    shm.unlink_session(self.config.session)
                    self._stopped.set()
        if not self._stop_requested:
            # The owning driver vanished without stopping us: end the server process too.
            shutil.rmtree(self.config.session_dir, ignore_errors=True)
            sys.stdout.flush()
            os._exit(0)


def _wire(payloads: dict[bytes, Payload]) -> dict[bytes, tuple[Any, ...]]:
    return {object_id: to_wire(payload) for object_id, payload in payloads.items()}


def _join_all(processes: list[Any], timeout: float) -> None:
    """Wait for all ``processes`` to exit together; kill those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = [p for p in processes if p.exitcode is None]
    while alive:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        multiprocessing.connection.wait([p.sentinel for p in alive], remaining)
        alive = [p for p in alive if p.exitcode is None]
    for process in alive:
        process.kill()
    for process in processes:
        process.join(1)


def _crash_message(spec: TaskSpec, who: str, how: str) -> str:
    return (
        f"{who} running task {spec.name} {how}. The task was tried {spec.max_retries + 1} time(s); "
        f"raise max_retries to retry more, and check the task for crashes (segfaults, out of memory, os._exit)."
    )


def _how_it_died(process: Any) -> str:
    return getattr(process, "death", "") or _describe_exit(process.exitcode)


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "it stopped answering"
    if exitcode < 0:
        import signal

        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"it exited with code {exitcode}"


class NodeControl:
    """The node's control plane, served by its Manager server: stopping it.

    Everything else (information, resources, statistics) is asked on the
    data connection, which remote drivers have too.
    """

    def __init__(self, node: Node) -> None:
        self._node = node

    def stop(self) -> None:
        self._node.stop(requested=True)

    def wait_stopped(self) -> None:
        self._node._stopped.wait()
