"""The core calls of Ray's API: ``remote``, ``get``, ``put``, ``wait`` and friends."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, ParamSpec, Protocol, TypeVar, overload

from . import context, runtime
from .actor import ActorClass, ActorHandle
from .generators import ObjectRefGenerator
from .object_ref import ObjectRef

if TYPE_CHECKING:
    from .remote_function import RemoteFunction


T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")


class _RemoteDecorator(Protocol):
    """What ``remote(**options)`` returns, for type checkers."""

    @overload
    def __call__(self, target: type[T], /) -> ActorClass[T]: ...

    @overload
    def __call__(self, target: Callable[P, R], /) -> RemoteFunction[P, R]: ...


@overload
def remote(target: type[T], /) -> ActorClass[T]: ...


@overload
def remote(target: Callable[P, R], /) -> RemoteFunction[P, R]: ...


@overload
def remote(
    *,
    num_returns: int = 1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    accelerator_type: str | None = None,
    memory: float | None = None,
    max_calls: int = 0,
    max_retries: int = 3,
    retry_exceptions: bool | list[type[BaseException]] = False,
    runtime_env: dict[str, Any] | None = None,
    name: str | None = None,
    scheduling_strategy: Any = None,
    enable_task_events: bool = True,
    namespace: str | None = None,
    lifetime: str | None = None,
    get_if_exists: bool = False,
    max_concurrency: int | None = None,
    max_restarts: int = 0,
    max_task_retries: int = 0,
    max_pending_calls: int = -1,
) -> _RemoteDecorator: ...


def remote(*args: Any, **options: Any) -> Any:
    """Make a function a task, or a class an actor: ``@remote`` or ``@remote(**options)``.

    ``remote(existing_function)`` works for any callable, builtins and C
    functions included.  ``f.remote(...)`` then returns an ``ObjectRef`` at once;
    ``Cls.remote(...)`` returns an ``ActorHandle``.  ``.options(**options)`` on
    either makes a variant with some options changed.

    Options of tasks and actors (Ray's names):

    * ``num_cpus`` (tasks: 1, actors: 0 while alive, 1 to place them),
      ``num_gpus``, ``memory`` (bytes), ``resources`` (custom amounts, e.g.
      ``{"disk": 1}``), ``accelerator_type`` (needs ``accelerator_type:X``).
    * ``runtime_env``: ``env_vars``, ``working_dir``, ``py_modules``,
      ``excludes`` (see ``actorkit.runtime_env``).
    * ``scheduling_strategy``: ``"DEFAULT"``, ``"SPREAD"``, a
      ``NodeAffinitySchedulingStrategy`` or a ``PlacementGroupSchedulingStrategy``.
    * ``placement_group``, ``placement_group_bundle_index``,
      ``placement_group_capture_child_tasks``: Ray's older spelling of a
      ``PlacementGroupSchedulingStrategy`` (``actorkit.util.placement_group``).
    * ``enable_task_events``: accepted; the node records what it places anyway.

    Options of tasks only:

    * ``num_returns``: how many ObjectRefs a call returns (default 1).
    * ``max_retries`` (default 3; -1 forever): reruns after the worker died.
    * ``retry_exceptions``: ``True`` or a list of exception classes that also
      rerun the task.
    * ``max_calls``: retire a worker after this many calls of the function.
    * ``name``: the task's name in errors, logs and the state API.

    Options of actors only:

    * ``name``, ``namespace``, ``get_if_exists``: a named actor others find with
      ``get_actor``; ``lifetime`` (``"detached"``: it outlives its creator).
    * ``max_concurrency``: calls at once (threads, or coroutines for
      ``async def`` methods; default 1, or 1000 for async actors).
    * ``max_restarts`` (default 0; -1 forever) and ``max_task_retries``
      (default 0): what happens when its process dies.
    * ``max_pending_calls``: accepted as -1 only (no limit).

    An option actorkit does not support raises an error naming it, instead
    of being ignored.
    """
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args or not options:
        raise TypeError(
            "The @remote decorator must be applied either with no arguments and no parentheses, "
            "for example '@remote', or with keyword options only, for example "
            "'@remote(num_returns=2, resources={\"CustomResource\": 1})'."
        )
    return lambda target: _make_remote(target, options)


def _make_remote(target: Any, options: dict[str, Any]) -> Any:
    if isinstance(target, type):
        return ActorClass(target, options)
    from .remote_function import (
        RemoteFunction,  # lazy: cloudpickle loads on the first @remote, not on import
    )

    return RemoteFunction(target, options)


def _check_timeout(timeout: Any, where: str) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{where}: timeout must be a number of seconds or None, not {timeout!r}")
    if timeout < 0:
        raise ValueError(f"{where}: timeout={timeout!r} must be >= 0")
    return float(timeout)


@overload
def get(object_refs: ObjectRef[T], *, timeout: float | None = None) -> T: ...


@overload
def get(object_refs: list[ObjectRef[T]], *, timeout: float | None = None) -> list[T]: ...


def get(object_refs: Any, *, timeout: float | None = None) -> Any:
    """The value of an ObjectRef, or the values of a list of them, blocking until ready.

    Raises ``GetTimeoutError`` after ``timeout`` seconds, and a task's error
    (as ``TaskError``, also an instance of the original class) if it failed.
    """
    timeout = _check_timeout(timeout, "get()")
    if isinstance(object_refs, ObjectRef):
        client = context.client_for(object_refs, repr(object_refs))
        _check_not_waiting_on_self([object_refs])
        return client.get([object_refs], timeout)[0]
    if isinstance(object_refs, list):
        for ref in object_refs:
            if not isinstance(ref, ObjectRef):
                # TypeError here, ValueError for a non-list: what Ray raises in each case.
                raise TypeError(
                    f"Attempting to call `get` on the value {ref!r:.60}, which is not an ObjectRef: "
                    f"'object_refs' must either be an ObjectRef or a list of ObjectRefs"
                )
        client = context.current_client()
        for ref in object_refs:
            if ref._client is not client:
                context.client_for(ref, repr(ref))  # raises for a ref of an ended session
        _check_not_waiting_on_self(object_refs)
        return client.get(object_refs, timeout)
    # ValueError, as Ray raises: a value where a ref belongs is a wrong value.
    raise ValueError(
        f"'object_refs' must either be an ObjectRef or a list of ObjectRefs, not "
        f"{type(object_refs).__name__} {object_refs!r:.60}; pass what .remote() or put() returned"
    )


def put(value: Any) -> ObjectRef:
    """Store ``value`` in the object store; returns its ObjectRef."""
    if isinstance(value, ObjectRef):
        raise TypeError(
            "Calling 'put' on an ObjectRef is not allowed. If you really want to do this, "
            "wrap the ObjectRef in a list and put that."
        )
    return context.current_client().put(value)


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
        if not isinstance(ref, (ObjectRef, ObjectRefGenerator)):
            raise TypeError(f"wait() expected a list of ObjectRefs, but the list holds {ref!r}")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int):
        raise TypeError(f"wait(num_returns={num_returns!r}) must be an int")
    if not object_refs:
        return [], []
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
    client = context.current_client()
    # A generator is ready once its next item is made (or it has ended), as in Ray.
    waited = [r._waitable() if isinstance(r, ObjectRefGenerator) else r for r in object_refs]
    _check_not_waiting_on_self(waited)
    ready_ids = client.wait_ready([r._id for r in waited], num_returns, timeout)
    ready = [given for given, r in zip(object_refs, waited) if r._id in ready_ids][:num_returns]
    chosen = {id(given) for given in ready}
    return ready, [given for given in object_refs if id(given) not in chosen]


def _check_not_waiting_on_self(refs: list[ObjectRef]) -> None:
    executor = context.current_executor()
    if executor is not None and executor.self_calls:
        executor.check_not_waiting_on_self([r._id for r in refs])


def kill(actor: Any, *, no_restart: bool = True) -> None:
    """Kill an actor at once. When this returns, every later call to it raises ActorDiedError.

    Calls still pending fail with ActorDiedError.  With ``no_restart=False`` an
    actor that has restarts left is restarted instead.
    """
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() expects an actor handle, not {type(actor).__name__}; use cancel() for tasks")
    client = context.client_for(actor._ref, f"actor {actor._class_name}")
    client.forget_route(actor._actor_id)  # later calls go through the node, which knows it is dead
    client.request("kill", actor._actor_id, bool(no_restart))


def get_actor(name: str, namespace: str | None = None) -> Any:
    """The handle of the live actor named ``name`` in ``namespace`` (default: this job's)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor() needs a non-empty actor name, not {name!r}")
    client = context.current_client()
    actor_id, class_name, methods = client.request("get_actor", name, namespace, context.current_job_id())
    return ActorHandle(actor_id, class_name, methods, client.own_actor(actor_id))


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that makes ``object_ref``; ``get()`` of it then raises TaskCancelledError.

    A queued task never runs.  A running one gets KeyboardInterrupt raised in it
    (even inside ``time.sleep``); ``force=True`` kills its worker instead.  With
    ``recursive=True`` the tasks it submitted are cancelled too.  A queued actor
    call is dropped; a running async actor call is cancelled; a finished task is
    left alone.
    """
    if isinstance(object_ref, ObjectRefGenerator):
        object_ref = object_ref.completed()  # the generator task itself
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() expects an ObjectRef or an ObjectRefGenerator, not {type(object_ref).__name__}")
    client = context.client_for(object_ref, repr(object_ref))
    if not client.cancel_direct(object_ref.task_id(), bool(force), bool(recursive)):
        client.request("cancel", object_ref.task_id(), bool(force), bool(recursive))


def get_gpu_ids() -> list[int]:
    """The ids of the GPUs this task or actor holds (``CUDA_VISIBLE_DEVICES``)."""
    executor = context.current_executor()
    return list(executor.gpu_ids) if executor is not None else []


def cluster_resources() -> dict[str, float]:
    """The total resources of the cluster."""
    return context.current_client().request("resources")["total"]


def available_resources() -> dict[str, float]:
    """The resources not held by running tasks and actors right now."""
    client = context.current_client()
    client.return_idle_leases()  # an idle worker lent to this process is free for others
    available = client.request("resources")["available"]
    return {name: amount for name, amount in available.items() if amount > 0}


def nodes() -> list[dict[str, Any]]:
    """The cluster's nodes, as Ray describes them (dead ones included, ``Alive`` False)."""
    return context.current_client().request("nodes")


class RuntimeContext(NamedTuple):
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

    @property
    def current_actor(self) -> Any:
        """The handle of the actor this code runs in (Ray's ``current_actor``)."""
        executor = context.current_executor()
        if executor is None or executor.actor_id is None:
            raise RuntimeError("current_actor is only available inside an actor's methods")
        client = context.current_client()
        return ActorHandle(executor.actor_id, executor.actor_name or "", executor.actor_methods, client.adopt_ref(executor.actor_id))

    def get_node_id(self) -> str:
        return self.node_id

    def is_canceled(self) -> bool:
        """Whether the calling task or actor call has been cancelled (Ray's ``is_canceled``):
        a running actor call is not interrupted, and may check this to stop early."""
        executor = context.current_executor()
        if executor is None or self.task_id is None:
            raise RuntimeError("is_canceled() is only available inside a task or an actor's method")
        return executor.is_cancelled(bytes.fromhex(self.task_id))

    def get_assigned_resources(self) -> dict[str, float]:
        return dict(self.assigned_resources)


def get_runtime_context() -> RuntimeContext:
    """Information about the calling driver, task or actor."""
    context.current_client()
    executor = context.current_executor()
    task = executor.current if executor is not None else None
    return RuntimeContext(
        job_id=context.current_job_id().hex(),
        task_id=task.task_id.hex() if task is not None else None,
        actor_id=executor.actor_id.hex() if executor is not None and executor.actor_id else None,
        node_id=runtime.node_id(),
        namespace=runtime.namespace(),
        assigned_resources=dict(task.resources) if task is not None else {},
    )
