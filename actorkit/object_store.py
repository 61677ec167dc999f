"""The node's shared memory: capacity, recycled segments, spilling to disk.

Objects small enough to travel inline live in the node's memory; larger ones
live in shared-memory segments written by the process that made them.  This
module decides what happens to segments:

- **Recycling.**  Writing into fresh shared memory costs a page fault per
  page (about a tenth of memcpy speed), so a freed segment of 1 MiB or more is
  kept in a pool and handed to the next writer that needs about that much.
  A segment is freed only once no ObjectRef *and no array viewing it* is
  left anywhere (views pin their object), so recycling never changes memory
  under a reader.
- **Capacity.**  Live segments plus the pool may use ``capacity`` bytes.
  Past it, the pool is emptied first, then the least recently used objects
  are spilled: copied to a file in the session directory and their segment
  removed.  A spilled object is restored into a new segment the next time
  it is needed, bit for bit.
"""

from __future__ import annotations

import bisect
import mmap
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from . import shm
from .exceptions import ObjectStoreFullError
from .payload import Payload

POOL_MIN_SIZE = 1 << 20  # smaller segments are cheap to create: not worth a round trip
POOL_MAX_SEGMENTS = 8  # enough for a producer that runs ahead of its releases
POOL_MAX_BYTES = 512 << 20


class ObjectStoreStatistics(NamedTuple):
    used: int  # bytes of live segments and pooled ones
    capacity: int
    resident: int  # objects with a segment here
    pooled: int  # segments kept for reuse
    pooled_bytes: int
    spilled_objects: int  # objects on disk now
    recycled: int  # since start: segments reused from the pool
    spills: int
    restores: int
    spilled_bytes: int


