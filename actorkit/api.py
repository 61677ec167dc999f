"""The core calls of Ray's API: ``remote``, ``get``, ``put``, ``wait`` and friends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import runtime
from .object_ref import ObjectRef


def remote(*args: Any, **options: Any) -> Any:
    """Make a function a task (or a class an actor): ``@remote`` or ``@remote(**options)``.

    ``remote(existing_function)`` works for any callable, builtins and C
    functions included.
    """
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError(
            "The @remote decorator must be applied either with no arguments and no parentheses, "
            "for example '@remote', or with keyword options only, for example "
            "'@remote(num_returns=2, resources={\"CustomResource\": 1})'."
        )
    return lambda target: _make_remote(target, options)


def _make_remote(target: Any, options: dict[str, Any]) -> Any:
    if isinstance(target, type):
        from .actor import ActorClass

        return ActorClass(target, options)
    from .remote_function import RemoteFunction

    return RemoteFunction(target, options)


def _check_timeout(timeout: Any, where: str) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{where}: timeout must be a number of seconds or None, not {timeout!r}")
    if timeout < 0:
        raise ValueError(f"{where}: timeout={timeout!r} must be >= 0")
    return float(timeout)


def get(object_refs: ObjectRef | list[ObjectRef], *, timeout: float | None = None) -> Any:
    """The value of an ObjectRef, or the values of a list of them, blocking until ready.

    Raises ``GetTimeoutError`` after ``timeout`` seconds, and a task's error
    (as ``TaskError``, also an instance of the original class) if it failed.
    """
    timeout = _check_timeout(timeout, "get()")
    client = runtime.current_client()
    if isinstance(object_refs, ObjectRef):
        return client.get([object_refs], timeout)[0]
    if isinstance(object_refs, list):
        for ref in object_refs:
            if not isinstance(ref, ObjectRef):
                raise TypeError(f"get() expects a list of ObjectRefs, but the list holds {ref!r}")
        return client.get(object_refs, timeout)
    raise TypeError(
        f"get() expects an ObjectRef or a list of ObjectRefs, not {type(object_refs).__name__}"
    )


def put(value: Any) -> ObjectRef:
    """Store ``value`` in the object store; returns its ObjectRef."""
    if isinstance(value, ObjectRef):
        raise TypeError(
            "Calling 'put' on an ObjectRef is not allowed. If you really want to do this, "
            "wrap the ObjectRef in a list and put that."
        )
    return runtime.current_client().put(value)


def wait(
    object_refs: list[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Wait until ``num_returns`` of ``object_refs`` are ready or ``timeout`` passes.

    Returns ``(ready, not_ready)``, each in the order of ``object_refs``;
    ``ready`` holds at most ``num_returns`` refs.
    """
    if isinstance(object_refs, ObjectRef):
        raise TypeError("wait() expected a list of ObjectRefs, got a single ObjectRef")
    if not isinstance(object_refs, list):
        raise TypeError(f"wait() expected a list of ObjectRefs, got {type(object_refs).__name__}")
    for ref in object_refs:
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"wait() expected a list of ObjectRefs, but the list holds {ref!r}")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int):
        raise TypeError(f"wait(num_returns={num_returns!r}) must be an int")
    if num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns}.")
    if num_returns > len(object_refs):
        raise ValueError(
            f"num_returns ({num_returns}) cannot be greater than the number of objects provided "
            f"to wait() ({len(object_refs)})."
        )
    if len(set(object_refs)) != len(object_refs):
        raise ValueError("Wait requires a list of unique object refs.")
    timeout = _check_timeout(timeout, "wait()")
    client = runtime.current_client()
    ready_ids = client.wait_ready([r._id for r in object_refs], num_returns, timeout)
    ready = [r for r in object_refs if r._id in ready_ids][:num_returns]
    chosen = {r._id for r in ready}
    return ready, [r for r in object_refs if r._id not in chosen]


def get_gpu_ids() -> list[int]:
    """The ids of the GPUs this task or actor holds (``CUDA_VISIBLE_DEVICES``)."""
    executor = runtime.current_executor()
    return list(executor.gpu_ids) if executor is not None else []


def cluster_resources() -> dict[str, float]:
    """The total resources of the cluster."""
    return runtime.control().resources()["total"]


def available_resources() -> dict[str, float]:
    """The resources not held by running tasks and actors right now."""
    available = runtime.control().resources()["available"]
    return {name: amount for name, amount in available.items() if amount > 0}


def nodes() -> list[dict[str, Any]]:
    """The cluster's nodes, as Ray describes them."""
    control = runtime.control()
    info = control.info()
    resources = control.resources()
    return [
        {
            "NodeID": info["node_id"],
            "Alive": True,
            "alive": True,
            "NodeManagerAddress": "127.0.0.1",
            "NodeManagerHostname": _hostname(),
            "Resources": resources["total"],
            "ObjectStoreSocketName": info["data_address"],
        }
    ]


def _hostname() -> str:
    import platform

    return platform.node()


@dataclass(frozen=True)
class RuntimeContext:
    """Where the calling code runs: its job, task, actor and node (Ray's RuntimeContext)."""

    job_id: str
    task_id: str | None
    actor_id: str | None
    node_id: str
    namespace: str
    assigned_resources: dict[str, float]

    def get_job_id(self) -> str:
        return self.job_id

    def get_task_id(self) -> str | None:
        return self.task_id

    def get_actor_id(self) -> str | None:
        return self.actor_id

    def get_node_id(self) -> str:
        return self.node_id

    def get_assigned_resources(self) -> dict[str, float]:
        return dict(self.assigned_resources)


def get_runtime_context() -> RuntimeContext:
    """Information about the calling driver, task or actor."""
    runtime.current_client()
    executor = runtime.current_executor()
    task = executor.current if executor is not None else None
    return RuntimeContext(
        job_id=runtime.current_job_id().hex(),
        task_id=task.task_id.hex() if task is not None else None,
        actor_id=None,
        node_id=runtime.node_id(),
        namespace=runtime.namespace(),
        assigned_resources=dict(task.resources) if task is not None else {},
    )
