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
import os
import pickle
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import cloudpickle

from . import unmovable
from .exceptions import SerializationError, TaskError
from .object_ref import collect_contained_refs
from .payload import OUT_OF_BAND_THRESHOLD

_custom_reducers: dict[type, Callable[[Any], Any]] = {}


class Serialized(NamedTuple):
    """A pickled value: the stream, its out-of-band buffers, and the refs it holds."""

    data: bytes
    buffers: list[pickle.PickleBuffer]
    contained: list[bytes]


class _Pickler(cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        reducer = _custom_reducers.get(kind) if _custom_reducers else None
        if reducer is not None:
            return reducer(obj)
        special = _special.get(kind, _UNKNOWN)
        if special is _UNKNOWN:
            special = _special[kind] = _special_reducer(kind)
        if special is not None:
            return special(self, obj)
        return super().reducer_override(obj)


_UNKNOWN: Any = object()
# The reducer of each type that actorkit pickles its own way (None: cloudpickle's
# way), decided once per type: reducer_override runs for almost every object.
_special: dict[type, Callable[[Any, Any], Any] | None] = {}


def _special_reducer(kind: type) -> Callable[[Any, Any], Any] | None:
    if kind is types.CodeType:
        return lambda pickler, code: _code_reduce(code)
    if issubclass(kind, type):
        return _class_reduce
    if kind.__module__ == "numpy" and kind.__name__ == "ndarray":
        return _array_reduce
    if issubclass(kind, BaseException):
        if kind.__reduce__ is BaseException.__reduce__ and _has_own_init(kind):
            return _exception_reduce
        return None
    reason = unmovable.refusal(kind)
    if reason is not None:
        return lambda pickler, obj: _refuse(obj, reason)
    return None


def _refuse(obj: Any, reason: str) -> Any:
    raise unmovable.Refused(obj, reason)


def _exception_reduce(pickler: Any, error: BaseException) -> Any:
    # Pickle rebuilds exceptions as cls(*args), which fails when __init__
    # takes other arguments (Ray loses such errors): rebuild without it.
    return (_rebuild_exception, (type(error), error.args, error.__dict__ or None))


def _class_reduce(pickler: Any, cls: type) -> Any:
    reduced = cloudpickle.Pickler.reducer_override(pickler, cls)
    if (
        "__slots__" in cls.__dict__
        and isinstance(reduced, tuple)
        and getattr(reduced[0], "__name__", "") == "_make_skeleton_class"
    ):
        # cloudpickle rebuilds a class by value without its __slots__, so its
        # instances grow a __dict__ and no longer unpickle into the original
        # class: give the rebuilt class its slots back.
        args = list(reduced[1])
        args[3] = {**args[3], "__slots__": cls.__dict__["__slots__"]}
        reduced = (reduced[0], tuple(args), *reduced[2:])
    return reduced


def _array_reduce(pickler: Any, array: Any) -> Any:
    if array.nbytes >= OUT_OF_BAND_THRESHOLD or array.dtype.hasobject:
        return NotImplemented  # numpy's own reduction: large buffers go out of band, read-only
    # A small array would come back writable from its in-band copy; Ray makes
    # every array it hands out read-only, whatever its size.
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    return _frozen_array, (array.tobytes(order=order), array.dtype, array.shape, order)


def _frozen_array(data: bytes, dtype: Any, shape: tuple[int, ...], order: str) -> Any:
    import numpy as np

    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order)


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
    error = cls.__new__(cls, *args)  # no __init__: its signature is the class's own
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


def serialize_put(value: Any) -> Serialized:
    """``serialize`` for ``put()``: a failure is told of "the value given to put()"."""
    try:
        return serialize(value)
    except SerializationError as e:
        raise e.about("the value given to put()") from None


def dumps(value: Any) -> bytes:
    """Pickle to one in-band bytes string (for functions, small messages)."""
    try:
        stream = io.BytesIO()
        _Pickler(stream, protocol=5).dump(value)
        return stream.getvalue()
    except Exception as cloudpickle_error:
        return _dill_dumps(value, [], cloudpickle_error)


