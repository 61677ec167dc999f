"""Errors raised by actorkit, under actorkit's names with Ray's names as aliases.

``TaskError`` is special: when a task raises, ``get()`` raises an instance of a
class made on the fly that derives from both ``TaskError`` and the original
exception's class, so ``except ValueError`` still catches a remote
``ValueError`` (as in Ray).  The remote traceback is part of the message and the
original exception, when it could be rebuilt, is chained as ``__cause__``.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = [
    "ActorkitError",
    "TaskError",
    "ActorDiedError",
    "ActorUnavailableError",
    "GetTimeoutError",
    "TaskCancelledError",
    "ObjectLostError",
    "ObjectStoreFullError",
    "WorkerCrashedError",
    "SerializationError",
    "NodeDiedError",
    "TaskUnschedulableError",
    "ActorUnschedulableError",
    "RaySystemError",
    "RayError",
    "RayTaskError",
    "RayActorError",
]


class ActorkitError(Exception):
    """Base class of every error actorkit raises on its own behalf."""


class TaskError(ActorkitError):
    """A task raised an exception; ``get()`` re-raises it as this.

    Attributes: ``function_name``, ``pid``, ``traceback_str`` (the remote
    traceback), ``cause`` (the original exception, or ``None`` when it could not
    be rebuilt in this process) and ``cause_type_name``.
    """

    def __init__(
        self,
        function_name: str = "",
        traceback_str: str = "",
        cause: BaseException | None = None,
        pid: int | None = None,
        cause_type_name: str | None = None,
    ) -> None:
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        self.cause_type_name = cause_type_name or (type(cause).__name__ if cause else "")
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"{self.function_name}()" + (f" (pid={self.pid})" if self.pid else "")
        return f"{self.cause_type_name} in {where}:\n{self.traceback_str.rstrip()}"

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self) -> Any:
        # The dual-class instances are rebuilt through as_instanceof_cause so
        # they stay catchable by the original class after a round trip.
        return (
            _rebuild_task_error,
            (self.function_name, self.traceback_str, self.cause, self.pid, self.cause_type_name),
        )

    def as_instanceof_cause(self) -> TaskError:
        """This error as an instance of both ``TaskError`` and the cause's class."""
        cause = self.cause
        if cause is None or isinstance(self, type(cause)):
            return self
        cls = _dual_class(type(cause))
        if cls is None:
            return self
        err = cls.__new__(cls)
        # Set the attributes of both bases without calling the cause's __init__,
        # whose signature is unknown.
        err.args = (self._message(),)
        err.function_name = self.function_name
        err.traceback_str = self.traceback_str
        err.cause = cause
        err.pid = self.pid
        err.cause_type_name = self.cause_type_name
        err.__cause__ = cause
        return err


@functools.lru_cache(maxsize=256)
def _dual_class(cause_cls: type[BaseException]) -> type[TaskError] | None:
    if not issubclass(cause_cls, Exception) or issubclass(cause_cls, TaskError):
        return None
    try:
        return type(
            f"TaskError({cause_cls.__name__})",
            (TaskError, cause_cls),
            {"__str__": TaskError.__str__, "__init__": TaskError.__init__, "__getattr__": _cause_attribute},
        )
    except TypeError:
        # Layout conflicts (e.g. some C exception types) cannot be combined.
        return None


def _cause_attribute(self: TaskError, name: str) -> Any:
    # The error's own attributes (e.code of a custom error) live on its cause,
    # as in Ray: reach them through the error the caller catches.
    cause = self.__dict__.get("cause")
    if cause is None or name.startswith("__"):
        raise AttributeError(name)
    return getattr(cause, name)


def _rebuild_task_error(
    function_name: str,
    traceback_str: str,
    cause: BaseException | None,
    pid: int | None,
    cause_type_name: str | None,
) -> TaskError:
    return TaskError(function_name, traceback_str, cause, pid, cause_type_name).as_instanceof_cause()


class ActorDiedError(ActorkitError):
    """The actor is dead: killed, exited, out of restarts, or its ``__init__`` raised.

    ``cause`` is the error that killed it when there is one (the ``TaskError``
    of a failed ``__init__``); it is also chained as ``__cause__``.
    """

    def __init__(self, message: str = "the actor died", cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.__cause__ = cause

    def __reduce__(self) -> Any:
        return (ActorDiedError, (self.args[0] if self.args else "", self.cause))


class ActorUnavailableError(ActorkitError):
    """The actor is restarting and cannot take the call now."""


class GetTimeoutError(ActorkitError, TimeoutError):
    """``get()`` or ``wait()`` did not finish within its timeout."""


class TaskCancelledError(ActorkitError):
    """The task was cancelled with ``cancel()``."""


class ObjectLostError(ActorkitError):
    """The object's value is gone: every copy was lost and it cannot be rebuilt."""


class ObjectStoreFullError(ActorkitError):
    """The object store is at capacity and cannot spill to disk to make room.

    Raised by ``put()`` (or by a task whose result cannot be stored) when the
    spill directory cannot be created or written, e.g. a full disk.  Objects
    already stored stay readable; freeing some (dropping their refs) or fixing
    the spill directory makes room again.
    """


class WorkerCrashedError(ActorkitError):
    """The worker process running the task died, and the task is out of retries."""


class NodeDiedError(ActorkitError):
    """The node server died or cannot be reached."""


class TaskUnschedulableError(ActorkitError):
    """The task can never run: its node-affinity strategy names a node that is dead or unknown."""


class ActorUnschedulableError(ActorDiedError):
    """The actor can never be placed: its node-affinity strategy names a node that is dead or unknown."""


class RaySystemError(ActorkitError):
    """An internal error of actorkit itself."""


class SerializationError(TypeError):
    """A value could not be serialized; the message names the culprit and where it is.

    ``subject`` is what the caller handed over ("argument 2 of f()", "the value
    given to put()"); ``steps`` is the path from there to the culprit.
    """

    def __init__(self, subject: str, steps: list[str], culprit_type: str, reason: str) -> None:
        self.subject = subject
        self.steps = steps
        self.culprit_type = culprit_type
        self.reason = reason
        super().__init__(self._message())

    def _message(self) -> str:
        where = self.subject + (f", at {''.join(self.steps)}," if self.steps else "")
        return f"cannot serialize {where} which is {_article(self.culprit_type)}: {self.reason}"

    def __reduce__(self) -> Any:
        return (type(self), (self.subject, self.steps, self.culprit_type, self.reason))

    def about(self, subject: str, steps: list[str] | None = None) -> SerializationError:
        """The same failure, told of ``subject`` (the steps are relative to it)."""
        error = SerializationError(subject, self.steps if steps is None else steps, self.culprit_type, self.reason)
        error.__cause__ = self.__cause__
        return error


def forked_error(parent_pid: int) -> RuntimeError:
    """What a process forked from a connected driver or worker gets if it touches actorkit."""
    return RuntimeError(
        f"actorkit cannot be used in a process forked from pid {parent_pid}, which is connected "
        f"to an actorkit node: the forked process shares that connection and would corrupt it. "
        f"Start processes with the spawn method (multiprocessing.get_context('spawn'), or "
        f"ProcessPoolExecutor(mp_context=multiprocessing.get_context('spawn'))), or use actorkit "
        f"tasks and actors instead of forking."
    )


def _article(name: str) -> str:
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


# Ray's names.
RayError = ActorkitError
RayTaskError = TaskError
RayActorError = ActorDiedError
