"""Ray's classic DAG API, built on tasks and actors.

A DAG is described with ``.bind()`` instead of ``.remote()`` and run with
``execute()``; every node becomes the task, actor or actor call it names, and
edges become ObjectRef arguments, so nodes run as soon as their inputs are
ready::

    from actorkit.dag import InputNode

    @actorkit.remote
    def add(a, b):
        return a + b

    with InputNode() as inp:
        dag = add.bind(add.bind(inp[0], 1), inp[1])
    actorkit.get(dag.execute(2, 3))     # (2 + 1) + 3 == 6

``Actor.bind(...)`` makes an actor node and ``actor_node.method.bind(...)`` a
call of it; ``MultiOutputNode([...])`` executes to a list of refs.  Each
``execute()`` runs the whole graph anew (new tasks, new actors); a node used
twice within one execution runs once.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ClassMethodNode", "ClassNode", "DAGNode", "FunctionNode", "InputNode", "MultiOutputNode"]


class DAGNode:
    """A node of the graph: what ``execute()`` turns into a ref, a handle or a value."""

    def __init__(self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> None:
        self._bound_args = args
        self._bound_kwargs = kwargs or {}

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Run the graph ending here with these inputs; returns this node's ObjectRef(s)."""
        return _Execution(args, kwargs).resolve(self)

    def _run(self, execution: _Execution) -> Any:
        raise NotImplementedError

    def _resolved_arguments(self, execution: _Execution) -> tuple[list[Any], dict[str, Any]]:
        return (
            [execution.resolve(a) for a in self._bound_args],
            {k: execution.resolve(v) for k, v in self._bound_kwargs.items()},
        )


class _Execution:
    """One run of a graph: the inputs, and what each node became (each runs once)."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args = args
        self.kwargs = kwargs
        self._done: dict[int, Any] = {}

    def resolve(self, value: Any) -> Any:
        if isinstance(value, DAGNode):
            key = id(value)
            if key not in self._done:
                self._done[key] = value._run(self)
            return self._done[key]
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.resolve(v) for v in value)
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value


class FunctionNode(DAGNode):
    """``f.bind(...)``: a task of remote function ``f``."""

    def __init__(self, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__(args, kwargs)
        self._function = function

    def __repr__(self) -> str:
        return f"<FunctionNode {self._function!r}>"

    def _run(self, execution: _Execution) -> Any:
        args, kwargs = self._resolved_arguments(execution)
        return self._function.remote(*args, **kwargs)


class ClassNode(DAGNode):
    """``Actor.bind(...)``: an actor; ``node.method.bind(...)`` calls it."""

    def __init__(self, actor_class: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__(args, kwargs)
        self._actor_class = actor_class

    def __repr__(self) -> str:
        return f"<ClassNode {self._actor_class!r}>"

    def __getattr__(self, name: str) -> _MethodBinder:
        if name.startswith("_"):
            raise AttributeError(name)
        return _MethodBinder(self, name)

    def _run(self, execution: _Execution) -> Any:
        args, kwargs = self._resolved_arguments(execution)
        return self._actor_class.remote(*args, **kwargs)


class _MethodBinder:
    """``actor_node.method``: only ``.bind()`` is there to call."""

    def __init__(self, actor: Any, name: str) -> None:
        self._actor = actor
        self._name = name

    def bind(self, *args: Any, **kwargs: Any) -> ClassMethodNode:
        return ClassMethodNode(self._actor, self._name, args, kwargs)


class ClassMethodNode(DAGNode):
    """``actor.method.bind(...)``: a call of an actor node's (or a live actor's) method."""

    def __init__(self, actor: ClassNode | None, method_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__(args, kwargs)
        self._actor = actor
        self._method_name = method_name
        self._method: Any = None  # the ActorMethod of a live actor

    @classmethod
    def of_live_actor(cls, method: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ClassMethodNode:
        """A call of ``handle.method`` (an actor that already runs)."""
        node = cls(None, name, args, kwargs)
        node._method = method
        return node

    def __repr__(self) -> str:
        return f"<ClassMethodNode {self._method_name}>"

    def _run(self, execution: _Execution) -> Any:
        method = self._method or getattr(execution.resolve(self._actor), self._method_name)
        args, kwargs = self._resolved_arguments(execution)
        return method.remote(*args, **kwargs)


class InputNode(DAGNode):
    """The graph's input: ``execute(x)`` makes it ``x``; ``inp[i]`` and ``inp.key`` pick parts.

    Used as a context manager (``with InputNode() as inp:``), as in Ray.
    """

    def __enter__(self) -> InputNode:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __repr__(self) -> str:
        return "<InputNode>"

    def __getitem__(self, key: int | str) -> _InputPart:
        return _InputPart(key, is_attribute=False)

    def __getattr__(self, name: str) -> _InputPart:
        if name.startswith("_"):
            raise AttributeError(name)
        return _InputPart(name, is_attribute=True)

    def _run(self, execution: _Execution) -> Any:
        if len(execution.args) == 1 and not execution.kwargs:
            return execution.args[0]
        raise ValueError(
            f"this graph uses its InputNode whole, so execute() takes one argument, not "
            f"{len(execution.args)} positional and {len(execution.kwargs)} keyword; pick parts "
            "with inp[0], inp[1] or inp.name instead"
        )


class _InputPart(DAGNode):
    """``inp[0]``, ``inp["key"]`` or ``inp.key``: one of ``execute()``'s arguments."""

    def __init__(self, key: int | str, is_attribute: bool) -> None:
        super().__init__()
        self._key = key
        self._is_attribute = is_attribute

    def __repr__(self) -> str:
        return f"<InputNode[{self._key!r}]>"

    def _run(self, execution: _Execution) -> Any:
        key = self._key
        if isinstance(key, int):
            if key < len(execution.args):
                return execution.args[key]
            raise IndexError(f"the graph reads input {key}, but execute() got {len(execution.args)} positional argument(s)")
        if key in execution.kwargs:
            return execution.kwargs[key]
        if len(execution.args) == 1:  # inp.key / inp["key"] of one object or dict passed whole
            whole = execution.args[0]
            return getattr(whole, key) if self._is_attribute else whole[key]
        raise KeyError(f"the graph reads input {key!r}, but execute() got no such keyword argument")


class MultiOutputNode(DAGNode):
    """Several outputs: ``execute()`` returns the list of their refs."""

    def __init__(self, outputs: list[DAGNode]) -> None:
        super().__init__()
        self._outputs = list(outputs)

    def __repr__(self) -> str:
        return f"<MultiOutputNode of {len(self._outputs)}>"

    def _run(self, execution: _Execution) -> Any:
        return [execution.resolve(node) for node in self._outputs]
