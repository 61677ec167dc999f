"""Owner semantics, as in Ray: what a process created shares its fate.

An actor created by a task or actor dies when the process that created it
dies, unless it is detached; a ref made by a direct call in a process that
died before the result came back raises ``OwnerDiedError``.
"""

from __future__ import annotations

import os

import pytest
from _actors import SignalActor, process_exited

import actorkit as ray
from actorkit.exceptions import ActorDiedError, ObjectLostError, OwnerDiedError


@ray.remote
class Child:
    def pid(self):
        return os.getpid()


@ray.remote(max_restarts=0)
class Parent:
    def make_child(self, detached_name=None):
        if detached_name:
            self.child = Child.options(name=detached_name, lifetime="detached").remote()
        else:
            self.child = Child.remote()
        ray.get(self.child.pid.remote())
        return [self.child]

    def slow_call_through(self, signal):
        ray.get(signal.wait_for_waiters.remote(0))  # the first call goes through the node; the next direct
        return [signal.wait.remote()]  # not back yet: the ref is promised, owned here

    def pid(self):
        return os.getpid()


def test_an_actor_created_by_an_actor_dies_with_it(ray_start_shared):
    parent = Parent.remote()
    (child,) = ray.get(parent.make_child.remote())
    ray.get(child.pid.remote())
    parent_pid = ray.get(parent.pid.remote())
    ray.kill(parent)
    assert process_exited(parent_pid, 10)
    with pytest.raises(ActorDiedError, match="owner died"):
        ray.get(child.pid.remote(), timeout=30)


def test_a_detached_actor_outlives_its_owner(ray_start_shared):
    parent = Parent.remote()
    (child,) = ray.get(parent.make_child.remote("orphan-ok"))
    parent_pid = ray.get(parent.pid.remote())
    ray.kill(parent)
    assert process_exited(parent_pid, 10)
    assert ray.get(child.pid.remote(), timeout=30) > 0
    ray.kill(child)


def test_an_actor_created_by_a_task_outlives_the_task_while_its_worker_lives(ray_start_shared):
    @ray.remote
    def make():
        child = Child.remote()
        ray.get(child.pid.remote())
        return [child]

    (child,) = ray.get(make.remote())
    assert ray.get(child.pid.remote()) > 0  # the task ended; its worker, the owner, lives


def test_a_direct_result_whose_owner_died_raises_owner_died(ray_start_shared):
    parent = Parent.remote()
    # The parent's call to the signal actor goes directly; it is answered once
    # the signal is sent, and the parent dies first.
    blocker = SignalActor.remote()
    (ref,) = ray.get(parent.slow_call_through.remote(blocker))
    parent_pid = ray.get(parent.pid.remote())
    ray.kill(parent)
    assert process_exited(parent_pid, 10)
    with pytest.raises(OwnerDiedError, match="owner") as caught:
        ray.get(ref, timeout=30)
    assert isinstance(caught.value, ObjectLostError)  # as in Ray: a kind of lost object
    ray.get(blocker.send.remote())
