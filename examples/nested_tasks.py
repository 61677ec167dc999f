"""Seed 002: nested remote functions, and a blocked get() giving its CPU back.

Run with:  python examples/nested_tasks.py
"""

import actorkit as ray


@ray.remote
def f():
    return 1


@ray.remote
def g():
    # Call f 4 times and return the resulting object refs.
    return [f.remote() for _ in range(4)]


@ray.remote
def h():
    # Call f 4 times, block until those 4 tasks finish,
    # retrieve the results, and return the values.
    return ray.get([f.remote() for _ in range(4)])


# One CPU and one GPU: blocked_g holds both while it runs, yet its child f
# runs too, because a task blocked in get() gives its CPUs back to the
# scheduler until get() returns (its GPU stays held).
@ray.remote(num_cpus=1, num_gpus=1)
def blocked_g():
    return ray.get(f.remote())


@ray.remote(num_cpus=1)
def parent(depth):
    # More nested blocking tasks than CPUs: never a deadlock.
    if depth == 0:
        return 0
    return 1 + ray.get(parent.remote(depth - 1))


ray.init(num_cpus=1, num_gpus=1)

refs = ray.get(g.remote())
print("g returned", len(refs), "refs:", all(isinstance(r, ray.ObjectRef) for r in refs))
print("values of g's refs:", ray.get(refs))
print("h returned", ray.get(h.remote()))
print("blocked_g returned", ray.get(blocked_g.remote()))
print("a chain of 5 nested tasks on 1 CPU returned", ray.get(parent.remote(5)))

ray.shutdown()
