"""The node server process: its Manager, its entry point, and how it starts workers.

Start-up order matters for cold start: the process first opens its data
listener and spawns the prestarted workers; the node itself is built on a
thread while the Manager server starts, so the driver, the workers and the
node all boot at once.  A client that connects early waits in the
authentication handshake until the node's accept thread runs.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.managers import BaseManager
from typing import Any, NamedTuple

from .procutil import set_process_name

_spawn = multiprocessing.get_context("spawn")


class NodeConfig(NamedTuple):
    node_id: str
    session: str
    session_dir: str
    authkey: bytes
    resources: dict[str, float]
    object_store_memory: int
    owner_pid: int  # the driver whose exit stops the node; 0 for a node started by `actorkit start`
    prestart_workers: int = 0
    tcp_address: tuple[str, int] | None = None  # also serve drivers over TCP here

    @property
    def data_address(self) -> str:
        return os.path.join(self.session_dir, "data.sock")

    @property
    def manager_address(self) -> str:
        return os.path.join(self.session_dir, "node.sock")


class NodeManager(BaseManager):
    """The Manager whose server process is the node."""


_control: Any = None
_control_ready = threading.Event()
listening: list[Any] = []  # where this process's node listens for connections (set by serve())


def _get_control() -> Any:
    if not _control_ready.wait(60) or _control is None:
        raise RuntimeError("the node failed to start; see its error output")
    return _control


NodeManager.register("node", callable=_get_control)


def serve(config: NodeConfig) -> None:
    """Manager initializer: runs in the new server process before it serves."""
    global _control
    set_process_name("actorkit:node")
    from . import shm
    from .gate import Gate

    shm.hold_session(config.session)  # before any segment: the session is alive while this process is

    addresses: list[Any] = [config.data_address]
    if config.tcp_address is not None:
        addresses.append(config.tcp_address)
    gate = Gate(addresses, config.authkey)
    listening[:] = gate.addresses
    workers = [(i, spawn_worker(config, i)) for i in range(1, config.prestart_workers + 1)]

    def build() -> None:
        global _control
        try:
            from .node import Node, NodeControl

            node = Node(config, gate, workers)
            _control = NodeControl(node)
            node.start()
        finally:
            _control_ready.set()

    threading.Thread(target=build, name="actorkit-node-start", daemon=True).start()


def wait_until_stopped() -> None:
    """Block until this process's node has stopped (for a node run in the foreground)."""
    _control_ready.wait()
    if _control is not None:
        _control.wait_stopped()


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
    from .worker import WorkerArgs, main

    main(WorkerArgs(*args))
