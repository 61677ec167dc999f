"""The node server process: its Manager and its entry point (workers start in ``worker_process``).

Start-up order matters for cold start: the process first opens its data
listener and spawns the prestarted workers; the node itself is built on a
thread while the Manager server starts, so the driver, the workers and the
node all boot at once.  A client that connects early waits in the
authentication handshake until the node's accept thread runs.
"""

from __future__ import annotations

import threading
from multiprocessing.managers import BaseManager
from typing import Any

from . import shm
from .gate import Gate
from .node_config import NodeConfig
from .procutil import set_process_name
from .worker_process import (  # noqa: F401  (node.py still imports these from here)
    release_pipes,
    spawn_worker,
)


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
            # lazy: a driver imports this module for NodeManager; the node's code loads in the node only
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
