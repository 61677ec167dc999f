"""Remote functions: ``@remote`` on a function, ``f.remote(...)``, ``f.options(...)``.

A function is pickled by value with cloudpickle the first time a process
submits it (not at decoration, so functions it calls may be defined later)
and sent to the node once; each worker loads it once.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, ParamSpec, TypeVar

from . import context, runtime_env
from . import payload as payload_codec
from .call_check import Binder, check_export_size
from .dag import FunctionNode
from .generators import ObjectRefGenerator
from .object_ref import ObjectRef
from .options import resource_demand, returns_of, validate_task_options
from .serialization import SerializationError, dumps, serialize
from .strategy import chooses_placement, strategy_of
from .task_spec import ArgRef, TaskSpec, forever, retry_exceptions_to_wire

_DEFAULT_MAX_RETRIES = 3
P = ParamSpec("P")
R = TypeVar("R")


class _Export:
    """The pickled function and its id, shared by a function and its ``.options()`` variants."""

    __slots__ = ("function_id", "pickled", "binder")

    def __init__(self, function_id: bytes | None = None) -> None:
        self.function_id = function_id or os.urandom(16)
        self.pickled: bytes | None = None
        self.binder: Binder | None = None  # the signature, read on the first call


class RemoteFunction(Generic[P, R]):
    """A function that runs as a task: call ``.remote(*args, **kwargs)`` for an ObjectRef.

    For type checkers, ``f.remote(...)`` takes ``f``'s parameters and returns
    ``ObjectRef[R]``, and calling ``f(...)`` directly is an error.
    """

    def __init__(self, function: Any, options: dict[str, Any], _export: _Export | None = None) -> None:
        if not callable(function):
            raise TypeError(f"remote() needs a function or a class, not {function!r}")
        name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None) or repr(function)
        validate_task_options(options, f"@remote on {name}")
        self._function = function
        self._options = options
        self._name = options.get("name") or name
        self._export = _export or _Export()
        self._num_returns, self._generator = returns_of(options.get("num_returns"), function)
        self._resources = resource_demand(options, default_cpus=1)
        self._strategy = strategy_of(options, name)
        self._chooses_placement = chooses_placement(options)
        self.__name__ = getattr(function, "__name__", name)
        self.__qualname__ = name
        self.__doc__ = getattr(function, "__doc__", None)
        self.__module__ = getattr(function, "__module__", None) or "builtins"
        self.__wrapped__ = function
        self.__actorkit_target__ = function  # what a worker runs if this object is unpickled

    def __repr__(self) -> str:
        return f"<RemoteFunction {self.__module__}.{self._name}>"

    if not TYPE_CHECKING:  # hidden from type checkers, so that they flag f(3)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            raise TypeError(
                f"Remote functions cannot be called directly. Instead of running "
                f"'{self.__module__}.{self._name}()', try '{self.__module__}.{self._name}.remote()'."
            )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self._function, self._options, self._export.function_id))

    def options(self, **options: Any) -> RemoteFunction[P, R]:
        """A variant of this function with some options changed (Ray's ``.options()``)."""
        merged = {**self._options, **options}
        validate_task_options(options, f"{self._name}.options()")
        return RemoteFunction(self._function, merged, self._export)

    def bind(self, *args: Any, **kwargs: Any) -> FunctionNode:
        """A DAG node that calls this function when the graph runs (see ``actorkit.dag``)."""
        return FunctionNode(self, args, kwargs)

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> ObjectRef[R]:
        """Submit a call as a task; returns its ObjectRef(s) at once."""
        export = self._export
        binder = export.binder
        if binder is None:
            binder = export.binder = Binder.of(self._function, f"{self._name}.remote()")
        binder.check(args, kwargs)
        client = context.current_client()
        # Arguments first: one that cannot be pickled must not leave the
        # function marked as sent when its bytes never left.
        arguments = encode_arguments(args, kwargs, client, f"{self._name}()")
        function_bytes = function_bytes_to_send(client, export, self._function)
        options = self._options
        max_retries = options.get("max_retries", _DEFAULT_MAX_RETRIES)
        spec = TaskSpec(
            task_id=client.new_task_id(),
            job_id=context.current_job_id(),
            name=self._name,
            function_id=export.function_id,
            function_bytes=function_bytes,
            args=arguments.payload,
            deps=arguments.deps,
            num_returns=self._num_returns,
            resources=self._resources,
            max_retries=forever(max_retries),
            retry_exceptions=_retry_exceptions(options.get("retry_exceptions", False)),
            runtime_env=runtime_env.for_call(options.get("runtime_env"), client),
            max_calls=options.get("max_calls", 0),
            strategy=self._strategy if self._chooses_placement else context.captured_placement(),
            generator=self._generator,
        )
        refs = client.submit(spec)
        if self._generator == "streaming":
            return ObjectRefGenerator(refs[0], client)  # type: ignore[return-value]
        if self._num_returns == 1:
            return refs[0]
        if self._num_returns == 0:
            return None  # type: ignore[return-value]
        return refs  # type: ignore[return-value]  # num_returns > 1: a list of refs


def function_bytes_to_send(client: Any, export: _Export, target: Any) -> bytes | None:
    """The pickled function or class, if this process has not sent it to the node yet."""
    if not client.needs_export(export.function_id):
        return None
    if export.pickled is None:
        pickled = dumps(target)
        kind = "class" if isinstance(target, type) else "function"
        check_export_size(target, pickled, f"the remote {kind} {getattr(target, '__qualname__', target)!r}", dumps)
        export.pickled = pickled
    return export.pickled


def _retry_exceptions(value: Any) -> bool | bytes:
    return retry_exceptions_to_wire(value)  # pickled: the node never loads user classes


def _rebuild(function: Any, options: dict[str, Any], function_id: bytes) -> RemoteFunction:
    return RemoteFunction(function, options, _Export(function_id))


_NO_ARGS: Any = None


class EncodedArguments(NamedTuple):
    payload: Any  # the pickled (args, kwargs), always small
    deps: tuple[bytes, ...]  # object ids the ArgRef placeholders stand for
    keep: list[ObjectRef]  # refs to large arguments put as objects: keep until the call is sent


def encode_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], client: Any, callee: str = "the call"
) -> EncodedArguments:
    """Pickle a call's arguments; top-level ObjectRefs become ArgRef placeholders.

    Large arguments are put in the object store first and passed by reference,
    as in Ray: written once into shared memory, read without a copy.  An
    argument that cannot be pickled raises SerializationError naming it as
    an argument of ``callee``.
    """
    try:
        return _encode_arguments(args, kwargs, client)
    except SerializationError as e:
        raise _about_argument(e, callee) from None


