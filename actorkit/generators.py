"""What a generator task returns: refs to its items, as they are made or all at once.

``num_returns="streaming"`` (the default for a generator function) gives an
``ObjectRefGenerator``: iterate it (``for``, ``next()``, ``async for``) to get
an ``ObjectRef`` per item as soon as the task has yielded it; an exception
the generator raised is the value of the ref after its last good item, and
the iteration ends after it.  ``num_returns="dynamic"`` gives one ref whose
value, once the task is done, is a ``DynamicObjectRefGenerator`` over refs to
all the items.  The node keeps a streaming task's items until they are
handed out (``node/streams.py``); they are freed with the generator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .object_ref import ObjectRef

if TYPE_CHECKING:
    from .client import Client


class ObjectRefGenerator:
    """Refs to a streaming generator task's items, in order, each as soon as it is made."""

    def __init__(self, completion: ObjectRef[int], client: Client) -> None:
        self._completion = completion  # held while this lives: the node keeps the items for it
        self._task_id = completion.task_id()
        self._client = client
        self._index = 0
        self._done = False
        self._peeked: ObjectRef[Any] | None = None  # the next item's ref, found by wait()
        # The node must know the completion (a direct call's result is this process's until it
        # escapes), and that this generator holds it: its items are freed when it is.
        client.escaping(completion.binary())
        client.request("stream_open", self._task_id)

    def __repr__(self) -> str:
        state = "exhausted" if self._done else f"next item {self._index}"
        return f"ObjectRefGenerator({self._task_id.hex()}, {state})"

    def __reduce__(self) -> Any:
        raise TypeError(
            "an ObjectRefGenerator cannot be passed to another task or actor: iterate it here, "
            "and pass the ObjectRefs it gives"
        )

    def __iter__(self) -> ObjectRefGenerator:
        return self

    def __next__(self) -> ObjectRef[Any]:
        ref = self._next(None)
        if ref is None:
            raise StopIteration
        return ref

    def __aiter__(self) -> ObjectRefGenerator:
        return self

    async def __anext__(self) -> ObjectRef[Any]:
        import asyncio  # lazy: loaded already wherever this runs; import actorkit stays light

        # The wait blocks a thread, not the event loop.
        ref = await asyncio.get_running_loop().run_in_executor(None, self._next, None)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def completed(self) -> ObjectRef[int]:
        """A ref ready once the task has ended (its value: how many items it yielded)."""
        return self._completion

    def task_id(self) -> bytes:
        return self._task_id

    def _next(self, timeout: float | None) -> ObjectRef[Any] | None:
        """The next item's ref, waiting for it to be made; None once there are no more."""
        while not self._done:
            ref = self._waitable()
            if self._peeked is not None:
                self._peeked = None
                self._index += 1
                return ref
            if ref is self._completion:
                self._done = True
                return None
            self._client.wait_ready([ref._id], 1, timeout)  # a progress object; lends CPUs, as get() does
        return None

    def _waitable(self) -> ObjectRef[Any]:
        """A ref that ``wait()`` can wait for: ready once ``next()`` would not block (the
        next item is made, or the generator has ended)."""
        if self._done or self._peeked is not None:
            return self._peeked or self._completion
        kind, object_id = self._client.request("stream_next", self._task_id, self._index, timeout=None)
        if kind == "end":
            return self._completion
        ref = self._client.adopt_ref(object_id)
        if kind == "item":
            self._peeked = ref  # next() gives it without asking again
        return ref  # the item, or a progress object set at the next item or the end


class DynamicObjectRefGenerator:
    """Refs to all the items of a ``num_returns="dynamic"`` generator task."""

    def __init__(self, refs: list[ObjectRef[Any]]) -> None:
        self._refs = list(refs)
        self._position = 0

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} items)"

    def __iter__(self) -> DynamicObjectRefGenerator:
        return DynamicObjectRefGenerator(self._refs)

    def __next__(self) -> ObjectRef[Any]:
        if self._position >= len(self._refs):
            raise StopIteration
        self._position += 1
        return self._refs[self._position - 1]

    def __len__(self) -> int:
        return len(self._refs)
