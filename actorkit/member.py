"""A member node: ``actorkit start --address HEAD``, one per machine that joins a cluster.

The head schedules everything; a member lends it this machine.  It:

- starts and reaps the workers the head asks for (they connect to the head
  themselves, and report their exits through the member);
- serves the objects made on this machine to the rest of the cluster, and
  fetches theirs for the processes here (``object_transfer.TransferServer``);
- frees the segments and copies the head says are no longer referenced;
- heartbeats with the head, and stops everything if the head goes silent.

Its data flow, beside the head's::

    head ◀── HELLO/JOIN, HEARTBEAT, WORKER_EXIT, COPIED ── member ── spawns ──▶ workers
         ── SPAWN, KILL_WORKER, FREE, FREE_COPY, NODES ──▶                        │
         ◀───────────── tasks, results (each worker's own connection) ────────────┘
"""

from __future__ import annotations

import multiprocessing.connection
import os
import shutil
import socket
import threading
from typing import Any

from . import protocol as P
from . import session, shm
from .members import DEAD_AFTER_S, HEARTBEAT_S
from .object_transfer import TransferServer
from .procutil import set_process_name
from .worker_process import spawn_worker

_WILDCARDS = ("", "0.0.0.0", "::")
_HEAD_SILENCE_S = DEAD_AFTER_S + HEARTBEAT_S


class MemberNode:
    """This machine's part of a cluster whose head is at ``head_address``."""

    def __init__(
        self,
        head_address: tuple[str, int],
        authkey: bytes,
        resources: dict[str, float],
        host: str = "127.0.0.1",
        port: int = 0,
        object_store_memory: int = 1 << 30,
    ) -> None:
        self.head_address = head_address
        self._sock = P.connect(head_address, authkey)  # first: a wrong key leaves nothing behind
        self._channel = P.Channel(self._sock, timeout=_HEAD_SILENCE_S)  # a silent head is a dead one
        self.config = session.new_node_config(resources, object_store_memory, owner_pid=0)._replace(authkey=authkey)
        shm.hold_session(self.config.session)  # before any segment: alive while this process is
        session.write_pids(self.config.session_dir, os.getpid(), os.getpid())
        self.transfer = TransferServer(
            self.config.session,
            authkey,
            [(host, port)],
            {"node_id": self.config.node_id, "head": head_address},
            lambda object_id: self._send([(P.COPIED, [object_id])]),
        )
        advertised_host, advertised_port = self.transfer.address
        if advertised_host in _WILDCARDS:
            # Listening everywhere: tell the others the address this machine reaches the head from.
            advertised_host = self._sock.getsockname()[0]
        self.transfer_address = (advertised_host, advertised_port)
        self._workers: dict[int, Any] = {}
        self._workers_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = threading.Event()
        self.why_stopped = ""

    def __repr__(self) -> str:
        return f"<MemberNode {self.config.node_id[:8]} head={self.head_address} workers={len(self._workers)}>"

    @property
    def node_id(self) -> str:
        return self.config.node_id

    def _send(self, messages: list[tuple[Any, ...]]) -> None:
        try:
            self._channel.send(messages)
        except OSError:
            self._stopping.set()

    def run(self, on_ready: Any = None) -> None:
        """Join the head and serve it until it says stop, goes silent, or ``stop()``.

        ``on_ready(self)`` is called once the head has counted this node in.
        """
        set_process_name("actorkit:node")
        self.transfer.start()
        self._send(
            [
                (P.HELLO, "node", os.getpid(), 0, b"", None, b""),
                (
                    P.JOIN,
                    {
                        "node_id": self.config.node_id,
                        "session": self.config.session,
                        "hostname": socket.gethostname(),
                        "address": self.transfer_address[0],
                        "resources": self.config.resources,
                        "transfer_address": self.transfer_address,
                        "pid": os.getpid(),
                    },
                ),
            ]
        )
        threading.Thread(target=self._heartbeat, name="actorkit-heartbeat", daemon=True).start()
        threading.Thread(target=self._reap, name="actorkit-reaper", daemon=True).start()
        try:
            self._serve_head(on_ready)
        finally:
            self._shut_down()

    def stop(self) -> None:
        self._stopping.set()
        P.shut(self._sock)  # wakes the loop reading from the head

    def _serve_head(self, on_joined: Any) -> None:
        while not self._stopping.is_set():
            try:
                messages = self._channel.recv()
            except P.ChannelClosed:
                self.why_stopped = "the head closed the connection"
                return
            except TimeoutError:
                self.why_stopped = f"the head sent nothing for {_HEAD_SILENCE_S:g} s"
                return
            except OSError as e:
                self.why_stopped = f"the connection to the head failed: {e}"
                return
            for message in messages:
                kind = message[0]
                if kind == P.SPAWN:
                    _, worker_id = message
                    self._spawn(worker_id)
                elif kind == P.KILL_WORKER:
                    _, worker_id = message
                    with self._workers_lock:
                        process = self._workers.get(worker_id)
                    if process is not None:
                        process.kill()
                elif kind == P.FREE:
                    _, segments = message
                    self.transfer.free(segments)
                elif kind == P.FREE_COPY:
                    _, object_ids = message
                    self.transfer.drop(object_ids)
                elif kind == P.NODES:
                    _, table = message
                    # A node listening on every interface is reached the way we reach the head.
                    self.transfer.peers = {
                        session: (self.head_address[0], address[1]) if address[0] in _WILDCARDS else tuple(address)
                        for session, address in table.items()
                    }
                    if on_joined is not None:  # the head's first table: it counts this node in
                        on_joined(self)
                        on_joined = None
                elif kind == P.EXIT:
                    self.why_stopped = "the head stopped"
                    return

    def _spawn(self, worker_id: int) -> None:
        process = spawn_worker(self.config, worker_id, self.head_address, self.transfer_address)
        with self._workers_lock:
            self._workers[worker_id] = process
        os.write(self._wake_w, b"\0")  # the reaper waits on the new sentinel too

    def _reap(self) -> None:
        """Report each worker's exit to the head (the head cannot see our processes)."""
        while not self._stopping.is_set():
            with self._workers_lock:
                by_sentinel = {p.sentinel: (worker_id, p) for worker_id, p in self._workers.items()}
            ready = multiprocessing.connection.wait([self._wake_r, *by_sentinel])
            for fd in ready:
                if fd == self._wake_r:
                    os.read(self._wake_r, 4096)
                    continue
                worker_id, process = by_sentinel[fd]  # type: ignore[index]
                process.join(1.0)
                with self._workers_lock:
                    self._workers.pop(worker_id, None)
                self._send([(P.WORKER_EXIT, worker_id, process.exitcode)])

    def _heartbeat(self) -> None:
        while not self._stopping.wait(HEARTBEAT_S):
            self._send([(P.HEARTBEAT,)])

    def _shut_down(self) -> None:
        self._stopping.set()
        os.write(self._wake_w, b"\0")
        with self._workers_lock:
            workers = list(self._workers.values())
        for process in workers:
            process.terminate()
        for process in workers:
            process.join(2.0)
            if process.exitcode is None:
                process.kill()
                process.join(1.0)
        self._channel.close()
        self.transfer.close()
        shm.unlink_session(self.config.session)
        shutil.rmtree(self.config.session_dir, ignore_errors=True)
