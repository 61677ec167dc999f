"""Scheduling strategies (Ray's ``ray.util.scheduling_strategies``); see ``actorkit.strategy``."""

from ..strategy import NodeAffinitySchedulingStrategy

__all__ = ["NodeAffinitySchedulingStrategy"]
