"""The node's event loop: one thread, one selector, every connection.

Everything that changes the node's state runs on this thread, so no state
needs a lock.  Other threads (the accept thread, the Manager's, the transfer
server's) hand it closures through ``call_soon``, which writes a byte to a
wakeup pipe the selector watches.  Client sockets are non-blocking: messages
to a client are queued on its connection and written, as one frame per
client, at the end of each loop turn (``flush``), so one slow reader never
stalls the loop.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import selectors
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

from .. import protocol as P
from .records import ClientState

Handler = Callable[[ClientState, tuple[Any, ...]], None]


class LoopStatistics(NamedTuple):
    turns: int
    frames_read: int
    messages_read: int
    clients: int
    connections_dropped: int


class EventLoop:
    """The selector, the wakeup pipe and the client connections of one node."""

    def __init__(self, on_disconnect: Callable[[ClientState], None]) -> None:
        self.handlers: dict[int, Handler] = {}  # message kind -> the one bound method that handles it
        self.stopping = False
        self.stopped = threading.Event()
        self._on_disconnect = on_disconnect
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wakeup)
        self._dirty: set[ClientState] = set()  # clients with messages queued this turn
        self._clients = 0
        self._turns = 0
        self._frames = 0
        self._messages = 0
        self._dropped = 0

    def __repr__(self) -> str:
        state = "stopping" if self.stopping else "running"
        return f"<EventLoop {state} clients={self._clients} turns={self._turns}>"

    def statistics(self) -> LoopStatistics:
        return LoopStatistics(self._turns, self._frames, self._messages, self._clients, self._dropped)

    # ------------------------------------------------------------ threads

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread (from any thread)."""
        self._calls.put(fn)
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is awake anyway

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run ``fn`` on the loop thread and return its result (from another thread)."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)

        self.call_soon(run)
        return fut.result(timeout)

    def run(
        self,
        turn: Callable[[], None],
        timeout: Callable[[], float | None],
        cleanup: Callable[[], None],
    ) -> None:
        """Serve until ``stopping``: each turn handles what is ready, then ``turn()``, then
        writes what was queued; ``cleanup()`` runs at the end, however the loop ends."""
        select = self._selector.select
        try:
            while not self.stopping:
                try:
                    for key, mask in select(timeout()):
                        key.data(mask)
                    turn()
                    self.flush()
                    self._turns += 1
                except Exception:
                    # A bug in one handler must not stop the node for every client:
                    # say where, and go on (the selector reports unhandled events again).
                    print("actorkit node: an event handler failed; the node goes on:", file=sys.stderr)
                    traceback.print_exc()
        except BaseException:
            traceback.print_exc()
            self.stopping = True
        finally:
            cleanup()

    def _on_wakeup(self, _mask: int) -> None:
        try:
            os.read(self._wake_r, 65536)
        except BlockingIOError:
            pass
        while True:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                return
            fn()

    def close(self) -> None:
        """Release the selector and the wakeup pipe (once the loop has stopped)."""
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def watch(self, fd: Any, on_ready: Callable[[], None]) -> None:
        """Call ``on_ready()`` when ``fd`` (a process sentinel, say) becomes readable."""
        self._selector.register(fd, selectors.EVENT_READ, lambda _mask: on_ready())

    def unwatch(self, fd: Any) -> None:
        self._selector.unregister(fd)

    # ------------------------------------------------------------ clients

    def add_client(self, sock: socket.socket) -> None:
        self.serve(ClientState(P.NodeConn(sock)))

    def serve(self, client: ClientState) -> None:
        """Read ``client``'s messages from now on."""
        self._clients += 1
        self._selector.register(client.conn.sock, selectors.EVENT_READ, lambda mask: self.on_client_io(client, mask))

    def on_client_io(self, client: ClientState, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            try:
                messages = client.conn.feed()
            except P.ChannelClosed:
                self._on_disconnect(client)
                return
            except Exception as e:  # a frame that does not unpickle to a list of messages
                self.drop_client(client, f"it sent a malformed frame ({type(e).__name__}: {e})")
                return
            self._frames += 1
            self._messages += len(messages)
            handlers = self.handlers
            try:
                for message in messages:
                    handlers[message[0]](client, message)
            except Exception as e:
                # An unknown kind, a message of the wrong shape, or a handler's own
                # failure: it costs this connection, never the node and its other clients.
                if not isinstance(message, tuple) or not message or message[0] not in handlers:
                    self.drop_client(client, f"it sent a message of no known kind: {message!r:.200}")
                else:
                    self.drop_client(client, f"its message {message!r:.200} failed: {type(e).__name__}: {e}", True)
                return
        if mask & selectors.EVENT_WRITE and not client.closed:
            self._dirty.add(client)

    def drop_client(self, client: ClientState, reason: str, show_traceback: bool = False) -> None:
        """Close a connection whose peer sent what the node cannot handle, saying why."""
        self._dropped += 1
        print(f"actorkit node: closing the connection of {client.role} pid {client.pid}: {reason}", file=sys.stderr)
        if show_traceback:
            traceback.print_exc()  # the message looked right: where it failed may be the node's bug
        sys.stderr.flush()
        self._on_disconnect(client)

    def close_client(self, client: ClientState) -> bool:
        """Stop serving ``client`` and close its socket; False if it was closed already."""
        if client.closed:
            return False
        client.closed = True
        self._clients -= 1
        self._selector.unregister(client.conn.sock)
        client.conn.close()
        return True

    def send(self, client: ClientState, message: tuple[Any, ...]) -> None:
        if not client.closed:
            client.conn.queue(message)
            self._dirty.add(client)

    def flush(self) -> None:
        """Write what was queued this turn; watch for room where a socket is full."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        for client in dirty:
            if client.closed:
                continue
            done = client.conn.flush()
            if done == client.writing:  # wanting to write changed
                client.writing = not done
                events = selectors.EVENT_READ | (0 if done else selectors.EVENT_WRITE)
                self._selector.modify(client.conn.sock, events, self._selector.get_key(client.conn.sock).data)
