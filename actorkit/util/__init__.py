"""Utilities on top of actorkit's core (Ray's ``ray.util``).

* ``ActorPool``: schedule work over a fixed set of actors.
* ``SignalActor``: an event tasks can wait on; ``FileLock``: ``filelock.FileLock``.
* ``as_completed``: results of many refs as they finish, with a progress bar.
* ``register_serializer`` / ``deregister_serializer``: custom pickling per type.
* ``inspect_serializability``: which parts of a value cannot be sent, and why.

Submodules: ``actorkit.util.queue`` (``Queue``, ``Empty``, ``Full``),
``actorkit.util.multiprocessing`` (``Pool``), ``actorkit.util.futures``
(``Executor``), ``actorkit.util.progress`` (the progress bars).
"""

from ..serialization import deregister_serializer, register_serializer
from .actor_pool import ActorPool
from .helpers import as_completed
from .placement_group import (
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from .serializability import inspect_serializability
from .sync import FileLock, SignalActor

__all__ = [
    "ActorPool",
    "FileLock",
    "SignalActor",
    "as_completed",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
    "deregister_serializer",
    "inspect_serializability",
    "register_serializer",
]