def _dill_dumps(value: Any, buffers: list[pickle.PickleBuffer], first_error: Exception) -> bytes:
    """dill's try at what cloudpickle could not pickle, or the error that says why not."""
    if isinstance(first_error, unmovable.Refused):
        raise _refusal_error(value, first_error) from None
    # cloudpickle re-raises a RecursionError as a PicklingError; dill and the
    # search for a culprit would only hit the same limit, slowly.
    if isinstance(first_error, RecursionError) or isinstance(first_error.__context__, RecursionError):
        raise SerializationError(
            "the value",
            [],
            "structure nested too deeply",
            f"pickling reached Python's recursion limit ({sys.getrecursionlimit()}). "
            "Flatten it, or raise the limit with sys.setrecursionlimit() in both processes.",
        ) from None
    try:
        return _DillPickler.dumps(value, buffers)
    except unmovable.Refused as refused:
        raise _refusal_error(value, refused) from None
    except Exception:
        pass
    steps, culprit = unmovable.deepest_failure(value, _pickles)
    raise SerializationError(
        "the value",
        steps,
        unmovable.type_name(culprit),
        f"it cannot be pickled (cloudpickle: {_short(first_error)}; dill failed too). Register a "
        "serializer for it with actorkit.util.register_serializer, or pass something that can "
        "be pickled.",
    ) from first_error


def _refusal_error(value: Any, refused: unmovable.Refused) -> SerializationError:
    steps = unmovable.path_to(value, refused.culprit)
    return SerializationError(
        "the value", steps if steps is not None else ["<somewhere inside>"], unmovable.type_name(refused.culprit), refused.reason
    )


def _short(error: BaseException, limit: int = 200) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _DillPickler:
    """dill, refusing what cloudpickle refuses: it would copy a lock or reopen a file."""

    _class: Any = None

    @classmethod
    def dumps(cls, value: Any, buffers: list[pickle.PickleBuffer]) -> bytes:
        if cls._class is None:
            import dill

            class Pickler(dill.Pickler):  # type: ignore[misc]
                def save(self, obj: Any, save_persistent_id: bool = True) -> None:
                    reason = _refusal_of(type(obj))
                    if reason is not None:
                        raise unmovable.Refused(obj, reason)
                    super().save(obj, save_persistent_id)

            cls._class = Pickler
        stream = io.BytesIO()
        cls._class(stream, protocol=5, buffer_callback=_buffer_sink(buffers), recurse=True).dump(value)
        return stream.getvalue()


def _refusal_of(kind: type) -> str | None:
    if _custom_reducers and kind in _custom_reducers:
        return None
    return unmovable.refusal(kind)


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
        _Pickler(io.BytesIO(), protocol=5).dump(obj)
        return True
    except unmovable.Refused:
        return False
    except Exception:
        pass
    try:
        _DillPickler.dumps(obj, [])
        return True
    except Exception:
        return False


def task_error(name: str, error: BaseException, own_file: str) -> TaskError:
    """``error`` as the TaskError callers get: remote traceback (frames of ``own_file``,
    the executor's, dropped so users see their function first), and the original
    exception as its cause when it pickles, else its picklable parts."""
    if isinstance(error, TaskError):
        return error  # from a task this one waited on: pass it on unchanged
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == own_file:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(error), error, tb))
    cause = error if _round_trips(error) else picklable_copy(error)
    return TaskError(name, text, cause, os.getpid(), type(error).__name__)


def _round_trips(error: BaseException) -> bool:
    """Whether ``error`` survives pickling (one holding a socket, say, may not)."""
    try:
        pickle.loads(dumps(error))
        return True
    except Exception:
        return False


def picklable_copy(error: BaseException) -> BaseException | None:
    """``error`` rebuilt as its own class with only the parts that pickle, or None.

    An exception holding a lock or a socket would otherwise reach the caller
    only as text, and ``except MyError`` would no longer catch it.
    """
    kind = type(error)
    args = tuple(a if _pickles(a) else repr(a) for a in error.args)
    state = {k: v for k, v in getattr(error, "__dict__", {}).items() if _pickles(v)}
    try:
        copy = _rebuild_exception(kind, args, state)
        pickle.loads(dumps(copy))
    except Exception:
        return None
    return copy


def find_unserializable(value: Any) -> tuple[str, Any]:
    """The attribute path and object of the deepest part of ``value`` that won't pickle."""
    steps, culprit = unmovable.deepest_failure(value, _pickles)
    return "value" + "".join(steps), culprit
