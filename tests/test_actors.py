"""Actors: creation, options, method calls, ordering, handles, named actors.

Concurrency (async and threaded actors) is in ``test_actor_concurrency.py``;
killing, exiting, restarting and scope in ``test_actor_lifecycle.py``.

Every ``get`` has a timeout, so a hang fails the test instead of the session.
Tests on the shared node kill the actors they made (``kill_after``): an actor
needs a free CPU to be placed, and the node has only four.
"""

from __future__ import annotations

import gc
import os
import pickle

import cloudpickle
import pytest

import actorkit
import actorkit as ray
from actorkit.exceptions import ActorDiedError, RayActorError, TaskError

T = 30  # seconds: the bound on every get(); a hang fails instead of blocking


# ---------------------------------------------------------------- classes


@ray.remote
class Counter:
    def __init__(self, start=0, *, step=1):
        self.n = start
        self.step = step

    def incr(self):
        self.n += self.step
        return self.n

    def value(self):
        return self.n

    def add(self, x):
        self.n += x
        return self.n

    def pid(self):
        return os.getpid()


@ray.remote
class Recorder:
    """Keeps every value it was given, in the order the calls ran."""

    def __init__(self):
        self.seen = []

    def record(self, *item):
        self.seen.append(item if len(item) > 1 else item[0])
        return len(self.seen)

    def log(self):
        return list(self.seen)


@ray.remote
class FailsInInit:
    def __init__(self, text):
        raise ValueError(text)

    def ping(self):
        return "pong"


@ray.remote
class MultiReturn:
    @ray.method(num_returns=2)
    def pair(self, x):
        return x, x + 1

    @ray.method(num_returns=3)
    def triple(self):
        return "a", "b", "c"

    def many(self, n):
        return tuple(range(n))

    def one(self):
        return (1, 2)


@ray.remote
def square(x):
    return x * x


@ray.remote
def call_incr(handle, times):
    """A task that receives an actor handle and calls it."""
    return ray.get([handle.incr.remote() for _ in range(times)], timeout=T)


@ray.remote
def make_counter(start):
    """A task that creates an actor and returns its handle."""
    return Counter.remote(start)


@ray.remote
def call_all(handles):
    """``handles`` is a list of actor handles stored in an object."""
    return ray.get([h.incr.remote() for h in handles], timeout=T)


@ray.remote
def call_stored_handles(wrapper):
    # Refs nested in containers are passed as refs: get the stored list first.
    handles = ray.get(wrapper[0], timeout=T)
    return ray.get([h.value.remote() for h in handles], timeout=T)


@ray.remote
def same_handle(h1, h2):
    return h1 == h2, hash(h1) == hash(h2)


@ray.remote
def record_in_order(recorder, caller, n):
    """One caller submitting ``n`` calls without waiting, then waiting for all."""
    refs = [recorder.record.remote(caller, i) for i in range(n)]
    return ray.get(refs, timeout=T)


@ray.remote
def call_named(name, namespace=None):
    handle = ray.get_actor(name, namespace=namespace)
    return ray.get(handle.incr.remote(), timeout=T)


@ray.remote
class Caller:
    """Actor B: calls actor A through A's handle."""

    def __init__(self, target=None):
        self.target = target

    def bump(self, times):
        refs = [self.target.incr.remote() for _ in range(times)]
        return ray.get(refs[-1], timeout=T)

    def bump_other(self, other):
        return ray.get(other.incr.remote(), timeout=T)

    def add_value_of(self, value):
        # A ref to another actor's result passed as a top-level argument
        # arrives resolved to its value.
        return value + 1

    def lookup_and_call(self, name):
        return ray.get(ray.get_actor(name).incr.remote(), timeout=T)

    def run_tasks(self, n):
        return ray.get([square.remote(i) for i in range(n)], timeout=T)

    def wait_on_tasks(self, n):
        refs = [square.remote(i) for i in range(n)]
        ready, not_ready = ray.wait(refs, num_returns=n, timeout=T)
        return sorted(ray.get(ready, timeout=T)), len(not_ready)


