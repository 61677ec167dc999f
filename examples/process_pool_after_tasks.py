"""Seed 000: post-process task results in a process pool -- spawned, never forked.

Forking a process that holds actorkit's sockets (the driver, a task, an
actor) would share them with the child without any synchronization. Start
new processes with the "spawn" method instead, or let actorkit run the work:
``actorkit.util.futures.Executor`` is a drop-in for ProcessPoolExecutor that
runs on actorkit's workers.

Run with:  python examples/process_pool_after_tasks.py
"""

import os

os.environ["RAY_DEDUP_LOGS"] = "0"  # actorkit reads Ray's variable too (or ACTORKIT_DEDUP_LOGS)

import multiprocessing  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np  # noqa: E402

import actorkit as ray  # noqa: E402
from actorkit.util.futures import Executor  # noqa: E402


@ray.remote
def generate_response(request):
    print(request)
    array = np.ones(100000)
    return array


def process_response(response, idx):
    print(f"Processing response {idx}", flush=True)
    return response


def main():
    ray.init()
    responses = ray.get([generate_response.remote(f"request {i}") for i in range(4)])

    # The standard library's pool, on the "spawn" start method.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=context) as executor:
        future_to_task = {}
        for idx, response in enumerate(responses):
            future_to_task[executor.submit(process_response, response, idx)] = idx

        for future in as_completed(future_to_task):
            idx = future_to_task[future]
            response_entry = future.result()
            print(f"Response {idx} processed: {response_entry}")

    # The same with actorkit's Executor: no extra processes, same interface.
    with Executor(max_workers=4) as executor:
        futures = {executor.submit(process_response, r, i): i for i, r in enumerate(responses)}
        total = sum(float(f.result().sum()) for f in as_completed(futures))
        print(f"Executor processed {len(futures)} responses, total {total:.0f}")

    ray.shutdown()


if __name__ == "__main__":
    main()
