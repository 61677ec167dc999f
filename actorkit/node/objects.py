"""The object directory: every object the node knows, who holds it, who waits for it.

An object is known from the moment something will make it (a task's return
id, a promised direct-call result) until its last holder lets go.  Each
client counts once per object however many refs it holds (the client counts
its own); objects that contain refs, and tasks that use an object as an
argument, hold it too.  Values live in the ``ObjectStore`` (shared memory,
spilled to disk when full); this directory maps ids to them.

An actor's id is counted here like an object: its handles are references,
and the actor ends when the last one goes (``on_freed``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .. import protocol as P
from .. import shm
from ..exceptions import ObjectLostError, OwnerDiedError
from ..object_store import ObjectStore
from ..payload import Payload, encode, from_wire, to_wire
from ..task_spec import return_id
from .records import ClientState, ObjectEntry, TaskRecord


class ObjectStatistics(NamedTuple):
    objects: int
    objects_pending: int
    objects_freed: int


class ObjectDirectory:
    """Object id -> ``ObjectEntry``, with the reference counts and the readiness of each."""

    def __init__(
        self,
        store: ObjectStore,
        session: str,
        send: Callable[[ClientState, tuple[Any, ...]], None],
        callers: dict[bytes, ClientState],
    ) -> None:
        self.entries: dict[bytes, ObjectEntry] = {}
        self.store = store
        self._session = session
        self._send = send
        self._callers = callers  # task id prefix -> the client that makes such ids
        # Set by the node once its other components exist:
        self.on_ready: Callable[[TaskRecord], None] = _unbound  # a task's last argument was set
        self.on_freed: Callable[[bytes], None] = _unbound  # an object's last holder let go
        self._freed = 0

    def __repr__(self) -> str:
        return f"<ObjectDirectory objects={len(self.entries)} freed={self._freed}>"

    def __contains__(self, object_id: bytes) -> bool:
        return object_id in self.entries

    def __getitem__(self, object_id: bytes) -> ObjectEntry:
        return self.entries[object_id]

    def statistics(self) -> ObjectStatistics:
        pending = sum(1 for entry in self.entries.values() if entry.payload is None)
        return ObjectStatistics(len(self.entries), pending, self._freed)

    # ------------------------------------------------------------ holders

    def held_by(self, client: ClientState, object_id: bytes, send_it: bool = False) -> ObjectEntry:
        """The entry of ``object_id`` (made if new), counted once as held by ``client``;
        with ``send_it``, the client gets READY when the value is set."""
        entry = self.entries.get(object_id)
        if entry is None:
            entry = self.entries[object_id] = ObjectEntry()
        self._count(client, object_id, entry)
        if send_it:
            if entry.subscribers is None:
                entry.subscribers = [client]
            elif client not in entry.subscribers:
                entry.subscribers.append(client)
        return entry

    def hold(self, client: ClientState, object_id: bytes) -> None:
        """Count ``client`` once as holding ``object_id``, if the object is still known."""
        entry = self.entries.get(object_id)
        if entry is not None:
            self._count(client, object_id, entry)

    @staticmethod
    def _count(client: ClientState, object_id: bytes, entry: ObjectEntry) -> None:
        # The one rule of holding: a client counts once, however many refs it has.
        if object_id not in client.held:
            entry.refcount += 1
            client.held.add(object_id)

    def let_go(self, client: ClientState) -> None:
        """``client`` is gone: it holds nothing any more, and what it promised never comes."""
        for object_id in client.promised:
            entry = self.entries.get(object_id)
            if entry is not None and entry.payload is None:
                error = OwnerDiedError(
                    f"object {object_id.hex()} will never be made: its owner, the {client.role} process "
                    f"(pid {client.pid}) that called .remote() for it, died before the result came back"
                )
                self.set(object_id, self.error_payload(error))
        client.promised.clear()
        for object_id in client.held:
            self.decref(object_id)
        client.held.clear()

    def incref(self, object_id: bytes) -> None:
        entry = self.entries.get(object_id)
        if entry is not None:
            entry.refcount += 1

    def decref(self, object_id: bytes) -> None:
        pending = [object_id]
        while pending:
            freed_id = pending.pop()
            entry = self.entries.get(freed_id)
            if entry is None:
                continue
            entry.refcount -= 1
            if entry.refcount > 0:
                continue
            del self.entries[freed_id]
            self._freed += 1
            self.on_freed(freed_id)
            if entry.payload is not None:
                self.store.remove(freed_id, entry.payload)
                pending.extend(entry.payload.contained)

    # ------------------------------------------------------------ messages

    def on_put(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, object_id, wire = message
        payload = from_wire(wire)
        self.held_by(client, object_id)  # it may have promised it already (a direct call's result)
        client.promised.discard(object_id)
        self.set(object_id, payload)

    def on_promise(self, client: ClientState, message: tuple[Any, ...]) -> None:
        # Results of the client's direct calls, not back yet: others may wait for them.
        _, object_ids = message
        for object_id in object_ids:
            if self.held_by(client, object_id).payload is None:
                client.promised.add(object_id)

    def on_owned_result(self, client: ClientState, message: tuple[Any, ...]) -> None:
        """A direct call's result that the node should own: held for, and sent to, its caller."""
        _, task_id, wires = message
        payloads = [from_wire(p) for p in wires]
        caller = self._callers.get(task_id[:8])
        for index, payload in enumerate(payloads):
            object_id = return_id(task_id, index)
            if caller is None or caller.closed:
                self.store.release_unowned(payload)
                continue
            self.held_by(caller, object_id, send_it=True)
            caller.promised.discard(object_id)
            self.set(object_id, payload)

    def on_subscribe(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, object_ids = message
        for object_id in object_ids:
            entry = self.entries.get(object_id)
            if entry is None:
                lost = ObjectLostError(f"object {object_id.hex()} is gone: it was freed or its owner died")
                self._send(client, (P.READY, object_id, to_wire(self.error_payload(lost))))
            elif entry.payload is not None:
                self._send(client, (P.READY, object_id, to_wire(self.payload_of(object_id, entry))))
            elif entry.subscribers is None:
                entry.subscribers = [client]
            else:
                entry.subscribers.append(client)

    def on_addref(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, object_ids = message
        for object_id in object_ids:
            self.hold(client, object_id)

    def on_decref(self, client: ClientState, message: tuple[Any, ...]) -> None:
        _, object_ids = message
        held = client.held
        for object_id in object_ids:
            if object_id in held:
                held.discard(object_id)
                self.decref(object_id)

    # ------------------------------------------------------------ values

    def set(self, object_id: bytes, payload: Payload) -> None:
        """The value of ``object_id`` is here: tell who waits, wake the tasks that need it."""
        entry = self.entries.get(object_id)
        if entry is None or entry.payload is not None:
            # Nobody holds a ref any more (or a retried task ran twice): drop it.
            self.store.release_unowned(payload)
            return
        entry.payload = payload
        self.store.add(object_id, payload)
        for contained in payload.contained:
            self.incref(contained)
        if entry.subscribers:
            for subscriber in entry.subscribers:
                self._send(subscriber, (P.READY, object_id, to_wire(payload)))
            entry.subscribers = None
        if entry.dependents:
            for task in entry.dependents:
                task.unresolved -= 1
                if task.unresolved == 0:
                    self.on_ready(task)
            entry.dependents = None

    def pin_arguments(self, task: TaskRecord) -> bool:
        """Hold what ``task`` uses, counting the arguments not set yet; False if one is gone."""
        spec = task.spec
        for object_id in spec.args.contained:
            self.incref(object_id)
        entries = self.entries
        for object_id in spec.deps:
            if object_id not in entries:
                return False
        for object_id in spec.deps:
            entry = entries[object_id]
            entry.refcount += 1
            if entry.payload is None:
                if entry.dependents is None:
                    entry.dependents = [task]
                else:
                    entry.dependents.append(task)
                task.unresolved += 1
        return True

    def failed_argument(self, spec: Any) -> Payload | None:
        """The error one of the task's arguments holds, if any: errors flow through."""
        entries = self.entries
        for object_id in spec.deps:
            dep = entries[object_id].payload
            if dep is not None and dep.is_error:
                return dep
        return None

    def payload_of(self, object_id: bytes, entry: ObjectEntry) -> Payload:
        """The payload to send out, restoring the object from disk if it was spilled."""
        if self._bring_back(object_id, entry):
            self.store.make_room(protect={object_id})
        return entry.payload  # type: ignore[return-value]

    def arguments_of(self, spec: Any) -> dict[bytes, tuple[Any, ...]]:
        """A task's argument payloads, all in memory at once, as they travel."""
        entries = self.entries
        restored = [self._bring_back(object_id, entries[object_id]) for object_id in spec.deps]
        if any(restored):
            self.store.make_room(protect=set(spec.deps))
        return {object_id: to_wire(entries[object_id].payload) for object_id in spec.deps}  # type: ignore[arg-type]

    def _bring_back(self, object_id: bytes, entry: ObjectEntry) -> bool:
        """Restore a spilled object (True) or mark it recently used (False)."""
        assert entry.payload is not None
        if self.store.is_spilled(object_id):
            entry.payload = self.store.restore(object_id, entry.payload)
            return True
        self.store.touch(object_id)
        return False

    def error_payload(self, error: BaseException) -> Payload:
        return encode(error, self._session, is_error=True)

    def lose_node(self, session: str, error: BaseException, rebuild: Callable[[bytes], bool]) -> None:
        """A node died: the objects in its memory are lost.  Those ``rebuild`` makes again
        (re-running the task that made them) are pending until then; the readers of the
        others get ``error``."""
        lost = [
            object_id for object_id, entry in self.entries.items()
            if entry.payload is not None and entry.payload.segment is not None
            and shm.session_of(entry.payload.segment) == session
        ]
        failed = None
        for object_id in lost:
            entry = self.entries[object_id]
            payload, entry.payload = entry.payload, None
            for contained in payload.contained:  # type: ignore[union-attr]
                self.decref(contained)
        for object_id in lost:
            pending = self.entries.get(object_id)
            if pending is None or pending.payload is not None or rebuild(object_id):
                continue
            if failed is None:
                failed = self.error_payload(error)
            self.set(object_id, failed)  # error payloads are inline: sharing one is safe


def _unbound(*_args: Any) -> None:
    raise RuntimeError("ObjectDirectory used before the node wired it")
