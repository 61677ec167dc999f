"""Checks made when a remote call is made, before anything is sent (as Ray makes them).

* ``Binder``: the arguments of ``f.remote(...)``, ``Cls.remote(...)`` and
  ``handle.method.remote(...)`` are bound against the signature in the
  caller, so a wrong call fails at once with Python's own ``TypeError``
  message instead of later, in a worker.  Binding is cheap on the usual
  path: a call with only positional arguments within the signature's range
  is accepted without ``inspect``.
* ``check_export_size``: a function or class whose pickle is too large
  (usually a big array captured from the enclosing scope) is refused with an
  error naming the captured name and pointing to ``actorkit.put()``.
"""

from __future__ import annotations

import inspect
import math
import sys
import warnings
from typing import Any

FUNCTION_SIZE_WARN_BYTES = 10 * 2**20
FUNCTION_SIZE_ERROR_BYTES = 95 * 2**20  # as Ray's


class Binder:
    """Binds a call's arguments against one signature; built once per function or method."""

    __slots__ = ("_signature", "_where", "_min", "_max", "_simple")

    def __init__(self, signature: inspect.Signature | None, where: str) -> None:
        self._signature = signature
        self._where = where
        self._min = 0
        self._max = math.inf
        self._simple = signature is None  # None: nothing to check
        if signature is None:
            return
        kinds = [p.kind for p in signature.parameters.values()]
        if any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in signature.parameters.values()):
            return  # a required keyword-only argument: every call needs the full check
        positional = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self._min = sum(1 for p in positional if p.default is p.empty)
        self._max = math.inf if inspect.Parameter.VAR_POSITIONAL in kinds else len(positional)
        self._simple = True

    @classmethod
    def of(cls, target: Any, where: str, drop_first: bool = False) -> Binder:
        """The binder of ``target``'s signature (without ``self`` if ``drop_first``); one that
        accepts anything when the signature cannot be read (builtins, C functions)."""
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            return cls(None, where)
        if drop_first:
            parameters = list(signature.parameters.values())[1:]
            signature = signature.replace(parameters=parameters)
        return cls(signature, where)

    def check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise ``TypeError`` if ``args`` and ``kwargs`` do not fit the signature."""
        if self._simple and not kwargs and self._min <= len(args) <= self._max:
            return
        if self._signature is None:
            return
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{self._where}: {e}") from None


def check_export_size(target: Any, pickled: bytes, what: str, dumps: Any) -> None:
    """Refuse (or warn about) a function or class whose pickle is too large to send."""
    size = len(pickled)
    if size < FUNCTION_SIZE_WARN_BYTES:
        return
    culprit = _largest_capture(target, dumps)
    hint = (
        f" Its largest captured value is {culprit[0]} ({culprit[1] / 2**20:.1f} MiB)."
        if culprit is not None
        else ""
    )
    message = (
        f"{what} pickles to {size / 2**20:.1f} MiB.{hint} Functions and classes are sent to every "
        f"worker: put large values in the object store with ref = actorkit.put(value) and pass "
        f"the ref as an argument instead of capturing the value."
    )
    if size >= FUNCTION_SIZE_ERROR_BYTES:
        raise ValueError(f"{message} (the limit is {FUNCTION_SIZE_ERROR_BYTES / 2**20:.0f} MiB)")
    warnings.warn(message, UserWarning, stacklevel=4)


def _captures(target: Any) -> list[tuple[str, Any]]:
    """(name, value) of the globals and closure variables ``target``'s code uses."""
    functions = [target]
    if isinstance(target, type):
        functions = [v for v in vars(target).values() if inspect.isfunction(v)]
        functions += [v.__func__ for v in vars(target).values() if isinstance(v, (staticmethod, classmethod))]
        captured = [(f"class attribute {k!r}", v) for k, v in vars(target).items() if not callable(v) and not k.startswith("__")]
    else:
        captured = []
    for function in functions:
        code = getattr(function, "__code__", None)
        if code is None:
            continue
        globals_ = getattr(function, "__globals__", {})
        captured += [(f"global {name!r}", globals_[name]) for name in code.co_names if name in globals_]
        for name, cell in zip(code.co_freevars, getattr(function, "__closure__", None) or ()):
            try:
                captured.append((f"closure variable {name!r}", cell.cell_contents))
            except ValueError:
                continue
    return captured


def _largest_capture(target: Any, dumps: Any) -> tuple[str, int] | None:
    best: tuple[str, int] | None = None
    seen: set[int] = set()
    for name, value in _captures(target):
        if id(value) in seen or inspect.ismodule(value):
            continue
        seen.add(id(value))
        size = _size_of(value, dumps)
        if best is None or size > best[1]:
            best = (name, size)
    return best


def _size_of(value: Any, dumps: Any) -> int:
    nbytes = getattr(value, "nbytes", None)  # numpy arrays: no need to pickle them again
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (bytes, bytearray, str)):
        return sys.getsizeof(value)
    try:
        return len(dumps(value))
    except Exception:
        return 0
