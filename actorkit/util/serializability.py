"""``inspect_serializability``: which parts of a value cannot be sent, as Ray's does it.

It walks the value as the pickler would (attributes, items, a function's
closure and globals) to ``depth`` levels, and reports the innermost parts
that fail: what actorkit refuses (locks, open files, sockets, ...) and what
neither cloudpickle nor dill can pickle.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple, TextIO

from .. import unmovable
from ..serialization import SerializationError, serialize

__all__ = ["FailureTuple", "inspect_serializability"]


class FailureTuple(NamedTuple):
    """A part that cannot be serialized: the object, its name, and the object holding it."""

    obj: Any
    name: str
    parent: Any

    # By identity: the parts are often unhashable (dicts, lists).
    def __hash__(self) -> int:
        return hash((id(self.obj), self.name, id(self.parent)))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, FailureTuple)
            and other.obj is self.obj
            and other.name == self.name
            and other.parent is self.parent
        )

    def __repr__(self) -> str:
        return f"FailTuple({self.name} [obj={self.obj!r:.60}, parent={self.parent!r:.60}])"


def _failure(obj: Any) -> str | None:
    try:
        serialize(obj)
    except SerializationError as e:
        return e.reason
    except Exception as e:  # noqa: BLE001  (whatever pickling raised is the answer)
        return f"{type(e).__name__}: {e}"
    return None


def inspect_serializability(
    base_obj: Any, name: str | None = None, depth: int = 3, print_file: TextIO | None = None
) -> tuple[bool, set[FailureTuple]]:
    """Whether ``base_obj`` can be sent to a task, and the parts that cannot.

    Prints a report to ``print_file`` (default: stdout).  Returns
    ``(serializable, failures)``; each failure names a part whose own parts
    all serialize, or that lies ``depth`` levels down.
    """
    out = print_file if print_file is not None else sys.stdout
    name = name or repr(base_obj)[:60]
    failures: set[FailureTuple] = set()
    rule = "=" * 80
    print(rule, file=out)
    print(f"Checking Serializability of {name}", file=out)
    print(rule, file=out)
    reason = _failure(base_obj)
    if reason is None:
        print(f"{name} is serializable.", file=out)
        return True, failures
    _inspect(base_obj, name, None, reason, depth, 0, failures, out, set())
    print(rule, file=out)
    for failure in sorted(failures, key=lambda f: f.name):
        print(f"Variable: {failure.name} ({unmovable.type_name(failure.obj)}) cannot be serialized.", file=out)
    print(rule, file=out)
    return False, failures


def _inspect(
    obj: Any,
    name: str,
    parent: Any,
    reason: str,
    depth: int,
    level: int,
    failures: set[FailureTuple],
    out: TextIO,
    seen: set[int],
) -> None:
    indent = "    " * level
    print(f"{indent}!!! FAIL serialization: {reason}", file=out)
    seen.add(id(obj))
    found = False
    if level < depth:
        for step, child in unmovable.children(obj):
            if id(child) in seen:
                continue
            child_reason = _failure(child)
            if child_reason is None:
                continue
            found = True
            child_name = step.lstrip(".")
            print(f"{indent}    Serializing '{child_name}' {child!r:.60}...", file=out)
            _inspect(child, child_name, obj, child_reason, depth, level + 1, failures, out, seen)
    if not found:
        failures.add(FailureTuple(obj, name, parent))
