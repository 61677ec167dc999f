"""Gaps found running Ray's own tests: class attributes, subclassing, @remote(), readiness, current_actor."""

from __future__ import annotations

import pytest

import actorkit as ray


@ray.remote
class Ledger:
    RATE = 3

    def __init__(self):
        self.entries = 0

    @staticmethod
    def scaled(value):
        return value * 10

    @classmethod
    def label(cls):
        return cls.__name__

    def uses_its_class(self):
        return Ledger.RATE, Ledger.scaled(2), Ledger.label()

    def myself(self):
        return ray.get_runtime_context().current_actor

    def add(self):
        self.entries += 1
        return self.entries


def test_class_attributes_and_static_methods_through_the_class(ray_start_shared):
    ledger = Ledger.remote()
    assert ray.get(ledger.uses_its_class.remote()) == (3, 20, "Ledger")
    assert Ledger.RATE == 3  # in the driver too
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        Ledger.nope
    ray.kill(ledger)


def test_ready_probe_and_current_actor(ray_start_shared):
    ledger = Ledger.remote()
    assert ray.get(ledger.__ray_ready__.remote()) is True
    me = ray.get(ledger.myself.remote())
    assert me == ledger
    assert ray.get(me.add.remote()) == 1 and ray.get(ledger.add.remote()) == 2
    with pytest.raises(RuntimeError, match="inside an actor"):
        ray.get_runtime_context().current_actor
    ray.kill(ledger)


def test_subclassing_an_actor_class_is_a_clear_error():
    with pytest.raises(TypeError, match="Inheriting from actor classes is not allowed"):

        class Derived(Ledger):  # noqa: F841
            pass


def test_remote_with_empty_parentheses_is_refused():
    with pytest.raises(TypeError, match="no arguments and no parentheses"):

        @ray.remote()
        def f():
            return 1


@ray.remote
class Warmed:
    async def __init__(self, delay):
        import asyncio

        self.ready = asyncio.Event()
        self.background = asyncio.get_running_loop().create_task(self._warm(delay))

    async def _warm(self, delay):
        self.value = delay * 2
        self.ready.set()

    async def value_when_ready(self):
        await self.ready.wait()  # made in __init__: same loop as the calls
        return self.value


def test_async_init(ray_start_shared):
    warmed = Warmed.remote(21)
    assert ray.get(warmed.value_when_ready.remote(), timeout=30) == 42
    ray.kill(warmed)


@ray.remote
class Desk:
    def take(self, value):
        return value


@ray.remote
def call_desk(desk, value):
    # Another caller than the driver: its own order, independent of the driver's.
    return ray.get(desk.take.remote(value))


def test_a_ready_call_is_not_held_behind_another_callers_waiting_call(ray_start_shared):
    from actorkit.util import SignalActor

    # Both callers' first calls go through the node, which queues calls whose
    # arguments are not ready (a caller's later calls go straight to the actor).
    release = SignalActor.remote()
    desk = Desk.remote()

    @ray.remote(scheduling_strategy="SPREAD")
    def slow_argument(signal):
        ray.get(signal.wait.remote())
        return "late"

    waiting = desk.take.remote(slow_argument.remote(release))  # waits for its argument
    # A call from another process, ready at once, runs while the driver's waits.
    assert ray.get(call_desk.remote(desk, "other caller"), timeout=30) == "other caller"
    ready, _ = ray.wait([waiting], timeout=0)
    assert not ready
    ray.get(release.send.remote())
    assert ray.get(waiting, timeout=30) == "late"
    ray.kill(desk)
    ray.kill(release)


def test_a_direct_call_waiting_for_its_argument_holds_back_only_its_caller(ray_start_shared):
    from actorkit.util import SignalActor

    release = SignalActor.remote()
    desk = Desk.remote()
    assert ray.get(desk.take.remote("warm")) == "warm"  # from now on the driver's calls go directly

    @ray.remote
    def slow_argument(signal):
        ray.get(signal.wait.remote())
        return "late"

    waiting = desk.take.remote(slow_argument.remote(release))  # kept in the driver until its argument is
    behind = desk.take.remote("behind")  # the driver's own later call waits behind it: order per caller
    assert ray.get(call_desk.remote(desk, "other caller"), timeout=30) == "other caller"
    assert ray.wait([waiting, behind], num_returns=2, timeout=0)[0] == []
    ray.get(release.send.remote())
    assert ray.get([waiting, behind], timeout=30) == ["late", "behind"]
    assert ray.get(desk.take.remote("after")) == "after"
    ray.kill(desk)
    ray.kill(release)
