"""Quick start: tasks, objects and an actor, written against Ray's API.

Run with:  python examples/quickstart.py
"""

import actorkit as ray


@ray.remote
def square(x):
    return x * x


@ray.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n


ray.init()
print(ray.get([square.remote(i) for i in range(4)]))  # [0, 1, 4, 9]

data = ray.put(list(range(10)))


@ray.remote
def total(values):
    return sum(values)


print(ray.get(total.remote(data)))  # 45

counter = Counter.remote()
print(ray.get([counter.incr.remote() for _ in range(3)]))  # [1, 2, 3]
ray.shutdown()
