"""What the components of one client share: the lock, the flags, the tables.

One ``Shared`` per client is made first and handed to every component, which
keeps references to the tables it uses (``self._ready = shared.ready``), so
that a lookup costs what it did when all of this was one class.  The rule
that makes that safe: a shared table is mutated in place, never rebound.
Flags and settings (``closed``, ``failure``, ``session``...) are read through
``shared`` itself, as they are rebound; only constants (``pid``, the wake
pipe's descriptors) are copied.

Every table is guarded by ``shared.lock`` (one re-entrant lock for the whole
client), except where a comment says otherwise.  The records here are the
ones more than one component reads: ``Waiter`` (one blocked get()/wait()) and
``Revocations`` (a worker's blocked task, waiting for the node to say what it
took back).  ``DirectCall`` is in ``calls.py``.
"""

from __future__ import annotations

import itertools
import mmap
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..payload import Payload

if TYPE_CHECKING:
    from .calls import DirectCall  # calls.py imports this module


class Waiter:
    """One blocked get()/wait(): how many more objects it needs, and its wake-up."""

    __slots__ = ("remaining", "event", "reader")

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining
        self.event = threading.Event()
        # Set while its thread reads a connection itself: other threads that wake
        # it must also write to the client's wake pipe, which that thread polls.
        self.reader: int | None = None

    def __repr__(self) -> str:
        state = "woken" if self.event.is_set() else f"needs {self.remaining}"
        return f"<Waiter {state}{' reading' if self.reader is not None else ''}>"

    def wake(self, wake_fd: int) -> None:
        self.event.set()
        if self.reader is not None and self.reader != threading.get_ident():
            os.write(wake_fd, b"\0")


class Revocations:
    """A worker's task that waited in get() tells the node (BLOCKED); the node may
    then take back tasks lined up behind it, and answers REVOKED with their ids.
    The worker asks ``was_revoked`` before running its next task, which waits for
    every such answer.  Has its own condition, not the client's lock."""

    __slots__ = ("_condition", "unanswered", "revoked")

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self.unanswered = 0  # BLOCKED sent, REVOKED not back yet
        self.revoked: set[bytes] = set()  # tasks the node took back, not asked about yet

    def __repr__(self) -> str:
        return f"<Revocations unanswered={self.unanswered} revoked={len(self.revoked)}>"

    def blocked(self) -> None:
        """This worker's task is about to send BLOCKED."""
        with self._condition:
            self.unanswered += 1

    def answered(self, task_ids: list[bytes]) -> None:
        """The node's REVOKED: ``task_ids`` were taken back."""
        with self._condition:
            self.revoked.update(task_ids)
            self.unanswered -= 1
            self._condition.notify_all()

    def failed(self) -> None:
        """The node is gone: nothing more will be answered."""
        with self._condition:
            self.unanswered = 0
            self._condition.notify_all()

    def was_revoked(self, task_id: bytes, shared: Shared) -> bool:
        with self._condition:
            while self.unanswered > 0 and shared.failure is None:
                self._condition.wait()
            if task_id in self.revoked:
                self.revoked.discard(task_id)
                return True
            return False


class Shared:
    """The state of one client that its components share (see the module docstring).

    Settings and flags first, then the tables, each with the component that
    owns it (adds to it); the others named read it or drop entries from it.
    """

    def __init__(self, session: str, store_capacity: int, authkey: bytes, transfer_address: Any) -> None:
        self.lock = threading.RLock()
        # Settings: ``session`` and ``store_capacity`` are set again once the node
        # has said what they are (see runtime.connect).
        self.session = session
        self.store_capacity = store_capacity
        self.authkey = authkey
        # This machine's TransferServer when it is not the node's (on a member node of a
        # cluster): it fetches objects made on other machines, and this process's
        # segments are that member's, never recycled ones of the node's.
        self.transfer_address = transfer_address
        self.node_address: Any = None  # where the node was reached, for errors (set by whoever connected)
        self.pid = os.getpid()
        self.id_prefix = os.urandom(8)
        self._counter = itertools.count(1)
        # Flags.
        self.closed = False
        self.failure: BaseException | None = None
        # This process told the node of objects (put, publish, addref) since the node
        # last confirmed it had read everything: a direct call must not overtake that.
        self.unsynced = False
        self.stats = {"submitted": 0, "direct": 0, "puts": 0, "gets": 0}  # Client.stats, unlocked
        # Wakes the connection's flusher thread (items: see connection.py); no lock.
        self.wake: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # The pipe a thread reading a link in get() polls besides it, so that other
        # threads can wake it (Waiter.wake); closed by Waits.close().
        self.wake_r, self.wake_w = os.pipe()
        self.revocations = Revocations()

        # --- tables ---
        # RefCounts: object id -> live ObjectRefs to it in this process (dropped by RefCounts only).
        self.local_refs: dict[bytes, int] = {}
        # Objects: payloads of ready objects this process holds refs to (DirectCalls adds
        # the results of direct calls; RefCounts drops what is no longer held).
        self.ready: dict[bytes, Payload] = {}
        self.mappings: dict[bytes, mmap.mmap] = {}  # Objects: object id -> its shared memory, mapped once
        # Objects that READY is to come for: subscribed, or results sent to their submitter unasked.
        self.subscribed: set[bytes] = set()
        self.callbacks: dict[bytes, list[Callable[[Payload], None]]] = {}  # Objects (futures)
        self.waiters: dict[bytes, list[Waiter]] = {}  # Waits: object id -> blocked get()/wait()s
        # Connection: messages waiting for the next send or the flusher (submissions,
        # publications, lease returns): a loop of remote() calls travels in a few frames.
        self.outgoing: list[tuple[Any, ...]] = []
        # First result ids of submissions through the node not answered yet: while there
        # are none, a submission is sent at once (its caller is about to wait for it);
        # while there are, it is buffered (its caller is submitting a batch).
        self.unanswered: set[bytes] = set()
        # CallTable (see calls.py): unanswered direct calls and what the node knows of their results.
        self.calls: dict[bytes, DirectCall] = {}  # task id -> unanswered direct call, in the order sent
        self.pending_direct: set[bytes] = set()  # results of unanswered direct calls
        self.local_only: set[bytes] = set()  # results of direct calls, back, unknown to the node
        self.promised: set[bytes] = set()  # pending direct results the node was told of
        self.node_calls: dict[bytes, int] = {}  # actor id -> its calls through the node not answered
        self.node_call_of: dict[bytes, bytes] = {}  # first return id of such a call -> actor id

    def __repr__(self) -> str:
        state = "closed" if self.closed else "failed" if self.failure is not None else "open"
        return (
            f"<Shared {state} session={self.session} refs={len(self.local_refs)} ready={len(self.ready)} "
            f"calls={len(self.calls)} outgoing={len(self.outgoing)}>"
        )

    def new_task_id(self) -> bytes:
        return self.id_prefix + next(self._counter).to_bytes(4, "big")

    def close_pipe(self) -> None:
        os.close(self.wake_r)
        os.close(self.wake_w)
