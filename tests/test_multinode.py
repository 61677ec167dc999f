"""Several nodes joined into one cluster: placement, objects across nodes, node death.

The nodes are processes of this machine (``actorkit.cluster_utils.Cluster``);
objects still move between them through their transfer servers, as between
machines.  ``test_netns.py`` runs nodes in separate network namespaces.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import _snapshot, assert_no_leaks

import actorkit as ray
from actorkit.cluster_utils import Cluster
from actorkit.exceptions import TaskUnschedulableError
from actorkit.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@pytest.fixture(scope="module")
def cluster():
    """A head (1 CPU) and two members (1 CPU each, resources "b" and "d"), shared by the module."""
    before = _snapshot()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.b = c.add_node(num_cpus=1, resources={"b": 2})
    c.d = c.add_node(num_cpus=1, resources={"d": 2})
    c.connect()
    yield c
    c.shutdown()
    assert_no_leaks(before)


@ray.remote
def node_of(*_args):
    return ray.get_runtime_context().get_node_id()


@ray.remote
def checksum(array):
    return float(np.asarray(array, dtype=np.float64).sum()), array.dtype.str, array.shape


@ray.remote
def make_array(n):
    return np.arange(n, dtype=np.int64)


def on(node, **options):
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=False), **options}


def test_nodes_and_resources_add_up(cluster):
    nodes = {n["NodeID"]: n for n in ray.nodes()}
    assert set(nodes) == {cluster.head_node.node_id, cluster.b.node_id, cluster.d.node_id}
    assert all(n["Alive"] for n in nodes.values())
    assert nodes[cluster.b.node_id]["Resources"]["b"] == 2
    total = ray.cluster_resources()
    assert total["CPU"] == 3 and total["b"] == 2 and total["d"] == 2


def test_custom_resources_pin_tasks_to_nodes(cluster):
    assert ray.get(node_of.options(resources={"b": 1}).remote()) == cluster.b.node_id
    assert ray.get(node_of.options(resources={"d": 1}).remote()) == cluster.d.node_id


def test_spread_takes_turns_over_the_nodes(cluster):
    # Each node with room gets a turn (a busy one is skipped, as in Ray).
    placed = ray.get([node_of.options(scheduling_strategy="SPREAD").remote() for _ in range(3)])
    assert set(placed) == {n.node_id for n in cluster.list_all_nodes()}


def test_node_affinity(cluster):
    assert ray.get(node_of.options(**on(cluster.d)).remote()) == cluster.d.node_id
    unknown = NodeAffinitySchedulingStrategy("ff" * 14, soft=False)
    with pytest.raises(TaskUnschedulableError, match="unknown"):
        ray.get(node_of.options(scheduling_strategy=unknown).remote())
    soft = NodeAffinitySchedulingStrategy("ff" * 14, soft=True)
    assert ray.get(node_of.options(scheduling_strategy=soft).remote()) in {n.node_id for n in cluster.list_all_nodes()}


def test_objects_cross_nodes_both_ways(cluster):
    array = np.random.default_rng(0).random(3_000_000)  # 24 MB: several chunks
    ref = ray.put(array)
    total, dtype, shape = ray.get(checksum.options(**on(cluster.b)).remote(ref))
    assert total == float(array.sum()) and dtype == "<f8" and shape == array.shape

    made_on_b = make_array.options(**on(cluster.b)).remote(2_000_000)
    # From b to d directly, and from b to the driver on the head.
    assert ray.get(checksum.options(**on(cluster.d)).remote(made_on_b))[0] == float(np.arange(2_000_000).sum())
    value = ray.get(made_on_b)
    assert np.array_equal(value, np.arange(2_000_000)) and not value.flags.writeable


def test_refs_nested_in_values_resolve_on_other_nodes(cluster):
    inner = make_array.options(**on(cluster.b)).remote(300_000)

    @ray.remote
    def unwrap(box):
        return float(ray.get(box[0]).sum())

    assert ray.get(unwrap.options(**on(cluster.d)).remote([inner])) == float(np.arange(300_000).sum())


def test_actors_on_members_and_named_cluster_wide(cluster):
    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n, ray.get_runtime_context().get_node_id()

    counter = Counter.options(name="shared-counter", resources={"d": 1}).remote()
    assert ray.get(counter.incr.remote()) == (1, cluster.d.node_id)

    @ray.remote
    def call_by_name():
        return ray.get(ray.get_actor("shared-counter").incr.remote())[0]

    @ray.remote
    def call_by_handle(handle):
        return ray.get(handle.incr.remote())[0]

    assert ray.get(call_by_name.options(**on(cluster.b)).remote()) == 2
    assert ray.get(call_by_handle.options(**on(cluster.b)).remote(counter)) == 3
    ray.kill(counter)


def test_a_driver_on_a_member_node(cluster):
    """A driver that connects through a member node: its objects live on that member."""
    import subprocess
    import sys
    import textwrap

    script = f"""
        import numpy as np, actorkit as ray
        from actorkit.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        ray.init(address="{cluster.b.address}")

        @ray.remote
        def total(a):
            return float(a.sum()), ray.get_runtime_context().get_node_id()

        array = np.ones(1_000_000)
        on_d = NodeAffinitySchedulingStrategy("{cluster.d.node_id}", soft=False)
        print(ray.get(total.options(scheduling_strategy=on_d).remote(ray.put(array))))
        print(float(ray.get(ray.put(array)).sum()))
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == [f"(1000000.0, '{cluster.d.node_id}')", "1000000.0"]



def test_placement_group_strategies_across_nodes(cluster):
    from actorkit.util.placement_group import placement_group, placement_group_table, remove_placement_group
    from actorkit.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    spread = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    ray.get(spread.ready(), timeout=30)
    nodes = placement_group_table(spread)["bundles_to_node_id"]
    assert len(set(nodes.values())) == 3
    ran_on = ray.get([
        node_of.options(scheduling_strategy=PlacementGroupSchedulingStrategy(spread, i)).remote() for i in range(3)
    ], timeout=30)
    assert ran_on == [nodes[i] for i in range(3)]
    remove_placement_group(spread)
    packed = placement_group([{"CPU": 1}] * 2, strategy="STRICT_PACK")  # no node has 2 CPUs
    assert not packed.wait(0.3)
    remove_placement_group(packed)
