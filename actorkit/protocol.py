"""The data plane's wire protocol: framed, pickled message batches on sockets.

Every connection starts with multiprocessing's HMAC challenge (the cluster's
authkey), done by ``multiprocessing.connection``; nothing is unpickled before
it succeeds.  After that the socket carries frames: a 4-byte big-endian length
and a pickled *list* of messages, so that many messages in flight travel in
one frame.  A message is a tuple whose first item is one of the kinds below, with a
fixed number of fields: readers unpack it (``_, task_id, payloads, retryable,
blocked, exiting = message``), so a message of the wrong shape fails where
it is read, and costs its connection (never the node).  The kinds that have
fields a sender often leaves at their defaults are made by the constructors
below the table.

Clients (drivers, workers) use ``Channel``: blocking sends from any thread,
blocking receives from one thread.  The node uses ``NodeConn``: non-blocking,
so that one slow client can never stall the node's event loop.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import threading
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

_HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 28  # refused before it is read: large values never travel inline anyway
_READ_CHUNK = 1 << 16  # below malloc's mmap threshold: reused, not mapped per read  # larger values never travel inline: they go to shared memory

# Client -> node
HELLO = 1  # (HELLO, role, pid, worker_id, job_id, namespace, id_prefix) id_prefix: of its task ids
SUBMIT = 2  # (SUBMIT, TaskSpec, lost, parent_task_id) lost: it went to a leased worker, which died; parent:
#   the task that submitted it, for a task on a lent worker (else None)
PUT = 3  # (PUT, object_id, payload)
SUBSCRIBE = 4  # (SUBSCRIBE, [object_id, ...])
ADDREF = 5  # (ADDREF, [object_id, ...])
DECREF = 6  # (DECREF, [object_id, ...])
DONE = 7  # (DONE, task_id, [payload, ...], retryable, blocked, exiting) retryable: an application error to retry;
#   on a direct link, blocked: it waited in get(); exiting: the actor's process ends (sys.exit)
BLOCKED = 8  # (BLOCKED,) the worker's task waits in get()/wait(): lend its CPUs
UNBLOCKED = 9  # (UNBLOCKED,)
LOG = 10  # (LOG, task_name, pid, is_stderr, [line, ...])
CREATE_ACTOR = 11  # (CREATE_ACTOR, ActorSpec) an unnamed actor: no reply needed
ACTOR_CALL = 12  # (ACTOR_CALL, TaskSpec, lost, None) a method call; lost: the address it went to directly, which
#   died (False if none); the shape of SUBMIT, so that one handler reads both
ACTOR_READY = 13  # (ACTOR_READY, actor_id, direct_address) __init__ returned
ACTOR_FAILED = 14  # (ACTOR_FAILED, actor_id, payload) __init__ raised: the ActorDiedError to give callers
ACTOR_EXIT = 15  # (ACTOR_EXIT, actor_id, why) why None: exit_actor() was called; else sys.exit() in a method
#   (the process ends like a crash: it may restart)
REQUEST = 16  # (REQUEST, request_id, operation, args) answered by REPLY
PROMISE = 36  # (PROMISE, [object_id, ...]) results of direct calls, not back yet, that left this process
OWNED_RESULT = 37  # (OWNED_RESULT, task_id, [payload, ...]) a direct call's result, to its caller via the node
LEASE_RETURN = 40  # (LEASE_RETURN, worker_id, lease_id) the caller is done with the worker the node lent it
LEASE_REQUEST = 41  # (LEASE_REQUEST, shape) tasks of that shape wait here for a lent worker: lend one more
METRICS = 42  # (METRICS, [(name, kind, description, boundaries, tags, value), ...]) records since the last
#   METRICS, combined per tag set (metrics_batch.py): a counter's increase, a gauge's value, a histogram's
#   ([count per bucket], sum, count)
STREAM_ITEM = 43  # (STREAM_ITEM, task_id, index, payload) item ``index`` a streaming generator task yielded
STREAM_END = 44  # (STREAM_END, task_id, count) the generator is exhausted (or raised, its error the last item)

# Member node -> head (a member connects like a client, with role "node")
JOIN = 17  # (JOIN, {node_id, session, hostname, resources, transfer_address, pid})
HEARTBEAT = 18  # (HEARTBEAT,) every HEARTBEAT_S, both ways: silence means death
WORKER_EXIT = 19  # (WORKER_EXIT, worker_id, exitcode) a worker the head asked for has exited
COPIED = 30  # (COPIED, [object_id, ...]) the member now holds copies of these objects

# Node -> client
READY = 20  # (READY, object_id, payload)
EXECUTE = 21  # (EXECUTE, TaskSpec, function_bytes | None, {object_id: payload}, gpu_ids)
PRINT = 22  # (PRINT, task_name, pid, is_stderr, [line, ...]) forwarded worker output
EXIT = 23  # (EXIT,) the worker should exit
BECOME_ACTOR = 24  # (BECOME_ACTOR, ActorSpec, class_bytes | None, {object_id: payload}, gpu_ids)
REPLY = 25  # (REPLY, request_id, ok, value) value: the result, or the exception when not ok
CANCEL = 26  # (CANCEL, task_id, force) interrupt (force: end the process) if it runs, else skip it
REVOKED = 27  # (REVOKED, [task_id, ...]) the answer to BLOCKED: queued tasks taken back, do not run them
ACTOR_ROUTE = 28  # (ACTOR_ROUTE, actor_id, direct_address, session) where to call the actor directly
LEASE = 38  # (LEASE, lease_id, worker_id, direct_address, session, shape) an idle worker lent for such tasks
LEASE_REVOKE = 39  # (LEASE_REVOKE, lease_id) others need it: return it once its task is answered

# Caller <-> worker on a direct connection (see direct.py): ACTOR_CALL (to an
# actor), SUBMIT (to a leased worker) and CANCEL from the caller; from the
# worker, DONE (as above, plus whether the task waited in get()),
# (OWNED_RESULT, task_id) its result went to the node, and (REVOKED, [task_id,
# ...]) tasks sent behind one that waits in get(), handed back unstarted.

# Head -> member node
SPAWN = 31  # (SPAWN, worker_id) start a worker that connects to the head
KILL_WORKER = 32  # (KILL_WORKER, worker_id)
FREE = 33  # (FREE, [segment, ...]) objects made on the member were freed
FREE_COPY = 34  # (FREE_COPY, [object_id, ...]) drop the member's copies of these objects
NODES = 35  # (NODES, {session: transfer_address}) every live node, after each change


def submit(kind: int, spec_wire: tuple[Any, ...], lost: Any = False, parent: bytes | None = None) -> tuple[Any, ...]:
    """SUBMIT or ACTOR_CALL of a spec (``task_spec.spec_to_wire``)."""
    return (kind, spec_wire, lost, parent)


def done(
    task_id: bytes, wires: list[tuple[Any, ...]], retryable: bool, blocked: bool = False, exiting: bool = False
) -> tuple[Any, ...]:
    return (DONE, task_id, wires, retryable, blocked, exiting)


def cancel(task_id: bytes, force: bool = False) -> tuple[Any, ...]:
    return (CANCEL, task_id, force)


def shut(sock: socket.socket) -> None:
    """Shut ``sock`` down both ways: a thread blocked reading it wakes up (close() alone may not wake it)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected, or closed already


