"""Where connections come in: listening sockets and the authentication handshake.

Every connection must pass multiprocessing's HMAC challenge with the
cluster's key (``multiprocessing.connection.deliver_challenge`` and
``answer_challenge``, the same exchange ``Client(authkey=...)`` performs)
before a single byte from it is unpickled.  ``multiprocessing.connection.Listener``
does that handshake inside ``accept()``, one connection at a time, so one
peer that never answers would stall every other.  Here each handshake runs
on a thread of its own, must finish within ``HANDSHAKE_TIMEOUT_S`` (a peer
that does not is cut off, so a flood of idle connections drains), and at
most ``MAX_PENDING_HANDSHAKES`` run at once *per listening socket*; more
unauthenticated connections to that socket are closed at once.  That bounds
the threads and descriptors a flood of idle connections can take, and a
flood on the TCP port never delays the node's own workers, which connect on
its unix socket (a client that is turned away retries until its own
deadline: see ``protocol.connect``).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from typing import Any, NamedTuple

from .protocol import shut

# Overridable for tests through the environment of the node's process.
HANDSHAKE_TIMEOUT_S = float(os.environ.get("ACTORKIT_HANDSHAKE_TIMEOUT_S", "") or 5.0)
MAX_PENDING_HANDSHAKES = 16  # per listening socket


class GateStatistics(NamedTuple):
    listening: int  # sockets it listens on
    accepted: int  # connections that passed the handshake
    refused: int  # connections that failed it (a wrong key)
    dropped: int  # connections that went before finishing it


class Gate:
    """Listens on unix and TCP addresses; hands authenticated sockets to ``on_connection``."""

    def __init__(self, addresses: list[Any], authkey: bytes) -> None:
        self._authkey = authkey
        self._closed = False
        self._unix_paths: list[str] = []
        self._sockets: list[socket.socket] = [self._listen(address) for address in addresses]
        self.stats = {"accepted": 0, "refused": 0, "dropped": 0}

    def __repr__(self) -> str:
        s = self.statistics()
        state = "closed" if self._closed else f"on {self.addresses}"
        return f"<Gate {state} accepted={s.accepted} refused={s.refused} dropped={s.dropped}>"

    def statistics(self) -> GateStatistics:
        stats = self.stats
        return GateStatistics(len(self._sockets), stats["accepted"], stats["refused"], stats["dropped"])

    @property
    def addresses(self) -> list[Any]:
        """Where it listens (a TCP port asked as 0 shows the one it got)."""
        return [sock.getsockname()[:2] if sock.family != socket.AF_UNIX else sock.getsockname() for sock in self._sockets]

    def _listen(self, address: Any) -> socket.socket:
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(address)
            os.chmod(address, 0o600)  # only this user may even try the handshake
            self._unix_paths.append(address)
        else:
            sock = socket.create_server(tuple(address), backlog=128)
        sock.listen(128)
        return sock

    def start(self, on_connection: Callable[[socket.socket], None]) -> None:
        for sock in self._sockets:
            threading.Thread(
                target=self._accept_loop, args=(sock, on_connection), name="actorkit-accept", daemon=True
            ).start()

    def _accept_loop(self, listening: socket.socket, on_connection: Callable[[socket.socket], None]) -> None:
        # Each listener its own cap: strangers on the TCP port cannot take the
        # places of the node's workers on its unix socket.
        pending = threading.BoundedSemaphore(MAX_PENDING_HANDSHAKES)
        while not self._closed:
            try:
                sock, _ = listening.accept()
            except OSError:
                if self._closed:
                    return
                continue
            if not pending.acquire(blocking=False):
                self.stats["dropped"] += 1
                sock.close()  # too many unauthenticated connections already
                continue
            threading.Thread(
                target=self._handshake, args=(sock, on_connection, pending), name="actorkit-handshake", daemon=True
            ).start()

    def _handshake(
        self, sock: socket.socket, on_connection: Callable[[socket.socket], None], pending: threading.BoundedSemaphore
    ) -> None:
        sock.setblocking(True)
        # A peer that does not finish in time is cut off: its reads fail at once.
        deadline = threading.Timer(HANDSHAKE_TIMEOUT_S, shut, (sock,))
        deadline.start()
        conn = Connection(os.dup(sock.fileno()))
        try:
            deliver_challenge(conn, self._authkey)
            answer_challenge(conn, self._authkey)
        except Exception:
            self.stats["refused"] += 1
            sock.close()
            return
        finally:
            deadline.cancel()
            conn.close()
            pending.release()
        self.stats["accepted"] += 1
        on_connection(sock)

    def close(self) -> None:
        self._closed = True
        for sock in self._sockets:
            shut(sock)
            sock.close()
        for path in self._unix_paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
