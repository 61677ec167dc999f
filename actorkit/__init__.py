"""actorkit: Ray's core API -- tasks, actors, objects -- in pure Python on multiprocessing.

    import actorkit as ray

    @ray.remote
    def square(x):
        return x * x

    ray.init()
    print(ray.get([square.remote(i) for i in range(4)]))   # [0, 1, 4, 9]
    ray.shutdown()

This module is the whole public surface; everything else is private.
"""

from . import exceptions
from .actor import ActorClass, ActorHandle, method
from .api import (
    RuntimeContext,
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_actor,
    get_gpu_ids,
    get_runtime_context,
    kill,
    nodes,
    put,
    remote,
    wait,
)
from .generators import DynamicObjectRefGenerator, ObjectRefGenerator
from .object_ref import ObjectRef
from .runtime import init, is_initialized, shutdown
from .timeline import timeline

ObjectID = ObjectRef  # Ray's older name

__version__ = "0.1.0"

__all__ = [
    "ActorClass",
    "ActorHandle",
    "DynamicObjectRefGenerator",
    "ObjectID",
    "ObjectRef",
    "ObjectRefGenerator",
    "RuntimeContext",
    "available_resources",
    "cancel",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "timeline",
    "wait",
]