class ObjectStore:
    """Accounting and placement of the node's shared-memory segments."""

    def __init__(self, session: str, capacity: int, spill_dir: str, free_remote: Callable[[str], None]) -> None:
        self.session = session
        # Segments made on another machine of the cluster are that node's to free.
        self._free_remote = free_remote
        self.capacity = capacity
        self.spill_dir = spill_dir
        self.used = 0  # bytes of live segments and pooled ones
        self._pool: list[tuple[int, str]] = []  # (size, name), sorted
        # object id -> (segment size, segment name), least recently used first
        self._resident: OrderedDict[bytes, tuple[int, str]] = OrderedDict()
        self._spilled: dict[bytes, str] = {}  # object id -> spill file
        self.spill_error: OSError | None = None  # why the last spill failed; None once one works
        self.stats = {"recycled": 0, "spilled": 0, "restored": 0, "spilled_bytes": 0}

    def __repr__(self) -> str:
        return (
            f"<ObjectStore used={self.used >> 20} MiB of {self.capacity >> 20} MiB "
            f"pool={len(self._pool)} spilled={len(self._spilled)}>"
        )

    def statistics(self) -> ObjectStoreStatistics:
        stats = self.stats
        return ObjectStoreStatistics(
            self.used,
            self.capacity,
            len(self._resident),
            len(self._pool),
            sum(size for size, _ in self._pool),
            len(self._spilled),
            stats["recycled"],
            stats["spilled"],
            stats["restored"],
            stats["spilled_bytes"],
        )

    # ------------------------------------------------------------ segments

    def allocate(self, size: int) -> tuple[str, int] | None:
        """A pooled segment of at least ``size`` bytes (and not much more), or None.

        None means the writer makes a new segment: room for it is made first,
        and ObjectStoreFullError raised when spilling cannot make it.
        """
        if size < POOL_MIN_SIZE:
            return None
        i = bisect.bisect_left(self._pool, (size, ""))
        if i == len(self._pool) or self._pool[i][0] > 2 * size:
            self._admit(size)
            return None
        capacity, name = self._pool.pop(i)
        self.used -= capacity  # counted again when the object that fills it arrives
        self.stats["recycled"] += 1
        return name, capacity

    def add(self, object_id: bytes, payload: Payload) -> None:
        """An object with a segment is stored: count it."""
        if payload.segment is None or self._is_remote(payload):
            return
        size = _file_size(payload.segment)
        self._resident[object_id] = (size, payload.segment)
        self.used += size
        self.make_room()

    def remove(self, object_id: bytes, payload: Payload) -> None:
        """An object is freed: recycle or remove its segment (or its spill file)."""
        spill_file = self._spilled.pop(object_id, None)
        if spill_file is not None:
            _unlink(spill_file)
            return
        resident = self._resident.pop(object_id, None)
        if resident is None:
            if self._is_remote(payload):
                self._free_remote(payload.segment)  # type: ignore[arg-type]
            return
        size, segment = resident
        self.used -= size
        if (
            size >= POOL_MIN_SIZE
            and self.used + size <= self.capacity
            and len(self._pool) < POOL_MAX_SEGMENTS
            and sum(s for s, _ in self._pool) + size <= POOL_MAX_BYTES
        ):
            bisect.insort(self._pool, (size, segment))
            self.used += size
        else:
            shm.unlink(segment)

    def release_unowned(self, payload: Payload) -> None:
        """A payload that never became a stored object (its task's result was not wanted)."""
        if payload.segment is None:
            return
        if self._is_remote(payload):
            self._free_remote(payload.segment)
        else:
            shm.unlink(payload.segment)

    def _is_remote(self, payload: Payload) -> bool:
        """Whether the payload's segment was made on another node (only in a cluster)."""
        return payload.segment is not None and shm.session_of(payload.segment) != self.session

    def touch(self, object_id: bytes) -> None:
        if object_id in self._resident:
            self._resident.move_to_end(object_id)

    # ------------------------------------------------------------- capacity

    def _admit(self, size: int) -> None:
        """Make room for a new segment of ``size`` bytes, or raise ObjectStoreFullError.

        Refused only when a spill failed: without a working disk the store would
        otherwise grow past capacity with every put until memory runs out.
        """
        if self.used + size <= self.capacity:
            return
        self.spill_error = None
        self.make_room(incoming=size)
        if self.used + size > self.capacity and self.spill_error is not None:
            raise ObjectStoreFullError(
                f"the object store is full: {self.used:,} of {self.capacity:,} bytes are in use and "
                f"an object of {size:,} bytes does not fit, because spilling to {self.spill_dir} "
                f"failed ({self.spill_error}). Drop refs to objects you no longer need, or make "
                f"the spill directory writable (free disk space)."
            )

    def make_room(self, protect: frozenset[bytes] | set[bytes] = frozenset(), incoming: int = 0) -> None:
        """Bring use under capacity (less ``incoming`` bytes about to be written):
        empty the pool, then spill the least recently used.

        Objects in ``protect`` (about to be handed out) stay, and so does the
        newest one unless room is made for an incoming object (which is then newer).
        """
        target = self.capacity - incoming
        while self.used > target and self._pool:
            size, name = self._pool.pop()
            self.used -= size
            shm.unlink(name)
        resident = list(self._resident) if incoming else list(self._resident)[:-1]
        candidates = [o for o in resident if o not in protect]
        for object_id in candidates:
            if self.used <= target or not self._spill(object_id):
                break

    def is_spilled(self, object_id: bytes) -> bool:
        return object_id in self._spilled

    def _spill(self, object_id: bytes) -> bool:
        """Copy the object's segment to a file and remove the segment."""
        size, segment = self._resident.pop(object_id)
        path = os.path.join(self.spill_dir, segment)
        try:
            # Inside the try: a spill directory that cannot be made (a file in its
            # place, no inodes) is a failed spill, not the end of the node.
            os.makedirs(self.spill_dir, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "wb") as out, _mapped(segment, size) as data:
                out.write(data)
        except OSError as e:
            # The disk is full or failing: keep the object in memory, over capacity
            # for now; _admit refuses new segments while this lasts.
            self.spill_error = e
            try:
                _unlink(path)
            except OSError:
                pass  # the directory itself is unusable: there is no file to remove
            self._resident[object_id] = (size, segment)
            self._resident.move_to_end(object_id, last=False)
            return False
        shm.unlink(segment)
        self.used -= size
        self.spill_error = None
        self._spilled[object_id] = path
        self.stats["spilled"] += 1
        self.stats["spilled_bytes"] += size
        return True

    def restore(self, object_id: bytes, payload: Payload) -> Payload:
        """Bring a spilled object back into a new segment; return its new payload."""
        path = self._spilled.pop(object_id)
        size = os.path.getsize(path)
        name, mm = shm.create(self.session, size)
        try:
            with open(path, "rb") as f:
                f.readinto(mm)  # type: ignore[arg-type]
        finally:
            mm.close()
        _unlink(path)
        self._resident[object_id] = (size, name)
        self.used += size
        self.stats["restored"] += 1
        return payload._replace(segment=name)

    def clear(self) -> None:
        for _, name in self._pool:
            shm.unlink(name)
        self._pool.clear()
        for path in self._spilled.values():
            _unlink(path)
        self._spilled.clear()


class _mapped:
    """Map a segment read-only for the duration of a ``with`` block."""

    def __init__(self, name: str, size: int) -> None:
        self._mm = shm.attach(name, size)

    def __enter__(self) -> mmap.mmap:
        return self._mm

    def __exit__(self, *exc: object) -> None:
        self._mm.close()


def _file_size(name: str) -> int:
    try:
        return os.stat(shm.path_of(name)).st_size
    except FileNotFoundError:
        return 0


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
