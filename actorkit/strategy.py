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


def strategy_to_wire(strategy: Any, where: str) -> Any:
    """The strategy as the node reads it: None, "SPREAD" or ("node", node_id, soft)."""
    if strategy is None or strategy == "DEFAULT":
        return None
    if strategy == "SPREAD":
        return "SPREAD"
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return ("node", strategy.node_id, strategy.soft)
    raise ValueError(
        f"{where}: scheduling_strategy={strategy!r} is not supported; use 'DEFAULT', 'SPREAD' or "
        f"actorkit.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node_id, soft)"
    )


def affinity(strategy: Any) -> tuple[str, bool] | None:
    """``(node_id, soft)`` of a strategy as the node reads it, if it names a node."""
    if strategy is None or strategy == "SPREAD":
        return None
    _, node_id, soft = strategy
    return node_id, soft