def _about_argument(error: SerializationError, callee: str) -> SerializationError:
    """The error told of "argument 2 of f()", not of "[0][1]" of the (args, kwargs) pair."""
    steps = error.steps
    if len(steps) < 2 or steps[0] not in ("[0]", "[1]"):
        return error.about(f"an argument of {callee}")
    if steps[0] == "[0]":
        subject = f"argument {int(steps[1][1:-1]) + 1} of {callee}"
    else:
        subject = f"keyword argument {steps[1][1:-1]} of {callee}"
    return error.about(subject, steps[2:])


def _encode_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], client: Any) -> EncodedArguments:
    global _NO_ARGS
    if not args and not kwargs:
        if _NO_ARGS is None:
            _NO_ARGS = payload_codec.encode(([], {}), client.session)
        return EncodedArguments(_NO_ARGS, (), [])
    deps: list[bytes] = []
    keep: list[ObjectRef] = []

    def by_reference(ref: ObjectRef) -> ArgRef:
        client.escaping(ref._id)  # the process running the call asks the node for it
        deps.append(ref._id)
        return ArgRef(len(deps) - 1)

    arg_list = [by_reference(a) if type(a) is ObjectRef else a for a in args]
    kwarg_map = {k: by_reference(v) if type(v) is ObjectRef else v for k, v in kwargs.items()}
    whole = serialize((arg_list, kwarg_map))
    if not payload_codec.needs_segment(whole):
        return EncodedArguments(payload_codec.from_serialized(whole, client.session), tuple(deps), keep)

    def put_if_large(value: Any) -> Any:
        if type(value) is ArgRef:
            return value
        s = serialize(value)
        if not payload_codec.needs_segment(s):
            return value
        ref = client.put_serialized(s)
        keep.append(ref)
        return by_reference(ref)

    arg_list = [put_if_large(a) for a in arg_list]
    kwarg_map = {k: put_if_large(v) for k, v in kwarg_map.items()}
    return EncodedArguments(payload_codec.encode((arg_list, kwarg_map), client.session), tuple(deps), keep)
