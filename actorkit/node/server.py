"""The node facade: builds the components, routes each message kind, answers requests.

Components (each in its own module, sharing records by reference)::

    EventLoop ─ connections, selector, wakeup pipe      loop.py
    ObjectDirectory ─ objects, holders, readiness       objects.py
    TaskTable ─ admitted tasks, outcomes, cancelling    tasks.py
    Scheduler ─ ready queue, placement, lining up       scheduling.py
    WorkerPool ─ worker processes, their work, deaths   workers.py
    LeaseManager ─ workers lent to drivers              leases.py
    ActorDirectory ─ actors, their calls and deaths     actors.py
    PlacementGroupTable ─ bundles reserved together    placement_groups.py
    StreamTable ─ a streaming generator's items         streams.py
    MetricTable ─ application metrics, added up        metrics.py
    Members ─ the cluster's other nodes (head only)     ../members.py

The dispatch table maps each message kind to one bound method of one
component; a component reaches another through the references ``bind``
gave it.  The node itself keeps only what is about clients as a whole
(HELLO, disconnection, logs, requests) and about the node (info, stop).
"""

from __future__ import annotations

import multiprocessing.connection
import os
import shutil
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import node_state, shm
from .. import protocol as P
from ..exceptions import ObjectLostError
from ..members import Members, NodeRecord, RemoteProcess
from ..node_config import NodeConfig
from ..object_store import ObjectStore
from ..object_transfer import TransferServer
from .actors import ActorDirectory
from .leases import LeaseManager
from .loop import EventLoop
from .metrics import MetricTable
from .objects import ObjectDirectory
from .placement_groups import PlacementGroupTable
from .records import ClientState, WorkerState
from .scheduling import Scheduler
from .streams import StreamTable
from .tasks import TaskTable
from .workers import WorkerPool