@ray.remote
class SelfCaller:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n

    def wait_for_own_later_call(self, me):
        ref = me.incr.remote()
        return ray.get(ref, timeout=T)

    def wait_for_own_later_call_in_wait(self, me):
        ref = me.incr.remote()
        return ray.wait([ref], timeout=T)

    def return_own_later_call(self, me):
        return [me.incr.remote()]


# --------------------------------------------------------------- creation


def test_remote_class_returns_handle_and_runs_in_own_process(ray_start_shared, kill_after):
    c = kill_after(Counter.remote())
    assert isinstance(c, ray.ActorHandle)
    assert isinstance(Counter, actorkit.ActorClass)
    assert ray.get(c.incr.remote(), timeout=T) == 1
    assert ray.get(c.incr.remote(), timeout=T) == 2
    pid = ray.get(c.pid.remote(), timeout=T)
    assert pid != os.getpid()
    d = kill_after(Counter.remote())
    assert ray.get(d.pid.remote(), timeout=T) not in (pid, os.getpid())


def test_constructor_arguments(ray_start_shared, kill_after):
    c = kill_after(Counter.remote(10, step=5))
    assert ray.get(c.incr.remote(), timeout=T) == 15
    # ObjectRef arguments to the constructor arrive as values.
    d = kill_after(Counter.remote(ray.put(100), step=square.remote(3)))
    assert ray.get(d.incr.remote(), timeout=T) == 109


def test_direct_instantiation_is_type_error(ray_start_shared):
    with pytest.raises(TypeError, match=r"Counter\.remote\(\)"):
        Counter()
    with pytest.raises(TypeError, match="directly"):
        Counter(1, step=2)


def test_calling_method_directly_is_type_error(ray_start_shared, kill_after):
    c = kill_after(Counter.remote())
    with pytest.raises(TypeError, match=r"incr\.remote\(\)"):
        c.incr()


def test_init_exception_surfaces_as_actor_died_error(ray_start_shared):
    a = FailsInInit.remote("original failure text 42")
    with pytest.raises(ActorDiedError) as info:
        ray.get(a.ping.remote(), timeout=T)
    err = info.value
    assert isinstance(err, RayActorError)
    assert "original failure text 42" in str(err)
    assert "ValueError" in str(err)
    # The original exception is carried, as .cause and chained as __cause__.
    assert isinstance(err.cause, ValueError)
    assert "original failure text 42" in str(err.cause)
    assert err.__cause__ is err.cause
    # Later calls fail the same way: a failed __init__ is not retried.
    with pytest.raises(ActorDiedError, match="original failure text 42"):
        ray.get(a.ping.remote(), timeout=T)


def test_ray_actor_error_is_actor_died_error():
    assert RayActorError is ActorDiedError
    assert ray.exceptions.RayActorError is ray.exceptions.ActorDiedError


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    "options, named",
    [
        ({"not_an_option": 1}, "not_an_option"),
        ({"num_returns": 2}, "num_returns"),  # a task option, not an actor one
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": "4"}, "max_concurrency"),
        ({"max_restarts": -2}, "max_restarts"),
        ({"max_restarts": 1.5}, "max_restarts"),
        ({"max_task_retries": "x"}, "max_task_retries"),
        ({"lifetime": "forever"}, "lifetime"),
        ({"num_cpus": -1}, "num_cpus"),
        ({"num_cpus": "one"}, "num_cpus"),
        ({"num_gpus": -1}, "num_gpus"),
        ({"resources": {"CPU": 1}}, "num_cpus"),
        ({"resources": ["R"]}, "resources"),
        ({"name": 7}, "name"),
        ({"name": ""}, "name"),
        ({"namespace": 3}, "namespace"),
        ({"get_if_exists": True}, "name"),  # get_if_exists needs a name
    ],
)
def test_bad_options_raise_naming_the_option(options, named):
    with pytest.raises((ValueError, TypeError), match=named):
        Counter.options(**options)
    with pytest.raises((ValueError, TypeError), match=named):

        @ray.remote(**options)
        class Declared:
            def f(self):
                return 1