class ChannelClosed(ConnectionError):
    """The peer closed the connection."""


# How long connecting and the HMAC handshake may take before connect() gives
# up naming the address (a port that accepts and never speaks, a stopped node).
# Longer than the node's own handshake deadline (gate.HANDSHAKE_TIMEOUT_S), so
# that a client turned away during a flood of idle connections gets in once
# the node has cut them off.
CONNECT_TIMEOUT_S = float(os.environ.get("ACTORKIT_CONNECT_TIMEOUT_S", "") or 15.0)
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 0.5


def describe(address: Any) -> str:
    """``address`` as people write it: HOST:PORT, or the unix socket's path."""
    if isinstance(address, (tuple, list)):
        return f"{address[0]}:{address[1]}"
    return str(address)


def connect(address: Any, authkey: bytes, timeout: float | None = None) -> socket.socket:
    """Open an authenticated connection to a node's data listener.

    Connecting and the handshake must finish within ``timeout`` (default
    ``CONNECT_TIMEOUT_S``): else TimeoutError naming the address.  A listener
    that closes the connection before the handshake ends (it is full of
    pending handshakes) is tried again, with growing pauses, until then; its
    last refusal is a ConnectionError naming the address.  A wrong key is an
    ``AuthenticationError`` at once.
    """
    import time

    budget = CONNECT_TIMEOUT_S if timeout is None else timeout
    deadline = time.monotonic() + budget
    pause = _RETRY_FIRST_S
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(
                f"could not connect to the actorkit node at {describe(address)} within {budget:g} s: "
                f"it accepted no connection or did not answer the handshake (is it stopped or overloaded? "
                f"is something else listening there?); ACTORKIT_CONNECT_TIMEOUT_S sets this limit"
            )
        try:
            return _connect_once(address, authkey, left)
        except TimeoutError:
            continue  # reported above, with the address
        except (EOFError, ConnectionResetError, BrokenPipeError) as e:
            # Turned away before the handshake ended: most likely too many
            # pending handshakes there right now. Try again until the deadline.
            if deadline - time.monotonic() <= pause:
                raise ConnectionError(
                    f"the actorkit node at {describe(address)} kept closing the connection during the "
                    f"handshake for {budget:g} s ({type(e).__name__}): it may have too many pending "
                    f"connections, or it is not an actorkit node; try again later"
                ) from None
            time.sleep(pause)  # connecting only, never on a task's path
            pause = min(pause * 2, _RETRY_MAX_S)


