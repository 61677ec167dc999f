"""Nodes that join late, die, fall silent, or hold the wrong key.

Each test starts a cluster of its own (``actorkit.cluster_utils.Cluster``):
these tests kill nodes.
"""

from __future__ import annotations

import os
import signal

import pytest

import actorkit as ray
from actorkit import context
from actorkit.cluster_utils import Cluster
from actorkit.exceptions import ActorDiedError, ObjectLostError
from actorkit.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@pytest.fixture
def fresh_cluster():
    """A cluster of its own, for tests that kill nodes."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    yield c
    c.shutdown()


@ray.remote
def node_of(*_args):
    return ray.get_runtime_context().get_node_id()


@ray.remote
def make_array(n):
    import numpy as np

    return np.arange(n, dtype=np.int64)


def test_a_task_waits_for_a_node_that_joins_later(fresh_cluster):
    fresh_cluster.connect()
    ref = node_of.options(resources={"late": 1}).remote()
    assert ray.wait([ref], timeout=0.2)[0] == []
    late = fresh_cluster.add_node(num_cpus=1, resources={"late": 1})
    assert ray.get(ref, timeout=30) == late.node_id


def test_killed_node_retries_tasks_restarts_actors_loses_objects(fresh_cluster):
    doomed = fresh_cluster.add_node(num_cpus=1, resources={"doomed": 1})
    spare = fresh_cluster.add_node(num_cpus=1)
    fresh_cluster.connect()

    lost = make_array.options(resources={"doomed": 1}).remote(1_000_000)
    ray.wait([lost])

    @ray.remote
    class Survivor:
        def where(self):
            return ray.get_runtime_context().get_node_id()

    survivor = Survivor.options(max_restarts=1, scheduling_strategy=NodeAffinitySchedulingStrategy(doomed.node_id, soft=True)).remote()
    assert ray.get(survivor.where.remote()) == doomed.node_id

    started, never = ray.util.SignalActor.remote(), ray.util.SignalActor.remote()

    doomed_id = doomed.node_id

    @ray.remote(max_retries=1)
    def long_task(started, never):
        if ray.get_runtime_context().get_node_id() == doomed_id:
            started.send.remote()
            ray.get(never.wait.remote())  # until the node dies
        return ray.get_runtime_context().get_node_id()

    soft = NodeAffinitySchedulingStrategy(doomed.node_id, soft=True)
    task = long_task.options(scheduling_strategy=soft).remote(started, never)
    ray.get(started.wait.remote())

    fresh_cluster.remove_node(doomed, allow_graceful=False)

    assert ray.get(task, timeout=30) != doomed.node_id  # retried elsewhere
    assert ray.get(survivor.where.remote(), timeout=30) in {spare.node_id, fresh_cluster.head_node.node_id}
    with pytest.raises(ObjectLostError):
        ray.get(lost, timeout=30)
    dead = [n for n in ray.nodes() if n["NodeID"] == doomed.node_id]
    assert dead and not dead[0]["Alive"]
    assert ray.cluster_resources().get("doomed", 0) == 0


def test_an_object_lost_with_its_node_is_rebuilt_by_its_task(fresh_cluster):
    doomed = fresh_cluster.add_node(num_cpus=1)
    fresh_cluster.add_node(num_cpus=1)
    fresh_cluster.connect()
    there = NodeAffinitySchedulingStrategy(doomed.node_id, soft=True)

    @ray.remote(max_retries=1)
    def made_where(n):
        import numpy as np

        return ray.get_runtime_context().get_node_id(), np.arange(n, dtype=np.int64)

    @ray.remote(max_retries=0)
    def not_retried(n):
        import numpy as np

        return np.arange(n, dtype=np.int64)

    rebuilt = made_where.options(scheduling_strategy=there).remote(1_000_000)  # in the doomed node's memory
    lost = not_retried.options(scheduling_strategy=there).remote(1_000_000)
    ray.wait([rebuilt, lost], num_returns=2)
    fresh_cluster.remove_node(doomed, allow_graceful=False)

    node_id, array = ray.get(rebuilt, timeout=60)
    assert node_id != doomed.node_id and int(array[-1]) == 999_999
    assert context.current_client().request("stats")["tasks_rebuilt"] == 1
    with pytest.raises(ObjectLostError):
        ray.get(lost, timeout=30)  # no retry left: lost, as before


def test_a_silent_node_is_declared_dead(fresh_cluster):
    frozen = fresh_cluster.add_node(num_cpus=1, resources={"frozen": 1})
    fresh_cluster.connect()

    @ray.remote
    class Pinned:
        def ping(self):
            return "pong"

    pinned = Pinned.options(resources={"frozen": 1}).remote()
    assert ray.get(pinned.ping.remote()) == "pong"
    # Stopped, not killed (as if cut off): its connections stay open, only heartbeats stop.
    frozen_pids = [frozen.process.pid, *_children(frozen.process.pid)]
    for pid in frozen_pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(ActorDiedError, match="no heartbeat"):
            ray.get(pinned.ping.remote(), timeout=30)
    finally:
        for pid in frozen_pids:
            os.kill(pid, signal.SIGCONT)
    fresh_cluster.remove_node(frozen, allow_graceful=False)


def test_a_node_with_the_wrong_key_is_refused(fresh_cluster):
    from multiprocessing import AuthenticationError

    from actorkit.member import MemberNode

    host, port = fresh_cluster.address.split(":")
    with pytest.raises(AuthenticationError):
        MemberNode((host, int(port)), b"x" * 32, {"CPU": 1})


def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found
