"""Local mode: tasks and actors run in the driver, in submission order, with the same API.

Values still go through serialization, so what would be refused on a node is
refused here; and pdb works inside a task, since it runs in the driver.
"""

from __future__ import annotations

import os
import textwrap
import threading

import numpy as np
import pytest
from _drivers import describe, driver_env, run_python, run_script

import actorkit as ray
from actorkit.exceptions import ActorDiedError, TaskError


@pytest.fixture
def local_mode():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(local_mode=True)
    yield
    ray.shutdown()


@ray.remote
def where():
    return os.getpid()


@ray.remote
def add(a, b):
    return a + b


@ray.remote
def fail(message):
    raise KeyError(message)


@ray.remote(num_returns=2)
def pair(x):
    return x, -x


@ray.remote
class Counter:
    def __init__(self, start):
        self.n = start

    def incr(self, by=1):
        self.n += by
        return self.n

    async def incr_async(self):
        self.n += 100
        return self.n

    def leave(self):
        raise SystemExit(0)


@ray.remote
class Broken:
    def __init__(self):
        raise ValueError("bad init")

    def ping(self):
        return "pong"


def test_tasks_run_in_the_driver_in_order(local_mode):
    assert ray.get(where.remote()) == os.getpid()
    assert ray.get(add.remote(add.remote(1, 2), 3)) == 6
    assert ray.get(list(pair.remote(4))) == [4, -4]
    ready, not_ready = ray.wait([add.remote(1, 1), add.remote(2, 2)], num_returns=1)
    assert len(ready) == 1 and len(not_ready) == 1


def test_errors_and_serialization_checks_are_the_same(local_mode):
    with pytest.raises(KeyError) as info:
        ray.get(fail.remote("lost"))
    assert isinstance(info.value, TaskError)
    assert "raise KeyError(message)" in str(info.value)
    # An error flows through a task that depends on it.
    with pytest.raises(KeyError):
        ray.get(add.remote(fail.remote("upstream"), 1))
    with pytest.raises(TypeError, match=r"argument 1 of add\(\)"):
        add.remote(threading.Lock(), 1)


def test_values_are_copies_and_arrays_read_only(local_mode):
    items = [1, 2]

    @ray.remote
    def mutate(xs):
        xs.append(3)
        return xs

    assert ray.get(mutate.remote(items)) == [1, 2, 3]
    assert items == [1, 2]
    big = ray.get(ray.put(np.arange(100_000)))
    assert not big.flags.writeable and int(big[-1]) == 99_999


def test_actors_run_their_calls_in_order(local_mode):
    counter = Counter.remote(10)
    assert ray.get([counter.incr.remote(), counter.incr.remote(5), counter.incr_async.remote()]) == [11, 16, 116]
    named = Counter.options(name="shared").remote(0)
    assert ray.get(ray.get_actor("shared").incr.remote()) == 1
    ray.kill(named)
    with pytest.raises(ActorDiedError):
        ray.get(named.incr.remote())
    with pytest.raises(ActorDiedError):
        ray.get(counter.leave.remote())
    with pytest.raises(ActorDiedError):
        ray.get(counter.incr.remote())
    broken = Broken.remote()
    with pytest.raises(ActorDiedError, match="bad init"):
        ray.get(broken.ping.remote())


def test_environment_variable_turns_it_on(tmp_path):
    source = textwrap.dedent(
        """
        import os
        import actorkit as ray

        @ray.remote
        def pid():
            return os.getpid()

        print("same process:", ray.get(pid.remote()) == os.getpid())
        """
    )
    proc = run_script(tmp_path, source, env=driver_env(ACTORKIT_LOCAL_MODE="1"))
    assert proc.returncode == 0, describe(proc)
    assert "same process: True" in proc.stdout, describe(proc)


def test_breakpoint_inside_a_task_works(tmp_path):
    source = textwrap.dedent(
        """
        import actorkit as ray

        @ray.remote
        def inspect_me(x):
            secret = x * 7
            breakpoint()
            return secret

        ray.init(local_mode=True)
        print("result:", ray.get(inspect_me.remote(6)))
        ray.shutdown()
        """
    )
    path = tmp_path / "driver.py"
    path.write_text(source)
    proc = run_python([str(path)], tmp_path, stdin="p secret\nc\n", env=driver_env(PYTHONBREAKPOINT=None))
    assert proc.returncode == 0, describe(proc)
    assert "42" in proc.stdout and "result: 42" in proc.stdout, describe(proc)
    assert "BdbQuit" not in proc.stdout + proc.stderr, describe(proc)
