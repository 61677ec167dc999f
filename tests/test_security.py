"""The node lets no one in without the key, and cannot be exhausted by those it keeps out."""

from __future__ import annotations

import pickle
import select
import socket
import struct
import time

import pytest

import actorkit as ray
from actorkit import protocol, runtime
from actorkit.gate import HANDSHAKE_TIMEOUT_S, MAX_PENDING_HANDSHAKES


@ray.remote
def add(a, b):
    return a + b


def data_address() -> str:
    return runtime._driver.node_info["address"]  # type: ignore[union-attr]


def test_idle_unauthenticated_connections_are_bounded_and_cut_off(shutdown_only):
    ray.init(num_cpus=1)
    flood = []
    try:
        for _ in range(MAX_PENDING_HANDSHAKES * 3):  # bounded, local, stops by itself
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(data_address())
            flood.append(sock)
        # The node keeps serving while they hang in the handshake.
        assert ray.get(add.remote(1, 2), timeout=10) == 3
        # Every one of them is closed by the node: the surplus at once, the rest
        # when the handshake deadline passes.
        started = time.monotonic()
        open_ones = list(flood)
        while open_ones:
            remaining = HANDSHAKE_TIMEOUT_S + 5 - (time.monotonic() - started)
            assert remaining > 0, f"{len(open_ones)} idle connections were never cut off"
            readable, _, _ = select.select(open_ones, [], [], remaining)
            for sock in readable:
                sock.setblocking(False)
                try:
                    while sock.recv(4096):
                        pass  # the challenge itself; EOF follows
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                open_ones.remove(sock)
        stats = runtime.current_client().request("stats")["gate"]
        assert stats["dropped"] >= MAX_PENDING_HANDSHAKES
        assert stats["refused"] >= 1
    finally:
        for sock in flood:
            sock.close()
    assert ray.get(add.remote(2, 3)) == 5


def test_wrong_key_is_refused_at_once(shutdown_only):
    ray.init(num_cpus=1)
    from multiprocessing import AuthenticationError

    started = time.monotonic()
    with pytest.raises(AuthenticationError):
        protocol.connect(data_address(), b"not the key" * 3)
    assert time.monotonic() - started < 2
    assert ray.get(add.remote(1, 1)) == 2


def test_oversized_frame_is_refused_before_it_is_read(shutdown_only):
    ray.init(num_cpus=1)
    key = runtime._driver.manager._authkey  # type: ignore[union-attr]
    sock = protocol.connect(data_address(), bytes(key))
    sock.sendall(struct.pack("!I", protocol.MAX_FRAME + 1))  # and never the body
    sock.settimeout(10)
    assert sock.recv(1) == b""  # the node hung up
    sock.close()
    assert ray.get(add.remote(4, 4)) == 8


def _frame(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


_BAD_FRAMES = {
    "unknown message kind": _frame(pickle.dumps([(999, "what is this")])),
    "frame not a list": _frame(pickle.dumps(42)),
    "frame of strings": _frame(pickle.dumps("abc")),
    "empty message": _frame(pickle.dumps([()])),
    "message of the wrong shape": _frame(pickle.dumps([(protocol.SUBSCRIBE,)])),
    "wrong argument type": _frame(pickle.dumps([(protocol.DECREF, 5)])),
    "truncated pickle": _frame(pickle.dumps([(protocol.SUBSCRIBE, [b"x" * 20])])[:-6]),
}


def _hang_up_on(frame: bytes) -> None:
    """Send one frame with the session key; the node must close that connection."""
    key = runtime._driver.manager._authkey  # type: ignore[union-attr]
    sock = protocol.connect(data_address(), bytes(key))
    try:
        sock.sendall(frame)
        sock.settimeout(10)
        assert sock.recv(1) == b""  # the node hung up on this client only
    finally:
        sock.close()


@pytest.mark.parametrize("kind", list(_BAD_FRAMES))
def test_a_malformed_frame_costs_its_connection_not_the_node(ray_start_shared, kind):
    _hang_up_on(_BAD_FRAMES[kind])
    assert ray.get(add.remote(2, 3)) == 5  # the shared driver goes on
    assert ray.get(ray.put("still here")) == "still here"


def test_the_node_says_why_it_closed_a_connection(shutdown_only, capfd):
    ray.init(num_cpus=1)  # started here, so the node's stderr is captured
    _hang_up_on(_BAD_FRAMES["unknown message kind"])
    _hang_up_on(_BAD_FRAMES["truncated pickle"])
    err = capfd.readouterr().err
    assert "closing the connection" in err and "no known kind" in err and "999" in err
    assert "malformed frame" in err
    assert ray.get(add.remote(1, 1)) == 2
