"""This process's current client, task executor and job: the slot everything reads.

A process has at most one ``Client`` at a time: a driver's (set by
``runtime.init()``) or a worker's (set when the worker starts, with its
``TaskExecutor``).  ObjectRefs being unpickled, ``remote()``, ``get()`` find
it here.  This module imports nothing of actorkit, so any layer may read it;
``runtime`` writes the driver's slot and registers ``auto_init``, what a
driver that never called ``init()`` calls on first use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client
    from .worker import TaskExecutor

client: Client | None = None
executor: TaskExecutor | None = None
# Set by runtime: starts a driver (init()) when a process that never called it needs a client.
auto_init: Callable[[], Any] | None = None

# A process forked from a driver or worker shares its sockets: using them
# would interleave bytes with the parent's. The child gets a clear error instead.
forked_from: int | None = None


def _after_fork_in_child() -> None:
    global forked_from
    if client is not None and forked_from is None:
        forked_from = client._pid


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def forked_error(parent_pid: int) -> RuntimeError:
    return RuntimeError(
        f"actorkit cannot be used in a process forked from pid {parent_pid}, which is connected "
        f"to an actorkit node: the forked process shares that connection and would corrupt it. "
        f"Start processes with the spawn method (multiprocessing.get_context('spawn'), or "
        f"ProcessPoolExecutor(mp_context=multiprocessing.get_context('spawn'))), or use actorkit "
        f"tasks and actors instead of forking."
    )


def client_if_connected() -> Client | None:
    return client if forked_from is None else None


def current_client() -> Client:
    """This process's client; a driver that never called ``init()`` calls it now."""
    if forked_from is not None:
        raise forked_error(forked_from)
    found = client
    if found is not None and not found.closed:
        return found
    if executor is not None:
        raise RuntimeError("this worker lost its node")
    if auto_init is None:
        raise RuntimeError("actorkit is not initialized: call actorkit.init() first")
    auto_init()
    assert client is not None
    return client


def client_for(ref: Any, what: str) -> Client:
    """The client to use for ``ref`` (an ObjectRef); an error if its session has ended."""
    owner = getattr(ref, "_client", None)
    if owner is not None and owner.closed:
        raise RuntimeError(
            f"{what} belongs to an actorkit session that was shut down; refs and handles do not "
            f"carry over to a new init(). Create it again in the current session."
        )
    return current_client()


def current_job_id() -> bytes:
    found = current_client()
    if executor is not None and executor.current is not None:
        return executor.current.job_id
    return found.job_id


def current_executor() -> TaskExecutor | None:
    """The task executor of this worker process (None in a driver)."""
    return executor


def captured_placement() -> Any:
    """The placement group strategy a new task or actor that names none inherits: that of
    the group the current task or actor runs in, if it captures its children (else None)."""
    placement = executor.placement if executor is not None else None
    if placement is None or not placement[3]:
        return None
    return ("pg", placement[1], -1, True)


def enter_worker(worker_client: Client, worker_executor: TaskExecutor) -> None:
    """A worker process's start: its client and executor fill the slot for good."""
    global client, executor
    client, executor = worker_client, worker_executor
