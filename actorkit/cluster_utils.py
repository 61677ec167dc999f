"""Several node servers on one machine, for tests (Ray's ``ray.cluster_utils.Cluster``).

::

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    node = cluster.add_node(num_cpus=2, resources={"node_b": 1})
    actorkit.init(address=cluster.address)
    ...
    cluster.remove_node(node, allow_graceful=False)  # a node's death
    cluster.shutdown()

Each node is a process of its own, as on separate machines, except that
they share this machine's shared memory (objects still move between them
through their transfer servers, as they would between machines).  The
cluster's key is put in ``ACTORKIT_AUTHKEY`` while the cluster lives, so
that ``init(address=cluster.address)`` finds it.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
from typing import Any

from . import runtime, shm
from .cluster import run_head, run_member
from .procutil import main_module_hidden

_spawn = multiprocessing.get_context("spawn")
_START_TIMEOUT_S = 60


class ClusterNode:
    """One node process of a ``Cluster``."""

    def __init__(self, process: Any, described: dict[str, Any], is_head: bool) -> None:
        self.process = process
        self.node_id: str = described["node_id"]
        self.address: str = described["address"]
        self.is_head = is_head
        self._session: str = described["session"]
        self._session_dir: str = described["session_dir"]

    def __repr__(self) -> str:
        role = "head" if self.is_head else "node"
        state = "alive" if self.process.is_alive() else f"exited ({self.process.exitcode})"
        return f"<ClusterNode {role} {self.node_id[:8]} pid={self.process.pid} {state}>"


class Cluster:
    """A head node and member nodes, each in its own process, all on loopback."""

    def __init__(self, initialize_head: bool = False, connect: bool = False, head_node_args: dict[str, Any] | None = None) -> None:
        self.head_node: ClusterNode | None = None
        self.worker_nodes: list[ClusterNode] = []
        self.address = ""
        self._key = os.urandom(32)
        self._saved_key = os.environ.get("ACTORKIT_AUTHKEY")
        os.environ["ACTORKIT_AUTHKEY"] = self._key.hex()
        if initialize_head:
            self.add_node(**(head_node_args or {}))
            if connect:
                self.connect()

    def __repr__(self) -> str:
        return f"<Cluster {self.address or 'no head'} nodes={len(self.list_all_nodes())}>"

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def connect(self, **init_args: Any) -> Any:
        return runtime.init(address=self.address, **init_args)

    def add_node(
        self,
        num_cpus: float | None = 1,
        num_gpus: float | None = None,
        resources: dict[str, float] | None = None,
        object_store_memory: int | None = None,
        **unsupported: Any,
    ) -> ClusterNode:
        """Start a node (the head, if there is none yet); return once the head counts it in."""
        if unsupported:
            raise TypeError(f"Cluster.add_node(): unsupported argument(s) {sorted(unsupported)}")
        arguments = (num_cpus, num_gpus, resources, object_store_memory)
        receive, send = _spawn.Pipe(duplex=False)
        is_head = self.head_node is None
        target = _run_head if is_head else _run_member
        process = _spawn.Process(target=target, args=(self.address, self._key, arguments, send), name="actorkit-cluster-node")
        with main_module_hidden():  # a node runs none of the driver's script
            process.start()
        send.close()
        try:
            if not receive.poll(_START_TIMEOUT_S):
                raise TimeoutError(f"the node did not start within {_START_TIMEOUT_S} s")
            described = receive.recv()
        except (EOFError, TimeoutError) as e:
            process.kill()
            process.join()
            raise RuntimeError(f"a cluster node failed to start (exit code {process.exitcode}); see its output") from e
        finally:
            receive.close()
        node = ClusterNode(process, described, is_head)
        if is_head:
            self.head_node = node
            self.address = node.address
        else:
            self.worker_nodes.append(node)
        return node

    def remove_node(self, node: ClusterNode, allow_graceful: bool = True) -> None:
        """Stop a node; with ``allow_graceful=False`` it is killed (SIGKILL), as a crash would."""
        if node.process.is_alive():
            os.kill(node.process.pid, signal.SIGTERM if allow_graceful else signal.SIGKILL)
        node.process.join(10)
        if node.process.exitcode is None:
            node.process.kill()
            node.process.join()
        if not allow_graceful:
            # What a killed node leaves, its machine's next start would remove; here, now.
            shm.unlink_session(node._session)
            shutil.rmtree(node._session_dir, ignore_errors=True)
        if node is self.head_node:
            self.head_node = None
        elif node in self.worker_nodes:
            self.worker_nodes.remove(node)

    def list_all_nodes(self) -> list[ClusterNode]:
        return ([self.head_node] if self.head_node else []) + list(self.worker_nodes)

    def wait_for_nodes(self, timeout: float = 30) -> None:
        """Nodes are counted in by the head before ``add_node`` returns: nothing to wait for."""

    def shutdown(self) -> None:
        """Disconnect this driver if it is connected here, then stop every node."""
        if runtime.is_initialized():
            runtime.shutdown()
        for node in reversed(self.list_all_nodes()):
            self.remove_node(node)
        if self._saved_key is None:
            os.environ.pop("ACTORKIT_AUTHKEY", None)
        else:
            os.environ["ACTORKIT_AUTHKEY"] = self._saved_key


def _quiet() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _run_head(_address: str, key: bytes, arguments: tuple[Any, ...], ready: Any) -> None:
    _quiet()
    os.environ["ACTORKIT_AUTHKEY"] = key.hex()
    num_cpus, num_gpus, resources, store = arguments

    def listening(address: str, config: Any) -> None:
        ready.send(
            {"node_id": config.node_id, "address": address, "session": config.session, "session_dir": config.session_dir}
        )
        ready.close()

    run_head(num_cpus, num_gpus, resources, "127.0.0.1", 0, store, register=False, on_listening=listening)


def _run_member(address: str, key: bytes, arguments: tuple[Any, ...], ready: Any) -> None:
    _quiet()
    os.environ["ACTORKIT_AUTHKEY"] = key.hex()
    num_cpus, num_gpus, resources, store = arguments

    def joined(member: Any) -> None:
        config = member.config
        address = "{}:{}".format(*member.transfer_address)
        ready.send({"node_id": config.node_id, "address": address, "session": config.session, "session_dir": config.session_dir})
        ready.close()

    run_member(address, num_cpus, num_gpus, resources, "127.0.0.1", 0, store, register=False, on_ready=joined)
