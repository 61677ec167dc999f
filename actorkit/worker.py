"""Worker processes: spawned by the node, reused across tasks, one task at a time.

The main thread runs tasks (so that a cancellation can interrupt it with
KeyboardInterrupt) from its mailbox (``mailbox.py``), where the node's
EXECUTE messages go: read by the client's hub thread while a task runs, by
the main thread itself while it waits.  Every worker also listens for
callers on the same machine (``direct.py``): an actor's callers, and the
driver the node lent an idle worker to (``LeaseManager.lend`` (node/leases.py)) send their calls and
tasks straight to it; the thread that takes the work reads those links itself.  A worker's ``print`` and
``logging`` output goes to the driver whose task it is running, prefixed with
the task's name and pid.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import io
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from . import context, runtime_env
from . import payload as payload_codec
from . import protocol as P
from .client import Client
from .direct import Link, Loopback, socket_path
from .exceptions import ActorDiedError, TaskError, _ExitActor
from .gate import Gate
from .generators import DynamicObjectRefGenerator
from .mailbox import Mailbox
from .payload import Payload
from .procutil import set_process_name
from .serialization import SerializationError, serialize, task_error
from .strategy import in_group
from .task_spec import (
    ArgRef,
    TaskSpec,
    cancelled_error,
    retry_exceptions_from_wire,
    spec_from_wire,
    split_returns,
)


class WorkerArgs(NamedTuple):
    address: str
    authkey: bytes
    session: str
    worker_id: int
    node_id: str
    store_capacity: int
    transfer_address: Any = None  # this machine's TransferServer, on a member node
    session_dir: str | None = None  # where an actor listens for direct calls


class _ForwardedStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of a worker: whole lines go to the driver."""

    def __init__(self, executor: TaskExecutor, is_stderr: bool) -> None:
        self._executor = executor
        self._is_stderr = is_stderr
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if "\n" not in text:
            self._partial += text
            return len(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        self._executor.forward_output(self._is_stderr, lines)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            self._executor.forward_output(self._is_stderr, [line])


class TaskExecutor:
    """Loads functions once, runs tasks and actor calls, and reports their results."""

    def __init__(self, client: Client, node_id: str, inbox: Mailbox, session_dir: str | None) -> None:
        self.client = client
        self.node_id = node_id
        self.inbox = inbox  # the mailbox the main thread serves
        self.session_dir = session_dir
        self.leave_runtime_env: Callable[[], None] = _nothing  # undoes the running task's runtime_env
        self.direct_address: str | None = None  # where callers on this machine reach it (see listen)
        self.direct_callers: dict[bytes, Link | Loopback] = {}  # task id -> the link a direct call came on
        self.functions: dict[bytes, Any] = {}
        self.current: TaskSpec | None = None
        self.gpu_ids: list[int] = []
        # Set once this worker is dedicated to an actor.
        self.actor_id: bytes | None = None
        self.actor_name: str | None = None
        self.log_name: str | None = None  # an actor's output prefix: its class, or its __repr__ if it has one
        self.placement: Any = None  # the wire strategy of the placement group the task or actor runs in
        self.actor_methods: dict[str, int] = {}
        self.actor_loop: asyncio.AbstractEventLoop | None = None  # made early by an async __init__
        self.instance: Any = None
        self.serial_actor = False
        self.self_calls: set[bytes] = set()  # results of calls this serial actor made to itself
        self.cancelled: set[bytes] = set()  # tasks to interrupt, or to skip if not started
        self.cancel_async: Any = None  # an async actor's way to cancel a running call
        self.handing_back = False  # the running task waits in get(): tasks sent now go back

    @property
    def task_name(self) -> str:
        if self.log_name is not None:
            return self.log_name
        return self.current.name if self.current is not None else "worker"

    def forward_output(self, is_stderr: bool, lines: list[str]) -> None:
        try:
            self.client.send((P.LOG, self.task_name, os.getpid(), is_stderr, lines))
        except Exception:
            pass  # the node is gone: there is nobody to show the output to

    # ------------------------------------------------------------ running

    def run(self, message: tuple[Any, ...]) -> None:
        """Run one task or actor call on this thread, lending CPUs while it blocks in get()."""
        _, spec, _function_bytes, _deps, gpu_ids = message
        self.current = spec
        if self.actor_id is None:
            self.placement = spec.strategy if in_group(spec.strategy) is not None else None
        if self.actor_id is None:
            self.gpu_ids = gpu_ids
        saved_env = _enter_gpus(gpu_ids, bool(spec.resources.get("GPU")))
        # A task, or a serial actor's call, lends its CPUs while it blocks in get().
        self.client.in_task = self.actor_id is None or self.serial_actor
        if self.actor_id is None and spec.task_id in self.direct_callers:
            # The node never saw this task: tell it whose children the tasks it submits are.
            self.client.parent_task = spec.task_id
        self.client.task_blocked = False
        try:
            self._call(message)
        finally:
            self.client.in_task = False
            self.client.parent_task = None
            self.leave_runtime_env()
            self.leave_runtime_env = _nothing
            _restore_environment(saved_env)
            self.current = None

    def cancel(self, task_id: bytes, force: bool = False) -> None:
        """Called by the thread reading the node when the node cancels ``task_id``.

        ``force`` (a task sent straight here by its caller): end this process if
        it runs that task, as the node does by killing a worker it dispatched to.
        """
        self.cancelled.add(task_id)
        current = self.current
        if self.actor_id is None and current is not None and current.task_id == task_id:
            if force:
                os._exit(1)
            # A real signal, so that blocking calls such as time.sleep() are interrupted too.
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]
        elif self.cancel_async is not None:
            self.cancel_async(task_id)

    def on_sigint(self, _signum: int, _frame: Any) -> None:
        """SIGINT interrupts only a task being cancelled (Ctrl-C in a terminal reaches workers too)."""
        current = self.current
        if current is not None and current.task_id in self.cancelled:
            self.cancelled.discard(current.task_id)
            raise KeyboardInterrupt(f"task {current.name} was cancelled")

    def is_cancelled(self, task_id: bytes) -> bool:
        """Whether ``task_id`` (the calling task or call) has been cancelled."""
        if self.serial_actor or self.actor_id is None:
            if threading.current_thread() is threading.main_thread():
                self.inbox.poll()  # a cancellation on a direct link waits there while this runs
        return task_id in self.cancelled

    def _skip_cancelled(self, spec: TaskSpec) -> bool:
        if spec.task_id not in self.cancelled:
            return False
        self.cancelled.discard(spec.task_id)
        self._report_error(spec, KeyboardInterrupt(f"task {spec.name} was cancelled before it started"))
        return True

    def _call(self, message: tuple[Any, ...]) -> None:
        """Run a call and send its result: tasks, serial and threaded actor calls."""
        spec = message[1]
        if self._skip_cancelled(spec):
            return
        try:
            function, args, kwargs = self._prepare(message)
            result = function(*args, **kwargs)
        except BaseException as e:  # noqa: B036 - KeyboardInterrupt is a cancellation
            self._report_error(spec, e)
        else:
            if spec.actor_id is not None and spec.task_id in self.cancelled:
                # A running actor call is not interrupted (it may check is_canceled()),
                # but its caller gets TaskCancelledError, as in Ray.
                self.cancelled.discard(spec.task_id)
                self._report_error(spec, KeyboardInterrupt(f"task {spec.name} was cancelled"))
                return
            self._report(spec, result)

    async def call_async(self, message: tuple[Any, ...]) -> None:
        """Run an async actor's call on its event loop."""
        spec = message[1]
        if self._skip_cancelled(spec):
            return
        try:
            function, args, kwargs = self._prepare(message)
            result = function(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            drained = spec.generator is not None and inspect.isasyncgen(result)
            if drained:
                result = await self._drain_async(spec, result)
        except BaseException as e:  # noqa: B036
            self._report_error(spec, e)
        else:
            if spec.task_id in self.cancelled:
                # Cancelled, and the coroutine caught the CancelledError: its caller
                # still gets TaskCancelledError, as in Ray.
                self.cancelled.discard(spec.task_id)
                self._report_error(spec, asyncio.CancelledError(f"task {spec.name} was cancelled"))
                return
            self._report(spec, result, drained)

    def _prepare(self, message: tuple[Any, ...]) -> tuple[Any, list[Any], dict[str, Any]]:
        _, spec, function_bytes, deps, _gpu_ids = message
        if spec.runtime_env:  # undone by run() once the call is answered
            self.leave_runtime_env = runtime_env.enter(spec.runtime_env, self.fetch_package)
        if spec.method is not None:
            function = _ready if spec.method == "__ray_ready__" else getattr(self.instance, spec.method)
        else:
            function = self.load(spec.function_id, function_bytes)
        args, kwargs = self._arguments(spec, deps)
        return function, args, kwargs

    def fetch_package(self, object_id_hex: str) -> bytes:
        """A runtime_env package (a zip the driver put), for ``runtime_env.enter``."""
        return self.client.get([self.client.adopt_ref(bytes.fromhex(object_id_hex))], None)[0]

    def load(self, function_id: bytes, function_bytes: bytes | None) -> Any:
        """The function (or class) with this id, unpickling it if its bytes came along."""
        function = self.functions.get(function_id)
        if function is None:
            if function_bytes is None:
                # A task its caller sent straight here: the node has the function.
                function_bytes = self.client.request("function", function_id)
            function = pickle.loads(function_bytes)
            # A decorated function or class pickled by reference comes back as the
            # decorated object (its module's name points to it): use what it wraps.
            function = self.functions[function_id] = getattr(function, "__actorkit_target__", function)
        return function

    def _arguments(self, spec: Any, deps: dict[bytes, Payload]) -> tuple[list[Any], dict[str, Any]]:
        args, kwargs = payload_codec.decode(spec.args)
        if spec.deps:
            if deps:
                values = [self._argument(object_id, deps[object_id]) for object_id in spec.deps]
            else:
                # A direct call: its caller holds the arguments; ask the node for them.
                values = self.client.get([self.client.adopt_ref(o) for o in spec.deps], None)
            args = [values[a.index] if type(a) is ArgRef else a for a in args]
            kwargs = {k: values[v.index] if type(v) is ArgRef else v for k, v in kwargs.items()}
        return args, kwargs

    def _argument(self, object_id: bytes, payload: Payload) -> Any:
        try:
            return self.client.decode_object(object_id, payload)
        except FileNotFoundError:
            # Spilled to disk after the node sent it: fetch it again (the node restores it).
            return self.client.get([self.client.adopt_ref(object_id)], None)[0]

    # -------------------------------------------------------------- generators

    def _drain(self, spec: TaskSpec, items: Any) -> Any:
        """Run a generator task's generator: stream its items, or collect them (dynamic).
        Returns the task's one result: how many items it streamed, or the refs to them."""
        if not inspect.isgenerator(items) and not isinstance(items, (list, tuple)):
            raise TypeError(
                f"{spec.name} was called with num_returns={spec.generator!r}, so it must be a generator "
                f"function (one that yields), but it returned {type(items).__name__}"
            )
        if spec.generator == "dynamic":
            refs = []
            try:
                for item in items:
                    refs.append(self.client.put(item))
            except BaseException as e:  # noqa: B036 - as in Ray: the error is the last item
                refs.append(self._put_error(spec, e))
            return DynamicObjectRefGenerator(refs)
        count = 0
        try:
            for item in items:
                self._stream_item(spec, count, item)
                count += 1
        except BaseException as e:  # noqa: B036 - a cancellation's KeyboardInterrupt too: its item says so
            self._stream_error(spec, count, e)
            count += 1
        self.client.send((P.STREAM_END, spec.task_id, count))
        return count

    async def _drain_async(self, spec: TaskSpec, items: Any) -> Any:
        """``_drain`` for an async generator (an async actor's method)."""
        if spec.generator == "dynamic":
            refs = []
            try:
                async for item in items:
                    refs.append(self.client.put(item))
            except BaseException as e:  # noqa: B036
                refs.append(self._put_error(spec, e))
            return DynamicObjectRefGenerator(refs)
        count = 0
        try:
            async for item in items:
                self._stream_item(spec, count, item)
                count += 1
        except BaseException as e:  # noqa: B036
            self._stream_error(spec, count, e)
            count += 1
        self.client.send((P.STREAM_END, spec.task_id, count))
        return count

    def _put_error(self, spec: TaskSpec, error: BaseException) -> Any:
        return self.client.put_serialized(serialize(self.wrap_error(spec.name, error)), is_error=True)

    def _stream_item(self, spec: TaskSpec, index: int, item: Any) -> None:
        try:
            payload = self.client.encode(item)
        except SerializationError as e:  # it ends the stream: the item's error is the last item
            raise e.about(f"item {index} that {spec.name}() yielded") from None
        self.client.send((P.STREAM_ITEM, spec.task_id, index, payload_codec.to_wire(payload)))

    def _stream_error(self, spec: TaskSpec, index: int, error: BaseException) -> None:
        if isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)) or spec.task_id in self.cancelled:
            self.cancelled.discard(spec.task_id)
            failure: BaseException = cancelled_error(spec)
        else:
            failure = self.wrap_error(spec.name, error)
        payload = payload_codec.encode(failure, self.client.session, is_error=True)
        self.client.send((P.STREAM_ITEM, spec.task_id, index, payload_codec.to_wire(payload)))

    def _report(self, spec: TaskSpec, result: Any, drained: bool = False) -> None:
        if spec.generator is not None and not drained:
            try:
                result = self._drain(spec, result)
            except BaseException as e:  # noqa: B036
                self._report_error(spec, e)
                return
        try:
            payloads = self._result_payloads(spec, result)
        except BaseException as e:  # noqa: B036
            self._report_error(spec, e)
            return
        self._send_result(spec, payloads, False)

    def _send_result(self, spec: TaskSpec, payloads: list[Payload], retryable: bool, exiting: bool = False) -> None:
        # What the task recorded reaches the node before whoever reads the result hears of it.
        self.client.metrics.flush()
        wires = [payload_codec.to_wire(p) for p in payloads]
        link = self.direct_callers.pop(spec.task_id, None)
        if link is None:
            self.client.send(P.done(spec.task_id, wires, retryable))
        elif any(p.segment is not None or p.contained for p in payloads):
            # Its memory and its refs must be the node's before this process lets go.
            self.client.send((P.OWNED_RESULT, spec.task_id, wires))
            if isinstance(link, Link):
                # The caller must not resend it if this process dies before the node's READY reaches it.
                self._answer(link, (P.OWNED_RESULT, spec.task_id))
        else:
            # What the call submitted, and refs it kept (ADDREF), reach the node
            # before its caller hears of it and lets go of what it held for it.
            self.client.sync()
            # Whether it waited in get(): the caller then sends no task of that function behind one.
            self._answer(link, P.done(spec.task_id, wires, retryable, self.client.task_blocked, exiting))

    @staticmethod
    def _answer(link: Link | Loopback, message: tuple[Any, ...]) -> None:
        try:
            link.send([message])
        except OSError:
            pass  # the caller is gone: nobody wants the result

    def _report_error(self, spec: TaskSpec, error: BaseException) -> None:
        if spec.generator == "streaming":
            # It failed before its generator ran (or is no generator): its consumer
            # gets the error as the only item, even on a direct call the node never sees.
            self._stream_error(spec, 0, error)
            self.client.send((P.STREAM_END, spec.task_id, 1))
        self._report_failure(spec, error)

    def _report_failure(self, spec: TaskSpec, error: BaseException) -> None:
        if isinstance(error, _ExitActor):
            self.exit_actor()
        if isinstance(error, SystemExit) and spec.method is not None and not isinstance(error, TaskError):
            self.exit_by_system_exit(spec, error)
        retryable = _should_retry(spec, error)
        payload = self._task_error(spec, error)
        self._send_result(spec, [payload] * spec.num_returns, retryable)

    def _result_payloads(self, spec: TaskSpec, result: Any) -> list[Payload]:
        if spec.num_returns > 1 and inspect.isgenerator(result):
            return self._yielded_payloads(spec, result)
        values = split_returns(spec, result)
        try:
            return [self.client.encode(v) for v in values]
        except SerializationError as e:
            raise e.about(f"the value {spec.name}() returned") from None

    def _yielded_payloads(self, spec: TaskSpec, items: Any) -> list[Payload]:
        """A generator with a fixed ``num_returns``: its first items are the results, as in
        Ray; if it raises (or stops) before yielding them all, the rest hold the error."""
        payloads: list[Payload] = []
        try:
            for item in items:
                payloads.append(self.client.encode(item))
                if len(payloads) == spec.num_returns:
                    break  # more would be ignored (Ray only logs them): do not run it further
            else:
                raise ValueError(
                    f"task {spec.name} has num_returns={spec.num_returns} but its generator "
                    f"yielded only {len(payloads)} values"
                )
        except BaseException as e:  # noqa: B036 - the results it could not make hold its error
            failed = self._task_error(spec, e)
            payloads += [failed] * (spec.num_returns - len(payloads))
        return payloads

    def _task_error(self, spec: Any, error: BaseException) -> Payload:
        return payload_codec.encode(self.wrap_error(spec.name, error), self.client.session, is_error=True)

    def wrap_error(self, name: str, error: BaseException) -> TaskError:
        """``error`` as the TaskError callers get (see ``serialization.task_error``)."""
        return task_error(name, error, __file__)

    # -------------------------------------------------------------- actors

    def become_actor(self, message: tuple[Any, ...]) -> bool:
        """Create the actor's instance; report it. False if ``__init__`` failed."""
        _, spec, class_bytes, deps, gpu_ids = message
        self.actor_id = spec.actor_id
        self.actor_name = self.log_name = spec.class_name
        self.placement = spec.strategy if in_group(spec.strategy) is not None else None
        self.actor_methods = spec.methods  # for get_runtime_context().current_actor
        self.gpu_ids = gpu_ids
        self.serial_actor = not spec.is_async and spec.max_concurrency == 1
        self.client.call_self_through(spec.actor_id, self._on_direct)
        _enter_gpus(gpu_ids, bool(spec.resources.get("GPU")))
        try:
            runtime_env.enter(spec.runtime_env, self.fetch_package)  # for the actor's whole life
            cls = self.load(spec.function_id, class_bytes)
            args, kwargs = self._arguments(spec, deps)
            if inspect.iscoroutinefunction(getattr(cls, "__init__", None)):
                # async def __init__: awaited on the loop the actor's calls will run on,
                # so that tasks and primitives it makes stay usable.
                self.instance = cls.__new__(cls)
                self.actor_loop = asyncio.new_event_loop()
                self.actor_loop.run_until_complete(self.instance.__init__(*args, **kwargs))
            else:
                self.instance = cls(*args, **kwargs)
        except BaseException as e:  # noqa: B036
            error = self.wrap_error(f"{spec.class_name}.__init__", e).as_instanceof_cause()
            death = ActorDiedError(
                f"The actor {spec.class_name} died because its __init__ raised:\n{error}", cause=error
            )
            died = payload_codec.encode(death, self.client.session, True)
            self.client.send((P.ACTOR_FAILED, spec.actor_id, payload_codec.to_wire(died)))
            return False
        self.log_name = _log_name(self.instance, spec.class_name)
        self.client.send((P.ACTOR_READY, spec.actor_id, self.direct_address))
        return True

    def listen(self, gate: Gate | None) -> None:
        """Take direct calls from callers on this machine (an actor's, or tasks from a
        lessee) at ``gate`` (see ``open_gate``)."""
        if gate is None:
            return  # everything comes through the node
        gate.start(lambda sock: self.inbox.add_link(Link(sock, self._on_direct, lambda _link: None)))
        self.direct_address = gate.addresses[0]

    def give_back_queued(self) -> Callable[[], None] | None:
        """The running task waits in get(): hand back the tasks lessees sent behind
        it, and those they send while it waits, which could be what it waits for
        (the node takes back what it lined up behind a blocked task the same way:
        REVOKED).  Returns what to call once it no longer waits."""
        if self.actor_id is not None:
            return None
        self.handing_back = True
        try:
            queued = self.inbox.take(lambda item: item[0] == P.EXECUTE and item[1].task_id in self.direct_callers)
            by_link: dict[Link | Loopback, list[bytes]] = {}
            for item in queued:
                by_link.setdefault(self.direct_callers.pop(item[1].task_id), []).append(item[1].task_id)
            for link, task_ids in by_link.items():
                self._answer(link, (P.REVOKED, task_ids))
            stop_watching = self.inbox.watch()  # what comes meanwhile goes back at once (_on_direct)
        except BaseException:  # a cancellation's KeyboardInterrupt, say
            self.handing_back = False
            raise

        def resume() -> None:
            try:
                stop_watching()
            finally:
                self.handing_back = False

        return resume

    def _on_direct(self, link: Link | Loopback, messages: list[tuple[Any, ...]]) -> None:
        """Calls and cancellations from a caller's direct link (on the thread that takes the mailbox's work)."""
        for message in messages:
            kind = message[0]
            if kind == P.ACTOR_CALL or kind == P.SUBMIT:
                _, spec_wire, _lost, _parent = message
                spec = spec_from_wire(spec_wire)
                if self.handing_back:
                    self._answer(link, (P.REVOKED, [spec.task_id]))  # see give_back_queued
                    continue
                self.direct_callers[spec.task_id] = link
                self.inbox.put((P.EXECUTE, spec, None, {}, []))
            elif kind == P.CANCEL:
                _, task_id, _force = message  # force is the node's to act on: it kills the worker
                self.cancel(task_id)

    def check_not_waiting_on_self(self, object_ids: list[bytes]) -> None:
        """A serial actor's method must not wait for a later call to its own actor."""
        if self.self_calls and any(o in self.self_calls for o in object_ids):
            raise RuntimeError(
                f"deadlock: a method of actor {self.actor_name} waits for the result of a later "
                f"call to the same actor, which cannot start before this method returns. Return "
                f"the ObjectRef instead, or let the actor run calls concurrently "
                f"(max_concurrency > 1 or async methods)."
            )

    def exit_by_system_exit(self, spec: TaskSpec, error: SystemExit) -> None:
        """A method raised SystemExit (``sys.exit()``): the actor's process ends, as if it died.

        Unlike ``exit_actor()`` the node may restart it (``max_restarts``).  The
        call that exited gets ``ActorDiedError`` saying so, and is not retried:
        it would only exit again.  Calls pending behind it go the way of calls
        of a crashed actor (retried on the restart per ``max_task_retries``).
        """
        status, how = _exit_status(error.code)
        why = f"{spec.name}() exited the actor's process via {how}"
        death = ActorDiedError(f"The actor {self.actor_name} ({self.actor_id.hex()}) is dead: {why}.")  # type: ignore[union-attr]
        payload = payload_codec.encode(death, self.client.session, is_error=True)
        if isinstance(error.code, str):
            print(error.code, file=sys.stderr)  # what the interpreter does with such a code
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            # The node first, so that it holds the calls it gets from now on for the
            # restarted actor; the caller then hears of the exit (and calls the
            # actor through the node from now on, see DirectCalls.on_link_messages).
            self.client.send((P.ACTOR_EXIT, self.actor_id, why))
            self.client.request("sync")
            self._send_result(spec, [payload] * spec.num_returns, False, exiting=True)
            self.client.close()
        finally:
            os._exit(status)

    def exit_actor(self) -> None:
        """End this actor's process now (``exit_actor()``); the node fails pending calls.

        The process's atexit handlers run first, as in Ray: the exit is intended.
        """
        try:
            atexit._run_exitfuncs()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        try:
            self.client.send((P.ACTOR_EXIT, self.actor_id, None))
            self.client.close()
        finally:
            os._exit(0)


def _exit_status(code: Any) -> tuple[int, str]:
    """The process's exit status for ``sys.exit(code)``, as the interpreter gives it, and how to say it."""
    if code is None:
        return 0, "sys.exit()"
    if isinstance(code, int):
        return code & 0xFF, f"sys.exit({code})"
    return 1, f"sys.exit({code!r})"


def _enter_gpus(gpu_ids: list[int], wants_gpu: bool) -> dict[str, str | None]:
    if not gpu_ids and not wants_gpu:
        return {}
    saved = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_ids))
    return saved


def _nothing() -> None:
    pass


def _ready() -> bool:
    """``handle.__ray_ready__``: answered once ``__init__`` has run, as every call is."""
    return True


def _restore_environment(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _should_retry(spec: TaskSpec, error: BaseException) -> bool:
    retry = spec.retry_exceptions
    if isinstance(error, KeyboardInterrupt) or not retry:
        return False
    if retry is True:
        return isinstance(error, Exception)
    try:
        classes = retry_exceptions_from_wire(retry)
    except Exception:
        return False  # classes this worker cannot load: nothing raised here can be one of them
    return isinstance(error, classes)


def open_gate(session_dir: str | None, authkey: bytes) -> Gate | None:
    """Listen where callers on this machine find this worker, or None if it cannot.

    Before the worker says hello to the node: the node may lend it to a driver
    at once, which connects at once (and waits for the handshake until
    ``TaskExecutor.listen`` starts answering).
    """
    if session_dir is None:
        return None
    try:
        return Gate([socket_path(session_dir, os.getpid())], authkey)
    except OSError:
        return None


def main(args: WorkerArgs) -> None:
    """Entry point of a spawned worker process."""
    set_process_name("actorkit:worker")
    inbox = Mailbox()

    def on_message(message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == P.EXECUTE or kind == P.BECOME_ACTOR:
            # From the wire's plain tuples back to named ones (see payload.to_wire).
            _, spec, function_bytes, wires, gpu_ids = message
            if kind == P.EXECUTE:
                spec = spec_from_wire(spec)
            deps = {k: payload_codec.from_wire(v) for k, v in wires.items()}
            inbox.put((kind, spec, function_bytes, deps, gpu_ids))
        elif kind == P.EXIT:
            inbox.put(None)
        elif kind == P.CANCEL:
            _, task_id, force = message
            executor.cancel(task_id, force)
        elif kind != P.PRINT:
            inbox.put(message)

    def on_lost() -> None:
        # The node is gone: no result can be delivered any more, so do not
        # finish the running task. Exit now rather than linger as an orphan.
        os._exit(1)

    gate = open_gate(args.session_dir, args.authkey)
    try:
        sock = P.connect(args.address, args.authkey)
        client = Client(
            sock,
            session=args.session,
            job_id=b"",
            role="worker",
            worker_id=args.worker_id,
            store_capacity=args.store_capacity,
            authkey=args.authkey,
            transfer_address=args.transfer_address,
            on_message=on_message,
            on_lost=on_lost,
        )
    except BaseException as e:
        if gate is not None:
            gate.close()
        if isinstance(e, OSError):
            return  # the node stopped while this worker was starting: nothing to do
        raise
    inbox.lend(*client.node_connection)
    executor = TaskExecutor(client, args.node_id, inbox, args.session_dir)
    executor.listen(gate)
    signal.signal(signal.SIGINT, executor.on_sigint)
    context.enter_worker(client, executor)
    client.on_block = executor.give_back_queued
    sys.stdout = _ForwardedStream(executor, is_stderr=False)
    sys.stderr = _ForwardedStream(executor, is_stderr=True)
    try:
        _serve(executor, inbox)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        client.close()


def _serve(executor: TaskExecutor, inbox: Mailbox) -> None:
    """Run tasks until told to stop, or become an actor and serve its calls."""
    while True:
        message = inbox.get()
        if message is None:
            return
        if message[0] == P.EXECUTE:
            # Keep the function even if this task is not run here: the node
            # counts it as loaded on this worker once it has sent it.
            if message[2] is not None:
                executor.load(message[1].function_id, message[2])
            if not executor.client.was_revoked(message[1].task_id):
                executor.run(message)
        elif message[0] == P.BECOME_ACTOR:
            if not executor.become_actor(message):
                return
            spec = message[1]
            if spec.is_async:
                _serve_async_actor(executor, inbox, spec.max_concurrency)
                return
            if spec.max_concurrency > 1:
                _serve_threaded_actor(executor, inbox, spec.max_concurrency)
                return


def _serve_threaded_actor(executor: TaskExecutor, inbox: Mailbox, max_concurrency: int) -> None:
    # Calls start in the order they arrived; up to max_concurrency run at once.
    with ThreadPoolExecutor(max_concurrency, thread_name_prefix="actorkit-actor") as pool:
        while (message := inbox.get()) is not None:
            pool.submit(executor.run, message)


def _serve_async_actor(executor: TaskExecutor, inbox: Mailbox, max_concurrency: int) -> None:
    """Run an async actor's calls concurrently on one event loop, in order of arrival."""

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        calls: asyncio.Queue[Any] = asyncio.Queue()
        slots = asyncio.Semaphore(max_concurrency)

        def pump() -> None:
            while True:
                message = inbox.get()
                loop.call_soon_threadsafe(calls.put_nowait, message)
                if message is None:
                    return

        threading.Thread(target=pump, name="actorkit-mailbox", daemon=True).start()
        running: dict[bytes, asyncio.Task[None]] = {}

        def cancel(task_id: bytes) -> None:
            task = running.get(task_id)
            if task is not None:
                task.cancel()

        executor.cancel_async = lambda task_id: loop.call_soon_threadsafe(cancel, task_id)

        async def run_one(message: tuple[Any, ...]) -> None:
            try:
                await executor.call_async(message)
            finally:
                slots.release()

        while (message := await calls.get()) is not None:
            await slots.acquire()
            task_id = message[1].task_id
            task = running[task_id] = loop.create_task(run_one(message))
            task.add_done_callback(lambda _t, task_id=task_id: running.pop(task_id, None))

    loop = executor.actor_loop or asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _log_name(instance: Any, class_name: str) -> str:
    """How an actor's output lines are prefixed: by its ``__repr__`` if its class defines
    one (as Ray does: ``(MyActor(index=1) pid=N)``), else by its class name."""
    if type(instance).__repr__ is object.__repr__:
        return class_name
    try:
        return " ".join(repr(instance).split()) or class_name
    except Exception:
        return class_name  # a __repr__ that fails must not cost the actor
