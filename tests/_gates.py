"""A one-shot gate a task can block on, without sleeping or polling.

A gate is a named pipe (FIFO). A task that opens it for reading blocks in
``open()`` until the test opens it for writing; the task then reads what the
test wrote. This lets tests hold a task "running and not finished" for exactly
as long as they need, and release it deterministically.

The remote function that waits on a gate lives in each test module (remote
functions are defined at module top level there)::

    @ray.remote
    def wait_for_gate(path):
        with open(path) as f:
            return f.read()
"""

from __future__ import annotations

import errno
import os


class Gate:
    def __init__(self, path) -> None:
        self.path = str(path)
        os.mkfifo(self.path)
        self.released = False

    def release(self, data: str = "go") -> None:
        """Let the reader through; blocks until a task has opened the gate."""
        with open(self.path, "w") as f:
            f.write(data)
        self.released = True

    def release_if_needed(self) -> None:
        """Teardown: never block; leave no task waiting on this gate forever."""
        if self.released:
            return
        self.released = True
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            # Nobody reads yet: swap the FIFO for a regular file, so a task that
            # starts later returns at once instead of blocking.
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.write("teardown")
            os.replace(tmp, self.path)
            return
        try:
            os.write(fd, b"teardown")
        finally:
            os.close(fd)


class Gates:
    """Factory used by a fixture: ``gates.new()`` makes a fresh gate."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.made: list[Gate] = []

    def new(self) -> Gate:
        gate = Gate(self.tmp_path / f"gate-{len(self.made)}")
        self.made.append(gate)
        return gate

    def release_all(self) -> None:
        for gate in self.made:
            gate.release_if_needed()
