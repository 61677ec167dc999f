"""Values as they travel and rest: ``Payload``, and the codec between the two.

A payload holds a pickled value.  Small ones are inline (the pickle stream
travels in messages).  Large out-of-band buffers, and a pickle stream too
large to travel inline, are written once into one shared-memory segment;
readers map that segment read-only and build the value on top of it, so a
numpy array comes back without a copy and cannot be written to.
"""

from __future__ import annotations

import mmap
import pickle
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from . import shm

if TYPE_CHECKING:
    from .serialization import Serialized

_ALIGN = 64  # numpy and SIMD code like their data aligned
# Buffers at least this large go out of band (into shared memory), as does a stream this long.
OUT_OF_BAND_THRESHOLD = 100 * 1024


class Payload(NamedTuple):
    data: bytes | None  # the pickle stream when inline, else None (it is in the segment)
    segment: str | None  # shared-memory segment with the large parts, if any
    segment_size: int
    spans: tuple[tuple[int, int], ...]  # (offset, size) of each out-of-band buffer
    stream_span: tuple[int, int] | None  # where the stream is when it is not inline
    contained: tuple[bytes, ...]  # ObjectRefs the value holds
    is_error: bool = False

    @property
    def nbytes(self) -> int:
        return self.segment_size + (len(self.data) if self.data is not None else 0)


def encode(value: Any, session: str, is_error: bool = False) -> Payload:
    """Serialize ``value``, writing its large parts into a new shared-memory segment."""
    from .serialization import (
        serialize,  # lazy: the node encodes errors but never loads cloudpickle otherwise
    )

    return from_serialized(serialize(value), session, is_error)


def needs_segment(s: Serialized) -> bool:
    """Whether a serialized value is too large to travel inline."""
    return bool(s.buffers) or len(s.data) >= OUT_OF_BAND_THRESHOLD


Allocator = Callable[[int], "tuple[str, mmap.mmap]"]


def from_serialized(
    s: Serialized, session: str, is_error: bool = False, allocate: Allocator | None = None
) -> Payload:
    """A payload for an already serialized value (see ``encode``).

    ``allocate(size)`` gives a writable segment of at least ``size`` bytes and
    its name; by default a new one is created.
    """
    contained = tuple(s.contained)
    big_stream = len(s.data) >= OUT_OF_BAND_THRESHOLD
    if not s.buffers and not big_stream:
        return Payload(s.data, None, 0, (), None, contained, is_error)
    raws = [b.raw() for b in s.buffers]
    spans = []
    offset = 0
    for raw in raws:
        spans.append((offset, raw.nbytes))
        offset = _aligned(offset + raw.nbytes)
    stream_span = (offset, len(s.data)) if big_stream else None
    if big_stream:
        offset += len(s.data)
    name, mm = allocate(offset) if allocate is not None else shm.create(session, offset)
    try:
        for raw, (start, size) in zip(raws, spans):
            mm[start : start + size] = raw
        if stream_span is not None:
            mm[stream_span[0] : stream_span[0] + stream_span[1]] = s.data
    finally:
        mm.close()
    return Payload(
        None if big_stream else s.data, name, offset, tuple(spans), stream_span, contained, is_error
    )


class _Pin:
    """Keeps a mapped segment alive, and its object pinned, while any view of it lives.

    The out-of-band buffers handed to unpickling are numpy arrays whose base is
    this object (through ``__array_interface__``), so every array built on the
    shared memory keeps it alive; when the last one goes, ``release`` tells
    the process's client that this view no longer pins the object.
    """

    __slots__ = ("__array_interface__", "_mapping", "_release")

    def __init__(self, mapping: Any, release: Callable[[], None] | None) -> None:
        import numpy as np

        raw = np.frombuffer(mapping, dtype=np.uint8)
        self.__array_interface__ = {
            "data": (raw.__array_interface__["data"][0], True),  # read-only
            "shape": raw.shape,
            "typestr": "|u1",
            "version": 3,
        }
        self._mapping = raw
        self._release = release

    def __del__(self) -> None:
        if self._release is not None:
            self._release()


def to_wire(payload: Payload) -> tuple[Any, ...]:
    """The payload as a plain tuple: pickling a NamedTuple costs ~5x more (its class
    reference is looked up every time), and payloads travel in every result."""
    return tuple(payload)


def from_wire(fields: tuple[Any, ...]) -> Payload:
    return Payload._make(fields)


def decode(
    payload: Payload,
    mapping: mmap.mmap | None = None,
    pin: Callable[[], Callable[[], None]] | None = None,
) -> Any:
    """Rebuild the value; ``mapping`` is the segment already mapped by this process.

    ``pin()``, called when the value will view shared memory, counts the view
    as a reference to the object and returns the function that uncounts it.
    """
    if payload.segment is None:
        return pickle.loads(payload.data)  # type: ignore[arg-type]
    if mapping is None:
        mapping = shm.attach(payload.segment, payload.segment_size)
    if payload.spans:
        import numpy as np

        base = np.asarray(_Pin(mapping, pin() if pin is not None else None))
        buffers: list[Any] = [base[start : start + size] for start, size in payload.spans]
    else:
        buffers = []
    if payload.stream_span is not None:
        start, size = payload.stream_span
        with memoryview(mapping) as view:
            return pickle.loads(view[start : start + size], buffers=buffers)
    return pickle.loads(payload.data, buffers=buffers)  # type: ignore[arg-type]


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN
