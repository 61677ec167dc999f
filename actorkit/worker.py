"""Worker processes: spawned by the node, reused across tasks, one task at a time.

The main thread runs tasks (so that a cancellation can interrupt it with
KeyboardInterrupt); the client's receiver thread queues the node's EXECUTE
messages for it.  A worker's ``print`` and ``logging`` output goes to the
driver whose task it is running, prefixed with the task's name and pid.
"""

from __future__ import annotations

import io
import os
import pickle
import queue
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from . import payload as payload_codec
from . import protocol as P
from . import runtime
from .client import Client
from .exceptions import TaskError
from .payload import Payload
from .procutil import set_process_name
from .task_spec import ArgRef, TaskSpec


@dataclass
class WorkerArgs:
    address: str
    authkey: bytes
    session: str
    worker_id: int
    node_id: str


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
    """Loads functions once, runs tasks, and reports their results."""

    def __init__(self, client: Client, node_id: str) -> None:
        self.client = client
        self.node_id = node_id
        self.functions: dict[bytes, Any] = {}
        self.current: TaskSpec | None = None
        self.gpu_ids: list[int] = []

    @property
    def task_name(self) -> str:
        return self.current.name if self.current is not None else "worker"

    def forward_output(self, is_stderr: bool, lines: list[str]) -> None:
        try:
            self.client.send((P.LOG, self.task_name, os.getpid(), is_stderr, lines))
        except Exception:
            pass  # the node is gone: there is nobody to show the output to

    def run(self, message: tuple[Any, ...]) -> None:
        _, spec, function_bytes, deps, gpu_ids = message
        self.current = spec
        self.gpu_ids = gpu_ids
        retryable = False
        saved_env = self._enter_environment(spec, gpu_ids)
        try:
            function = self._function(spec, function_bytes)
            args, kwargs = self._arguments(spec, deps)
            self.client.in_task = True
            try:
                result = function(*args, **kwargs)
            finally:
                self.client.in_task = False
            payloads = self._result_payloads(spec, result)
        except BaseException as e:  # noqa: B036 - KeyboardInterrupt is a cancellation
            retryable = _should_retry(spec, e)
            error = self._task_error(spec, e)
            payloads = [error] * max(spec.num_returns, 1)
        finally:
            _restore_environment(saved_env)
            sys.stdout.flush()
            sys.stderr.flush()
            self.current = None
        self.client.send((P.DONE, spec.task_id, payloads[: spec.num_returns], retryable))

    def _function(self, spec: TaskSpec, function_bytes: bytes | None) -> Any:
        if function_bytes is not None:
            self.functions[spec.function_id] = pickle.loads(function_bytes)
        return self.functions[spec.function_id]

    def _arguments(self, spec: TaskSpec, deps: dict[bytes, Payload]) -> tuple[list[Any], dict[str, Any]]:
        args, kwargs = payload_codec.decode(spec.args)
        if spec.deps:
            values = [payload_codec.decode(deps[object_id]) for object_id in spec.deps]
            args = [values[a.index] if type(a) is ArgRef else a for a in args]
            kwargs = {k: values[v.index] if type(v) is ArgRef else v for k, v in kwargs.items()}
        return args, kwargs

    def _result_payloads(self, spec: TaskSpec, result: Any) -> list[Payload]:
        n = spec.num_returns
        if n == 1:
            values = [result]
        elif n == 0:
            values = []
        else:
            try:
                values = list(result)
            except TypeError:
                values = None  # type: ignore[assignment]
            if values is None or len(values) != n:
                raise ValueError(
                    f"task {spec.name} has num_returns={n} but returned "
                    f"{type(result).__name__} {result!r:.80}; return a sequence of {n} values"
                )
        return [payload_codec.encode(v, self.client.session) for v in values]

    def _task_error(self, spec: TaskSpec, error: BaseException) -> Payload:
        if isinstance(error, TaskError):
            # An error from a task this one waited on: pass it on unchanged.
            task_error = error
        else:
            tb = error.__traceback__
            # Drop the executor's own frames: users see their function first.
            while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
                tb = tb.tb_next
            text = "".join(traceback.format_exception(type(error), error, tb))
            cause = error if _round_trips(error) else None
            task_error = TaskError(spec.name, text, cause, os.getpid(), type(error).__name__)
        try:
            return payload_codec.encode(task_error, self.client.session, is_error=True)
        except Exception:
            fallback = TaskError(spec.name, task_error.traceback_str, None, os.getpid(), task_error.cause_type_name)
            return payload_codec.encode(fallback, self.client.session, is_error=True)

    def _enter_environment(self, spec: TaskSpec, gpu_ids: list[int]) -> dict[str, str | None]:
        env: dict[str, str] = {}
        if spec.runtime_env:
            env.update(spec.runtime_env.get("env_vars") or {})
        if gpu_ids or spec.resources.get("GPU"):
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_ids))
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        return saved


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
    return isinstance(error, tuple(retry))


def _round_trips(error: BaseException) -> bool:
    """Whether ``error`` survives pickling (exceptions with odd __init__s may not)."""
    import cloudpickle

    try:
        pickle.loads(cloudpickle.dumps(error))
        return True
    except Exception:
        return False


def main(args: WorkerArgs) -> None:
    """Entry point of a spawned worker process."""
    set_process_name("actorkit:worker")
    inbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()

    def on_message(message: tuple[Any, ...]) -> None:
        if message[0] == P.EXECUTE:
            inbox.put(message)
        elif message[0] == P.EXIT:
            inbox.put(None)

    channel = P.Channel(P.connect(args.address, args.authkey))
    client = Client(
        channel, session=args.session, job_id=b"", role="worker", worker_id=args.worker_id, on_message=on_message
    )
    executor = TaskExecutor(client, args.node_id)
    runtime.enter_worker(client, executor, os.path.join(os.path.dirname(args.address), "node.sock"), args.authkey)
    sys.stdout = _ForwardedStream(executor, is_stderr=False)
    sys.stderr = _ForwardedStream(executor, is_stderr=True)
    while True:
        message = inbox.get()
        if message is None:
            break
        executor.run(message)
    sys.stdout.flush()
    sys.stderr.flush()
    client.close()
