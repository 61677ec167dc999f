"""Helpers shared by the utilities (private).

* ``ensure_initialized``: the utilities start a local node on first use, as
  ``remote()`` calls do, so that a ``multiprocessing.Pool`` replacement works
  in a script that never calls ``init()``; with ``ACTORKIT_ADDRESS`` or
  ``RAY_ADDRESS`` set they join that cluster instead (as Ray's Pool does).
* ``RemoteTraceback`` and ``unwrap_task_error``: the drop-ins for the standard
  library (``Pool``, ``Executor``) raise what the standard library raises: the
  original exception, with the remote traceback chained as ``__cause__``.
* ``cluster_cpus``: the default number of processes of a pool.
"""

from __future__ import annotations

import concurrent.futures.process
import multiprocessing.pool
import os
from typing import Any

import actorkit
from actorkit.exceptions import TaskError

# Where a utility finds a running cluster when it is given no address (as Ray's Pool reads RAY_ADDRESS).
ADDRESS_VARIABLES = ("ACTORKIT_ADDRESS", "RAY_ADDRESS")


def ensure_initialized(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect this process to a node, starting a local one if needed.

    With no ``address``, ``ACTORKIT_ADDRESS`` or else ``RAY_ADDRESS`` names the
    cluster to join (as in Ray's Pool); with neither set, a local node starts
    with ``num_cpus`` CPUs (default: all of the machine's).
    """
    if actorkit.is_initialized():
        return
    if address is None:
        address = next((os.environ[name] for name in ADDRESS_VARIABLES if os.environ.get(name)), None)
    if address is not None:
        actorkit.init(address=address)
    else:
        actorkit.init(num_cpus=num_cpus)


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
