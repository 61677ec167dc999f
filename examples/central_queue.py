"""Seed 003: actors draining a central queue actor, reporting to a central message actor.

Parallelism comes from several actors; a queue actor hands out the work and
a message actor collects what they report.  Both are reached through actor
handles passed to the workers.

Run with:  python examples/central_queue.py
"""

import actorkit as ray
from actorkit.util.queue import Queue


@ray.remote
class MessageBoard:
    """The central message actor: anyone holding its handle can post and read."""

    def __init__(self):
        self.messages = []

    def post(self, sender, text):
        self.messages.append((sender, text))
        return len(self.messages)

    def read(self):
        return list(self.messages)


@ray.remote
class Worker:
    def __init__(self, name, queue, board):
        self.name = name
        self.queue = queue  # a Queue is an actor handle: it can be passed around
        self.board = board

    def ready(self):
        return self.name

    def drain(self):
        """Take work until the stop marker (None); post each result to the board."""
        done = 0
        while True:
            item = self.queue.get()  # blocks in the queue actor while it is empty
            if item is None:
                break
            self.board.post.remote(self.name, f"{item}^2={item * item}")
            done += 1
        # Calls from one caller run in order: this read comes after our posts.
        ray.get(self.board.post.remote(self.name, f"done after {done} items"))
        return done


ray.init()
queue = Queue(maxsize=8)  # producers wait when the workers fall behind
board = MessageBoard.remote()
workers = [Worker.remote(f"worker-{i}", queue, board) for i in range(3)]
ray.get([w.ready.remote() for w in workers])  # all started: the work spreads over them
runs = [w.drain.remote() for w in workers]

n_items = 20
for item in range(n_items):
    queue.put(item)
for _ in workers:
    queue.put(None)

counts = ray.get(runs)
print("items per worker:", counts)
print("total items:", sum(counts))
messages = ray.get(board.read.remote())
results = sorted(int(text.split("=")[1]) for _, text in messages if "^2=" in text)
print("results:", results)
print("workers done:", sorted(sender for sender, text in messages if text.startswith("done")))
print("queue empty at the end:", queue.empty())
queue.shutdown()
ray.shutdown()
