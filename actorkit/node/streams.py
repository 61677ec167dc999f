"""Streaming generators: the items a generator task yields, handed out in order as they come.

A task called with ``num_returns="streaming"`` (the default for a generator
function) sends each item it yields as STREAM_ITEM, then STREAM_END with
how many there were; its one return object is that count (its
*completion*).  Item ``i`` is the object ``return_id(task, i + 1)``, held
by the stream until its consumer asks for it (``stream_next``): it then
becomes the consumer's.  The consumer opens the stream (``stream_open``)
when it makes its generator, so a stream dropped before its first item is
known as dropped.  A consumer that asks for an item not yet made
gets a *progress* object to wait on (``wait()`` lends a worker's CPUs like
``get()``), set when the next item or the end comes.  When the completion
object is freed (the consumer dropped its ``ObjectRefGenerator``), items
not handed out are released, and later ones are dropped as they come.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any, NamedTuple

from ..payload import Payload, from_wire
from ..task_spec import return_id
from .records import ClientState, ObjectEntry

if TYPE_CHECKING:
    from .server import Node

# What a progress object holds: nothing to read, only that something happened.
_PROGRESS = Payload(pickle.dumps(True), None, 0, (), None, ())
_PROGRESS_FLAG = 0x8000_0000  # progress ids: the task id and this flag plus the awaited index


class Stream:
    __slots__ = ("task_id", "items", "handed", "ended", "dropped", "waiting")

    def __init__(self, task_id: bytes) -> None:
        self.task_id = task_id
        self.items: list[bytes] = []  # ids of the items made so far, in order
        self.handed: set[int] = set()  # indexes given to the consumer (no longer the stream's to hold)
        self.ended = False
        self.dropped = False  # the consumer let go of the generator
        self.waiting: list[bytes] = []  # progress objects to set at the next item or the end

    def __repr__(self) -> str:
        state = "ended" if self.ended else "open"
        return f"<Stream {self.task_id.hex()[:12]} items={len(self.items)} handed={len(self.handed)} {state}>"


class StreamStatistics(NamedTuple):
    streams: int
    stream_items: int


class StreamTable:
    """Task id -> ``Stream`` for each generator task whose consumer still holds its generator."""

    def __init__(self) -> None:
        self.by_task: dict[bytes, Stream] = {}
        self._items = 0

    def bind(self, node: Node) -> None:
        self.objects = node.objects

    def __repr__(self) -> str:
        return f"<StreamTable streams={len(self.by_task)} items={self._items}>"

    def statistics(self) -> StreamStatistics:
        return StreamStatistics(len(self.by_task), self._items)

    def _stream(self, task_id: bytes) -> Stream:
        stream = self.by_task.get(task_id)
        if stream is None:
            stream = self.by_task[task_id] = Stream(task_id)
        return stream

    def on_stream_item(self, _client: ClientState, message: tuple[Any, ...]) -> None:
        _, task_id, index, wire = message
        stream, payload = self._stream(task_id), from_wire(wire)
        # An item whose index is taken came twice (a retry) and is dropped, except an error:
        # it is always the last, and a cancellation can interrupt the worker between
        # sending an item and counting it, so that its error comes with that item's index.
        duplicate = index < len(stream.items) and not payload.is_error
        if stream.dropped or stream.ended or duplicate:
            self.objects.store.release_unowned(payload)  # nobody will read it
            return
        self._append(stream, payload)
        self._progress(stream)

    def on_stream_end(self, _client: ClientState, message: tuple[Any, ...]) -> None:
        _, task_id, _count = message
        self._end(self._stream(task_id))

    def task_ended(self, task_id: bytes, payloads: list[Payload]) -> None:
        """A streaming task finished at the node; if its worker did not end its stream (it
        crashed, was cancelled before it started, failed before it could yield), end it here,
        its error the last item."""
        stream = self.by_task.get(task_id)
        if stream is None:
            if return_id(task_id, 0) not in self.objects:
                return  # its consumer is gone already
            stream = self._stream(task_id)
        if stream.ended:
            return
        if payloads and payloads[0].is_error and not stream.dropped:
            self._append(stream, payloads[0])  # error payloads are inline: shared safely
        self._end(stream)

    def _append(self, stream: Stream, payload: Payload) -> None:
        """Set ``payload`` as the stream's next item, held by the stream until handed out."""
        item_id = return_id(stream.task_id, len(stream.items) + 1)
        entry = self.objects.entries.get(item_id)
        if entry is None:
            entry = self.objects.entries[item_id] = ObjectEntry()
        entry.refcount += 1  # the stream's hold
        self.objects.set(item_id, payload)
        stream.items.append(item_id)
        self._items += 1

    def _end(self, stream: Stream) -> None:
        stream.ended = True
        self._progress(stream)
        if stream.dropped:
            del self.by_task[stream.task_id]

    def request_open(self, client: ClientState, task_id: bytes) -> None:
        """The consumer holds the task's generator (and so its completion): keep the items for it."""
        self._stream(task_id)

    def request_next(self, client: ClientState, task_id: bytes, index: int) -> tuple[str, bytes | None]:
        """("item", id) of item ``index`` (now the caller's), ("end", None), or ("wait", a progress id)."""
        stream = self._stream(task_id)
        if index < len(stream.items):
            item_id = stream.items[index]
            self.objects.held_by(client, item_id)
            if index not in stream.handed:
                stream.handed.add(index)
                self.objects.decref(item_id)  # the stream's hold: the consumer's from now on
            return "item", item_id
        if stream.ended:
            return "end", None
        progress_id = task_id + (_PROGRESS_FLAG | index).to_bytes(4, "big")
        self.objects.held_by(client, progress_id, send_it=True)
        stream.waiting.append(progress_id)
        return "wait", progress_id

    def completion_freed(self, object_id: bytes) -> None:
        """An object was freed; if it is a generator task's completion, its consumer is gone
        (the stream is kept until then, however far it was read)."""
        if not self.by_task:
            return  # the usual case, on every freed object: no stream open
        task_id = object_id[:-4]
        stream = self.by_task.get(task_id)
        if stream is None or object_id != return_id(task_id, 0):
            return
        stream.dropped = True
        for index, item_id in enumerate(stream.items):
            if index not in stream.handed:
                stream.handed.add(index)
                self.objects.decref(item_id)
        self._progress(stream)
        if stream.ended:
            del self.by_task[stream.task_id]

    def _progress(self, stream: Stream) -> None:
        waiting, stream.waiting = stream.waiting, []
        for progress_id in waiting:
            self.objects.set(progress_id, _PROGRESS)

