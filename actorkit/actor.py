"""Actors: ``@remote`` on a class, ``Cls.remote(...)``, handles, ``exit_actor()``.

An actor is an instance of a class living in its own process (a worker the
node dedicates to it).  ``handle.method.remote(...)`` sends a call through
the node to that process, which runs the calls of one caller in the order
they were made: one at a time for a plain class, concurrently on an event
loop for a class with ``async def`` methods, or in up to ``max_concurrency``
threads.

A handle is a small picklable value.  Its actor id is counted like an
ObjectRef, so the node knows when no handle is left anywhere; an unnamed,
non-detached actor then ends once its pending calls are done, as in Ray.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Generic, NamedTuple, TypeVar

from . import context, runtime_env
from .call_check import Binder
from .dag import ClassMethodNode, ClassNode
from .exceptions import _ExitActor
from .generators import ObjectRefGenerator
from .object_ref import ObjectRef, record_contained_ref
from .options import (
    UNSUPPORTED,
    check_num_returns,
    resource_demand,
    returns_of,
    validate_task_options,
    whole_number,
)
from .strategy import chooses_placement, strategy_of

ACTOR_OPTIONS = frozenset(
    {
        "name",
        "namespace",
        "get_if_exists",
        "lifetime",
        "max_concurrency",
        "num_cpus",
        "num_gpus",
        "resources",
        "memory",
        "accelerator_type",
        "max_restarts",
        "max_task_retries",
        "runtime_env",
        "scheduling_strategy",
        "placement_group",
        "placement_group_bundle_index",
        "placement_group_capture_child_tasks",
        "max_pending_calls",
        "enable_task_events",
    }
)
_ACTOR_UNSUPPORTED = {"concurrency_groups": "concurrency groups are not supported", **UNSUPPORTED}
_SHARED_WITH_TASKS = (
    "num_cpus", "num_gpus", "resources", "memory", "accelerator_type", "runtime_env", "scheduling_strategy",
    "placement_group", "placement_group_bundle_index", "placement_group_capture_child_tasks", "enable_task_events",
)
_NUM_RETURNS_ATTR = "__actorkit_num_returns__"
T = TypeVar("T")


def method(*, num_returns: int | str = 1, enable_task_events: bool = True) -> Any:
    """Decorate an actor method with options: ``@actorkit.method(num_returns=2)``.

    ``num_returns`` may also be ``"streaming"`` or ``"dynamic"`` for a method
    that yields (see ``actorkit.generators``).  ``enable_task_events`` is
    accepted for Ray's scripts: the node records every call it places either
    way (see ``actorkit.util.state``).
    """
    check_num_returns("@method()", num_returns)
    if not isinstance(enable_task_events, bool):
        raise TypeError("@method(): enable_task_events must be True or False")

    def decorate(function: Any) -> Any:
        setattr(function, _NUM_RETURNS_ATTR, num_returns)
        return function

    return decorate


def validate_actor_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    for name in options:
        if name in _ACTOR_UNSUPPORTED:
            raise ValueError(f"{where}: option {name!r} is not supported by actorkit ({_ACTOR_UNSUPPORTED[name]})")
        if name not in ACTOR_OPTIONS:
            raise ValueError(f"{where}: unknown actor option {name!r}; actors accept {', '.join(sorted(ACTOR_OPTIONS))}")
    validate_task_options({k: v for k, v in options.items() if k in _SHARED_WITH_TASKS}, where)
    for name in ("max_restarts", "max_task_retries"):
        if options.get(name) is not None:
            whole_number(where, name, options[name], -1, " (-1: forever)")
    if options.get("max_concurrency") is not None:
        whole_number(where, "max_concurrency", options["max_concurrency"], 1)
    lifetime = options.get("lifetime")
    if lifetime not in (None, "detached", "non_detached"):
        raise ValueError(f"{where}: lifetime={lifetime!r} must be 'detached', 'non_detached' or None")
    for name in ("name", "namespace"):
        value = options.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{where}: {name}={value!r} must be a non-empty str")
    pending = options.get("max_pending_calls", -1)
    if pending != -1:
        raise ValueError(f"{where}: max_pending_calls={pending!r} is not supported (only -1, no limit)")
    if options.get("get_if_exists") and not options.get("name"):
        raise ValueError(f"{where}: get_if_exists=True needs a name=")
    return options


def _methods_of(cls: type) -> tuple[dict[str, int | str], bool]:
    """Each public method's num_returns (or generator mode), and whether the class is async."""
    methods: dict[str, int | str] = {}
    is_async = inspect.iscoroutinefunction(cls.__dict__.get("__init__"))
    for name, member in inspect.getmembers(cls):
        if name.startswith("__") and name.endswith("__"):
            continue
        function = inspect.unwrap(member) if callable(member) else None
        if function is None:
            continue
        count, mode = returns_of(getattr(member, _NUM_RETURNS_ATTR, None), function)
        methods[name] = mode or count
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            is_async = True
    return methods, is_async