def test_unsupported_option_is_an_error_not_ignored():
    with pytest.raises(ValueError, match="concurrency groups are not supported"):
        Counter.options(concurrency_groups={"io": 2})
    with pytest.raises(TypeError, match="placement_group must be a PlacementGroup"):
        Counter.options(placement_group="pg")


def test_options_returns_new_class_and_keeps_original(ray_start_shared, kill_after):
    Bigger = Counter.options(num_cpus=0, max_restarts=0, max_task_retries=0, max_concurrency=1)
    assert isinstance(Bigger, actorkit.ActorClass)
    c = kill_after(Bigger.remote(5))
    assert ray.get(c.incr.remote(), timeout=T) == 6
    # The original class is unchanged by options().
    d = kill_after(Counter.remote())
    assert ray.get(d.incr.remote(), timeout=T) == 1


def test_remote_decorator_with_actor_options(ray_start_shared, kill_after):
    @ray.remote(num_cpus=0, max_concurrency=1)
    class Local:
        def hello(self, who):
            return f"hello {who}"

    a = kill_after(Local.remote())
    assert ray.get(a.hello.remote("x"), timeout=T) == "hello x"


def test_num_cpus_held_for_actor_lifetime(ray_start_shared, kill_after):
    before = ray.available_resources().get("CPU", 0)
    a = kill_after(Counter.options(num_cpus=1).remote())
    ray.get(a.incr.remote(), timeout=T)
    assert ray.available_resources().get("CPU", 0) == before - 1
    ray.kill(a)
    assert ray.available_resources().get("CPU", 0) == before


def test_default_actor_holds_no_cpu(ray_start_shared, kill_after):
    before = ray.available_resources().get("CPU", 0)
    a = kill_after(Counter.remote())
    ray.get(a.incr.remote(), timeout=T)
    assert ray.available_resources().get("CPU", 0) == before


# ------------------------------------------------------------ method calls


def test_calls_from_one_caller_run_in_order(ray_start_shared, kill_after):
    r = kill_after(Recorder.remote())
    refs = [r.record.remote(i) for i in range(200)]
    assert ray.get(refs, timeout=T) == list(range(1, 201))
    assert ray.get(r.log.remote(), timeout=T) == list(range(200))


def test_state_persists_between_calls(ray_start_shared, kill_after):
    c = kill_after(Counter.remote())
    for expected in range(1, 6):
        assert ray.get(c.incr.remote(), timeout=T) == expected
    assert ray.get(c.add.remote(10), timeout=T) == 15


def test_calls_from_several_callers_keep_each_callers_order(ray_start_shared, kill_after):
    r = kill_after(Recorder.remote())
    ray.get(r.log.remote(), timeout=T)  # placed before the callers take the CPUs
    n, callers = 50, 4
    results = ray.get([record_in_order.remote(r, c, n) for c in range(callers)], timeout=T)
    assert all(len(res) == n for res in results)
    log = ray.get(r.log.remote(), timeout=T)
    assert sorted(log) == sorted((c, i) for c in range(callers) for i in range(n))
    for c in range(callers):
        assert [i for caller, i in log if caller == c] == list(range(n))
    # The driver's own calls interleave with the tasks' too, in its order.
    assert ray.get(r.record.remote("driver", 0), timeout=T) == callers * n + 1


def test_method_errors_raise_task_error_and_actor_survives(ray_start_shared, kill_after):
    @ray.remote
    class Fragile:
        def __init__(self):
            self.calls = 0

        def fail(self, text):
            self.calls += 1
            raise KeyError(text)

        def count(self):
            return self.calls

    a = kill_after(Fragile.remote())
    with pytest.raises(KeyError) as info:
        ray.get(a.fail.remote("bad key 7"), timeout=T)
    assert isinstance(info.value, TaskError)
    assert "bad key 7" in str(info.value)
    assert ray.get(a.count.remote(), timeout=T) == 1


