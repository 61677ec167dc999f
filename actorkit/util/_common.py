"""Helpers shared by the utilities (private).

* ``ensure_initialized``: the utilities start a local node on first use, as
  ``remote()`` calls do, so that a ``multiprocessing.Pool`` replacement works
  in a script that never calls ``init()``.
* ``RemoteTraceback`` and ``unwrap_task_error``: the drop-ins for the standard
  library (``Pool``, ``Executor``) raise what the standard library raises: the
  original exception, with the remote traceback chained as ``__cause__``.
* ``cluster_cpus``: the default number of processes of a pool.
"""

from __future__ import annotations

import concurrent.futures.process
import multiprocessing.pool
from typing import Any

import actorkit
from actorkit.exceptions import TaskError


def ensure_initialized(address: str | None = None) -> None:
    """Connect this process to a node, starting a local one if needed."""
    if actorkit.is_initialized():
        return
    if address is not None:
        actorkit.init(address=address)
    else:
        actorkit.init()


def cluster_cpus() -> int:
    """The whole number of CPUs of the cluster, at least 1."""
    return max(1, int(actorkit.cluster_resources().get("CPU", 1)))


# The standard library's own classes: its code and tests check the cause's type
# (``type(e.__cause__) is multiprocessing.pool.RemoteTraceback``).
RemoteTraceback = multiprocessing.pool.RemoteTraceback  # Pool's
ExecutorRemoteTraceback = concurrent.futures.process._RemoteTraceback  # ProcessPoolExecutor's


def with_remote_traceback(error: BaseException, tb: str, kind: type[Exception] = RemoteTraceback) -> BaseException:
    """``error`` with ``tb`` chained as its cause (what a drop-in re-raises)."""
    if tb:
        error.__cause__ = kind(f'\n"""\n{tb.rstrip()}\n"""')
    return error


def unwrap_task_error(error: BaseException, kind: type[Exception] = RemoteTraceback) -> BaseException:
    """The exception the user's function raised, when ``error`` carries it.

    ``get()`` raises ``TaskError`` (also an instance of the original class);
    the standard library's pools raise the original exception itself, with
    the remote traceback (of class ``kind``) as its cause.  Errors of
    actorkit's own (a dead worker, a cancelled task) are returned unchanged.
    """
    if isinstance(error, TaskError) and error.cause is not None:
        cause = error.cause
        if isinstance(cause, TaskError):  # nested: unwrap once more
            return unwrap_task_error(cause, kind)
        return with_remote_traceback(cause, error.traceback_str, kind)
    return error


def describe_callable(fn: Any) -> str:
    """A short name for ``fn`` in reprs and task names."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return type(fn).__qualname__
    return str(name)
