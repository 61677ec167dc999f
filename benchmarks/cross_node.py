"""Moving a 200 MB array between two nodes of a cluster on this machine.

    .venv/bin/python benchmarks/cross_node.py

Prints the time and rate of a pull each way (head -> member as a task's
argument, member -> head as a task's result), memcpy of the same array for
scale, and how much private (anonymous) memory each node process grew by
meanwhile: a transfer moves chunks, so neither side holds the value twice.
"""

from __future__ import annotations

import threading
import time

import numpy as np

import actorkit as ray
from actorkit.cluster_utils import Cluster

N = 25_000_000  # float64: 200 MB


def anonymous_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon"):
                return int(line.split()[1]) // 1024
    return 0


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    member = cluster.add_node(num_cpus=1, resources={"member": 1})
    cluster.connect()
    try:
        total = ray.remote(resources={"member": 1})(lambda a: float(a.sum()))
        make = ray.remote(resources={"member": 1})(np.ones)
        ray.get(total.remote(np.ones(10)))  # the member's worker is up
        array = np.random.default_rng(0).random(N)
        ref = ray.put(array)
        pids = [cluster.head_node.process.pid, member.process.pid]
        start = {pid: anonymous_mb(pid) for pid in pids}
        peak = dict(start)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.002):
                for pid in pids:
                    peak[pid] = max(peak[pid], anonymous_mb(pid))

        threading.Thread(target=sample, daemon=True).start()
        t = time.perf_counter()
        ray.get(total.remote(ref))
        to_member = time.perf_counter() - t
        result = make.remote(N)
        ray.wait([result])
        t = time.perf_counter()
        ray.get(result)
        from_member = time.perf_counter() - t
        done.set()
        t = time.perf_counter()
        np.copy(array)
        memcpy = time.perf_counter() - t
        size = array.nbytes / 1e9
        print(f"head -> member (with the task's sum): {to_member:.3f} s  {size / to_member:.2f} GB/s")
        print(f"member -> head:                       {from_member:.3f} s  {size / from_member:.2f} GB/s")
        print(f"memcpy of the array:                  {memcpy:.3f} s  {size / memcpy:.2f} GB/s")
        growth = [peak[pid] - start[pid] for pid in pids]
        print(f"private memory growth: head {growth[0]} MB, member {growth[1]} MB (array {array.nbytes / 1e6:.0f} MB)")
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