class ActorClass(Generic[T]):
    """A class made an actor by ``@remote``: ``Cls.remote(*args)`` starts one."""

    def __init__(self, cls: type, options: dict[str, Any], _export: Any = None) -> None:
        from .remote_function import (
            _Export,  # lazy: cloudpickle loads on the first @remote, not on import
        )

        validate_actor_options(options, f"@remote on class {cls.__qualname__}")
        self._cls = cls
        self._options = options
        self._export = _export or _Export()
        self._methods, self._is_async = _methods_of(cls)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__
        self.__actorkit_target__ = cls  # what a worker instantiates if this object is unpickled

    def __repr__(self) -> str:
        return f"<ActorClass {self.__module__}.{self.__qualname__}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of '{self.__qualname__}()', "
            f"use '{self.__qualname__}.remote()'."
        )

    def __getattr__(self, name: str) -> Any:
        # Inside its own methods the class's name means this object (the
        # decorator replaced the class): class attributes and static methods
        # must still be reached through it, as in Ray.
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(self.__dict__["_cls"], name)
        except (KeyError, AttributeError):
            raise AttributeError(f"actor class {self.__qualname__!r} has no attribute {name!r}") from None

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        raise TypeError(
            f"Inheriting from actor classes is not allowed: {self.__qualname__} is an actor class. "
            f"Subclass the plain class instead and make the subclass an actor with @remote."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_class, (self._cls, self._options, self._export.function_id))

    def options(self, **options: Any) -> ActorClass:
        """A variant of this actor class with some options changed (Ray's ``.options()``)."""
        validate_actor_options(options, f"{self.__qualname__}.options()")
        return ActorClass(self._cls, {**self._options, **options}, self._export)

    def _binders(self) -> tuple[Binder, dict[str, Binder]]:
        """The signatures of ``__init__`` and of the methods, read once per class."""
        binders = self._export.binder
        if binders is None:
            cls = self._cls
            where = f"{self.__qualname__}.remote()"
            init = Binder.of(cls.__init__, where, drop_first=True) if cls.__init__ is not object.__init__ else Binder.of(_no_arguments, where)
            methods = {name: _method_binder(cls, name, f"{self.__qualname__}.{name}.remote()") for name in self._methods}
            binders = self._export.binder = (init, methods)
        return binders

    def bind(self, *args: Any, **kwargs: Any) -> ClassNode:
        """A DAG node that creates this actor when the graph runs (see ``actorkit.dag``)."""
        return ClassNode(self, args, kwargs)

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Start an actor; returns its handle at once (``__init__`` runs in the background)."""
        # lazy, all three: import actorkit loads no wire protocol, cloudpickle or payload codec
        from . import protocol as P
        from .remote_function import encode_arguments, function_bytes_to_send
        from .task_spec import ActorSpec

        self._binders()[0].check(args, kwargs)
        client = context.current_client()
        options = self._options
        arguments = encode_arguments(args, kwargs, client, f"{self._cls.__qualname__}()")
        explicit_cpus = options.get("num_cpus") is not None
        held = resource_demand(options, default_cpus=0)
        placement = held if explicit_cpus else {**held, "CPU": held.get("CPU", 0) or 1}
        max_concurrency = options.get("max_concurrency") or (1000 if self._is_async else 1)
        spec = ActorSpec(
            actor_id=client.new_task_id() + os.urandom(4),
            job_id=context.current_job_id(),
            class_name=self.__qualname__,
            function_id=self._export.function_id,
            function_bytes=function_bytes_to_send(client, self._export, self._cls),
            args=arguments.payload,
            deps=arguments.deps,
            placement=placement,
            resources=held,
            max_restarts=options.get("max_restarts", 0),
            max_task_retries=options.get("max_task_retries", 0),
            max_concurrency=max_concurrency,
            is_async=self._is_async,
            methods=self._methods,
            name=options.get("name"),
            namespace=options.get("namespace"),  # None: the job's namespace
            detached=options.get("lifetime") == "detached",
            get_if_exists=bool(options.get("get_if_exists")),
            runtime_env=runtime_env.for_call(options.get("runtime_env"), client),
            strategy=strategy_of(options, self.__qualname__) if chooses_placement(options) else context.captured_placement(),
        )
        if spec.name is None:
            client.send_soon((P.CREATE_ACTOR, spec))
            return ActorHandle(spec.actor_id, spec.class_name, spec.methods, client.own_actor(spec.actor_id), self._binders()[1])
        actor_id, class_name, methods = client.request("create_actor", spec)
        return ActorHandle(actor_id, class_name, methods, client.adopt_ref(actor_id), self._binders()[1])


def _no_arguments() -> None:
    """The signature of a class without an ``__init__`` of its own."""


def _method_binder(cls: type, name: str, where: str) -> Binder:
    # Static and class methods read from the class take no self.
    bare = isinstance(inspect.getattr_static(cls, name), (staticmethod, classmethod))
    return Binder.of(getattr(cls, name), where, drop_first=not bare)


def _rebuild_class(cls: type, options: dict[str, Any], function_id: bytes) -> ActorClass:
    from .remote_function import _Export  # lazy: as in ActorClass.__init__

    return ActorClass(cls, options, _Export(function_id))


class _Target(NamedTuple):
    """What a handle and its methods share: the actor, and the ref that keeps it alive.

    Methods hold this rather than the handle, so that dropping a handle frees
    it at once (no reference cycle waiting for the garbage collector).
    """

    actor_id: bytes
    class_name: str
    ref: ObjectRef | None


class ActorMethod:
    """``handle.method``: call it with ``.remote(...)``."""

    __slots__ = ("_target", "_name", "_num_returns", "_binder")

    def __init__(self, target: _Target, name: str, num_returns: int | str, binder: Binder | None = None) -> None:
        self._target = target
        self._name = name
        self._num_returns = num_returns
        self._binder = binder  # None for a handle passed from another process: no check

    def __repr__(self) -> str:
        return f"<ActorMethod {self._target.class_name}.{self._name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actor methods cannot be called directly. Instead of running "
            f"'{self._name}()', try '{self._name}.remote()'."
        )

    def options(self, *, num_returns: int | str | None = None, name: str | None = None) -> ActorMethod:
        """This method with another ``num_returns``."""
        n = self._num_returns if num_returns is None else num_returns
        check_num_returns(f"{self._name}.options()", n)
        return ActorMethod(self._target, self._name, n, self._binder)

    def bind(self, *args: Any, **kwargs: Any) -> ClassMethodNode:
        """A DAG node that calls this method when the graph runs (see ``actorkit.dag``)."""
        return ClassMethodNode.of_live_actor(self, self._name, args, kwargs)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        # lazy, all three: import actorkit loads no wire protocol, cloudpickle or payload codec
        from . import protocol as P
        from .remote_function import encode_arguments
        from .task_spec import TaskSpec

        if self._binder is not None:
            self._binder.check(args, kwargs)
        target = self._target
        mode = self._num_returns if isinstance(self._num_returns, str) else None
        client = context.client_for(target.ref, f"actor {target.class_name}")
        arguments = encode_arguments(args, kwargs, client, f"{target.class_name}.{self._name}()")
        spec = TaskSpec(
            task_id=client.new_task_id(),
            job_id=context.current_job_id(),
            name=f"{target.class_name}.{self._name}",
            function_id=b"",
            function_bytes=None,
            args=arguments.payload,
            deps=arguments.deps,
            num_returns=1 if mode else self._num_returns,  # type: ignore[arg-type]
            resources={},
            max_retries=0,
            retry_exceptions=False,
            runtime_env=None,
            actor_id=target.actor_id,
            method=self._name,
            generator=mode,
        )
        refs = client.submit(spec, P.ACTOR_CALL)
        executor = context.current_executor()
        if executor is not None and executor.serial_actor and executor.actor_id == target.actor_id:
            executor.self_calls.update(r._id for r in refs)
        if mode == "streaming":
            return ObjectRefGenerator(refs[0], client)
        if spec.num_returns == 1:
            return refs[0]
        return None if spec.num_returns == 0 else refs


class ActorHandle:
    """A reference to an actor: call ``handle.method.remote(...)``. Picklable."""

    def __init__(
        self,
        actor_id: bytes,
        class_name: str,
        methods: dict[str, int],
        ref: ObjectRef | None,
        binders: dict[str, Binder] | None = None,
    ) -> None:
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = methods
        self._ref = ref
        target = _Target(actor_id, class_name, ref)  # its ref keeps the actor alive
        binders = binders or {}
        for name, num_returns in methods.items():
            self.__dict__[name] = ActorMethod(target, name, num_returns, binders.get(name))
        # Ray's readiness probe: answered once __init__ has run.
        self.__dict__["__ray_ready__"] = ActorMethod(target, "__ray_ready__", 1)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        known = ", ".join(sorted(self._methods)) or "none"
        raise AttributeError(f"actor {self._class_name!r} has no method {name!r} (its methods: {known})")

    def __repr__(self) -> str:
        return f"Actor({self._class_name}, {self._actor_id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __reduce__(self) -> tuple[Any, ...]:
        record_contained_ref(self._actor_id)
        return (_rebuild_handle, (self._actor_id, self._class_name, self._methods))


def _rebuild_handle(actor_id: bytes, class_name: str, methods: dict[str, int]) -> ActorHandle:
    client = context.client_if_connected()
    ref = client.adopt_ref(actor_id) if client is not None else None
    return ActorHandle(actor_id, class_name, methods, ref)


def exit_actor() -> None:
    """End the current actor from inside one of its methods (Ray's ``exit_actor``).

    Calls still pending fail with ``ActorDiedError``; the actor is not restarted.
    """
    executor = context.current_executor()
    if executor is None or executor.actor_id is None:
        raise TypeError("exit_actor() must be called from inside an actor method")
    raise _ExitActor(0)
