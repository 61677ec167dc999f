"""Turning values into bytes and back.

Values are pickled with cloudpickle at protocol 5.  Buffers of at least
``OUT_OF_BAND_THRESHOLD`` bytes (numpy arrays, bytes, anything exposing the
buffer protocol) leave the pickle stream as out-of-band buffers, so the object
store can place them in shared memory and readers can map them without a copy.
Plain pickle semantics are kept: aliasing and self-reference round-trip.

Where cloudpickle fails, dill is tried; where both fail, ``SerializationError``
names the attribute path and type of the first object that cannot be pickled.

ObjectRefs and actor handles met while pickling are collected as the value's
*contained refs*: the node keeps those objects alive as long as the container.
"""

from __future__ import annotations

import io
import linecache
import marshal
import pickle
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import cloudpickle

from .object_ref import collect_contained_refs

OUT_OF_BAND_THRESHOLD = 100 * 1024

_custom_reducers: dict[type, Callable[[Any], Any]] = {}


class SerializationError(TypeError):
    """A value could not be serialized; the message names the culprit."""


class Serialized(NamedTuple):
    """A pickled value: the stream, its out-of-band buffers, and the refs it holds."""

    data: bytes
    buffers: list[pickle.PickleBuffer]
    contained: list[bytes]


class _Pickler(cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType:
            return _code_reduce(obj)
        reducer = _custom_reducers.get(type(obj)) if _custom_reducers else None
        if reducer is not None:
            return reducer(obj)
        if (
            isinstance(obj, BaseException)
            and type(obj).__reduce__ is BaseException.__reduce__
            and _has_own_init(type(obj))
        ):
            # Pickle rebuilds exceptions as cls(*args), which fails when __init__
            # takes other arguments (Ray loses such errors): rebuild without it.
            return (_rebuild_exception, (type(obj), obj.args, obj.__dict__ or None))
        return super().reducer_override(obj)


def _code_reduce(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    # cloudpickle 3.1 renames every code object it pickles "<dynamic-code>",
    # which strips file names and source lines from remote tracebacks.  marshal
    # keeps the code object whole (the reader runs the same Python: spawned
    # workers, and cluster members of one version).  The source lines travel
    # with it, so the reader shows the lines that ran even where it cannot
    # open the file (``python -c``, a notebook cell, a script on another
    # machine or edited since).
    return _load_code, (marshal.dumps(code), code.co_filename, *_source_span(code))


def _source_span(code: types.CodeType) -> tuple[int, list[str]]:
    """The first line number and the source lines of ``code``, nested code included."""
    lines = linecache.getlines(code.co_filename)
    if not lines and code.co_filename == "<string>" and "-c" in sys.orig_argv:
        # ``python -c CODE`` leaves its source nowhere but on the command line.
        source = sys.orig_argv[sys.orig_argv.index("-c") + 1]
        lines = source.splitlines(keepends=True)
    if not lines:
        return 0, []
    first = code.co_firstlineno
    last = max((line for _, _, line in code.co_lines() if line is not None), default=first)
    return first, lines[first - 1 : last]


def _load_code(data: bytes, filename: str, first: int, lines: list[str]) -> types.CodeType:
    if lines:
        _remember_source(filename, first, lines)
    return marshal.loads(data)


def _remember_source(filename: str, first: int, lines: list[str]) -> None:
    """Put ``lines`` into linecache as lines ``first...`` of ``filename``."""
    entry = linecache.cache.get(filename)
    if entry is not None and entry[1] is not None:
        return  # this process read the file itself, as code it imported
    known = list(entry[2]) if entry is not None else []
    if len(known) < first - 1 + len(lines):
        known.extend("\n" for _ in range(first - 1 + len(lines) - len(known)))
    known[first - 1 : first - 1 + len(lines)] = lines
    # An mtime of None tells linecache.checkcache() to leave the entry alone.
    linecache.cache[filename] = (sum(map(len, known)), None, known, filename)


def _has_own_init(cls: type) -> bool:
    for klass in cls.__mro__:
        if klass.__module__ == "builtins":
            return False
        if "__init__" in klass.__dict__:
            return True
    return False


def _rebuild_exception(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any] | None) -> BaseException:
    error = cls.__new__(cls, *args)
    error.args = args
    if state:
        error.__dict__.update(state)
    return error


def _buffer_sink(buffers: list[pickle.PickleBuffer]) -> Callable[[pickle.PickleBuffer], bool]:
    def callback(buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes >= OUT_OF_BAND_THRESHOLD:
            buffers.append(buf)
            return False  # out of band
        return True  # small: keep it in the stream

    return callback


# Values of these types pickle identically with the C pickler, which is far
# cheaper than setting up a CloudPickler for each small value.
_PLAIN_TYPES = frozenset({type(None), bool, int, float, str, bytes})
_NO_REFS: list[bytes] = []


def _is_plain(value: Any, depth: int = 2) -> bool:
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return kind is not bytes or len(value) < OUT_OF_BAND_THRESHOLD
    if not depth or (kind is not list and kind is not tuple and kind is not dict) or len(value) > 32:
        return False
    if kind is dict:
        return all(type(k) is str and _is_plain(v, depth - 1) for k, v in value.items())
    return all(_is_plain(v, depth - 1) for v in value)


def serialize(value: Any) -> Serialized:
    """Pickle ``value``; raise SerializationError naming what cannot be pickled."""
    if _is_plain(value):
        return Serialized(pickle.dumps(value, protocol=5), [], _NO_REFS)
    contained: list[bytes] = []
    outer = collect_contained_refs(contained)
    try:
        buffers: list[pickle.PickleBuffer] = []
        try:
            stream = io.BytesIO()
            _Pickler(stream, protocol=5, buffer_callback=_buffer_sink(buffers)).dump(value)
            data = stream.getvalue()
        except Exception as cloudpickle_error:
            buffers.clear()
            contained.clear()
            data = _dill_dumps(value, buffers, cloudpickle_error)
        return Serialized(data, buffers, contained)
    finally:
        collect_contained_refs(outer)


def _dill_dumps(value: Any, buffers: list[pickle.PickleBuffer], first_error: Exception) -> bytes:
    import dill

    try:
        return dill.dumps(value, protocol=5, buffer_callback=_buffer_sink(buffers), recurse=True)
    except Exception:
        pass
    path, culprit = find_unserializable(value)
    raise SerializationError(
        f"cannot serialize {_describe(value)}: {path} of type "
        f"{type(culprit).__module__}.{type(culprit).__qualname__} cannot be pickled "
        f"(cloudpickle: {first_error}; dill failed too). Register a serializer for it with "
        f"actorkit.util.register_serializer, or pass something that can be pickled."
    ) from first_error


def dumps(value: Any) -> bytes:
    """Pickle to one in-band bytes string (for functions, small messages)."""
    try:
        stream = io.BytesIO()
        _Pickler(stream, protocol=5).dump(value)
        return stream.getvalue()
    except Exception as cloudpickle_error:
        return _dill_dumps(value, [], cloudpickle_error)


def register_serializer(
    cls: type, *, serializer: Callable[[Any], Any], deserializer: Callable[[Any], Any]
) -> None:
    """Serialize instances of ``cls`` as ``deserializer(serializer(obj))``.

    The deserializer travels with each value (pickled by value), so processes
    that read it need no registration of their own.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer() needs a class, not {cls!r}")
    if not callable(serializer) or not callable(deserializer):
        raise TypeError("register_serializer(): serializer and deserializer must be callables")
    _custom_reducers[cls] = lambda obj: (deserializer, (serializer(obj),))


def deregister_serializer(cls: type) -> None:
    """Undo ``register_serializer(cls, ...)``; a class never registered is an error."""
    try:
        del _custom_reducers[cls]
    except KeyError:
        raise ValueError(f"no serializer is registered for {cls!r}") from None


def _pickles(obj: Any) -> bool:
    """Whether ``obj`` can be pickled by cloudpickle or, failing that, dill."""
    try:
        cloudpickle.dumps(obj, protocol=5)
        return True
    except Exception:
        pass
    import dill

    try:
        dill.dumps(obj, protocol=5, recurse=True)
        return True
    except Exception:
        return False


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"[{k!r}]", v
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, v in enumerate(obj):
            yield f"[{i}]", v
    else:
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            for k, v in attrs.items():
                yield f".{k}", v
        for slot in getattr(type(obj), "__slots__", ()):
            if isinstance(slot, str) and hasattr(obj, slot):
                yield f".{slot}", getattr(obj, slot)
        closure = getattr(obj, "__closure__", None)
        code = getattr(obj, "__code__", None)
        if closure and code is not None:
            for name, cell in zip(code.co_freevars, closure):
                try:
                    yield f".<closure {name}>", cell.cell_contents
                except ValueError:
                    continue


def find_unserializable(value: Any, path: str = "value") -> tuple[str, Any]:
    """The attribute path and object of the deepest part of ``value`` that won't pickle."""
    seen: set[int] = set()
    node, node_path = value, path
    while True:
        seen.add(id(node))
        for suffix, child in _children(node):
            if id(child) not in seen and not _pickles(child):
                node, node_path = child, node_path + suffix
                break
        else:
            return node_path, node


def _describe(value: Any) -> str:
    return f"a {type(value).__qualname__}"
