"""Local mode: tasks and actors run in the driver process, one at a time, in submission order.

``init(local_mode=True)`` (or ``ACTORKIT_LOCAL_MODE=1``) connects the driver to
a ``LocalClient`` instead of a node.  The API is the same; each ``.remote()``
runs its task (or actor call) at once, in this process and thread, so
``breakpoint()`` and pdb work inside tasks and methods, and a traceback ends
in the user's code.  Arguments, results and errors still go through the same
serialization as on a node (``Serialized`` bytes, kept in a dict instead of
shared memory), so a value that could not travel is refused here too, and a
task cannot change its caller's objects.

    driver ──.remote()──▶ LocalClient.submit ──▶ decode args ─▶ run ─▶ serialize results ─▶ store
    driver ◀──get()───── LocalClient.get ◀──────────────────────── decode ◀───────────────┘

What differs from a node: no parallelism, no resources are held (every task
runs however much it asks for), ``cancel()`` finds every task already done,
and nothing is retried.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
import pickle
import threading
import traceback
from typing import Any

from . import payload as payload_codec
from . import protocol as P
from . import shm
from .exceptions import ActorDiedError, ObjectLostError, TaskError
from .generators import DynamicObjectRefGenerator
from .metrics_batch import MetricBatch
from .node.metrics import MetricTable
from .object_ref import ObjectRef
from .serialization import SerializationError, Serialized, serialize, serialize_put, task_error
from .task_spec import ActorSpec, ArgRef, TaskSpec, return_id, split_returns


class _Actor:
    """An actor of local mode: its instance, or why it is dead."""

    __slots__ = ("spec", "instance", "death", "loop")

    def __init__(self, spec: ActorSpec) -> None:
        self.spec = spec
        self.instance: Any = None
        self.death: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # for async methods, made on first use


class LocalClient:
    """The driver's client in local mode: runs each task when it is submitted."""

    closed = False

    def __init__(self, namespace: str | None) -> None:
        self.session = f"local-{os.getpid()}-{os.urandom(3).hex()}"
        self.job_id = os.urandom(4)
        self.namespace = namespace or os.urandom(8).hex()
        self._pid = os.getpid()
        self._lock = threading.RLock()  # tasks run in the calling thread; the store is shared
        self._objects: dict[bytes, tuple[Serialized, bool]] = {}  # id -> (value, is_error)
        self._counts: dict[bytes, int] = {}
        self._functions: dict[bytes, Any] = {}
        self._actors: dict[bytes, _Actor] = {}
        self._named: dict[tuple[str, str], bytes] = {}
        self._task_counter = 0
        self._streams: dict[bytes, int] = {}  # a streaming generator task's id -> how many items it made
        self.stats = {"tasks": 0, "actor_calls": 0, "puts": 0}
        self._metric_table = MetricTable()  # what a node would keep of actorkit.util.metrics
        self.metrics = MetricBatch(lambda message: self._metric_table.on_metrics(None, message))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (
            f"<LocalClient objects={len(self._objects)} actors={len(self._actors)} "
            f"tasks={self.stats['tasks']} actor_calls={self.stats['actor_calls']}>"
        )

    # ------------------------------------------------------------ references

    def new_task_id(self) -> bytes:
        with self._lock:
            self._task_counter += 1
            return self.job_id + self._task_counter.to_bytes(8, "big")

    def adopt_ref(self, object_id: bytes) -> ObjectRef:
        with self._lock:
            self._counts[object_id] = self._counts.get(object_id, 0) + 1
        return ObjectRef(object_id, self)

    own_actor = adopt_ref

    def release_ref(self, object_id: bytes) -> None:
        with self._lock:
            left = self._counts.get(object_id, 0) - 1
            if left > 0:
                self._counts[object_id] = left
                return
            self._counts.pop(object_id, None)
            stored = self._objects.pop(object_id, None)
            actor = self._actors.pop(object_id, None)
        if stored is not None:
            for contained in stored[0].contained:
                self.release_ref(contained)
        if actor is not None and actor.loop is not None:
            actor.loop.close()

    def escaping(self, object_id: bytes) -> None:
        """Refs never leave this process in local mode."""

    def needs_export(self, function_id: bytes) -> bool:
        return function_id not in self._functions

    # --------------------------------------------------------------- objects

    def _store(self, object_id: bytes, serialized: Serialized, is_error: bool = False) -> None:
        if serialized.buffers:
            # The buffers still view the caller's memory: keep immutable copies,
            # as a node's shared memory would (arrays come back read-only).
            serialized = serialized._replace(buffers=[bytes(b.raw()) for b in serialized.buffers])
        with self._lock:
            for contained in serialized.contained:
                self._counts[contained] = self._counts.get(contained, 0) + 1
            self._objects[object_id] = (serialized, is_error)

    def put_serialized(self, serialized: Serialized, is_error: bool = False) -> ObjectRef:
        object_id = self.new_task_id() + (0).to_bytes(4, "big")
        self._store(object_id, serialized, is_error)
        self.stats["puts"] += 1
        return self.adopt_ref(object_id)

    def put(self, value: Any) -> ObjectRef:
        return self.put_serialized(serialize_put(value))

    def _value(self, object_id: bytes) -> Any:
        """The stored value; a stored error is raised."""
        try:
            serialized, is_error = self._objects[object_id]
        except KeyError:
            raise ObjectLostError(f"object {object_id.hex()} is not in this local-mode session") from None
        value = pickle.loads(serialized.data, buffers=serialized.buffers)
        if is_error:
            raise value
        return value

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        return [self._value(ref._id) for ref in refs]

    def wait_ready(self, object_ids: list[bytes], num_ready: int, timeout: float | None) -> set[bytes]:
        return set(object_ids)  # every task ran when it was submitted

    def future(self, ref: ObjectRef) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(self._value(ref._id))
        except BaseException as e:  # noqa: B036
            future.set_exception(e)
        return future

    # ----------------------------------------------------------------- tasks

    def submit(self, spec: TaskSpec, kind: int = P.SUBMIT) -> list[ObjectRef]:
        return_ids = spec.return_ids()
        if kind == P.ACTOR_CALL:
            self.stats["actor_calls"] += 1
            actor = self._actors.get(spec.actor_id)  # type: ignore[arg-type]
            if actor is None or actor.death is not None:
                self._fail(return_ids, self._death_of(actor, spec))
            else:
                method = (lambda: True) if spec.method == "__ray_ready__" else getattr(actor.instance, spec.method)  # type: ignore[arg-type]
                self._run(spec, return_ids, method, actor)
        else:
            self.stats["tasks"] += 1
            if spec.function_bytes is not None:
                self._functions[spec.function_id] = pickle.loads(spec.function_bytes)
            self._run(spec, return_ids, self._functions[spec.function_id], None)
        return [self.adopt_ref(object_id) for object_id in return_ids]

    def _run(self, spec: TaskSpec, return_ids: list[bytes], function: Any, actor: _Actor | None) -> None:
        try:
            args, kwargs = self._arguments(spec.args, spec.deps)
        except TaskError as upstream:  # an argument's task failed: so does this one
            self._fail(return_ids, upstream)
            return
        try:
            result = function(*args, **kwargs)
            if inspect.iscoroutine(result):
                result = _run_coroutine(result, actor)
            if spec.generator is not None:
                result = self._drain(spec, result, actor)
            values = split_returns(spec, result)
        except SystemExit as e:
            if actor is None:
                self._fail(return_ids, _wrap(spec.name, e))
                return
            actor.death = ActorDiedError(f"actor {spec.name.split('.')[0]} exited with sys.exit({e.code!r})")
            self._fail(return_ids, actor.death)
            return
        except Exception as e:
            self._fail(return_ids, _wrap(spec.name, e))
            return
        try:
            serialized = [serialize(v) for v in values]
        except SerializationError as e:
            self._fail(return_ids, _wrap(spec.name, e.about(f"the value {spec.name}() returned")))
            return
        for object_id, s in zip(return_ids, serialized):
            self._store(object_id, s)

    def _drain(self, spec: TaskSpec, items: Any, actor: _Actor | None) -> Any:
        """A generator task's items, made now: stored as its stream (or as a dynamic
        generator's refs); returns the task's one result."""
        if inspect.isasyncgen(items):
            items = _run_coroutine(_collect(items), actor)
        if not inspect.isgenerator(items) and not isinstance(items, list):
            raise TypeError(f"{spec.name} was called with num_returns={spec.generator!r}, so it must be a generator function")
        if spec.generator == "dynamic":
            refs = []
            try:
                for item in items:
                    refs.append(self.put(item))
            except Exception as e:  # as in Ray: the error is the last item
                refs.append(self.put_serialized(serialize(_wrap(spec.name, e)), is_error=True))
            return DynamicObjectRefGenerator(refs)
        count = 0
        try:
            for item in items:
                self._store(return_id(spec.task_id, count + 1), serialize(item))
                count += 1
        except Exception as e:
            self._fail([return_id(spec.task_id, count + 1)], _wrap(spec.name, e))
            count += 1
        self._streams[spec.task_id] = count
        return count

    def _arguments(self, payload: Any, deps: tuple[bytes, ...]) -> tuple[list[Any], dict[str, Any]]:
        try:
            args, kwargs = payload_codec.decode(payload)
        finally:
            if payload.segment is not None:  # a large argument list: no shared memory stays behind
                shm.unlink(payload.segment)
        if deps:
            values = [self._value(object_id) for object_id in deps]
            args = [values[a.index] if type(a) is ArgRef else a for a in args]
            kwargs = {k: values[v.index] if type(v) is ArgRef else v for k, v in kwargs.items()}
        return args, kwargs

    def _fail(self, return_ids: list[bytes], error: BaseException) -> None:
        try:
            serialized = serialize(error)
        except SerializationError:
            serialized = serialize(TaskError("", "".join(traceback.format_exception(error)), None))
        for object_id in return_ids:
            self._store(object_id, serialized, is_error=True)

    # ---------------------------------------------------------------- actors

    def _create_actor(self, spec: ActorSpec) -> tuple[bytes, str, dict[str, int]]:
        namespace = spec.namespace or self.namespace
        if spec.name is not None:
            existing = self._named.get((namespace, spec.name))
            if existing is not None and self._actors.get(existing) is not None:
                if spec.get_if_exists:
                    old = self._actors[existing].spec
                    return old.actor_id, old.class_name, old.methods
                raise ValueError(f"an actor named {spec.name!r} already exists in namespace {namespace!r}")
        actor = _Actor(spec)
        self._actors[spec.actor_id] = actor
        if spec.name is not None:
            self._named[(namespace, spec.name)] = spec.actor_id
        if spec.function_bytes is not None:
            self._functions[spec.function_id] = pickle.loads(spec.function_bytes)
        cls = self._functions[spec.function_id]
        try:
            args, kwargs = self._arguments(spec.args, spec.deps)
            if inspect.iscoroutinefunction(getattr(cls, "__init__", None)):
                actor.instance = cls.__new__(cls)
                _run_coroutine(actor.instance.__init__(*args, **kwargs), actor)
            else:
                actor.instance = cls(*args, **kwargs)
        except BaseException as e:  # noqa: B036
            error = _wrap(f"{spec.class_name}.__init__", e)
            actor.death = ActorDiedError(f"the actor {spec.class_name} died in __init__: {error}")
            actor.death.__cause__ = error
        return spec.actor_id, spec.class_name, spec.methods

    def _death_of(self, actor: _Actor | None, spec: TaskSpec) -> BaseException:
        if actor is not None and actor.death is not None:
            return actor.death
        return ActorDiedError(f"the actor of {spec.name} was killed")

    def send_soon(self, message: tuple[Any, ...], at_once: bool | None = None) -> None:
        if message[0] == P.CREATE_ACTOR:
            _, spec = message
            self._create_actor(spec)

    def request(self, operation: str, *args: Any, timeout: float | None = 60.0) -> Any:
        if operation == "create_actor":
            return self._create_actor(args[0])
        if operation == "kill":
            actor = self._actors.get(args[0])
            if actor is not None and actor.death is None:
                actor.death = ActorDiedError(f"the actor {actor.spec.class_name} was killed by kill()")
            return None
        if operation == "get_actor":
            name, namespace = args[0], args[1] or self.namespace
            actor_id = self._named.get((namespace, name))
            actor = self._actors.get(actor_id) if actor_id is not None else None
            if actor is None or actor.death is not None:
                raise ValueError(f"Failed to look up actor with name {name!r} in namespace {namespace!r}")
            return actor.spec.actor_id, actor.spec.class_name, actor.spec.methods
        if operation == "cancel":
            return None  # every task already ran
        if operation == "resources":
            total = {"CPU": float(os.cpu_count() or 1)}
            return {"total": total, "available": dict(total)}
        if operation == "stream_open":
            return None
        if operation == "stream_next":
            task_id, index = args
            if index < self._streams.get(task_id, 0):
                return "item", return_id(task_id, index + 1)
            return "end", None
        if operation == "state" and args[0] == "metrics":
            return self._metric_table.rows()
        if operation == "nodes":
            return [{"NodeID": "local", "Alive": True, "Resources": {"CPU": float(os.cpu_count() or 1)}}]
        raise NotImplementedError(f"{operation}() is not available in local mode")

    # ------------------------------------------------- what a node client does too

    def cancel_direct(self, task_id: bytes, force: bool, recursive: bool) -> bool:
        return True  # nothing runs later: there is nothing to cancel

    def forget_route(self, actor_id: bytes) -> None:
        pass

    def return_idle_leases(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            self.closed = True
            actors, self._actors = self._actors, {}
            self._objects.clear()
        for actor in actors.values():
            if actor.loop is not None:
                actor.loop.close()


def _run_coroutine(coroutine: Any, actor: _Actor | None) -> Any:
    """Run an ``async def`` task or method to its end; an actor keeps one loop for all its calls."""
    if actor is None:
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(coroutine)
        finally:
            loop.close()
    if actor.loop is None:
        actor.loop = asyncio.new_event_loop()
    return actor.loop.run_until_complete(coroutine)


async def _collect(items: Any) -> list[Any]:
    return [item async for item in items]


def _wrap(name: str, error: BaseException) -> TaskError:
    return task_error(name, error, __file__).as_instanceof_cause()
