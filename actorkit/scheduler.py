"""Resource accounting and the queue of tasks waiting for resources.

Amounts are kept in fixed point (1/10000 of a unit, as Ray does) so that
fractional demands add up exactly.  GPUs are slots with ids: a whole-GPU
demand takes whole free GPUs, a fractional one shares a GPU with others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from .strategy import affinity

UNIT = 10_000

Demand = dict[str, int]  # resource name -> fixed-point amount


def to_units(amount: float) -> int:
    return round(amount * UNIT)


def from_units(units: int) -> float:
    value = units / UNIT
    return int(value) if value == int(value) else value


def demand_of(resources: dict[str, float]) -> Demand:
    return {name: to_units(amount) for name, amount in resources.items() if amount}


_shapes: dict[tuple[tuple[str, float], ...], tuple[Demand, tuple[tuple[str, int], ...]]] = {}


def shape_of(resources: dict[str, float]) -> tuple[Demand, tuple[tuple[str, int], ...]]:
    """A task's demand in fixed point, and a hashable key for tasks of that shape.

    Most tasks share a few shapes, so both are computed once per shape.
    """
    key = tuple(resources.items())
    shape = _shapes.get(key)
    if shape is None:
        demand = demand_of(resources)
        shape = _shapes[key] = (demand, tuple(sorted(demand.items())))
    return shape


class Allocation:
    """What one task or actor holds: its demand and the GPU slots it got."""

    __slots__ = ("demand", "gpus", "cpus_lent", "ledger")

    def __init__(self, demand: Demand, gpus: list[tuple[int, int]], ledger: ResourceLedger) -> None:
        self.demand = demand
        self.ledger = ledger  # of the node it was taken from: released there
        self.gpus = gpus  # (gpu index, fixed-point share)
        self.cpus_lent = False

    @property
    def gpu_ids(self) -> list[int]:
        physical = self.ledger.gpu_map
        return [physical[index] if physical else index for index, _ in self.gpus]


class LedgerStatistics(NamedTuple):
    """A ledger at one moment (read-only): amounts in units, GPU slots as free shares."""

    total: Mapping[str, float]
    available: Mapping[str, float]
    gpu_free: tuple[float, ...]  # per GPU index, the share still free (1 = the whole GPU)


class ReadyQueueStatistics(NamedTuple):
    tasks: int  # waiting
    shapes: int  # distinct (demand, depth) groups with a task waiting
    deepest: int  # the deepest nesting waiting (0 when none, or none nested)


class ResourceLedger:
    """Totals and free amounts of one node's resources."""

    def __init__(self, totals: dict[str, float]) -> None:
        self.total: Demand = demand_of(totals)
        self.available: Demand = dict(self.total)
        self._gpu_free = [UNIT] * int(totals.get("GPU", 0))
        self.gpu_map: list[int] = []  # for a carved ledger: its GPU slots' ids on the node

    @classmethod
    def carved(cls, reservation: Allocation) -> ResourceLedger:
        """A ledger of what ``reservation`` holds (a placement group's bundle): its
        tasks take from it, and their GPUs keep the node's ids."""
        ledger = cls({})
        ledger.total = dict(reservation.demand)
        ledger.available = dict(reservation.demand)
        ledger._gpu_free = [share for _index, share in reservation.gpus]
        ledger.gpu_map = reservation.gpu_ids
        return ledger

    def __repr__(self) -> str:
        return f"<ResourceLedger available={self.snapshot(self.available)} total={self.snapshot(self.total)}>"

    @staticmethod
    def snapshot(amounts: Demand) -> dict[str, float]:
        return {name: from_units(units) for name, units in amounts.items()}

    def statistics(self) -> LedgerStatistics:
        return LedgerStatistics(
            MappingProxyType(self.snapshot(self.total)),
            MappingProxyType(self.snapshot(self.available)),
            tuple(from_units(f) for f in self._gpu_free),
        )

    def missing(self, demand: Demand) -> dict[str, float]:
        """What ``demand`` asks beyond this node's totals: empty if it can ever run here."""
        short = {}
        for name, units in demand.items():
            if units > self.total.get(name, 0):
                short[name] = from_units(units)
        if demand.get("GPU", 0) > UNIT and demand["GPU"] % UNIT:
            short["GPU"] = from_units(demand["GPU"])  # e.g. 1.5 GPUs cannot be placed
        return short

    def fits(self, demand: Demand) -> bool:
        available = self.available
        for name, units in demand.items():
            if available.get(name, 0) < units:
                return False
        gpus = demand.get("GPU", 0)
        return not gpus or self._pick_gpus(gpus) is not None

    def acquire(self, demand: Demand) -> Allocation:
        gpus: list[tuple[int, int]] = []
        if demand.get("GPU"):
            picked = self._pick_gpus(demand["GPU"])
            assert picked is not None, "acquire() without fits()"
            gpus = picked
            for index, share in gpus:
                self._gpu_free[index] -= share
        for name, units in demand.items():
            self.available[name] = self.available.get(name, 0) - units
        return Allocation(demand, gpus, self)

    def release(self, allocation: Allocation) -> None:
        for name, units in allocation.demand.items():
            if name == "CPU" and allocation.cpus_lent:
                continue
            self.available[name] = self.available.get(name, 0) + units
        for index, share in allocation.gpus:
            self._gpu_free[index] += share
        allocation.gpus = []

    def lend_cpus(self, allocation: Allocation) -> None:
        """A holder blocked in get(): its CPUs go back to the pool meanwhile."""
        if not allocation.cpus_lent and allocation.demand.get("CPU"):
            allocation.cpus_lent = True
            self.available["CPU"] = self.available.get("CPU", 0) + allocation.demand["CPU"]

    def reclaim_cpus(self, allocation: Allocation) -> None:
        # Taken back even if that over-commits: the task must not wait twice.
        if allocation.cpus_lent:
            allocation.cpus_lent = False
            self.available["CPU"] = self.available.get("CPU", 0) - allocation.demand["CPU"]

    def _pick_gpus(self, units: int) -> list[tuple[int, int]] | None:
        free = self._gpu_free
        if units >= UNIT:
            whole = [i for i, f in enumerate(free) if f == UNIT][: units // UNIT]
            return [(i, UNIT) for i in whole] if len(whole) * UNIT == units else None
        # Fractional: the fullest GPU that still has room, to keep whole ones free.
        candidates = [(f, i) for i, f in enumerate(free) if f >= units]
        if not candidates:
            return None
        _, index = min(candidates)
        return [(index, units)]


def choose_node(
    demand: Demand, strategy: Any, nodes: Iterable[Any], local: Any, has_idle_worker: Callable[[Any], bool]
) -> Any | None:
    """The node (a ``members.NodeRecord``) to start a task on now, or None to wait.

    ``strategy`` is a spec's: None (the submitter's node first, then nodes with
    an idle worker, then any with room), "SPREAD" (the node with room that
    has been given the fewest SPREAD tasks) or ("node", node_id, soft).
    """
    nodes = [n for n in nodes if n.alive]
    named = affinity(strategy)
    if named is not None:
        node_id, soft = named
        target = next((n for n in nodes if n.node_id == node_id), None)
        if target is not None and not target.ledger.missing(demand):
            return target if target.ledger.fits(demand) else None
        if not soft:
            return None  # (the node checks for a target that can never come)
        strategy = None
    fitting = [n for n in nodes if n.ledger.fits(demand)]
    if not fitting:
        return None
    if strategy == "SPREAD":
        return min(fitting, key=lambda n: n.spread)
    if local in fitting:
        return local
    with_idle = [n for n in fitting if has_idle_worker(n)]
    return (with_idle or fitting)[0]


def unplaceable(demand: Demand, strategy: Any, nodes: Iterable[Any]) -> dict[str, float]:
    """What no live node could ever give the task (empty if some node can)."""
    alive = [n for n in nodes if n.alive]
    named = affinity(strategy)
    if named is not None and not named[1]:
        alive = [n for n in alive if n.node_id == named[0]]
    shortfalls = [n.ledger.missing(demand) for n in alive]
    if any(not short for short in shortfalls):
        return {}
    return shortfalls[0] if shortfalls else {name: from_units(units) for name, units in demand.items()}


class ReadyQueue:
    """Tasks whose arguments are ready, waiting for resources, in submission order.

    Tasks are grouped by the shape of their demand, so that a task that cannot
    run now (waiting for a GPU, say) does not hold back others that could.
    Nested tasks go first, deepest first: CPUs lent by parents blocked in
    get() then serve the children they wait for, not more parents (which
    would each need a worker of their own).
    """

    def __init__(self) -> None:
        self._by_shape: dict[tuple[tuple[tuple[str, int], ...], int], deque[Any]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<ReadyQueue tasks={s.tasks} shapes={s.shapes} deepest={s.deepest}>"

    def statistics(self) -> ReadyQueueStatistics:
        waiting = [q for q in self._by_shape.values() if q]
        return ReadyQueueStatistics(self._count, len(waiting), max((q[0].depth for q in waiting), default=0))

    def push(self, task: Any, front: bool = False) -> None:
        key = (task.shape, task.depth)
        tasks = self._by_shape.get(key)
        if tasks is None:
            tasks = self._by_shape[key] = deque()
        if front:
            tasks.appendleft(task)
        else:
            tasks.append(task)
        self._count += 1

    def heads(self) -> Iterator[deque[Any]]:
        """The per-shape queues: deepest nesting first, then the earliest submitted head."""
        queues = [q for q in self._by_shape.values() if q]
        queues.sort(key=lambda q: (-q[0].depth, q[0].seq))
        return iter(queues)

    def pop_from(self, tasks: deque[Any]) -> Any:
        self._count -= 1
        return tasks.popleft()

    def remove(self, task: Any) -> bool:
        for tasks in self._by_shape.values():
            try:
                tasks.remove(task)
            except ValueError:
                continue
            self._count -= 1
            return True
        return False