def _connect_once(address: Any, authkey: bytes, timeout: float) -> socket.socket:
    from multiprocessing.connection import answer_challenge, deliver_challenge

    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
    else:
        sock = socket.create_connection(tuple(address), timeout=timeout)
    try:
        # multiprocessing's Connection reads and writes the descriptor itself:
        # a blocking one whose reads and writes time out (EAGAIN) in the kernel.
        sock.settimeout(None)
        seconds = max(timeout, 0.001)
        timeval = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        conn = Connection(os.dup(sock.fileno()))
        try:
            answer_challenge(conn, authkey)
            deliver_challenge(conn, authkey)
        except BlockingIOError:
            raise TimeoutError("handshake timed out") from None
        finally:
            conn.close()
        no_timeout = struct.pack("ll", 0, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, no_timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, no_timeout)
    except BaseException:
        sock.close()
        raise
    return sock


def detach(conn: Connection) -> socket.socket:
    """The socket under an (authenticated) multiprocessing Connection."""
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    conn.close()
    return sock


def encode(messages: list[tuple[Any, ...]]) -> bytes:
    body = pickle.dumps(messages, protocol=5)
    return _HEADER.pack(len(body)) + body


class Channel:
    """A client's blocking end of a connection to its node."""

    def __init__(self, sock: socket.socket, timeout: float | None = None) -> None:
        # With a timeout, a peer silent that long makes recv() raise TimeoutError.
        sock.settimeout(timeout)
        self._sock = sock
        self._send_lock = threading.Lock()
        # Buffered: one recv() syscall usually brings several frames.
        self._reader = sock.makefile("rb", buffering=_READ_CHUNK)

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, messages: list[tuple[Any, ...]]) -> None:
        frame = encode(messages)
        with self._send_lock:
            self._sock.sendall(frame)

    def recv(self) -> list[tuple[Any, ...]]:
        """Block for the next frame (called by one thread only)."""
        header = self._reader.read(_HEADER.size)
        if len(header) < _HEADER.size:
            raise ChannelClosed("the node closed the connection")
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME:
            raise ChannelClosed(f"frame of {size} bytes exceeds the limit of {MAX_FRAME}")
        body = self._reader.read(size)
        if len(body) < size:
            raise ChannelClosed("the node closed the connection")
        return pickle.loads(body)

    def close(self) -> None:
        shut(self._sock)
        self._sock.close()
        try:
            self._reader.close()
        except (OSError, ValueError):
            pass  # another thread may be inside read(); shutdown() has woken it


def call(channel: Channel, operation: str, *args: Any) -> Any:
    """One REQUEST on a channel that no other thread reads; its REPLY's value (or error)."""
    channel.send([(REQUEST, 0, operation, args)])
    ((_kind, _request_id, ok, value),) = channel.recv()
    if not ok:
        raise value
    return value


class FrameReader:
    """Whole messages from what a socket has; never waits for more.

    Reads do not block even on a blocking socket (whose sends may block): a
    readiness event can be stale, when another thread read the bytes first.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._inbuf = bytearray()
        self._chunk = bytearray(_READ_CHUNK)

    def feed(self) -> list[tuple[Any, ...]]:
        """Read available bytes; return complete messages. Raises ChannelClosed at EOF."""
        try:
            n = self.sock.recv_into(self._chunk, 0, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as e:
            raise ChannelClosed(str(e)) from e
        if not n:
            raise ChannelClosed("the peer closed the connection")
        buf = self._inbuf
        with memoryview(self._chunk) as chunk:
            buf += chunk[:n]
        messages: list[tuple[Any, ...]] = []
        pos = 0
        while len(buf) - pos >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buf, pos)
            if size > MAX_FRAME:
                raise ChannelClosed(f"frame of {size} bytes exceeds the limit of {MAX_FRAME}")
            end = pos + _HEADER.size + size
            if len(buf) < end:
                break
            # A released view, so the buffer can be trimmed below.
            with memoryview(buf) as view, view[pos + _HEADER.size : end] as body:
                messages.extend(pickle.loads(body))
            pos = end
        if pos:
            del buf[:pos]
        return messages


class NodeConn:
    """The node's non-blocking end of a connection to one client.

    ``feed()`` reads what the socket has and returns whole messages;
    ``queue()`` collects outgoing messages, which ``flush()`` writes as one
    frame, keeping any unwritten rest until the socket is writable again.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._frames = FrameReader(sock)
        self._outbox: list[tuple[Any, ...]] = []
        self._unsent: deque[memoryview] = deque()

    def fileno(self) -> int:
        return self.sock.fileno()

    def feed(self) -> list[tuple[Any, ...]]:
        """Read available bytes; return complete messages. Raises ChannelClosed at EOF."""
        return self._frames.feed()

    def queue(self, message: tuple[Any, ...]) -> None:
        self._outbox.append(message)

    @property
    def dirty(self) -> bool:
        return bool(self._outbox)

    def flush(self) -> bool:
        """Write queued messages; True when everything is written."""
        if self._outbox:
            self._unsent.append(memoryview(encode(self._outbox)))
            self._outbox = []
        while self._unsent:
            view = self._unsent[0]
            try:
                n = self.sock.send(view)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                # The reader is gone; its EOF reaches the event loop separately.
                self._unsent.clear()
                return True
            if n == view.nbytes:
                self._unsent.popleft()
            else:
                self._unsent[0] = view[n:]
                return False
        return True

    def close(self) -> None:
        self.sock.close()
