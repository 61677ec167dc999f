"""actorkit.util.ActorPool: Ray's interface and ordering guarantees."""

from __future__ import annotations

import pytest

import actorkit as ray
from actorkit.util import ActorPool, SignalActor

TIMEOUT = 30


@ray.remote
class Doubler:
    def double(self, v):
        return 2 * v

    def gated(self, signal, v):
        # Blocks until the signal is sent (the actor is serial: one call at a time).
        ray.get(signal.wait.remote(should_wait=v >= 0))
        return abs(v)


@pytest.fixture
def actors(ray_start_shared):
    return [Doubler.remote() for _ in range(2)]


def test_map_keeps_order(actors):
    pool = ActorPool(actors)
    assert list(pool.map(lambda a, v: a.double.remote(v), range(10))) == [2 * i for i in range(10)]
    assert not pool.has_next()


def test_map_unordered_yields_everything(actors):
    pool = ActorPool(actors)
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(10))) == [2 * i for i in range(10)]


def test_submit_get_next_in_submission_order(actors):
    pool = ActorPool(actors)
    for v in [1, 2, 3, 4, 5]:
        pool.submit(lambda a, v: a.double.remote(v), v)
    assert pool.has_next()
    results = []
    while pool.has_next():
        results.append(pool.get_next(timeout=TIMEOUT))
    assert results == [2, 4, 6, 8, 10]
    with pytest.raises(StopIteration):
        pool.get_next()


def test_get_next_timeout_keeps_result(actors):
    signal = SignalActor.remote()
    pool = ActorPool(actors[:1])
    pool.submit(lambda a, v: a.gated.remote(signal, v), 7)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.05)
    assert pool.has_next()  # still pending: the next get_next returns it
    ray.get(signal.send.remote())
    assert pool.get_next(timeout=TIMEOUT) == 7


def test_get_next_ignore_if_timedout_drops_result(actors):
    signal = SignalActor.remote()
    pool = ActorPool(actors[:1])
    pool.submit(lambda a, v: a.gated.remote(signal, v), 1)
    pool.submit(lambda a, v: a.double.remote(v), 5)  # queued: the only actor is busy
    with pytest.raises(TimeoutError, match="ignored"):
        pool.get_next(timeout=0.05, ignore_if_timedout=True)
    # The actor went back to the pool and took the queued value.
    ray.get(signal.send.remote())
    assert pool.get_next(timeout=TIMEOUT) == 10
    assert not pool.has_next()


def test_get_next_unordered_returns_first_finished(actors):
    signal = SignalActor.remote()
    pool = ActorPool(actors)
    pool.submit(lambda a, v: a.gated.remote(signal, v), 1)  # blocked until the signal
    pool.submit(lambda a, v: a.gated.remote(signal, v), -2)  # does not wait
    assert pool.get_next_unordered(timeout=TIMEOUT) == 2
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.05)
    ray.get(signal.send.remote())
    assert pool.get_next_unordered(timeout=TIMEOUT) == 1
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_get_next_after_unordered_is_an_error(actors):
    pool = ActorPool(actors)
    pool.submit(lambda a, v: a.double.remote(v), 1)
    pool.submit(lambda a, v: a.double.remote(v), 2)
    pool.get_next_unordered(timeout=TIMEOUT)
    pool.get_next_unordered(timeout=TIMEOUT)
    pool.submit(lambda a, v: a.double.remote(v), 3)
    assert pool.get_next(timeout=TIMEOUT) == 6


def test_has_free_pop_idle_push(actors):
    signal = SignalActor.remote()
    pool = ActorPool(actors)
    assert pool.has_free()
    popped = pool.pop_idle()
    assert popped in actors
    pool.submit(lambda a, v: a.gated.remote(signal, v), 3)
    assert not pool.has_free()
    assert pool.pop_idle() is None
    with pytest.raises(ValueError, match="already belongs"):
        pool.push([a for a in actors if a != popped][0])  # the busy one
    pool.push(popped)
    assert pool.has_free()
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(popped)
    pool.submit(lambda a, v: a.double.remote(v), 4)
    ray.get(signal.send.remote())
    assert [pool.get_next(timeout=TIMEOUT), pool.get_next(timeout=TIMEOUT)] == [3, 8]
    assert "ActorPool actors=2 idle=2" in repr(pool)


def test_map_discards_previous_results(actors):
    pool = ActorPool(actors)
    pool.submit(lambda a, v: a.double.remote(v), 100)
    assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2])) == [2, 4]


def test_errors_propagate(actors):
    pool = ActorPool(actors)
    gen = pool.map(lambda a, v: a.double.remote(v), [1, None, 3])
    assert next(gen) == 2
    with pytest.raises(TypeError):
        next(gen)
    # The generator ends with the error (as in Ray); the pool still holds the rest.
    assert pool.has_next()
    assert pool.get_next(timeout=TIMEOUT) == 6
