"""Where a task or actor may run, beyond its resources (Ray's ``ray.util.scheduling_strategies``).

``scheduling_strategy`` accepts ``"DEFAULT"`` (the submitting node first,
then any node with room), ``"SPREAD"`` (the node with the fewest tasks
placed so far among those with room), or a ``NodeAffinitySchedulingStrategy``
naming a node by its id (from ``actorkit.nodes()`` or
``get_runtime_context().get_node_id()``).
"""

from __future__ import annotations

from typing import Any


class NodeAffinitySchedulingStrategy:
    """Run on the node ``node_id``.

    With ``soft=False`` the task waits for that node's resources, and fails
    if the node is dead or unknown; with ``soft=True`` it runs elsewhere when
    the node is dead, unknown or cannot ever fit it.
    """

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False, _fail_on_unavailable: bool = False) -> None:
        if not isinstance(node_id, str) or not node_id:
            raise TypeError(f"NodeAffinitySchedulingStrategy: node_id must be a node id (a hex str), not {node_id!r}")
        self.node_id = node_id
        self.soft = bool(soft)

    def __repr__(self) -> str:
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, NodeAffinitySchedulingStrategy)
            and (other.node_id, other.soft) == (self.node_id, self.soft)
        )

    def __hash__(self) -> int:
        return hash((self.node_id, self.soft))


class PlacementGroupSchedulingStrategy:
    """Run in a placement group's bundle (``placement_group_bundle_index``, or -1 for any).

    With ``placement_group_capture_child_tasks``, the tasks and actors it creates
    that name no strategy of their own run in the group too.
    ``placement_group=None`` runs outside any group (even inside a capturing one).
    """

    def __init__(
        self,
        placement_group: Any,
        placement_group_bundle_index: int = -1,
        placement_group_capture_child_tasks: bool | None = None,
    ) -> None:
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def __repr__(self) -> str:
        return (
            f"PlacementGroupSchedulingStrategy({self.placement_group!r}, "
            f"placement_group_bundle_index={self.placement_group_bundle_index}, "
            f"placement_group_capture_child_tasks={self.placement_group_capture_child_tasks})"
        )


def strategy_to_wire(strategy: Any, where: str) -> Any:
    """The strategy as the node reads it: None, "SPREAD", ("node", node_id, soft) or
    ("pg", placement group id, bundle index, capture child tasks)."""
    if strategy is None or strategy == "DEFAULT":
        return None
    if strategy == "SPREAD":
        return "SPREAD"
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return ("node", strategy.node_id, strategy.soft)
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        return _group_to_wire(
            strategy.placement_group, strategy.placement_group_bundle_index,
            strategy.placement_group_capture_child_tasks, where,
        )
    raise ValueError(
        f"{where}: scheduling_strategy={strategy!r} is not supported; use 'DEFAULT', 'SPREAD', "
        f"NodeAffinitySchedulingStrategy(node_id, soft) or PlacementGroupSchedulingStrategy(placement_group) "
        f"(from actorkit.util.scheduling_strategies)"
    )


def strategy_of(options: dict[str, Any], where: str) -> Any:
    """The wire strategy ``options`` ask for: ``scheduling_strategy``, or Ray's older
    ``placement_group=`` / ``placement_group_bundle_index=`` / ``placement_group_capture_child_tasks=``."""
    group = options.get("placement_group", "default")
    if group != "default":
        if options.get("scheduling_strategy") not in (None, "DEFAULT"):
            raise ValueError(f"{where}: give either scheduling_strategy or placement_group, not both")
        return _group_to_wire(
            group, options.get("placement_group_bundle_index", -1),
            options.get("placement_group_capture_child_tasks"), where,
        )
    return strategy_to_wire(options.get("scheduling_strategy"), where)


def chooses_placement(options: dict[str, Any]) -> bool:
    """Whether ``options`` say where to run (else a capturing placement group's tasks capture it)."""
    return options.get("scheduling_strategy") is not None or options.get("placement_group", "default") != "default"


def _group_to_wire(group: Any, index: Any, capture: Any, where: str) -> Any:
    if group is None:
        return None
    if not hasattr(group, "bundle_count") or not hasattr(group, "id"):
        raise TypeError(f"{where}: placement_group must be a PlacementGroup (from placement_group()), not {group!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not -1 <= index < group.bundle_count:
        raise ValueError(
            f"{where}: placement_group_bundle_index={index!r} is invalid: the placement group has "
            f"{group.bundle_count} bundles (use 0 to {group.bundle_count - 1}, or -1 for any)"
        )
    return ("pg", group.id.binary(), index, bool(capture))


def affinity(strategy: Any) -> tuple[str, bool] | None:
    """``(node_id, soft)`` of a strategy as the node reads it, if it names a node."""
    if strategy is None or strategy == "SPREAD" or strategy[0] != "node":
        return None
    _, node_id, soft = strategy
    return node_id, soft


def in_group(strategy: Any) -> tuple[bytes, int, bool] | None:
    """``(placement group id, bundle index, capture child tasks)`` of a strategy as the
    node reads it, if it places the task in a placement group (index -1: any bundle)."""
    if strategy is None or strategy == "SPREAD" or strategy[0] != "pg":
        return None
    _, group_id, index, capture = strategy
    return group_id, index, capture
