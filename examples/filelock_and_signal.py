"""Seed 001: synchronize tasks with a FileLock and with a SignalActor.

Run with:  python examples/filelock_and_signal.py
"""

import asyncio
import os
import tempfile

os.environ["ACTORKIT_DEDUP_LOGS"] = "0"  # show every task's "go!"

from filelock import FileLock  # noqa: E402  (also actorkit.util.FileLock)

import actorkit as ray  # noqa: E402

workdir = tempfile.mkdtemp(prefix="actorkit-filelock-")
data_path = os.path.join(workdir, "my_data.txt")


@ray.remote
def write_to_file(text, path):
    # Use an absolute path for the lock: every process must name the same file.
    with FileLock(path + ".lock"):
        with open(path, "a") as f:
            f.write(text)


@ray.remote(num_cpus=0)
class SignalActor:
    """The seed's SignalActor (actorkit.util.SignalActor is the same, with a few extras)."""

    def __init__(self):
        self.ready_event = asyncio.Event()

    def send(self, clear=False):
        self.ready_event.set()
        if clear:
            self.ready_event.clear()

    async def wait(self, should_wait=True):
        if should_wait:
            await self.ready_event.wait()


@ray.remote
def wait_and_go(signal, i):
    ray.get(signal.wait.remote())
    print("go!")
    return i


ray.init()

# Inter-process synchronization with FileLock.
ray.get([write_to_file.remote("hi there!\n", data_path) for i in range(3)])
with open(data_path) as f:
    print(f.read(), end="")

# Synchronization with a SignalActor: four tasks wait until the signal is sent.
signal = SignalActor.remote()
tasks = [wait_and_go.remote(signal, i) for i in range(4)]
ready, _ = ray.wait(tasks, num_returns=1, timeout=0.2)
print(f"before send: {len(ready)} of {len(tasks)} tasks finished")
ray.get(signal.send.remote())
print("after send:", ray.get(tasks))

ray.shutdown()
for name in os.listdir(workdir):
    os.remove(os.path.join(workdir, name))
os.rmdir(workdir)