def test_missing_method_is_attribute_error_naming_it(ray_start_shared, kill_after):
    c = kill_after(Counter.remote())
    with pytest.raises(AttributeError, match="no_such_method"):
        c.no_such_method.remote()
    with pytest.raises(AttributeError, match="no_such_method"):
        c.no_such_method  # noqa: B018
    # The handle still works.
    assert ray.get(c.incr.remote(), timeout=T) == 1


# ---------------------------------------------------- refs from actor calls


def test_actor_refs_as_task_arguments(ray_start_shared, kill_after):
    c = kill_after(Counter.remote(3))
    assert ray.get(square.remote(c.value.remote()), timeout=T) == 9


def test_actor_refs_in_wait(ray_start_shared, kill_after):
    c = kill_after(Counter.remote())
    refs = [c.incr.remote() for _ in range(5)]
    ready, not_ready = ray.wait(refs, num_returns=5, timeout=T)
    assert not not_ready
    assert ready == refs
    assert ray.get(ready, timeout=T) == [1, 2, 3, 4, 5]


def test_actor_refs_passed_to_other_actors(ray_start_shared, kill_after):
    a = kill_after(Counter.remote(41))
    b = kill_after(Caller.remote())
    assert ray.get(b.add_value_of.remote(a.value.remote()), timeout=T) == 42
    # And to another actor's constructor.
    c = kill_after(Counter.remote(a.incr.remote()))
    assert ray.get(c.value.remote(), timeout=T) == 42


def test_task_refs_passed_to_actor_methods(ray_start_shared, kill_after):
    c = kill_after(Counter.remote())
    assert ray.get(c.add.remote(square.remote(4)), timeout=T) == 16
    assert ray.get(c.add.remote(ray.put(4)), timeout=T) == 20


def test_error_in_argument_ref_flows_to_actor_call(ray_start_shared, kill_after):
    @ray.remote
    def broken():
        raise ZeroDivisionError("no good")

    c = kill_after(Counter.remote())
    with pytest.raises(ZeroDivisionError, match="no good"):
        ray.get(c.add.remote(broken.remote()), timeout=T)
    assert ray.get(c.value.remote(), timeout=T) == 0


def test_num_returns_from_method_decorator(ray_start_shared, kill_after):
    m = kill_after(MultiReturn.remote())
    a, b = m.pair.remote(10)
    assert ray.get([a, b], timeout=T) == [10, 11]
    refs = m.triple.remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert ray.get(refs, timeout=T) == ["a", "b", "c"]


def test_num_returns_from_method_options(ray_start_shared, kill_after):
    m = kill_after(MultiReturn.remote())
    refs = m.many.options(num_returns=4).remote(4)
    assert len(refs) == 4
    assert ray.get(refs, timeout=T) == [0, 1, 2, 3]
    # options() overrides the decorator, and without it one ref holds the tuple.
    x, y, z = m.pair.options(num_returns=1).remote(1), *m.many.options(num_returns=2).remote(2)
    assert ray.get(x, timeout=T) == (1, 2)
    assert ray.get([y, z], timeout=T) == [0, 1]
    assert ray.get(m.one.remote(), timeout=T) == (1, 2)


def test_num_returns_zero_returns_none_and_runs(ray_start_shared, kill_after):
    c = kill_after(Counter.remote())
    assert c.incr.options(num_returns=0).remote() is None
    assert ray.get(c.value.remote(), timeout=T) == 1


def test_num_returns_mismatch_is_an_error(ray_start_shared, kill_after):
    m = kill_after(MultiReturn.remote())
    refs = m.many.options(num_returns=3).remote(2)
    with pytest.raises(Exception, match="num_returns"):
        ray.get(refs[0], timeout=T)


def test_bad_method_num_returns():
    with pytest.raises(ValueError, match="num_returns"):
        ray.method(num_returns=-1)


# ---------------------------------------------------------------- handles


def test_handle_passed_to_task(ray_start_shared, kill_after):
    c = kill_after(Counter.remote())
    assert ray.get(call_incr.remote(c, 3), timeout=T) == [1, 2, 3]
    assert ray.get(c.value.remote(), timeout=T) == 3


