"""Reference counts: which objects this process holds refs to, and telling the node.

The node counts each process holding a ref once.  This component counts its
live ObjectRefs per object (``Shared.local_refs``) and tells the node on the
first (ADDREF) and after the last (DECREF)::

    adopt_ref / own / count ──▶ local_refs[id] += 1 ── first? ──▶ addrefs ─┐
    ObjectRef.__del__ ─▶ release_ref ─▶ releases (a queue, no lock) ───────┤
                                                                           ▼
                    Connection.send_many, under the lock: take_locked() ─▶ ADDREF ... DECREF

``release_ref`` runs in finalizers, at any point of any thread, even one that
holds the client's lock: it only puts the id on a ``SimpleQueue`` (safe
there) and wakes the flusher, which waits ``RELEASE_DELAY_S`` first to gather
the rest.  The queue is drained under the lock by ``take_locked``, which every
send calls: what drops to zero is forgotten here (its payload, its mapping,
its subscription) and, if the node knows the object, reported in DECREF.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from ..object_ref import ObjectRef
from .shared import Shared

if TYPE_CHECKING:
    from .core import Client  # core.py imports this module

RELEASED = object()  # wakes the flusher to send released references, after a moment


class RefStatistics(NamedTuple):
    objects_held: int  # objects with at least one live ref here
    refs_held: int  # live refs, all objects together
    addrefs_unsent: int  # first refs the node has not been told of yet
    releases_queued: int  # dropped refs not counted down yet


class RefCounts:
    """Counts this process's refs per object; ADDREF on the first, DECREF after the last."""

    def __init__(self, shared: Shared, owner: Client) -> None:
        self._shared = shared
        self._lock = shared.lock
        self._owner = owner  # what the ObjectRefs made here point to: their __del__ calls its release_ref
        self._pid = shared.pid
        self._local_refs = shared.local_refs
        self._addrefs: list[bytes] = []  # new here since the last send: ADDREF
        self._releases: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._release_wake_pending = False  # the flusher was woken for releases: once is enough
        self._wake = shared.wake
        # Dropped here once the last ref goes: what was known of the object.
        self._unanswered = shared.unanswered
        self._ready = shared.ready
        self._mappings = shared.mappings
        self._subscribed = shared.subscribed
        self._local_only = shared.local_only
        self._pending_direct = shared.pending_direct
        self._promised = shared.promised

    def __repr__(self) -> str:
        return f"<RefCounts objects={len(self._local_refs)} unsent={len(self._addrefs)} queued={self._releases.qsize()}>"

    def statistics(self) -> RefStatistics:
        with self._lock:
            return RefStatistics(
                len(self._local_refs), sum(self._local_refs.values()), len(self._addrefs), self._releases.qsize()
            )

    def adopt_ref(self, object_id: bytes) -> ObjectRef:
        """A ref met while unpickling: count it, telling the node if it is new here."""
        self.count(object_id)
        return ObjectRef(object_id, self._owner)

    def count(self, object_id: bytes) -> None:
        """One more ref to ``object_id`` (held by a ref, a view or a direct call): ADDREF if first."""
        with self._lock:
            n = self._local_refs.get(object_id, 0)
            self._local_refs[object_id] = n + 1
            if n == 0:
                self._addrefs.append(object_id)
                self._shared.unsynced = True

    def pin_view(self, object_id: bytes) -> Callable[[], None]:
        """A value viewing the object's shared memory holds it like a ref (as in Ray)."""
        self.count(object_id)
        return lambda: self.release_ref(object_id)

    def own(self, object_id: bytes) -> ObjectRef:
        """A ref the node already counts as held by this process (put, submit, a new actor)."""
        with self._lock:
            self._local_refs[object_id] = self._local_refs.get(object_id, 0) + 1
        return ObjectRef(object_id, self._owner)

    def release_ref(self, object_id: bytes) -> None:
        # Called from ObjectRef.__del__: SimpleQueue.put is safe there.
        if not self._shared.closed and os.getpid() == self._pid:
            self._releases.put(object_id)
            if not self._release_wake_pending:
                self._release_wake_pending = True
                self._wake.put(RELEASED)

    def released_woken(self) -> None:
        """The flusher took its wake-up for releases: the next release wakes it again."""
        self._release_wake_pending = False

    def take_locked(self) -> tuple[list[bytes], list[bytes]]:
        """What the node is to hear of refs, for the send under way: (ADDREF ids, DECREF ids)."""
        addrefs = self._addrefs
        if addrefs:
            self._addrefs = []
        decrefs: list[bytes] = []
        while True:
            try:
                object_id = self._releases.get_nowait()
            except queue.Empty:
                return addrefs, decrefs
            n = self._local_refs.get(object_id, 0) - 1
            if n > 0:
                self._local_refs[object_id] = n
                continue
            self._local_refs.pop(object_id, None)
            self._unanswered.discard(object_id)  # its result may never come: nobody wants it
            self._ready.pop(object_id, None)
            self._mappings.pop(object_id, None)
            self._subscribed.discard(object_id)
            if object_id in self._local_only:
                self._local_only.discard(object_id)  # the node never knew it
            elif object_id not in self._pending_direct or object_id in self._promised:
                decrefs.append(object_id)
            # else: the node has not heard of it yet; its arrival settles it
