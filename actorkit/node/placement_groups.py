"""Placement groups: bundles of resources reserved together, for tasks and actors to run in.

A group is created PENDING and placed atomically, all bundles or none, by
its strategy (PACK, SPREAD, STRICT_PACK, STRICT_SPREAD) each time the
scheduler runs, before ready tasks take what is free.  Placing a bundle
takes its resources from its node's ledger and gives the bundle a ledger
of its own (``ResourceLedger.carved``): a task or actor scheduled into the
group (``("pg", group id, bundle index, capture)``) takes from a bundle's
ledger instead of its node's.  A group that no set of nodes could ever hold
stays PENDING, and its creator is warned once.  Removing a group (or the
exit of the driver of a non-detached one) gives the reservations back and
ends the actors and tasks that run in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..members import NodeRecord
from ..payload import Payload, from_wire
from ..scheduler import Allocation, ResourceLedger, demand_of, from_units
from ..strategy import in_group
from .records import ClientState, TaskRecord

if TYPE_CHECKING:
    from .server import Node

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class Bundle:
    __slots__ = ("index", "resources", "demand", "node", "reservation", "ledger")

    def __init__(self, index: int, resources: dict[str, float]) -> None:
        self.index = index
        self.resources = resources
        self.demand = demand_of(resources)
        self.node: NodeRecord | None = None
        self.reservation: Allocation | None = None  # taken from its node's ledger once placed
        self.ledger: ResourceLedger | None = None  # what its tasks take from

    def __repr__(self) -> str:
        where = self.node.node_id[:8] if self.node is not None else "unplaced"
        return f"<Bundle {self.index} {self.resources} {where}>"


class PlacementGroupState:
    __slots__ = ("group_id", "name", "namespace", "strategy", "bundles", "state", "owner", "job_id", "detached",
                 "ready_value", "waiting", "warned")

    def __init__(self, group_id: bytes, name: str, namespace: str, strategy: str, bundles: list[dict[str, float]],
                 owner: ClientState, job_id: bytes, detached: bool, ready_value: Payload) -> None:
        self.group_id = group_id
        self.name = name
        self.namespace = namespace
        self.strategy = strategy
        self.bundles = [Bundle(i, b) for i, b in enumerate(bundles)]
        self.state = "PENDING"  # -> CREATED -> REMOVED
        self.owner = owner
        self.job_id = job_id
        self.detached = detached
        self.ready_value = ready_value  # what get(group.ready()) gives: the group's handle, pickled by its creator
        self.waiting: list[bytes] = []  # ready() objects to set once placed
        self.warned = False

    def __repr__(self) -> str:
        return f"<PlacementGroup {self.group_id.hex()[:12]} {self.strategy} {len(self.bundles)} bundles {self.state}>"


class PlacementGroupStatistics(NamedTuple):
    placement_groups: int
    placement_groups_pending: int
    bundles_placed: int


class PlacementGroupTable:
    """Group id -> ``PlacementGroupState``, with the names of named groups."""

    def __init__(self, nodes: dict[str, NodeRecord], namespaces: dict[bytes, str]) -> None:
        self.by_id: dict[bytes, PlacementGroupState] = {}
        self.by_name: dict[tuple[str, str], bytes] = {}
        self._nodes = nodes
        self._namespaces = namespaces
        self._pending: list[PlacementGroupState] = []

    def bind(self, node: Node) -> None:
        self.objects = node.objects
        self.tasks = node.tasks
        self.actors = node.actors
        self.scheduler = node.scheduler
        self.pool = node.pool
        self._warn = node._warn

    def __repr__(self) -> str:
        return f"<PlacementGroupTable groups={len(self.by_id)} pending={len(self._pending)}>"

    def statistics(self) -> PlacementGroupStatistics:
        placed = sum(1 for g in self.by_id.values() for b in g.bundles if b.ledger is not None)
        return PlacementGroupStatistics(len(self.by_id), len(self._pending), placed)

    # ------------------------------------------------------------ requests

    def request_create(self, client: ClientState, group_id: bytes, name: str, bundles: list[dict[str, float]],
                       strategy: str, detached: bool, ready_value: tuple[Any, ...]) -> None:
        namespace = self._namespaces.get(client.job_id, "")
        if name and (namespace, name) in self.by_name:
            raise ValueError(
                f"a placement group named {name!r} already exists in namespace {namespace!r}: "
                f"give this one another name, or get it with get_placement_group({name!r})"
            )
        group = PlacementGroupState(group_id, name, namespace, strategy, bundles, client, client.job_id,
                                    detached, from_wire(ready_value))
        self.by_id[group_id] = group
        if name:
            self.by_name[(namespace, name)] = group_id
        self._pending.append(group)
        self.scheduler.needed = True

    def request_ready(self, client: ClientState, group_id: bytes, object_id: bytes) -> None:
        """``object_id`` (made by the caller) is set to the group's handle once it is placed."""
        group = self._group(group_id)
        self.objects.held_by(client, object_id, send_it=True)
        if group.state == "CREATED":
            self.objects.set(object_id, group.ready_value)
        else:
            group.waiting.append(object_id)

    def request_remove(self, client: ClientState, group_id: bytes) -> None:
        group = self.by_id.get(group_id)
        if group is not None and group.state != "REMOVED":
            self.remove(group, "it was removed by remove_placement_group()")

    def request_get(self, client: ClientState, name: str, namespace: str | None) -> tuple[bytes, list[dict[str, float]]]:
        namespace = self._namespaces.get(client.job_id, "") if namespace is None else namespace
        group_id = self.by_name.get((namespace, name))
        if group_id is None:
            raise ValueError(f"Failed to look up placement group with name {name!r} in namespace {namespace!r}")
        group = self.by_id[group_id]
        return group.group_id, [b.resources for b in group.bundles]

    def request_table(self, client: ClientState, group_id: bytes | None) -> dict[str, Any]:
        if group_id is not None:
            return self._describe(self._group(group_id))
        return {g.group_id.hex(): self._describe(g) for g in self.by_id.values()}

    def _group(self, group_id: bytes) -> PlacementGroupState:
        group = self.by_id.get(group_id)
        if group is None:
            raise ValueError(f"no placement group {group_id.hex()} is known to this cluster")
        return group

    @staticmethod
    def _describe(group: PlacementGroupState) -> dict[str, Any]:
        return {
            "placement_group_id": group.group_id.hex(),
            "name": group.name,
            "bundles": {b.index: dict(b.resources) for b in group.bundles},
            "bundles_to_node_id": {b.index: b.node.node_id for b in group.bundles if b.node is not None},
            "strategy": group.strategy,
            "state": group.state,
            "is_detached": group.detached,
        }

    # ------------------------------------------------------------ placement

    def place_pending(self) -> None:
        """Place the pending groups that fit now, oldest first (called as the scheduler runs)."""
        if not self._pending:
            return
        still = []
        for group in self._pending:
            if group.state != "PENDING":
                continue
            if self._place(group):
                group.state = "CREATED"
                for object_id in group.waiting:
                    self.objects.set(object_id, group.ready_value)
                group.waiting.clear()
            else:
                still.append(group)
                if not group.warned:
                    why = self._infeasible(group)
                    if why:
                        group.warned = True
                        self._warn(group.owner, f"Warning: placement group {group.name or group.group_id.hex()[:12]} "
                                                f"({group.strategy}, {len(group.bundles)} bundles) cannot be placed: "
                                                f"{why}. It stays pending until nodes that can hold it join.")
        self._pending = still

    def _place(self, group: PlacementGroupState) -> bool:
        """Reserve every bundle by the group's strategy, or none (False)."""
        nodes = [n for n in self._nodes.values() if n.alive]
        if group.strategy in ("PACK", "STRICT_PACK"):
            if any(self._reserve(group, _only(node)) for node in nodes):
                return True  # all on one node
            if group.strategy == "STRICT_PACK":
                return False
        spread = group.strategy in ("SPREAD", "STRICT_SPREAD")

        def candidates(used: dict[NodeRecord, int]) -> list[NodeRecord]:
            allowed = [n for n in nodes if n not in used] if group.strategy == "STRICT_SPREAD" else nodes
            # SPREAD: the nodes with the fewest of this group's bundles first; PACK: the most.
            return sorted(allowed, key=lambda n: used.get(n, 0) if spread else -used.get(n, 0))

        return self._reserve(group, candidates)

    @staticmethod
    def _reserve(group: PlacementGroupState, candidates: Callable[[dict[NodeRecord, int]], list[NodeRecord]]) -> bool:
        """Take each bundle from the first of its candidate nodes with room for it (given the
        group's bundles taken so far, by node), and give it a ledger; or take nothing (False)."""
        taken: list[tuple[NodeRecord, Allocation]] = []
        used: dict[NodeRecord, int] = {}
        for bundle in group.bundles:
            node = next((n for n in candidates(used) if n.ledger.fits(bundle.demand)), None)
            if node is None:
                for _node, allocation in taken:
                    allocation.ledger.release(allocation)
                return False
            taken.append((node, node.ledger.acquire(bundle.demand)))
            used[node] = used.get(node, 0) + 1
        for bundle, (node, allocation) in zip(group.bundles, taken):
            bundle.node, bundle.reservation = node, allocation
            bundle.ledger = ResourceLedger.carved(allocation)
        return True

    def _infeasible(self, group: PlacementGroupState) -> str:
        """Why no set of live nodes could ever hold the group, or "" if some could once free."""
        nodes = [n for n in self._nodes.values() if n.alive]
        for bundle in group.bundles:
            if all(n.ledger.missing(bundle.demand) for n in nodes):
                return f"bundle {bundle.index} {bundle.resources} is more than any node has"
        if group.strategy == "STRICT_SPREAD" and len(group.bundles) > len(nodes):
            return f"STRICT_SPREAD needs {len(group.bundles)} nodes and the cluster has {len(nodes)}"
        if group.strategy == "STRICT_PACK":
            total: dict[str, int] = {}
            for bundle in group.bundles:
                for name, units in bundle.demand.items():
                    total[name] = total.get(name, 0) + units
            if all(n.ledger.missing(total) for n in nodes):
                shown = {name: from_units(units) for name, units in total.items()}
                return f"STRICT_PACK needs {shown} on one node, more than any node has"
        return ""

    def ledger_for(self, task: TaskRecord) -> tuple[NodeRecord, ResourceLedger] | str | None:
        """Where a task of the group may take its resources now: (node, bundle ledger);
        None to wait (the group is pending or its bundles are busy); or why it never can."""
        group_id, index, _capture = in_group(task.spec.strategy)  # type: ignore[misc]
        group = self.by_id.get(group_id)
        if group is None or group.state == "REMOVED":
            return f"its placement group {group_id.hex()[:12]} was removed" if group else "its placement group is unknown"
        if not 0 <= index < len(group.bundles) and index != -1:
            return f"bundle index {index} is out of range: the placement group has {len(group.bundles)} bundles"
        bundles = group.bundles if index == -1 else [group.bundles[index]]
        if all(any(u > b.demand.get(n, 0) for n, u in task.demand.items()) for b in bundles):
            which = "any bundle" if index == -1 else f"bundle {index} ({group.bundles[index].resources})"
            shown = {n: from_units(u) for n, u in task.demand.items()}
            return f"it needs {shown}, more than {which} of its placement group reserves"
        if group.state != "CREATED":
            return None
        for bundle in bundles:
            if bundle.ledger is not None and bundle.ledger.fits(task.demand):
                return bundle.node, bundle.ledger  # type: ignore[return-value]
        return None

    # ------------------------------------------------------------ removal

    def remove(self, group: PlacementGroupState, why: str) -> None:
        group.state = "REMOVED"
        if group.name and self.by_name.get((group.namespace, group.name)) == group.group_id:
            del self.by_name[(group.namespace, group.name)]
        for bundle in group.bundles:
            if bundle.reservation is not None:
                bundle.reservation.ledger.release(bundle.reservation)
                bundle.reservation = None
        for actor in list(self.actors.by_id.values()):
            if _runs_in(group, actor.spec.strategy) and actor.state != "DEAD":
                self.actors.kill(actor, f"its placement group was removed ({why})")
        for worker in list(self.pool.workers.values()):
            task = worker.task
            if task is not None and worker.actor is None and _runs_in(group, task.spec.strategy):
                task.retries_left = 0
                worker.process.kill()  # as Ray does: the tasks using the reservation end with it
        self.scheduler.needed = True  # what waited for it fails now; what it held is free

    def driver_exited(self, job_id: bytes) -> None:
        for group in list(self.by_id.values()):
            if group.job_id == job_id and not group.detached and group.state != "REMOVED":
                self.remove(group, "its driver exited")


def _runs_in(group: PlacementGroupState, strategy: Any) -> bool:
    placed = in_group(strategy)
    return placed is not None and placed[0] == group.group_id


def _only(node: NodeRecord) -> Callable[[dict[NodeRecord, int]], list[NodeRecord]]:
    return lambda _used: [node]
