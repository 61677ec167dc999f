"""Starting and reaping worker processes: what a node (head or member) needs of them.

Only the spawned child imports ``actorkit.worker``: the node process never
loads the worker's machinery (its client, mailbox, event loop).
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from .node_config import NodeConfig

_spawn = multiprocessing.get_context("spawn")


def spawn_worker(config: NodeConfig, worker_id: int, head_address: Any = None, transfer_address: Any = None) -> Any:
    """Start a worker process (spawn context) for this node.

    A member node's workers connect to the head (``head_address``) and fetch
    objects through their own node's ``transfer_address``.
    """
    address = head_address or config.data_address
    process = _spawn.Process(
        target=_run_worker,
        args=(
            address, config.authkey, config.session, worker_id, config.node_id,
            config.object_store_memory, transfer_address, config.session_dir,
        ),
        name=f"actorkit-worker-{worker_id}",
    )
    process.start()
    return process


def release_pipes(process: Any) -> None:
    """Close the two pipes multiprocessing keeps to a worker that has been reaped.

    They are its sentinel and the pipe its start-up data went through.
    multiprocessing closes them only in ``Process.close()``, after which
    ``pid`` and ``exitcode`` can no longer be read (the node still reports
    them), or when the object is collected, which reference cycles delay
    for many collections: a burst of worker deaths left hundreds open.
    Its finalizer closes them once, so this is safe to call again, and
    ``join``, ``is_alive`` and ``kill`` keep working on a reaped process.
    """
    popen = getattr(process, "_popen", None)
    finalizer = getattr(popen, "finalizer", None)
    if finalizer is not None and popen.returncode is not None:
        finalizer()


def _run_worker(*args: Any) -> None:
    """The worker process's entry point (runs in the spawned child)."""
    from .worker import WorkerArgs, main  # lazy: see the module docstring and tests/test_layers.py

    main(WorkerArgs(*args))
