"""Small Ray names scripts import: ObjectID, ObjectRef(bytes), inspect_serializability, tqdm_ray."""

from __future__ import annotations

import io
import threading

import pytest

import actorkit as ray
from actorkit.experimental import tqdm_ray
from actorkit.util import inspect_serializability


def test_object_id_is_object_ref_and_refs_round_trip_through_bytes_and_hex(ray_start_shared):
    assert ray.ObjectID is ray.ObjectRef
    ref = ray.put({"a": 1})
    again = ray.ObjectRef(ref.binary())
    assert again == ref and hash(again) == hash(ref)
    assert ray.get(again) == {"a": 1}
    assert ray.ObjectRef.from_hex(ref.hex()) == ref
    with pytest.raises(TypeError, match="bytes"):
        ray.ObjectRef(ref.hex())


LOCK = threading.Lock()


class Holder:
    def __init__(self):
        self.fine = [1, 2]
        self.inner = {"guard": LOCK}


def test_inspect_serializability_finds_the_innermost_culprits():
    out = io.StringIO()
    guard = LOCK

    def uses_lock():
        with guard:
            return 1

    ok, failures = inspect_serializability(uses_lock, name="uses_lock", print_file=out)
    assert not ok
    assert [(f.name, f.obj) for f in failures] == [("<closure guard>", LOCK)]
    assert "Checking Serializability of uses_lock" in out.getvalue()

    ok, failures = inspect_serializability(Holder(), print_file=out)
    assert not ok and [(f.name, f.obj) for f in failures] == [("['guard']", LOCK)]
    assert "threading.Lock" in out.getvalue()

    assert inspect_serializability([1, "two"], print_file=out) == (True, set())


def test_tqdm_ray_counts_in_a_task_and_in_the_driver(ray_start_shared):
    @ray.remote
    def work(n):
        total = 0
        for i in tqdm_ray.tqdm(range(n), desc="work"):
            total += i
        return total

    assert ray.get(work.remote(50)) == sum(range(50))
    bar = tqdm_ray.tqdm(total=3, desc="driver")
    bar.update(2)
    bar.set_description("renamed")
    bar.update()
    bar.close()
    assert (bar.n, bar.desc) == (3, "renamed")