def test_handle_returned_from_task(ray_start_shared, kill_after):
    c = kill_after(ray.get(make_counter.remote(7), timeout=T))
    assert isinstance(c, ray.ActorHandle)
    assert ray.get(c.incr.remote(), timeout=T) == 8
    assert ray.get(c.incr.remote(), timeout=T) == 9


def test_handles_stored_in_objects(ray_start_shared, kill_after):
    handles = [kill_after(Counter.remote(i * 10)) for i in range(3)]
    stored = ray.put(handles)
    assert ray.get(call_all.remote(stored), timeout=T) == [1, 11, 21]
    back = ray.get(stored, timeout=T)
    assert back == handles
    assert ray.get([h.value.remote() for h in back], timeout=T) == [1, 11, 21]
    # A ref to the stored list, nested in a container, is passed as a ref.
    assert ray.get(call_stored_handles.remote([stored]), timeout=T) == [1, 11, 21]


def test_handle_passed_to_other_actor(ray_start_shared, kill_after):
    a = kill_after(Counter.remote())
    b = kill_after(Caller.remote(a))
    assert ray.get(b.bump.remote(3), timeout=T) == 3
    assert ray.get(b.bump_other.remote(a), timeout=T) == 4
    assert ray.get(a.value.remote(), timeout=T) == 4


def test_handles_equal_and_hash_by_actor_id(ray_start_shared, kill_after):
    a = kill_after(Counter.remote())
    b = kill_after(Counter.remote())
    assert a == a
    assert a != b
    copy = cloudpickle.loads(cloudpickle.dumps(a))
    assert copy == a and hash(copy) == hash(a)
    assert pickle.loads(pickle.dumps(a)) == a
    via_store = ray.get(ray.put(a), timeout=T)
    via_task = ray.get(make_counter.remote(0), timeout=T)
    kill_after(via_task)
    assert via_store == a
    assert len({a, copy, via_store, b}) == 2
    assert {a: "x"}[via_store] == "x"
    assert ray.get(same_handle.remote(a, via_store), timeout=T) == (True, True)
    assert ray.get(same_handle.remote(a, b), timeout=T)[0] is False
    assert via_task not in (a, b)
    # The copy calls the same actor.
    ray.get(a.incr.remote(), timeout=T)
    assert ray.get(copy.value.remote(), timeout=T) == 1


def test_handle_repr_names_class(ray_start_shared, kill_after):
    a = kill_after(Counter.remote())
    assert "Counter" in repr(a)


# --------------------------------------------------- methods that call out


def test_actor_method_submits_tasks_and_gets_them(ray_start_shared, kill_after):
    b = kill_after(Caller.remote())
    assert ray.get(b.run_tasks.remote(6), timeout=T) == [0, 1, 4, 9, 16, 25]
    assert ray.get(b.wait_on_tasks.remote(3), timeout=T) == ([0, 1, 4], 0)


def test_serial_actor_getting_its_own_later_call_is_a_clear_error(ray_start_shared, kill_after):
    a = kill_after(SelfCaller.remote())
    with pytest.raises(RuntimeError, match="deadlock") as info:
        ray.get(a.wait_for_own_later_call.remote(a), timeout=T)
    assert "SelfCaller" in str(info.value)
    with pytest.raises(RuntimeError, match="deadlock"):
        ray.get(a.wait_for_own_later_call_in_wait.remote(a), timeout=T)
    # The actor is still usable, and the calls it submitted to itself ran after.
    assert ray.get(a.incr.remote(), timeout=T) == 3
    # Returning the ref instead of waiting on it is fine.
    [ref] = ray.get(a.return_own_later_call.remote(a), timeout=T)
    assert ray.get(ref, timeout=T) == 4


# ----------------------------------------------------------- named actors


def test_named_actor_get_actor(ray_start_shared, kill_after):
    c = kill_after(Counter.options(name="named-get").remote())
    ray.get(c.incr.remote(), timeout=T)
    same = ray.get_actor("named-get")
    assert same == c
    assert ray.get(same.incr.remote(), timeout=T) == 2
    # Tasks and actors look it up by name too (same job, same namespace).
    assert ray.get(call_named.remote("named-get"), timeout=T) == 3
    b = kill_after(Caller.remote())
    assert ray.get(b.lookup_and_call.remote("named-get"), timeout=T) == 4


