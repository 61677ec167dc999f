"""What a task is on the wire: ``TaskSpec`` and the placeholder for ref arguments."""

from __future__ import annotations

from typing import Any, NamedTuple

from .exceptions import TaskCancelledError, TaskError
from .payload import Payload, from_wire


class ArgRef:
    """Stands in the pickled arguments for a top-level ObjectRef argument.

    The worker swaps it for the referenced value (the node ships the values of
    ``TaskSpec.deps`` with the task), so the function sees values, as in Ray.
    """

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (ArgRef, (self.index,))


class TaskSpec(NamedTuple):
    task_id: bytes
    job_id: bytes
    name: str
    function_id: bytes
    function_bytes: bytes | None  # sent with a client's first task of the function
    args: Payload  # pickled (args, kwargs), top-level refs replaced by ArgRef
    deps: tuple[bytes, ...]  # object ids of the ArgRefs, by index
    num_returns: int
    resources: dict[str, float]
    max_retries: int
    # True, False, or the exception classes to retry on pickled (``retry_exceptions_to_wire``):
    # the node passes them on as bytes, never loads them; the worker decides.
    retry_exceptions: bool | bytes
    runtime_env: dict[str, Any] | None
    actor_id: bytes | None = None  # set for an actor method call
    method: str | None = None  # the method called, for an actor method call
    max_calls: int = 0  # retire the worker after this many calls of the function (0: never)
    strategy: Any = None  # None (default), "SPREAD", ("node", node_id, soft) or ("pg", id, bundle, capture)
    generator: str | None = None  # "streaming" or "dynamic": a generator whose items become objects

    def return_ids(self) -> list[bytes]:
        return [return_id(self.task_id, i) for i in range(self.num_returns)]

    def may_go_direct(self) -> bool:
        """Whether a worker lent to its caller may run it: a plain task that the node
        need not place, retry on an exception, or count calls of (see ``LeaseManager.lend`` (node/leases.py))."""
        return (
            self.actor_id is None
            and not self.max_calls
            and self.strategy is None
            and not self.retry_exceptions
            and not self.resources.get("GPU")
            and self.generator is None
        )


def split_returns(spec: TaskSpec, result: Any) -> list[Any]:
    """A task's result as its ``num_returns`` values; a ValueError if it does not fit."""
    n = spec.num_returns
    if n == 1:
        return [result]
    if n == 0:
        return []
    try:
        values = list(result)
    except TypeError:
        values = None  # type: ignore[assignment]
    if values is None or len(values) != n:
        raise ValueError(
            f"task {spec.name} has num_returns={n} but returned "
            f"{type(result).__name__} {result!r:.80}; return a sequence of {n} values"
        )
    return values


def spec_to_wire(spec: TaskSpec) -> tuple[Any, ...]:
    """A task spec as plain tuples (see ``payload.to_wire``): it travels twice per task."""
    fields = tuple(spec)
    return fields[:5] + (tuple(spec.args),) + fields[6:]


def spec_from_wire(fields: tuple[Any, ...]) -> TaskSpec:
    return TaskSpec._make(fields[:5] + (from_wire(fields[5]),) + fields[6:])


_PICKLED_RETRY: dict[tuple[type, ...], bytes] = {}


def retry_exceptions_to_wire(value: Any) -> bool | bytes:
    """``retry_exceptions`` as a TaskSpec carries it: a bool, or the classes pickled.

    Pickled here because the node must never unpickle a user class (one defined
    in the driver's ``__main__`` does not exist there); pickled once per list of
    classes, not per call.
    """
    if not isinstance(value, (list, tuple)):
        return bool(value)
    classes = tuple(value)
    pickled = _PICKLED_RETRY.get(classes)
    if pickled is None:
        from .serialization import (
            dumps,  # lazy, cloudpickle: only a process that submits needs it, not the node
        )

        pickled = _PICKLED_RETRY[classes] = dumps(classes)
    return pickled


_LOADED_RETRY: dict[bytes, tuple[type, ...]] = {}


def retry_exceptions_from_wire(value: bool | bytes) -> bool | tuple[type, ...]:
    """The classes ``retry_exceptions_to_wire`` pickled, in the worker (which has the user's classes)."""
    if type(value) is not bytes:
        return value
    classes = _LOADED_RETRY.get(value)
    if classes is None:
        import pickle

        classes = _LOADED_RETRY[value] = pickle.loads(value)
    return classes


def forever(n: int) -> int:
    """A count of retries or restarts as the node keeps it: -1 means forever."""
    return 1 << 30 if n == -1 else n


def cancelled_error(spec: TaskSpec) -> TaskCancelledError:
    """What ``get()`` of a cancelled task raises, wherever the cancellation is settled: a
    ``TaskCancelledError`` that is a ``TaskError`` too, as Ray's is for a cancelled actor
    call (its scripts catch either)."""
    message = f"task {spec.name} ({spec.task_id.hex()}) was cancelled"
    return TaskError(spec.name, message, TaskCancelledError(message)).as_instanceof_cause()  # type: ignore[return-value]


def return_id(task_id: bytes, index: int) -> bytes:
    return task_id + (index + 1).to_bytes(4, "big")


class ActorSpec(NamedTuple):
    """How to create an actor, and how to treat it when its process dies."""

    actor_id: bytes
    job_id: bytes
    class_name: str
    function_id: bytes  # the class, exported once like a function
    function_bytes: bytes | None
    args: Payload  # pickled (args, kwargs) for __init__
    deps: tuple[bytes, ...]
    placement: dict[str, float]  # needed free to place the actor
    resources: dict[str, float]  # held while the actor lives
    max_restarts: int  # -1: restart forever
    max_task_retries: int  # -1: retry forever
    max_concurrency: int
    is_async: bool
    methods: dict[str, int]  # method name -> num_returns
    name: str | None
    namespace: str | None  # None until the node fills in the job's namespace
    detached: bool
    get_if_exists: bool
    runtime_env: dict[str, Any] | None
    strategy: Any = None  # where to place it: as TaskSpec.strategy
