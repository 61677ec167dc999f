"""Nodes and ports that do not answer: floods of idle connections, silent ports, stopped nodes.

Every wait here is bounded: a client gets an error naming the address (or
NodeDiedError) within the configured limits instead of hanging.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import actorkit as ray
from actorkit import runtime
from actorkit.exceptions import NodeDiedError
from actorkit.gate import HANDSHAKE_TIMEOUT_S

from test_cluster import cli, cluster_dir, cluster_env  # noqa: F401  (fixtures)

ROOT = os.path.dirname(os.path.dirname(ray.__file__))


class Driver:
    """A driver script in a subprocess whose output lines a thread collects, so waits are bounded."""

    def __init__(self, env, source):
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-c", textwrap.dedent(source)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def line(self, prefix, timeout):
        """The rest of the first output line that starts with ``prefix``."""
        def found():
            return next((l[len(prefix):] for l in self.lines if l.startswith(prefix)), None)

        with self._changed:
            self._changed.wait_for(lambda: found() is not None or self._ended, timeout)
            rest = found()
        assert rest is not None, f"no {prefix!r} line within {timeout} s: " + "\n".join(self.lines)
        return rest

    def output(self, timeout):
        """Everything it printed, once it has exited."""
        self.process.wait(timeout)
        with self._changed:
            self._changed.wait_for(lambda: self._ended, timeout)
            return "\n".join(self.lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_driver_connects_and_workers_start_during_a_flood_of_idle_tcp_connections(cluster_env):
    port = free_port()
    started = cli(cluster_env, "start", "--head", "--num-cpus", "2", "--port", str(port))
    assert started.returncode == 0, started.stderr
    flood = []
    try:
        for _ in range(40):  # bounded, loopback, cut off by the node itself
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        began = time.monotonic()
        # Three actors: each takes a worker process of its own, which the node
        # must spawn now, while the TCP port is flooded.
        code = f"""
            import os, time
            import actorkit as ray
            began = time.monotonic()
            ray.init(address="127.0.0.1:{port}")
            print("connected", time.monotonic() - began, flush=True)

            @ray.remote(num_cpus=0)
            class Where:
                def pid(self):
                    return os.getpid()

            actors = [Where.remote() for _ in range(3)]
            pids = ray.get([a.pid.remote() for a in actors])
            assert len(set(pids)) == 3 and os.getpid() not in pids, pids
            print("sum", ray.get(ray.remote(sum).remote([1, 2, 3])), flush=True)
        """
        driver = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)], env=cluster_env, capture_output=True, text=True, timeout=60
        )
        took = time.monotonic() - began
        assert driver.returncode == 0, driver.stderr
        assert "sum 6" in driver.stdout
        connected = float(driver.stdout.split("connected", 1)[1].split()[0])
        # Turned away while the flood holds every place, it is let in once the
        # node cuts the idle connections off.
        assert connected < HANDSHAKE_TIMEOUT_S + 5, driver.stdout
        print(f"driver connected after {connected:.2f} s, done after {took:.2f} s")
    finally:
        for sock in flood:
            sock.close()


@pytest.fixture
def silent_server():
    """A TCP port on loopback that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    stop = threading.Event()

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set() and len(accepted) < 20:  # bounded
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for sock in accepted:
        sock.close()
    listener.close()


def test_init_to_a_port_that_never_speaks_times_out_naming_it(silent_server, cluster_env):
    env = dict(cluster_env, ACTORKIT_AUTHKEY="ab" * 32, ACTORKIT_CONNECT_TIMEOUT_S="2")
    code = f"""
        import time
        import actorkit as ray
        began = time.monotonic()
        try:
            ray.init(address="127.0.0.1:{silent_server}")
        except (ConnectionError, TimeoutError) as e:
            print("error", round(time.monotonic() - began, 2), type(e).__name__, e, flush=True)
        print("initialized", ray.is_initialized())
    """
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "error" in result.stdout, result.stdout
    line = result.stdout.split("error", 1)[1]
    took = float(line.split()[0])
    assert f"127.0.0.1:{silent_server}" in line
    assert "within 2 s" in line
    assert 1.5 < took < 6, line
    assert "initialized False" in result.stdout
    assert time.monotonic() - began < 30


STOPPED_DRIVER = """
    import os, time
    import actorkit as ray
    from actorkit import runtime

    ray.init(num_cpus=1)

    @ray.remote
    def wait_forever(path):
        with open(path) as f:  # a FIFO nobody writes
            return f.read()

    ref = wait_forever.remote({fifo!r})
    print("session", runtime._driver.node_info["session"], flush=True)
    print("node", runtime._driver.manager._process.pid, flush=True)
    began = time.monotonic()
    try:
        ray.get(ref)
    except ray.exceptions.NodeDiedError as e:
        print("died", round(time.monotonic() - began, 2), e, flush=True)
    print("initialized", ray.is_initialized(), flush=True)
    ray.shutdown()  # must not wait for the stopped node
    print("shut down", flush=True)
"""


def test_get_fails_when_the_node_is_stopped(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    env = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        ACTORKIT_NODE_PROBE_AFTER_S="1",
        ACTORKIT_NODE_PROBE_TIMEOUT_S="2",
    )
    driver = Driver(env, STOPPED_DRIVER.format(fifo=str(fifo)))
    node_pid = None
    try:
        node_pid = int(driver.line("node ", 60))
        os.kill(node_pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        died = driver.line("died ", 20)
        took = time.monotonic() - stopped_at
        assert "stopped answering" in died
        assert "SIGSTOP" in died
        # It waited PROBE_AFTER_S, then PROBE_TIMEOUT_S for the ping: 3 s, not forever.
        assert took < 10, died
        print(f"NodeDiedError {took:.2f} s after SIGSTOP: {died}")
        out = driver.output(30)
        assert "initialized False" in out, out
        assert "shut down" in out, out
        assert driver.process.returncode == 0, out
        # shutdown() ended the stopped node and removed its shared memory.
        session = driver.line("session ", 1)
        assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"actorkit-{session}-")]
    finally:
        if node_pid is not None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(node_pid, sig)
                except ProcessLookupError:
                    pass
        if driver.process.poll() is None:
            driver.process.kill()
            driver.process.wait(10)


def test_is_initialized_is_false_after_the_node_is_killed(shutdown_only):
    ray.init(num_cpus=1)
    assert ray.get(ray.remote(sum).remote([1, 2])) == 3
    process = runtime._driver.manager._process  # type: ignore[union-attr]
    os.kill(process.pid, signal.SIGKILL)
    process.join(10)
    # The connection's end reaches the client's reader thread; a get() then fails at once.
    with pytest.raises(NodeDiedError):
        ray.get(ray.remote(sum).remote([1, 2]), timeout=10)
    assert not ray.is_initialized()
    # init() lets go of the dead node and starts another.
    ray.init(num_cpus=1)
    assert ray.is_initialized()
    assert ray.get(ray.remote(sum).remote([2, 3])) == 5