def test_get_actor_not_found_is_value_error(ray_start_shared):
    with pytest.raises(ValueError, match="no-such-actor"):
        ray.get_actor("no-such-actor")
    with pytest.raises(ValueError):
        ray.get_actor("")


def test_name_taken_is_value_error(ray_start_shared, kill_after):
    c = kill_after(Counter.options(name="taken").remote())
    with pytest.raises(ValueError, match="taken"):
        Counter.options(name="taken").remote()
    # The first actor is unaffected.
    assert ray.get(c.incr.remote(), timeout=T) == 1
    assert ray.get_actor("taken") == c


def test_get_if_exists_returns_the_same_actor(ray_start_shared, kill_after):
    first = kill_after(Counter.options(name="singleton", get_if_exists=True).remote(100))
    assert ray.get(first.incr.remote(), timeout=T) == 101
    second = Counter.options(name="singleton", get_if_exists=True).remote(0)
    assert second == first
    # __init__ did not run again: the state is the first actor's.
    assert ray.get(second.incr.remote(), timeout=T) == 102
    assert ray.get(first.pid.remote(), timeout=T) == ray.get(second.pid.remote(), timeout=T)


def test_name_free_again_after_kill(ray_start_shared, kill_after):
    c = Counter.options(name="reusable").remote()
    ray.get(c.incr.remote(), timeout=T)
    ray.kill(c)
    with pytest.raises(ValueError, match="reusable"):
        ray.get_actor("reusable")
    d = kill_after(Counter.options(name="reusable").remote(5))
    assert ray.get(ray.get_actor("reusable").incr.remote(), timeout=T) == 6
    assert d != c


def test_detached_actor_outlives_its_handles(ray_start_shared):
    c = Counter.options(name="detached-one", lifetime="detached").remote()
    assert ray.get(c.incr.remote(), timeout=T) == 1
    pid = ray.get(c.pid.remote(), timeout=T)
    del c
    gc.collect()  # no handle left anywhere
    again = ray.get_actor("detached-one")
    assert ray.get(again.incr.remote(), timeout=T) == 2
    assert ray.get(again.pid.remote(), timeout=T) == pid
    ray.kill(again)
    with pytest.raises(ValueError):
        ray.get_actor("detached-one")
    with pytest.raises(ActorDiedError):
        ray.get(again.incr.remote(), timeout=T)


# ----------------------------------------- seed 003: patterns that must work


@ray.remote
class WorkQueue:
    """A central queue actor."""

    def __init__(self, items):
        self.items = list(items)

    def put(self, item):
        self.items.append(item)

    def get(self):
        return self.items.pop(0) if self.items else None

    def size(self):
        return len(self.items)


@ray.remote
class Drainer:
    """One of many actors draining the central queue."""

    def __init__(self, queue):
        self.queue = queue

    def drain(self):
        done = []
        while (item := ray.get(self.queue.get.remote(), timeout=T)) is not None:
            done.append(item * item)
        return done


def test_seed_many_actors_drain_a_central_queue_actor(ray_start_shared, kill_after):
    items = list(range(60))
    queue = kill_after(WorkQueue.remote(items))
    drainers = [kill_after(Drainer.remote(queue)) for _ in range(3)]
    results = ray.get([d.drain.remote() for d in drainers], timeout=T)
    processed = [x for result in results for x in result]
    assert sorted(processed) == [i * i for i in items]  # each item exactly once
    for result in results:  # each drainer took items in queue order
        assert result == sorted(result)
    assert ray.get(queue.size.remote(), timeout=T) == 0


def test_seed_actor_b_calls_actor_a_through_its_handle(ray_start_shared, kill_after):
    a = kill_after(Counter.remote())
    b = kill_after(Caller.remote(a))
    assert ray.get(b.bump.remote(5), timeout=T) == 5
    # The driver sees A's state changed by B, and its own calls go on from there.
    assert ray.get(a.incr.remote(), timeout=T) == 6
    assert ray.get(b.bump.remote(1), timeout=T) == 7


