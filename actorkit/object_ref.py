"""ObjectRef: a small, hashable, picklable name for an immutable object.

Each live ObjectRef counts as a reference held by its process; when the last
one in a process goes, the process tells its node, and the node frees the
object once no process, pending task or containing object holds it.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import context

if TYPE_CHECKING:
    import concurrent.futures

    from .client import Client

_local = threading.local()
T = TypeVar("T")


def record_contained_ref(object_id: bytes) -> None:
    """Note a ref met while pickling (see ``serialization.serialize``)."""
    refs = getattr(_local, "contained", None)
    if refs is not None:
        refs.append(object_id)


def collect_contained_refs(refs: list[bytes] | None) -> list[bytes] | None:
    """Start collecting refs pickled by this thread into ``refs``; return the previous list."""
    outer = getattr(_local, "contained", None)
    _local.contained = refs
    return outer


class ObjectRef(Generic[T]):
    """A reference to an object in the store; ``actorkit.get(ref)`` gives its value.

    ``ObjectRef[int]`` is what ``f.remote()`` returns for ``def f() -> int``,
    for type checkers; at run time every ref is a plain ``ObjectRef``.
    """

    __slots__ = ("_id", "_client", "__weakref__")

    def __init__(self, object_id: bytes, client: Client | None = None) -> None:
        # The runtime passes its client: such a ref is counted.  A user's
        # ``ObjectRef(ref.binary())`` is not, as in Ray: it names the object,
        # which lives as long as counted refs to it do.
        if type(object_id) is not bytes:
            self._client = None  # __del__ still runs
            raise TypeError(f"ObjectRef() needs the bytes of ref.binary(), not {type(object_id).__name__}")
        self._id = object_id
        self._client = client

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    @classmethod
    def from_hex(cls, hex_id: str) -> ObjectRef:
        """The (uncounted) ref whose ``hex()`` is ``hex_id``."""
        return cls(bytes.fromhex(hex_id))

    def task_id(self) -> bytes:
        return self._id[:-4]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def __reduce__(self) -> tuple[Any, ...]:
        record_contained_ref(self._id)
        if self._client is not None:
            self._client.escaping(self._id)  # the result of a direct call: tell the node
        return (_rebuild_ref, (self._id,))

    def __del__(self) -> None:
        client = self._client
        if client is not None:
            client.release_ref(self._id)

    def future(self) -> concurrent.futures.Future[T]:
        """A ``concurrent.futures.Future`` that completes with the object's value."""
        return _client_of(self).future(self)

    def __await__(self) -> Generator[Any, None, T]:
        import asyncio

        return asyncio.wrap_future(self.future()).__await__()


def _client_of(ref: ObjectRef) -> Client:
    client = ref._client
    if client is None or client.closed:
        return context.current_client()
    return client


def _rebuild_ref(object_id: bytes) -> ObjectRef:
    client = context.client_if_connected()
    if client is None:
        return ObjectRef(object_id, None)
    return client.adopt_ref(object_id)
