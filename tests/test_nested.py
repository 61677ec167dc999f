"""Nested tasks: tasks that submit tasks and block on their results.

A task blocked in ``get()``/``wait()`` gives its CPU back until it returns, so
more nested blocking tasks than CPUs must never deadlock. Every ``get`` here
has a timeout, so a deadlock fails with GetTimeoutError instead of hanging.
"""

from __future__ import annotations

import pytest

import actorkit
import actorkit as ray

DEADLOCK_TIMEOUT_S = 60


# The example from Ray's "Advanced Usage" page: f must be defined before g, h.
@ray.remote
def f():
    return 1


@ray.remote
def g():
    # Call f 4 times and return the resulting object refs.
    return [f.remote() for _ in range(4)]


@ray.remote
def h():
    # Call f 4 times, block until those 4 tasks finish, return the values.
    return ray.get([f.remote() for _ in range(4)])


@ray.remote
def grandchild(x):
    return x + 1


@ray.remote
def child(x):
    return ray.get(grandchild.remote(x)) * 10


@ray.remote
def parent():
    return ray.get([child.remote(i) for i in range(3)])


@ray.remote
def parent_with_wait():
    refs = [child.remote(i) for i in range(3)]
    ready, not_ready = ray.wait(refs, num_returns=len(refs))
    assert not not_ready
    return sorted(ray.get(ready))


@ray.remote
def fib(n):
    if n < 2:
        return n
    return sum(ray.get([fib.remote(n - 1), fib.remote(n - 2)]))


@ray.remote
def depth(n):
    if n == 0:
        return 0
    return ray.get(depth.remote(n - 1)) + 1


def test_nested_returns_refs(ray_start_shared):
    refs = ray.get(g.remote(), timeout=DEADLOCK_TIMEOUT_S)
    assert len(refs) == 4
    assert all(isinstance(ref, actorkit.ObjectRef) for ref in refs)
    assert len(set(refs)) == 4
    assert ray.get(refs, timeout=DEADLOCK_TIMEOUT_S) == [1, 1, 1, 1]


def test_nested_gets_results(ray_start_shared):
    assert ray.get(h.remote(), timeout=DEADLOCK_TIMEOUT_S) == [1, 1, 1, 1]


def test_many_nested_on_shared_node(ray_start_shared):
    # 8 blocking parents (each with blocking children) on 4 CPUs.
    refs = [parent.remote() for _ in range(8)]
    assert ray.get(refs, timeout=DEADLOCK_TIMEOUT_S) == [[10, 20, 30]] * 8


def test_nested_blocking_on_one_cpu(shutdown_only):
    ray.init(num_cpus=1)
    assert ray.get(parent.remote(), timeout=DEADLOCK_TIMEOUT_S) == [10, 20, 30]


def test_nested_wait_on_one_cpu(shutdown_only):
    ray.init(num_cpus=1)
    assert ray.get(parent_with_wait.remote(), timeout=DEADLOCK_TIMEOUT_S) == [10, 20, 30]


def test_deep_chain_on_one_cpu(shutdown_only):
    ray.init(num_cpus=1)
    assert ray.get(depth.remote(8), timeout=DEADLOCK_TIMEOUT_S) == 8


@pytest.mark.timeout(90)
def test_recursive_fib_two_cpus(shutdown_only):
    ray.init(num_cpus=2)
    assert ray.get(fib.remote(10), timeout=DEADLOCK_TIMEOUT_S) == 55
