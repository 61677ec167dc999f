"""Workers lent to drivers, which then send them tasks directly.

A task through the node's loop costs two passes through it.  So when a task
ends and nothing else waits for resources, its worker stays lent to the
driver (with what the task held), and the driver sends its next tasks of
that shape straight to the worker, as it does an actor's calls (see
``direct.py``).  Tasks that wait for room on its leases wait in the driver,
which asks for one more lease at a time (a wish, granted when no task
waits here).  Once tasks wait here for resources, every lessee is asked to
give its workers back (LEASE_REVOKE), and does once their tasks are answered.
"""

from __future__ import annotations

import itertools
import socket
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import protocol as P
from ..direct import socket_path
from ..members import NodeRecord
from ..node_config import NodeConfig
from ..scheduler import Allocation
from .records import ClientState, TaskRecord, WorkerState

if TYPE_CHECKING:
    from .server import Node


class LeaseStatistics(NamedTuple):
    lent: int
    wishes: int
    leases: int
    leases_revoked: int


class LeaseManager:
    """The workers lent out, and the drivers' wishes for more."""

    def __init__(self, config: NodeConfig, head: NodeRecord) -> None:
        self.lent: set[WorkerState] = set()
        self.wishes: list[tuple[ClientState, Any]] = []  # (driver, shape) asking for one more lease
        self._config = config
        self._head = head
        self._ids = itertools.count(1)
        self._leases = 0
        self._revoked = 0

    def bind(self, node: Node) -> None:
        self.send = node.loop.send
        self.scheduler = node.scheduler
        self.pool = node.pool

    def __repr__(self) -> str:
        return f"<LeaseManager lent={len(self.lent)} wishes={len(self.wishes)} leases={self._leases}>"

    def statistics(self) -> LeaseStatistics:
        return LeaseStatistics(len(self.lent), len(self.wishes), self._leases, self._revoked)

    def lend(self, worker: WorkerState, task: TaskRecord) -> bool:
        """Lend ``worker``, which just ran ``task``, to the task's driver; False if not now."""
        owner = task.owner
        if (
            self.scheduler.ready
            # The worker goes to the oldest wish for this shape instead (wishes
            # for others are granted from what is free, if they fit).
            or any(shape == task.shape for _client, shape in self.wishes)
            or worker.task is not None
            or worker.retiring
            or worker.node is not self._head
            or task.allocation is None
            or not may_lend_to(owner)
            or owner.leases.get(task.shape)  # more only when it asks (on_lease_request)
            or not task.spec.may_go_direct()
        ):
            return False
        allocation, task.allocation, task.worker = task.allocation, None, None
        self._lend_to(owner, worker, allocation, task.shape)
        return True

    def _lend_to(self, owner: ClientState, worker: WorkerState, allocation: Allocation, shape: Any) -> None:
        worker.lessee, worker.lease, worker.lease_shape = owner, allocation, shape
        worker.lease_id = next(self._ids)
        owner.leases.setdefault(shape, set()).add(worker)
        self.lent.add(worker)
        self._leases += 1
        address = socket_path(self._config.session_dir, worker.process.pid)
        self.send(owner, (P.LEASE, worker.lease_id, worker.worker_id, address, self._config.session, shape))

    def on_lease_request(self, client: ClientState, message: tuple[Any, ...]) -> None:
        """A driver has tasks of a shape waiting for its leases: lend it one more once one is free."""
        _, shape = message
        if may_lend_to(client) and (client, shape) not in self.wishes:
            self.wishes.append((client, shape))
            self.scheduler.needed = True

    def grant_wishes(self, idle: list[WorkerState]) -> None:
        """Lend idle workers to drivers that asked, oldest wish first, while resources allow
        (called when no task waits for resources: those come first)."""
        ledger = self._head.ledger
        wishes, self.wishes = self.wishes, []
        for client, shape in wishes:
            if client.closed:
                continue
            demand = dict(shape)
            if idle and ledger.fits(demand):
                self._lend_to(client, idle.pop(), ledger.acquire(demand), shape)
            else:
                self.wishes.append((client, shape))
        if self.wishes and not idle:
            self.pool.grow(self._head)  # for those that fit but found no free worker

    def revoke_all(self) -> None:
        for worker in self.lent:
            if not worker.lease_revoked:
                worker.lease_revoked = True
                self._revoked += 1
                self.send(worker.lessee, (P.LEASE_REVOKE, worker.lease_id))  # type: ignore[arg-type]

    def on_lease_return(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, worker_id, lease_id = message
        worker = self.pool.workers.get(worker_id)
        if worker is not None and worker.lessee is client and worker.lease_id == lease_id:
            # A driver gives a lease back when no task of its shape waits for one:
            # its wish for another is stale.
            self.wishes = [w for w in self.wishes if w[0] is not client or w[1] != worker.lease_shape]
            self.end(worker)

    def end(self, worker: WorkerState) -> None:
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
        self.scheduler.needed = True

    def lessee_gone(self, client: ClientState) -> None:
        """A driver disconnected: its wishes lapse, the workers lent to it retire."""
        self.wishes = [wish for wish in self.wishes if wish[0] is not client]
        for workers in client.leases.values():
            for worker in workers:
                # It may still run a task the driver sent it, which the node cannot
                # see: it keeps what it holds until it exits, after that task.
                self.pool.retire(worker)

    def request_function(self, client: ClientState, function_id: bytes) -> bytes:
        """A function for a lent worker, whose caller sent the task without it."""
        if client.worker is not None:
            client.worker.loaded.add(function_id)
        return self.pool.tasks.functions[function_id]

    def request_cancel_lent(self, client: ClientState, worker_id: int, task_id: bytes, force: bool) -> None:
        """Cancel a task sent to a worker lent to ``client`` (with ``force``, its process goes)."""
        worker = self.pool.workers.get(worker_id)
        if worker is None or worker.lessee is not client or worker.client is None:
            return  # dead already: the caller resends or cancels what it had sent it
        # The worker checks that it still runs that task: it may have moved on to the next.
        self.pool.cancel_on(worker, task_id, force)


def may_lend_to(client: ClientState) -> bool:
    # A driver on this machine: one elsewhere could not connect to a worker's unix socket.
    return client.role == "driver" and not client.closed and client.conn.sock.family == socket.AF_UNIX
