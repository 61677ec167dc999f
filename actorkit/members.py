"""The head's view of the cluster: its nodes, their liveness, their workers and copies.

A member node (``actorkit start --address``) connects to the head's data
listener like a client, with role ``"node"``, and sends ``JOIN``.  From then
on the head schedules onto the member's resources exactly as onto its own:
it asks the member to ``SPAWN`` workers, which connect to the head directly
and are ordinary workers to it except that their process lives elsewhere
(``RemoteProcess``).  The member reports their exits (``WORKER_EXIT``), so a
remote worker's death takes the same path (retries, actor restarts) as a
local one's.

Liveness: heartbeats both ways every ``HEARTBEAT_S``; a member silent for
``DEAD_AFTER_S`` (or whose connection closes) is dead.  Its workers are
treated as crashed, its objects as lost, and its copies forgotten.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, NamedTuple

from . import protocol as P
from . import shm
from .scheduler import UNIT, ResourceLedger

if TYPE_CHECKING:
    from .node import ClientState, Node

HEARTBEAT_S = 0.5
DEAD_AFTER_S = 2.0  # a dead node is noticed within this plus one loop turn: under 3 s


class MembersStatistics(NamedTuple):
    nodes: int  # the head's own included
    alive: int
    copies: int  # objects with a copy on some other node
    spread: int  # SPREAD tasks and actors started, over all nodes


class NodeRecord:
    """One node of the cluster (the head's own included)."""

    __slots__ = (
        "node_id", "session", "hostname", "address", "ledger", "transfer_address", "client", "alive",
        "last_seen", "spread", "pid", "death",
    )

    def __init__(self, info: dict[str, Any], client: ClientState | None) -> None:
        self.node_id: str = info["node_id"]
        self.session: str = info["session"]
        self.hostname: str = info.get("hostname", "")
        self.address: str = info.get("address", "")
        self.ledger = ResourceLedger(info["resources"])
        self.transfer_address: Any = info.get("transfer_address")
        self.client = client  # None for the head itself
        self.pid: int = info.get("pid", 0)
        self.alive = True
        self.last_seen = time.monotonic()
        self.spread = 0  # SPREAD tasks and actors started here: they take turns over the nodes
        self.death = ""

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"dead ({self.death})"
        role = "head" if self.client is None else f"member pid={self.pid}"
        return f"<NodeRecord {self.node_id[:8]} {role} {self.hostname} {state} {self.ledger!r}>"

    @property
    def warm_workers(self) -> int:
        """Idle workers kept on this node: one per CPU (at least one)."""
        return max(self.ledger.total.get("CPU", 0) // UNIT, 1)

    def describe(self) -> dict[str, Any]:
        """As ``actorkit.nodes()`` shows it (Ray's field names)."""
        return {
            "NodeID": self.node_id,
            "Alive": self.alive,
            "alive": self.alive,
            "NodeManagerAddress": self.address,
            "NodeManagerHostname": self.hostname,
            "Resources": self.ledger.snapshot(self.ledger.total) if self.alive else {},
            "Available": self.ledger.snapshot(self.ledger.available) if self.alive else {},
            "IsHead": self.client is None,
            "DeathReason": self.death,
        }


class RemoteProcess:
    """A worker process on a member node, with the parts of ``Process`` the node uses."""

    sentinel = None  # its exit is reported by its member (WORKER_EXIT), not seen directly

    def __init__(self, members: Members, node: NodeRecord, worker_id: int) -> None:
        self._members = members
        self.node = node
        self.worker_id = worker_id
        self.pid = 0  # known once the worker says hello
        self.exitcode: int | None = None
        self.exited = False
        self.death = ""  # why, when the node itself died

    def is_alive(self) -> bool:
        return not self.exited

    def kill(self) -> None:
        if not self.exited:
            self._members.send(self.node, (P.KILL_WORKER, self.worker_id))

    terminate = kill

    def join(self, _timeout: float | None = None) -> None:
        pass  # its member reaps it


class Members:
    """The member nodes of the cluster, as the head's event loop keeps them."""

    def __init__(self, node: Node, head: NodeRecord) -> None:
        self._node = node
        self.head = head
        self.by_session: dict[str, NodeRecord] = {head.session: head}
        self.copies: dict[bytes, set[str]] = {}  # object id -> sessions holding a copy
        self.handlers = {
            P.JOIN: self._on_join,
            P.HEARTBEAT: self._on_heartbeat,
            P.WORKER_EXIT: self._on_worker_exit,
            P.COPIED: self._on_copied,
        }

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<Members nodes={s.nodes} alive={s.alive} copies={s.copies} spread={s.spread}>"

    def statistics(self) -> MembersStatistics:
        nodes = list(self.by_session.values())
        return MembersStatistics(
            len(nodes), sum(1 for n in nodes if n.alive), len(self.copies), sum(n.spread for n in nodes)
        )

    def send(self, node: NodeRecord, message: tuple[Any, ...]) -> None:
        if node.client is not None and node.alive:
            self._node.send(node.client, message)

    def spawn(self, node: NodeRecord, worker_id: int) -> RemoteProcess:
        self.send(node, (P.SPAWN, worker_id))
        return RemoteProcess(self, node, worker_id)

    # ----------------------------------------------------------- messages

    def _on_join(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, info = message
        record = NodeRecord(info, client)
        client.member = record
        self._node.nodes[record.node_id] = record
        self._node.scheduler.nodes_changed()
        self.by_session[record.session] = record
        self.broadcast_table()
        self._node.request_schedule()

    def _on_heartbeat(self, client: ClientState, _message: tuple[Any, ...]) -> None:
        if client.member is not None:
            client.member.last_seen = time.monotonic()
            self._node.send(client, (P.HEARTBEAT,))

    def _on_worker_exit(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, worker_id, exitcode = message
        worker = self._node.workers.get(worker_id)
        if worker is not None and isinstance(worker.process, RemoteProcess) and not worker.process.exited:
            worker.process.exitcode = exitcode
            worker.process.exited = True
            self._node.worker_exited(worker)

    def _on_copied(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, object_ids = message
        if client.member is not None:
            self.add_copies(client.member, object_ids)

    def add_copies(self, node: NodeRecord, object_ids: list[bytes]) -> None:
        freed = []
        for object_id in object_ids:
            if object_id in self._node.objects:
                self.copies.setdefault(object_id, set()).add(node.session)
            else:
                freed.append(object_id)  # freed while it was being copied
        if freed:
            self._drop_copies(node, freed)

    # ------------------------------------------------------------- objects

    def object_freed(self, object_id: bytes) -> None:
        """Remove every copy of an object the head just freed."""
        sessions = self.copies.pop(object_id, None)
        for session in sessions or ():
            node = self.by_session.get(session)
            if node is not None:
                self._drop_copies(node, [object_id])

    def _drop_copies(self, node: NodeRecord, object_ids: list[bytes]) -> None:
        if node.client is None:
            self._node.transfer.drop(object_ids)  # type: ignore[union-attr]
        else:
            self.send(node, (P.FREE_COPY, object_ids))

    def free_segment(self, segment: str) -> None:
        """An object made on a member was freed: its member removes the segment."""
        node = self.by_session.get(shm.session_of(segment))
        if node is not None and node.client is not None:
            self.send(node, (P.FREE, [segment]))

    def holder_alive(self, segment: str) -> bool:
        node = self.by_session.get(shm.session_of(segment))
        return node is not None and node.alive

    # ------------------------------------------------------------ liveness

    def next_deadline(self) -> float | None:
        """When the next member falls silent for too long, if none is heard before."""
        seen = [n.last_seen for n in self.by_session.values() if n.client is not None and n.alive]
        return min(seen) + DEAD_AFTER_S if seen else None

    def check_liveness(self) -> None:
        now = time.monotonic()
        for node in list(self.by_session.values()):
            if node.client is not None and node.alive and now - node.last_seen > DEAD_AFTER_S:
                self.node_died(node, f"no heartbeat for {DEAD_AFTER_S:g} s")

    def node_died(self, node: NodeRecord, why: str) -> None:
        if not node.alive:
            return
        node.alive = False
        node.death = why
        self._node.node_died(node)
        for sessions in self.copies.values():
            sessions.discard(node.session)
        self.broadcast_table()

    def broadcast_table(self) -> None:
        table = {n.session: n.transfer_address for n in self.by_session.values() if n.alive}
        if self._node.transfer is not None:
            self._node.transfer.peers = table
        for node in self.by_session.values():
            self.send(node, (P.NODES, table))

    def stop_all(self) -> None:
        for node in self.by_session.values():
            self.send(node, (P.EXIT,))
