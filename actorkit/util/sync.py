"""Synchronization across tasks and actors: ``SignalActor`` and ``FileLock``.

``FileLock`` is ``filelock.FileLock``: a lock on a file of the local machine,
for tasks and actors of one node writing the same file::

    @ray.remote
    def append(line):
        with FileLock("/tmp/data.txt.lock"):
            with open("/tmp/data.txt", "a") as f:
                f.write(line)

``SignalActor`` makes tasks wait for an event::

    signal = SignalActor.remote()
    refs = [task_that_waits.remote(signal) for _ in range(4)]  # each: ray.get(signal.wait.remote())
    ray.get(signal.send.remote())                               # all of them go on
"""

from __future__ import annotations

from filelock import FileLock

from ..api import remote
from ._actors import SignalActor as _SignalActorClass

SignalActor = remote(num_cpus=0)(_SignalActorClass)
SignalActor.__doc__ = _SignalActorClass.__doc__

__all__ = ["FileLock", "SignalActor"]
