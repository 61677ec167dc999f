"""Small process-level helpers: naming processes, hiding ``__main__`` from spawn."""

from __future__ import annotations

import contextlib
import sys
import threading
import types
from collections.abc import Iterator

_main_lock = threading.Lock()


def set_process_name(name: str) -> None:
    """Name this process (``/proc/PID/comm``, what ``ps`` and ``top`` show).

    actorkit's processes are named ``actorkit:node``, ``actorkit:worker``, ...
    so that users and the test suite can tell them apart from other Pythons.
    """
    try:
        with open("/proc/self/comm", "w") as comm:  # Linux; elsewhere there is no such file
            comm.write(name[:15])
    except OSError:
        pass


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """Start spawn-context processes without re-running the user's script.

    multiprocessing's spawn re-imports ``__main__`` in the child so that
    functions defined there can be found by name.  actorkit ships such
    functions by value instead, and Ray scripts often call ``init()`` at top
    level without an ``if __name__ == "__main__"`` guard, so re-running the
    script in the node server would start a node from inside the node.  While
    a process is being started, a bare module stands in for ``__main__``.
    """
    with _main_lock:
        real_main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = real_main