@ray.remote
class MessageActor:
    """The central message actor of Ray's example."""

    def __init__(self):
        self.messages = []

    def add_message(self, message):
        self.messages.append(message)

    def get_and_clear_messages(self):
        messages = self.messages
        self.messages = []
        return messages


@ray.remote
def post_messages(message_actor, worker, n):
    refs = [message_actor.add_message.remote(f"message {i} from worker {worker}") for i in range(n)]
    ray.get(refs, timeout=T)
    return n


@ray.remote
def read_messages(message_actor):
    return ray.get(message_actor.get_and_clear_messages.remote(), timeout=T)


def test_seed_central_message_actor(ray_start_shared, kill_after):
    hub = kill_after(MessageActor.remote())
    ray.get(hub.get_and_clear_messages.remote(), timeout=T)
    collected = []
    for round_ in range(2):
        workers = range(round_ * 3, round_ * 3 + 3)
        assert ray.get([post_messages.remote(hub, w, 20) for w in workers], timeout=T) == [20] * 3
        collected += ray.get(read_messages.remote(hub), timeout=T)
    assert ray.get(hub.get_and_clear_messages.remote(), timeout=T) == []
    expected = {f"message {i} from worker {w}" for w in range(6) for i in range(20)}
    assert len(collected) == len(expected) and set(collected) == expected
    for w in range(6):  # each poster's messages arrived in the order it sent them
        mine = [m for m in collected if m.endswith(f"worker {w}")]
        assert mine == [f"message {i} from worker {w}" for i in range(20)]


# ------------------------------- tests with a node of their own (run last:
# shutdown_only stops the module's shared node)


def test_gpu_actor_sees_its_gpu(shutdown_only):
    @ray.remote(num_gpus=1)
    class GpuActor:
        def ids(self):
            return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

    ray.init(num_cpus=2, num_gpus=2)
    a = GpuActor.remote()
    ids, visible = ray.get(a.ids.remote(), timeout=T)
    assert len(ids) == 1 and ids[0] in (0, 1)
    assert visible == str(ids[0])
    b = GpuActor.remote()
    ids_b, _ = ray.get(b.ids.remote(), timeout=T)
    assert ids_b != ids


def test_custom_resource_actor_waits_for_the_resource(shutdown_only):
    ray.init(num_cpus=2, resources={"slot": 1})
    first = Counter.options(resources={"slot": 1}).remote()
    assert ray.get(first.incr.remote(), timeout=T) == 1
    second = Counter.options(resources={"slot": 1}).remote()
    ref = second.incr.remote()
    ready, _ = ray.wait([ref], timeout=0.5)
    assert not ready, "the second actor started without the resource"
    ray.kill(first)
    assert ray.get(ref, timeout=T) == 1


def test_namespaces(shutdown_only):
    ray.init(num_cpus=2, namespace="ns-one")
    assert ray.get_runtime_context().namespace == "ns-one"
    mine = Counter.options(name="shared-name").remote(1)
    theirs = Counter.options(name="shared-name", namespace="ns-two").remote(2)
    assert mine != theirs
    assert ray.get_actor("shared-name") == mine
    assert ray.get_actor("shared-name", namespace="ns-one") == mine
    assert ray.get_actor("shared-name", namespace="ns-two") == theirs
    assert ray.get(ray.get_actor("shared-name", namespace="ns-two").value.remote(), timeout=T) == 2
    only_two = Counter.options(name="only-in-two", namespace="ns-two").remote()
    ray.get(only_two.value.remote(), timeout=T)
    with pytest.raises(ValueError, match="only-in-two"):
        ray.get_actor("only-in-two")
    with pytest.raises(ValueError, match="shared-name"):
        ray.get_actor("shared-name", namespace="ns-three")
    # A task of this job looks names up in the job's namespace.
    assert ray.get(call_named.remote("shared-name"), timeout=T) == 2
    assert ray.get(call_named.remote("shared-name", "ns-two"), timeout=T) == 3
