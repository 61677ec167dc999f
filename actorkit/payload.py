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
from typing import Any, NamedTuple

from . import shm

_ALIGN = 64  # numpy and SIMD code like their data aligned


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
    from .serialization import OUT_OF_BAND_THRESHOLD, serialize

    s = serialize(value)
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
    name, mm = shm.create(session, offset)
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


def decode(payload: Payload, mapping: mmap.mmap | None = None) -> Any:
    """Rebuild the value; ``mapping`` is the segment already mapped by this process."""
    if payload.segment is None:
        return pickle.loads(payload.data)  # type: ignore[arg-type]
    if mapping is None:
        mapping = shm.attach(payload.segment, payload.segment_size)
    view = memoryview(mapping)
    buffers = [view[start : start + size] for start, size in payload.spans]
    if payload.stream_span is not None:
        start, size = payload.stream_span
        return pickle.loads(view[start : start + size], buffers=buffers)
    return pickle.loads(payload.data, buffers=buffers)  # type: ignore[arg-type]


def release_payload(payload: Payload) -> None:
    """Free the payload's shared memory (called by the node that owns it)."""
    if payload.segment is not None:
        shm.unlink(payload.segment)


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN
