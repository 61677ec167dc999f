"""What a node server is started with: ``NodeConfig``.

A leaf (standard library only), so that the node, the code that spawns its
workers, a member node and the driver's start-up all read one definition.
"""

from __future__ import annotations

import os
from typing import NamedTuple


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
