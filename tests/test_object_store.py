"""The object store: shared memory, reference counting, spilling, faithful serialization."""

from __future__ import annotations

import dataclasses
import enum
import gc
import hashlib
import os
import stat
import time

import cloudpickle
import numpy as np
import pytest

import actorkit as ray
from actorkit import exceptions, runtime
from actorkit.serialization import SerializationError, deregister_serializer, register_serializer


@ray.remote
def identity(x):
    return x


@ray.remote
def array_sum(x):
    return float(x.sum())


@ray.remote
def array_address(x):
    return x.__array_interface__["data"][0] != 0 and not x.flags.writeable


@ray.remote
class Maker:
    def make(self, n):
        return ray.put(np.full(n, 7.0))

    def pid(self):
        return os.getpid()


def segments() -> list[str]:
    """This session's shared-memory segments."""
    prefix = f"actorkit-{runtime._driver.node_info['session']}-"  # type: ignore[union-attr]
    return [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]


def _size(name: str) -> int:
    try:
        return os.stat(f"/dev/shm/{name}").st_size
    except FileNotFoundError:
        return 0  # freed meanwhile


def node_stats() -> dict:
    return runtime.current_client().request("stats")


# --------------------------------------------------------------- shared memory


def test_large_array_comes_back_read_only_and_shared(ray_start_shared):
    ref = ray.put(np.arange(1_000_000, dtype=np.float64))
    a, b = ray.get(ref), ray.get(ref)
    assert np.shares_memory(a, b)
    assert not a.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        a[0] = 1.0
    assert a.sum() == np.arange(1_000_000, dtype=np.float64).sum()


def test_small_values_travel_inline(ray_start_shared):
    before = set(segments())
    ref = ray.put(np.arange(100))
    assert set(segments()) == before  # no segment for 800 bytes
    assert ray.get(ref).tolist() == list(range(100))


def test_segments_are_private_and_unguessable(ray_start_shared):
    before = set(segments())
    ref = ray.put(np.zeros(1 << 20))
    new = set(segments()) - before
    assert new
    for name in new:
        mode = os.stat(f"/dev/shm/{name}").st_mode
        assert stat.S_IMODE(mode) == 0o600
        assert len(name.rsplit("-", 1)[1]) >= 24  # 96 random bits
    del ref


def test_array_argument_is_read_in_place_by_tasks(ray_start_shared):
    ref = ray.put(np.ones(2_000_000))
    assert ray.get([array_sum.remote(ref) for _ in range(4)]) == [2_000_000.0] * 4
    assert all(ray.get([array_address.remote(ref) for _ in range(2)]))


def test_large_direct_argument_travels_through_shared_memory(ray_start_shared):
    big = np.arange(500_000, dtype=np.int64)
    assert ray.get(array_sum.remote(big)) == float(big.sum())


def test_a_view_keeps_its_object_alive_after_the_ref_is_gone(ray_start_shared):
    ref = ray.put(np.arange(3_000_000, dtype=np.float64))
    view = ray.get(ref)
    del ref
    gc.collect()
    # Other large puts may now recycle freed memory: the view must not change.
    fillers = [ray.put(np.full(3_000_000, 9.0)) for _ in range(3)]
    assert view[:5].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert view.sum() == np.arange(3_000_000, dtype=np.float64).sum()
    del fillers


# ----------------------------------------------------------- reference counts


def test_dropped_objects_are_freed(ray_start_shared):
    freed_before = node_stats()["objects_freed"]
    for _ in range(50):
        ref = ray.put(np.zeros(200_000))
        del ref
    ray.get(identity.remote(0))  # a round trip: the releases have been sent
    assert node_stats()["objects_freed"] - freed_before >= 49


def test_put_and_drop_keeps_memory_bounded(ray_start_shared):
    baseline = sum(_size(n) for n in segments())  # e.g. freed segments kept for reuse
    peak = 0
    for i in range(400):
        ref = ray.put(np.ones(1 << 17))  # 1 MiB
        del ref
        if i % 20 == 0:
            peak = max(peak, sum(_size(n) for n in segments()) - baseline)
    assert peak <= 16 << 20
    assert node_stats()["recycled"] > 0  # the memory was reused, not created afresh


def test_refs_nested_in_objects_keep_their_objects_alive(ray_start_shared):
    inner = ray.put(np.full(300_000, 3.0))
    outer = ray.put([inner])
    del inner
    gc.collect()
    ray.get(identity.remote(0))
    (got,) = ray.get(outer)
    assert ray.get(got).sum() == 900_000.0


