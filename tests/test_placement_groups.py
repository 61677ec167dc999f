"""Placement groups: bundles reserved together, and the tasks and actors that run in them."""

from __future__ import annotations

import os

import pytest

import actorkit as ray
from actorkit.exceptions import ActorDiedError, TaskUnschedulableError
from actorkit.util import (
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from actorkit.util.scheduling_strategies import PlacementGroupSchedulingStrategy

T = 30


@pytest.fixture
def pg_node(shutdown_only):
    ray.init(num_cpus=4, num_gpus=2)


def in_pg(group, index=-1, capture=None, **options):
    return {"scheduling_strategy": PlacementGroupSchedulingStrategy(group, index, capture), **options}


@ray.remote
def where():
    group = get_current_placement_group()
    return os.getpid(), group.id.hex() if group is not None else None, os.environ.get("CUDA_VISIBLE_DEVICES")


def test_a_group_reserves_all_its_bundles_at_once(pg_node):
    group = placement_group([{"CPU": 1}, {"CPU": 2, "GPU": 1}], strategy="STRICT_PACK", name="reserved")
    assert ray.get(group.ready(), timeout=T) == group
    assert group.wait(T)
    available = ray.available_resources()
    assert available["CPU"] == 1 and available["GPU"] == 1
    table = placement_group_table(group)
    assert table["state"] == "CREATED" and table["strategy"] == "STRICT_PACK" and table["name"] == "reserved"
    assert table["bundles"] == {0: {"CPU": 1}, 1: {"CPU": 2, "GPU": 1}}
    assert set(table["bundles_to_node_id"].values()) == {ray.get_runtime_context().get_node_id()}
    assert group.id.hex() in placement_group_table()
    assert get_placement_group("reserved") == group and group.bundle_count == 2
    remove_placement_group(group)
    assert ray.available_resources()["CPU"] == 4
    assert placement_group_table(group)["state"] == "REMOVED"


def test_tasks_and_actors_run_on_what_a_bundle_reserved(pg_node):
    group = placement_group([{"CPU": 1}, {"CPU": 1, "GPU": 1}])
    ray.get(group.ready(), timeout=T)
    # The node's other 2 CPUs are free; the group's tasks still run on its own.
    _pid, inside, _gpus = ray.get(where.options(**in_pg(group, 0)).remote(), timeout=T)
    assert inside == group.id.hex()
    assert ray.get(where.options(num_cpus=0, num_gpus=1, **in_pg(group, 1)).remote(), timeout=T)[2] is not None
    assert ray.get(where.options(placement_group=group, placement_group_bundle_index=0).remote(), timeout=T)[1] == group.id.hex()
    assert ray.get(where.remote(), timeout=T)[1] is None

    @ray.remote(num_cpus=1)
    class Member:
        def group(self):
            current = get_current_placement_group()
            return current.id.hex() if current is not None else None

    member = Member.options(**in_pg(group, 0)).remote()
    assert ray.get(member.group.remote(), timeout=T) == group.id.hex()
    assert ray.available_resources()["CPU"] == 2  # the actor took its CPU from the bundle
    remove_placement_group(group)
    with pytest.raises(ActorDiedError, match="placement group was removed"):
        ray.get(member.group.remote(), timeout=T)


def test_a_task_too_big_for_its_bundle_fails_clearly(pg_node):
    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=T)
    with pytest.raises(TaskUnschedulableError, match=r"more than bundle 0 .* reserves"):
        ray.get(where.options(num_cpus=2, **in_pg(group, 0)).remote(), timeout=T)
    with pytest.raises(ValueError, match="placement_group_bundle_index=3 is invalid"):
        where.options(**in_pg(group, 3)).remote()


def test_child_tasks_join_a_capturing_group(pg_node):
    group = placement_group([{"CPU": 2}])
    ray.get(group.ready(), timeout=T)

    @ray.remote(num_cpus=1)
    def parent():
        return ray.get(where.remote())[1]

    assert ray.get(parent.options(**in_pg(group, capture=True)).remote(), timeout=T) == group.id.hex()
    assert ray.get(parent.options(**in_pg(group, capture=False)).remote(), timeout=T) is None


def test_a_group_that_cannot_fit_stays_pending_then_is_placed(pg_node):
    first = placement_group([{"CPU": 3}])
    ray.get(first.ready(), timeout=T)
    second = placement_group([{"CPU": 2}])
    assert not second.wait(0.2)
    assert placement_group_table(second)["state"] == "PENDING"
    ready = second.ready()
    remove_placement_group(first)
    assert ray.get(ready, timeout=T) == second
    impossible = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")  # one node only
    assert not impossible.wait(0.2)
    assert placement_group_table(impossible)["bundles_to_node_id"] == {}  # nothing half placed
    remove_placement_group(impossible)


def test_bad_groups_get_ray_s_errors(ray_start_shared):
    with pytest.raises(ValueError, match="empty list"):
        placement_group([])
    with pytest.raises(ValueError, match="only 0 values"):
        placement_group([{"CPU": 0}])
    with pytest.raises(ValueError, match="Invalid placement group strategy"):
        placement_group([{"CPU": 1}], strategy="CLOSE")
    with pytest.raises(ValueError, match="lifetime"):
        placement_group([{"CPU": 1}], lifetime="forever")
    with pytest.raises(ValueError, match="Failed to look up placement group"):
        get_placement_group("no-such-group")
    with pytest.raises(TypeError, match="PlacementGroup"):
        where.options(placement_group="pg").remote()
