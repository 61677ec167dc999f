"""Placement groups (Ray's ``ray.util.placement_group``): resources reserved together.

    from actorkit.util.placement_group import placement_group, remove_placement_group
    from actorkit.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK")
    ray.get(pg.ready())  # placed: both bundles are reserved
    f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)).remote()
    remove_placement_group(pg)

The node reserves every bundle or none (``node/placement_groups.py``): PACK
and STRICT_PACK put them on one node (PACK may spread when one cannot hold
them all), SPREAD and STRICT_SPREAD on different nodes (SPREAD may share).
A group no set of nodes can hold stays pending, with a warning.  Tasks and
actors in a group take their resources from its bundles, not from what is
free on the node.
"""

from __future__ import annotations

import os
from typing import Any

from .. import api, context
from ..object_ref import ObjectRef
from ..payload import to_wire
from ..task_spec import return_id

__all__ = [
    "PlacementGroup",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]

_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementGroupID:
    """A placement group's id: 18 bytes, shown as hex."""

    __slots__ = ("_binary",)

    def __init__(self, binary: bytes) -> None:
        self._binary = binary

    def binary(self) -> bytes:
        return self._binary

    def hex(self) -> str:
        return self._binary.hex()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroupID) and other._binary == self._binary

    def __hash__(self) -> int:
        return hash(self._binary)

    def __repr__(self) -> str:
        return f"PlacementGroupID({self.hex()})"


class PlacementGroup:
    """A handle to a placement group; it can be passed to tasks and actors."""

    def __init__(self, id: PlacementGroupID, bundle_cache: list[dict[str, float]] | None = None) -> None:
        self.id = id
        self._bundles = bundle_cache

    def __repr__(self) -> str:
        return f"PlacementGroup({self.id.hex()}, {self._bundles})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def bundle_specs(self) -> list[dict[str, float]]:
        if self._bundles is None:
            table = placement_group_table(self)
            self._bundles = [table["bundles"][i] for i in sorted(table["bundles"])]
        return self._bundles

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self) -> ObjectRef[PlacementGroup]:
        """A ref that is ready (its value: this group) once every bundle is reserved."""
        client = context.current_client()
        object_id = return_id(client.new_task_id(), 0)
        client.request("placement_group_ready", self.id.binary(), object_id)
        return client.adopt_ref(object_id)

    def wait(self, timeout_seconds: float | None = 30) -> bool:
        """Wait until the group is placed (True), or ``timeout_seconds`` passed (False)."""
        ready, _ = api.wait([self.ready()], timeout=timeout_seconds)
        return bool(ready)


def placement_group(
    bundles: list[dict[str, float]],
    strategy: str = "PACK",
    name: str = "",
    lifetime: str | None = None,
    _max_cpu_fraction_per_node: float | None = None,
    _soft_target_node_id: str | None = None,
) -> PlacementGroup:
    """Reserve ``bundles`` (each a dict of resource -> amount) together, by ``strategy``.

    Returns at once; ``ray.get(pg.ready())`` or ``pg.wait()`` waits for the
    reservation.  ``lifetime="detached"`` keeps the group after its driver
    exits; ``name`` makes it findable with ``get_placement_group``.
    """
    if not isinstance(bundles, list):
        raise ValueError(f"The placement group `bundles` argument must be a list of dicts, got {type(bundles).__name__}")
    if not bundles:
        raise ValueError("The placement group `bundles` argument cannot contain an empty list")
    for bundle in bundles:
        if not isinstance(bundle, dict) or not bundle or not any(bundle.values()):
            raise ValueError(
                f"Bundles cannot be an empty dictionary or resources with only 0 values. Bundles: {bundles}"
            )
        for resource, amount in bundle.items():
            if not isinstance(resource, str) or isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise ValueError(f"bundle {bundle}: {resource!r} must map a resource name to an amount >= 0")
    if strategy not in _STRATEGIES:
        raise ValueError(f"Invalid placement group strategy {strategy!r}. Supported strategies are: {', '.join(_STRATEGIES)}.")
    if lifetime not in (None, "detached"):
        raise ValueError(f"Placement group `lifetime` argument must be either `None` or 'detached'. Got {lifetime!r}.")
    if not isinstance(name, str):
        raise TypeError(f"placement group name must be a str, not {type(name).__name__}")
    client = context.current_client()
    group = PlacementGroup(PlacementGroupID(os.urandom(18)), [dict(b) for b in bundles])
    handle = to_wire(client.encode(group))
    client.request("create_placement_group", group.id.binary(), name, group._bundles, strategy, lifetime == "detached", handle)
    return group


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Give the group's reservations back; the actors and tasks running in it end."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"remove_placement_group() expects a PlacementGroup, not {type(placement_group).__name__}")
    context.current_client().request("remove_placement_group", placement_group.id.binary())


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The live placement group of that name (in this job's namespace)."""
    if not placement_group_name:
        raise ValueError("Please supply a non-empty value to get_placement_group")
    group_id, bundles = context.current_client().request("get_placement_group", placement_group_name, None)
    return PlacementGroup(PlacementGroupID(group_id), bundles)


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict[str, Any]:
    """One group's state (id, name, bundles, where each is, strategy, state), or every group's by id."""
    group_id = placement_group.id.binary() if placement_group is not None else None
    return context.current_client().request("placement_group_table", group_id)


def get_current_placement_group() -> PlacementGroup | None:
    """The placement group the calling task or actor runs in (None in a driver or outside any)."""
    executor = context.current_executor()
    placement = executor.placement if executor is not None else None
    return PlacementGroup(PlacementGroupID(placement[1])) if placement is not None else None
