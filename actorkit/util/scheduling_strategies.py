"""Scheduling strategies (Ray's ``ray.util.scheduling_strategies``); see ``actorkit.strategy``."""

from ..strategy import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy"]