if TYPE_CHECKING:
    from ..gate import Gate


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
        self.drivers: dict[bytes, ClientState] = {}  # job id -> its driver's connection
        self.namespaces: dict[bytes, str] = {}  # job id -> its namespace
        self.callers: dict[bytes, ClientState] = {}  # task id prefix -> the client that makes such ids
        self._gate = gate
        self._stop_requested = False

        self.loop = EventLoop(self.disconnect)
        self.members = Members(self, self.head)
        self.transfer: TransferServer | None = None
        if config.tcp_address is not None:
            # Part of a cluster: other nodes fetch the objects made here from this server.
            self.transfer = TransferServer(
                config.session,
                config.authkey,
                [(config.tcp_address[0], 0)],
                {"node_id": config.node_id, "head": gate.addresses[-1]},
                lambda object_id: self.loop.call_soon(lambda: self.members.add_copies(self.head, [object_id])),
            )
            self.head.transfer_address = self.transfer.address
        store = ObjectStore(
            config.session,
            config.object_store_memory,
            os.path.join(config.session_dir, "spill"),
            free_remote=self.members.free_segment,
        )
        self.objects = ObjectDirectory(store, config.session, self.loop.send, self.callers)
        self.tasks = TaskTable()
        self.scheduler = Scheduler(self.nodes, self.head, self._warn)
        self.pool = WorkerPool(config, self.nodes, self.head, len(workers) + 1)
        self.leases = LeaseManager(config, self.head)
        self.actors = ActorDirectory(self.namespaces)
        self.metrics = MetricTable()
        self.placement_groups = PlacementGroupTable(self.nodes, self.namespaces)
        self.streams = StreamTable()
        for component in (
            self.tasks, self.scheduler, self.pool, self.leases, self.actors, self.placement_groups, self.streams,
        ):
            component.bind(self)
        self.objects.on_ready = self.tasks.make_ready
        self.objects.on_freed = self._object_freed
        for worker_id, process in workers:
            self.pool.adopt(worker_id, process)

        self.loop.handlers = {
            P.HELLO: self._on_hello,
            P.SUBMIT: self.tasks.on_submit,
            P.ACTOR_CALL: self.tasks.on_submit,
            P.DONE: self.tasks.on_done,
            P.PUT: self.objects.on_put,
            P.SUBSCRIBE: self.objects.on_subscribe,
            P.ADDREF: self.objects.on_addref,
            P.DECREF: self.objects.on_decref,
            P.PROMISE: self.objects.on_promise,
            P.OWNED_RESULT: self.objects.on_owned_result,
            P.BLOCKED: self.pool.on_blocked,
            P.UNBLOCKED: self.pool.on_unblocked,
            P.CREATE_ACTOR: self.actors.on_create_actor,
            P.ACTOR_READY: self.actors.on_actor_ready,
            P.ACTOR_FAILED: self.actors.on_actor_failed,
            P.ACTOR_EXIT: self.actors.on_actor_exit,
            P.LEASE_RETURN: self.leases.on_lease_return,
            P.LEASE_REQUEST: self.leases.on_lease_request,
            P.METRICS: self.metrics.on_metrics,
            P.STREAM_ITEM: self.streams.on_stream_item,
            P.STREAM_END: self.streams.on_stream_end,
            P.LOG: self._on_log,
            P.REQUEST: self._on_request,
            **self.members.handlers,
        }
        self._requests: dict[str, Callable[..., Any]] = {
            "create_actor": self.actors.request_create_actor,
            "get_actor": self.actors.request_get_actor,
            "kill": self.actors.request_kill,
            "cancel": self.tasks.request_cancel,
            "cancel_children": self.tasks.request_cancel_children,
            "function": self.leases.request_function,
            "stream_open": self.streams.request_open,
            "stream_next": self.streams.request_next,
            "create_placement_group": self.placement_groups.request_create,
            "placement_group_ready": self.placement_groups.request_ready,
            "remove_placement_group": self.placement_groups.request_remove,
            "get_placement_group": self.placement_groups.request_get,
            "placement_group_table": self.placement_groups.request_table,
            "cancel_lent": self.leases.request_cancel_lent,
            "alloc": lambda _client, size: store.allocate(size),
            "info": lambda _client: self.info(),
            "resources": lambda _client: self.resources(),
            "stats": lambda _client: self.statistics(),
            "nodes": lambda _client: [n.describe() for n in self.nodes.values()],
            "namespace": lambda _client, job_id: self.namespaces.get(job_id, ""),
            "state": lambda _client, kind: node_state.snapshot(self, kind),
            "sync": lambda _client: None,  # answered after everything the client sent before it
        }

    def __repr__(self) -> str:
        return (
            f"<Node {self.config.node_id[:8]} workers={len(self.pool.workers)} running={len(self.tasks.running)} "
            f"queued={len(self.scheduler.ready)} objects={len(self.objects.entries)}>"
        )

    # ------------------------------------------------------------ threads

    def start(self) -> None:
        if self.transfer is not None:
            self.transfer.start()
            self.members.broadcast_table()
        self._gate.start(lambda sock: self.loop.call_soon(lambda: self.loop.add_client(sock)))
        threading.Thread(target=self._run, name="actorkit-node-loop", daemon=True).start()

    def call_soon(self, fn: Callable[[], None]) -> None:
        self.loop.call_soon(fn)

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        return self.loop.call(fn, timeout)

    def _run(self) -> None:
        profile_path = os.environ.get("ACTORKIT_PROFILE_NODE")
        if not profile_path:
            self.loop.run(self._turn, self._timeout, self._cleanup)
            return
        # For whoever tunes the node: cProfile statistics of the loop, written at stop.
        import cProfile  # lazy: only when profiling

        profiler = cProfile.Profile()
        try:
            profiler.runcall(self.loop.run, self._turn, self._timeout, self._cleanup)
        finally:
            profiler.dump_stats(f"{profile_path}.{os.getpid()}")

    def _turn(self) -> None:
        """After each turn's events: member liveness, scheduling, idle workers."""
        self.members.check_liveness()
        if self.scheduler.needed:
            self.scheduler.schedule()
        self.pool.retire_idle()

    def _timeout(self) -> float | None:
        """How long the loop may sleep: until an idle worker beyond the warm pool is due
        to exit, or a member node that stays silent is due to be declared dead."""
        idle = self.pool.timeout()
        silent = self.members.next_deadline()
        if silent is None:
            return idle
        silent = max(0.0, silent + 0.01 - time.monotonic())
        return silent if idle is None else min(idle, silent)

    # ------------------------------------------------------------ for Members

    def send(self, client: ClientState, message: tuple[Any, ...]) -> None:
        self.loop.send(client, message)

    def request_schedule(self) -> None:
        self.scheduler.needed = True

    @property
    def workers(self) -> dict[int, WorkerState]:
        return self.pool.workers

    def worker_exited(self, worker: WorkerState) -> None:
        self.pool.worker_exited(worker)

    # ------------------------------------------------------------ clients

    def _on_hello(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, client.role, client.pid, worker_id, client.job_id, namespace, client.id_prefix = message
        if client.id_prefix:
            self.callers[client.id_prefix] = client
        if client.role == "driver":
            self.drivers[client.job_id] = client
            self.namespaces[client.job_id] = namespace
        elif client.role == "worker":
            self.pool.connected(client, worker_id)

    def disconnect(self, client: ClientState) -> None:
        """``client``'s connection is gone (closed, broken or dropped): forget what it held."""
        if not self.loop.close_client(client):
            return
        self.objects.let_go(client)
        if self.callers.get(client.id_prefix) is client:
            del self.callers[client.id_prefix]
        self.leases.lessee_gone(client)
        if client.owned_actors and client.role != "driver":
            self.actors.owner_gone(client)
        if client.role == "driver":
            self.drivers.pop(client.job_id, None)
            self.actors.driver_exited(client.job_id)
            self.placement_groups.driver_exited(client.job_id)
            if client.pid == self.config.owner_pid and self.config.owner_pid:
                # The driver that started this node is gone (even if killed): stop.
                self.loop.stopping = True
        elif client.member is not None:
            self.members.node_died(client.member, "its connection to the head closed")
        elif client.worker is not None and client.worker.process.is_alive():
            # A worker that hangs up is of no use any more; its sentinel reports the exit.
            client.worker.process.kill()

    def _object_freed(self, object_id: bytes) -> None:
        if object_id in self.members.copies:
            self.members.object_freed(object_id)
        self.actors.out_of_scope(object_id)
        self.streams.completion_freed(object_id)
        if self.tasks.lineage:
            self.tasks.forget_lineage(object_id)

    def _on_request(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, request_id, operation, args = message
        try:
            result = self._requests[operation](client, *args)
        except Exception as e:
            self.loop.send(client, (P.REPLY, request_id, False, e))
        else:
            self.loop.send(client, (P.REPLY, request_id, True, result))

    def _on_log(self, client: ClientState, message: tuple[Any, ...]) -> None:
        worker = client.worker
        job_id = None
        if worker is not None:
            if worker.task is not None:
                job_id = worker.task.spec.job_id
            elif worker.lessee is not None:
                job_id = worker.lessee.job_id  # a driver: only drivers get leases
        targets = [self.drivers[job_id]] if job_id in self.drivers else list(self.drivers.values())
        _, task_name, pid, is_stderr, lines = message
        forwarded = (P.PRINT, task_name, pid, is_stderr, lines)
        for driver in targets:
            self.loop.send(driver, forwarded)

    def _warn(self, client: ClientState, text: str) -> None:
        target = client if client.role == "driver" else next(iter(self.drivers.values()), None)
        if target is not None:
            self.loop.send(target, (P.PRINT, "actorkit", os.getpid(), True, [text]))

    # ------------------------------------------------------------ control

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
        """Every component's counters, flat (the names are unique), plus the store's and the gate's."""
        merged: dict[str, Any] = {}
        components = (
            self.loop, self.objects, self.tasks, self.scheduler, self.pool, self.leases, self.actors, self.metrics,
            self.placement_groups, self.streams,
        )
        for component in components:
            merged.update(component.statistics()._asdict())
        store = self.objects.store
        return dict(merged, **store.stats, store_used=store.used, gate=dict(self._gate.stats))

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

    def node_died(self, node: NodeRecord) -> None:
        """A member node is gone: its workers count as crashed, its objects as lost."""
        self.scheduler.nodes_changed()
        if node.client is not None:
            self.disconnect(node.client)
        for worker in [w for w in self.pool.workers.values() if w.node is node]:
            process = worker.process
            if isinstance(process, RemoteProcess) and not process.exited:
                process.exited = True
                process.death = f"its node {node.node_id[:12]} ({node.hostname}) died: {node.death}"
                self.pool.worker_exited(worker)
        lost = ObjectLostError(
            f"the object was held by node {node.node_id[:12]} ({node.hostname}), which died: {node.death}"
        )
        self.objects.lose_node(node.session, lost, self.tasks.rebuild)

    def stop(self, requested: bool = False) -> None:
        """Stop the loop, workers and listener; remove the session's files."""
        self._stop_requested = requested
        if not self.loop.stopping:
            self.loop.stopping = True
            self.loop.call_soon(lambda: None)
        self.loop.stopped.wait(30)

    def wait_stopped(self) -> None:
        self.loop.stopped.wait()

    def _cleanup(self) -> None:
        """Stop every worker, then remove every segment and file of the session.

        Each step runs even if an earlier one fails (this also runs after a bug
        has broken the loop): nothing may be left behind.
        """
        workers = list(self.pool.workers.values())
        try:
            # Drivers still sending get an error rather than block on a full socket.
            for driver in list(self.drivers.values()):
                if not driver.closed:
                    driver.closed = True
                    driver.conn.close()
            for worker in workers:
                idle = worker.task is None and worker.actor is None and worker.lessee is None
                if idle and worker.client is not None and not worker.client.closed:
                    self.loop.send(worker.client, (P.EXIT,))
                else:
                    # Booting, running a task, or an actor: stopped at once, as Ray does.
                    worker.process.terminate()
            self.members.stop_all()
            self.loop.flush()
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
                    self.objects.store.clear()
                finally:
                    shm.unlink_session(self.config.session)
                    self.loop.stopped.set()
        if not self._stop_requested:
            # The owning driver vanished without stopping us: end the server process too.
            shutil.rmtree(self.config.session_dir, ignore_errors=True)
            sys.stdout.flush()
            os._exit(0)


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
        self._node.wait_stopped()
