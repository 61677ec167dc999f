"""Objects between machines: each node serves its segments and fetches others' on demand.

A payload names its shared-memory segment, and a segment's name carries the
session of the node whose machine holds it (``shm.session_of``).  A process
that meets a payload from another session cannot map it; it asks the
``TransferServer`` of its own node to *localize* it::

    reader ── localize(id, payload) ──▶ its node's TransferServer
                                          │ (cached copy? return it)
                                          │ pull(segment, offset, 4 MiB) ──▶ holder's TransferServer
                                          │ ◀── chunk ── (two chunks in flight)
                                          ▼ writes each chunk into a new local segment
    reader ◀── the copy's payload ────────┘  and tells the head it holds a copy

Neither side ever holds more than a few chunks beyond the segments
themselves.  The head frees copies with the object (``drop``), and tells a
node to ``free`` the segments of objects made there.

Requests are served one thread per connection: transfers are few and long,
and a blocking thread keeps them out of the node's event loop.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from . import protocol as P
from . import shm
from .exceptions import ObjectLostError
from .gate import Gate
from .payload import Payload, from_wire, to_wire

CHUNK_BYTES = 4 << 20
_IN_FLIGHT = 2  # chunks requested ahead: the link stays busy while one is written


class TransferStatistics(NamedTuple):
    copies: int  # other nodes' objects held here
    fetching: int  # being brought here now
    peers: int  # nodes it knows the transfer address of
    served_bytes: int  # since start
    fetched_bytes: int
    fetches: int


class TransferServer:
    """Serves this node's segments to other nodes, and brings theirs here."""

    def __init__(
        self,
        session: str,
        authkey: bytes,
        addresses: list[Any],
        info: dict[str, Any],
        on_copied: Callable[[bytes], None],
    ) -> None:
        self.session = session
        self._authkey = authkey
        self._info = info  # answered to "info": how a driver here reaches the cluster
        self._on_copied = on_copied
        self._gate = Gate(addresses, authkey)
        self.peers: dict[str, Any] = {}  # session -> transfer address of that node
        self._lock = threading.Lock()
        self._copies: dict[bytes, Payload] = {}  # object id -> local copy
        self._fetching: dict[bytes, threading.Event] = {}
        self.stats = {"served_bytes": 0, "fetched_bytes": 0, "fetches": 0}

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<TransferServer {self.session} copies={s.copies} fetching={s.fetching} peers={s.peers} "
            f"served={s.served_bytes}B fetched={s.fetched_bytes}B in {s.fetches}>"
        )

    def statistics(self) -> TransferStatistics:
        stats = self.stats  # no lock: len() is atomic, and repr() must not wait (or deadlock) on one
        return TransferStatistics(
            len(self._copies),
            len(self._fetching), len(self.peers), stats["served_bytes"], stats["fetched_bytes"], stats["fetches"]
        )

    @property
    def address(self) -> Any:
        return self._gate.addresses[0]

    def start(self) -> None:
        self._gate.start(self._serve_connection)

    def close(self) -> None:
        self._gate.close()
        with self._lock:
            copies = list(self._copies.values())
            self._copies.clear()
        for copy in copies:
            shm.unlink(copy.segment)  # type: ignore[arg-type]

    # ------------------------------------------------------------- serving

    def _serve_connection(self, sock: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(sock,), name="actorkit-transfer", daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        channel = P.Channel(sock)
        try:
            while True:
                replies = []
                for _kind, request_id, operation, args in channel.recv():
                    try:
                        replies.append((P.REPLY, request_id, True, self._operations[operation](self, *args)))
                    except Exception as e:
                        replies.append((P.REPLY, request_id, False, e))
                channel.send(replies)
        except (P.ChannelClosed, OSError):
            pass
        finally:
            channel.close()

    def _pull(self, segment: str, offset: int, length: int) -> bytes:
        if shm.session_of(segment) != self.session:
            raise ValueError(f"segment {segment} is not held by this node")
        mapping = shm.attach(segment, offset + length)
        try:
            data = mapping[offset : offset + length]
        finally:
            mapping.close()
        self.stats["served_bytes"] += len(data)
        return data

    def _localize(self, object_id: bytes, wire: tuple[Any, ...]) -> tuple[Any, ...]:
        return to_wire(self.localize(object_id, from_wire(wire)))

    def _describe(self) -> dict[str, Any]:
        return dict(self._info, session=self.session)

    _operations: dict[str, Callable[..., Any]] = {
        "pull": _pull,
        "localize": _localize,
        "info": _describe,
    }

    # ------------------------------------------------------------ fetching

    def localize(self, object_id: bytes, payload: Payload) -> Payload:
        """The payload of a copy of the object on this node, fetched if needed."""
        if payload.segment is None or shm.session_of(payload.segment) == self.session:
            return payload
        while True:
            with self._lock:
                copy = self._copies.get(object_id)
                if copy is not None:
                    return copy
                busy = self._fetching.get(object_id)
                if busy is None:
                    self._fetching[object_id] = threading.Event()
                    break
            busy.wait()  # another reader fetches it: share its copy
        try:
            copy = self._fetch(payload)
            with self._lock:
                self._copies[object_id] = copy
        finally:
            with self._lock:
                self._fetching.pop(object_id).set()
        self._on_copied(object_id)
        return copy

    def _fetch(self, payload: Payload) -> Payload:
        holder = shm.session_of(payload.segment)  # type: ignore[arg-type]
        address = self.peers.get(holder)
        if address is None:
            raise ObjectLostError(f"the node holding segment {payload.segment} is not part of the cluster any more")
        size = payload.segment_size
        channel = P.Channel(P.connect(address, self._authkey))
        name, mapping = shm.create(self.session, size)
        try:
            offsets = list(range(0, size, CHUNK_BYTES))
            asked = 0
            for received, offset in enumerate(offsets):
                while asked < len(offsets) and asked < received + _IN_FLIGHT:
                    start = offsets[asked]
                    length = min(CHUNK_BYTES, size - start)
                    channel.send([(P.REQUEST, asked, "pull", (payload.segment, start, length))])
                    asked += 1
                (_kind, _request_id, ok, value), = channel.recv()
                if not ok:
                    raise value
                mapping[offset : offset + len(value)] = value
        except BaseException:
            shm.unlink(name)
            raise
        finally:
            mapping.close()
            channel.close()
        self.stats["fetches"] += 1
        self.stats["fetched_bytes"] += size
        return payload._replace(segment=name)

    def drop(self, object_ids: list[bytes]) -> None:
        """The head freed these objects: remove their copies here."""
        with self._lock:
            copies = [self._copies.pop(o) for o in object_ids if o in self._copies]
        for copy in copies:
            shm.unlink(copy.segment)  # type: ignore[arg-type]

    def free(self, segments: list[str]) -> None:
        """The head freed objects made on this node: remove their segments."""
        for segment in segments:
            if shm.session_of(segment) == self.session:
                shm.unlink(segment)


def localize_from(address: Any, authkey: bytes) -> Callable[[bytes, Payload], Payload]:
    """A client's way to have its node localize payloads (one connection, used under a lock)."""
    lock = threading.Lock()
    channel: list[P.Channel] = []

    def localize(object_id: bytes, payload: Payload) -> Payload:
        with lock:
            if not channel:
                channel.append(P.Channel(P.connect(address, authkey)))
            return from_wire(P.call(channel[0], "localize", object_id, to_wire(payload)))

    return localize
