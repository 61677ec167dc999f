"""init / shutdown / is_initialized, and init's keyword arguments (Ray's names)."""

from __future__ import annotations

import os

import pytest

import actorkit as ray


@ray.remote
def one():
    return 1


@ray.remote
def add(a, b):
    return a + b


@ray.remote(resources={"custom": 1})
def needs_custom():
    return "custom ok"


def test_init_then_shutdown(shutdown_only):
    ray.init(num_cpus=2)
    assert ray.is_initialized() is True
    assert ray.get(one.remote()) == 1
    ray.shutdown()
    assert ray.is_initialized() is False


def test_cluster_resources_cpu_matches_num_cpus(shutdown_only):
    ray.init(num_cpus=3)
    resources = ray.cluster_resources()
    assert resources["CPU"] == 3


def test_gpus_and_custom_resources(shutdown_only):
    ray.init(num_cpus=1, num_gpus=2, resources={"custom": 2.5})
    resources = ray.cluster_resources()
    assert resources["CPU"] == 1
    assert resources["GPU"] == 2
    assert resources["custom"] == 2.5
    assert ray.get(needs_custom.remote(), timeout=30) == "custom ok"


def test_no_gpus_unless_asked(shutdown_only):
    ray.init(num_cpus=1, num_gpus=0)
    assert ray.cluster_resources().get("GPU", 0) == 0


def test_namespace(shutdown_only):
    ray.init(num_cpus=1, namespace="my_namespace")
    assert ray.get_runtime_context().namespace == "my_namespace"

    @ray.remote
    def namespace_in_a_task():
        return ray.get_runtime_context().namespace

    @ray.remote
    class InAnActor:
        def namespace(self):
            return ray.get_runtime_context().namespace

    assert ray.get(namespace_in_a_task.remote()) == "my_namespace"
    assert ray.get(InAnActor.remote().namespace.remote()) == "my_namespace"


def test_accepted_keywords(shutdown_only):
    ray.init(
        address=None,
        num_cpus=2,
        num_gpus=0,
        resources={},
        namespace="ns",
        ignore_reinit_error=False,
        log_to_driver=False,
        object_store_memory=100 * 1024 * 1024,
    )
    assert ray.is_initialized()
    assert ray.get(add.remote(2, 3)) == 5


def test_unknown_keyword_is_type_error(shutdown_only):
    with pytest.raises(TypeError, match="num_cpu_count"):
        ray.init(num_cpu_count=2)
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"num_cpus": -1}, ("num_cpus",)),
        ({"num_cpus": "x"}, ("num_cpus",)),
        ({"num_gpus": -1}, ("num_gpus",)),
        ({"resources": {"CPU": 1}}, ("num_cpus",)),
        ({"resources": {"GPU": 1}}, ("num_gpus",)),
        ({"resources": {"custom": -1}}, ("resources", "custom")),
        ({"resources": "custom"}, ("resources",)),
    ],
    ids=[
        "negative-num_cpus",
        "str-num_cpus",
        "negative-num_gpus",
        "CPU-in-resources",
        "GPU-in-resources",
        "negative-custom-resource",
        "resources-not-a-dict",
    ],
)
def test_invalid_values_name_the_argument(shutdown_only, kwargs, names):
    with pytest.raises((ValueError, TypeError)) as info:
        ray.init(**kwargs)
    message = str(info.value)
    assert any(name in message for name in names), message
    assert not ray.is_initialized()


def test_init_works_after_a_rejected_init(shutdown_only):
    with pytest.raises((ValueError, TypeError)):
        ray.init(num_cpus=-1)
    ray.init(num_cpus=1)
    assert ray.get(one.remote()) == 1


def test_put_before_init_initializes_implicitly(shutdown_only):
    assert not ray.is_initialized()
    ref = ray.put(1)
    assert ray.is_initialized()
    assert ray.get(ref) == 1


def test_implicit_init_uses_all_cpus(shutdown_only):
    ray.get(ray.put(None))
    assert ray.cluster_resources()["CPU"] == os.cpu_count()


def test_remote_call_before_init_initializes_implicitly(shutdown_only):
    ref = add.remote(20, 22)
    assert ray.is_initialized()
    assert ray.get(ref) == 42


def test_put_after_shutdown_leaves_no_segment(shutdown_only):
    import numpy as np
    from conftest import actorkit_segments

    from actorkit import runtime

    ray.init(num_cpus=1)
    client = runtime.current_client()
    ray.shutdown()
    before = set(actorkit_segments())
    with pytest.raises(RuntimeError, match="shut down"):
        client.put(np.zeros(16_000))  # 128 KB: in shared memory, below the recycled sizes
    assert set(actorkit_segments()) == before


def test_shutdown_twice_is_harmless(shutdown_only):
    ray.init(num_cpus=1)
    ray.shutdown()
    ray.shutdown()
    assert not ray.is_initialized()


def test_shutdown_without_init_is_harmless(shutdown_only):
    ray.shutdown()
    assert not ray.is_initialized()


def test_init_after_shutdown(shutdown_only):
    ray.init(num_cpus=1)
    assert ray.get(one.remote()) == 1
    ray.shutdown()
    ray.init(num_cpus=2)
    assert ray.is_initialized()
    assert ray.cluster_resources()["CPU"] == 2
    assert ray.get([add.remote(i, i) for i in range(4)]) == [0, 2, 4, 6]


# Tests on the module's shared node come last: shutdown_only tests stop it.


def test_second_init_is_runtime_error(ray_start_shared):
    with pytest.raises(RuntimeError, match="init"):
        ray.init(num_cpus=4)
    # The running node is untouched.
    assert ray.is_initialized()
    assert ray.get(add.remote(1, 2)) == 3


def test_second_init_with_ignore_reinit_error(ray_start_shared):
    ray.init(num_cpus=1, ignore_reinit_error=True)
    assert ray.is_initialized()
    # Still the first node: its resources did not change.
    assert ray.cluster_resources()["CPU"] == 4
    assert ray.get(add.remote(1, 2)) == 3