def test_object_outlives_the_actor_that_put_it(ray_start_shared):
    maker = Maker.remote()
    ref = ray.get(maker.make.remote(250_000))
    ray.kill(maker)
    assert ray.get(ref).sum() == 7.0 * 250_000


def test_pending_task_arguments_stay_alive(ray_start_shared):
    signal = ray.put(np.full(400_000, 2.0))
    results = [array_sum.remote(signal) for _ in range(6)]
    del signal
    gc.collect()
    assert ray.get(results) == [800_000.0] * 6


# ------------------------------------------------------- capacity and spilling


def test_spilled_objects_come_back_bit_exact(shutdown_only):
    ray.init(num_cpus=1, object_store_memory=64 << 20)
    rng = np.random.default_rng(0)
    arrays = [rng.random((8 << 20) // 8) for _ in range(12)]  # 12 x 8 MiB into 64 MiB
    digests = [hashlib.sha256(a.tobytes()).hexdigest() for a in arrays]
    refs = [ray.put(a) for a in arrays]
    del arrays
    assert node_stats()["spilled"] > 0
    assert node_stats()["store_used"] <= 64 << 20
    for ref, digest in zip(refs, digests):
        assert hashlib.sha256(ray.get(ref).tobytes()).hexdigest() == digest
    assert ray.get(array_sum.remote(refs[0])) > 0  # a task reads a restored object


def test_object_larger_than_the_store_is_refused_at_put(shutdown_only):
    ray.init(num_cpus=1, object_store_memory=16 << 20)
    with pytest.raises(ValueError, match="object store holds"):
        ray.put(np.zeros(32 << 20, dtype=np.uint8))
    assert ray.get(ray.put(1)) == 1  # the store still works


def _fill_until_full(sizes_mib: list[int]) -> tuple[list, list[str]]:
    """Put arrays of these sizes; their refs and their digests."""
    rng = np.random.default_rng(1)
    arrays = [rng.random((n << 20) // 8) for n in sizes_mib]
    return [ray.put(a) for a in arrays], [hashlib.sha256(a.tobytes()).hexdigest() for a in arrays]


def _assert_full_then_still_serving(refs: list, digests: list[str]) -> None:
    """The put that cannot fit fails fast and typed; nothing stored is lost; the node runs on."""
    start = time.monotonic()
    with pytest.raises(exceptions.ObjectStoreFullError, match="spilling to .* failed"):
        ray.put(np.ones((7 << 20) // 8))
    assert time.monotonic() - start < 1.0
    for ref, digest in zip(refs, digests):
        assert hashlib.sha256(ray.get(ref).tobytes()).hexdigest() == digest
    assert ray.get(array_sum.remote(refs[0])) > 0
    assert ray.get(identity.remote(41)) == 41
    assert node_stats()["store_used"] <= 16 << 20  # refused, not grown past capacity
    with pytest.raises(exceptions.ObjectStoreFullError):
        ray.put(np.ones((7 << 20) // 8))  # still refused, still no crash


def test_a_file_where_the_spill_directory_goes_refuses_the_put_and_loses_nothing(shutdown_only):
    ray.init(num_cpus=1, object_store_memory=16 << 20)
    session_dir = runtime._driver.session_dir  # type: ignore[union-attr]
    with open(os.path.join(session_dir, "spill"), "w") as f:
        f.write("not a directory")
    refs, digests = _fill_until_full([5, 5])
    _assert_full_then_still_serving(refs, digests)


def test_a_full_disk_refuses_the_put_and_loses_nothing(shutdown_only):
    ray.init(num_cpus=1, object_store_memory=16 << 20)
    spill_dir = os.path.join(runtime._driver.session_dir, "spill")  # type: ignore[union-attr]
    os.makedirs(spill_dir, mode=0o700)
    before = set(segments())
    refs, digests = _fill_until_full([5, 5])
    node_stats()  # the node has both objects
    # Every spill file of these objects is /dev/full: writes fail with ENOSPC, even as root.
    for name in set(segments()) - before:
        os.symlink("/dev/full", os.path.join(spill_dir, name))
    _assert_full_then_still_serving(refs, digests)


def test_shutdown_removes_spill_files(shutdown_only):
    ray.init(num_cpus=1, object_store_memory=16 << 20)
    session_dir = runtime._driver.session_dir  # type: ignore[union-attr]
    refs = [ray.put(np.ones((4 << 20) // 8)) for _ in range(8)]
    assert os.listdir(os.path.join(session_dir, "spill"))
    del refs
    ray.shutdown()
    assert not os.path.exists(session_dir)


# ----------------------------------------------------- faithful serialization


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a, self.b = a, b


class TwoArgError(Exception):
    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")
        self.code = code


@ray.remote
def make_local_slotted():
    class Local:
        __slots__ = ("v",)

        def __init__(self):
            self.v = 42

    return Local()


@ray.remote
def make_closure(k):
    return lambda y: y + k


@ray.remote
def raise_two_arg_error():
    raise TwoArgError(7, "bad thing")


def test_aliasing_survives(ray_start_shared):
    shared = [0]
    for value in (ray.get(ray.put([shared, shared])), ray.get(identity.remote([shared, shared]))):
        assert value[0] is value[1]
    d = {"k": 1}
    value = ray.get(ray.put({"a": d, "b": d}))
    assert value["a"] is value["b"]


def test_self_reference_survives(ray_start_shared):
    loop = []
    loop.append(loop)
    value = ray.get(ray.put(loop))
    assert value[0] is value
    value = ray.get(identity.remote(loop))
    assert value[0] is value


def test_bytearray_stays_bytearray(ray_start_shared):
    assert type(ray.get(ray.put(bytearray(b"abc")))) is bytearray
    assert type(ray.get(identity.remote(bytearray(300_000)))) is bytearray


def test_rich_types_round_trip_as_arguments_and_results(ray_start_shared):
    assert ray.get(identity.remote(Point(1, 2))) == Point(1, 2)
    assert ray.get(identity.remote(Color.BLUE)) is Color.BLUE
    slotted = ray.get(identity.remote(Slotted(1, [2])))
    assert (slotted.a, slotted.b) == (1, [2])
    assert ray.get(make_local_slotted.remote()).v == 42
    assert ray.get(make_closure.remote(10))(5) == 15
    k = 3
    assert ray.get(identity.remote(lambda y: y * k))(2) == 6

    class LocalClass:
        def __init__(self):
            self.v = "local"

    assert ray.get(identity.remote(LocalClass())).v == "local"


def test_exception_with_extra_constructor_arguments_round_trips(ray_start_shared):
    with pytest.raises(TwoArgError) as info:
        ray.get(raise_two_arg_error.remote())
    assert isinstance(info.value, exceptions.TaskError)
    assert info.value.cause.code == 7
    assert "7: bad thing" in str(info.value)
    err = ray.get(identity.remote(TwoArgError(1, "x")))
    assert isinstance(err, TwoArgError) and err.code == 1 and str(err) == "1: x"


def test_dill_is_tried_when_cloudpickle_fails(ray_start_shared):
    class WithDescriptor:
        def __init__(self):
            self.fromkeys = dict.__dict__["fromkeys"]  # a classmethod_descriptor
            self.n = 5

    with pytest.raises(TypeError, match="classmethod_descriptor"):
        cloudpickle.dumps(WithDescriptor())
    back = ray.get(ray.put(WithDescriptor()))
    assert back.n == 5 and back.fromkeys is dict.__dict__["fromkeys"]


def test_unserializable_value_names_the_attribute_path(ray_start_shared):
    class Inner:
        def __init__(self):
            self.gen = (i for i in range(3))

    class Outer:
        def __init__(self):
            self.inner = Inner()

    with pytest.raises(SerializationError, match=r"put\(\), at \.inner\.gen, which is a generator"):
        ray.put(Outer())
    with pytest.raises(SerializationError, match=r"inner\.gen"):
        identity.remote(Outer())


class Opaque:
    def __init__(self, v):
        self.v = v
        self.gen = (i for i in range(1))  # neither cloudpickle nor dill can pickle this


@ray.remote
def opaque_value(o):
    return o.v


def test_custom_serializer(ray_start_shared):
    # As in Ray, serializers are registered per process; the deserializer
    # travels with the value, so the worker reading it needs no registration.
    register_serializer(Opaque, serializer=lambda o: o.v, deserializer=lambda v: Opaque(v))
    try:
        assert ray.get(opaque_value.remote(Opaque(9))) == 9
        assert ray.get(ray.put(Opaque(4))).v == 4
    finally:
        deregister_serializer(Opaque)
    with pytest.raises(SerializationError):
        ray.put(Opaque(1))
    with pytest.raises(ValueError, match="no serializer"):
        deregister_serializer(Opaque)
