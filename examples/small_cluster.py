"""A small cluster on one machine: placing work on nodes, moving objects, losing a node.

On real machines the nodes come from ``actorkit start --head`` and
``actorkit start --address HEAD:PORT``; here ``cluster_utils.Cluster`` starts
three node processes on this machine, which behave the same way.
"""

import numpy as np

import actorkit as ray
from actorkit.cluster_utils import Cluster
from actorkit.util.scheduling_strategies import NodeAffinitySchedulingStrategy

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
lab_pc = cluster.add_node(num_cpus=1, resources={"lab_pc": 1})
spare = cluster.add_node(num_cpus=1)
ray.init(address=cluster.address)
print("nodes:", len([n for n in ray.nodes() if n["Alive"]]), "CPUs:", ray.cluster_resources()["CPU"])


@ray.remote
def where():
    return ray.get_runtime_context().get_node_id()


@ray.remote
def column_means(matrix):
    return matrix.mean(axis=0)


# A custom resource pins a task to the node that has it.
assert ray.get(where.options(resources={"lab_pc": 1}).remote()) == lab_pc.node_id
# So does a node-affinity strategy; SPREAD takes turns over the nodes.
on_spare = NodeAffinitySchedulingStrategy(node_id=spare.node_id, soft=False)
assert ray.get(where.options(scheduling_strategy=on_spare).remote()) == spare.node_id
print("SPREAD used", len(set(ray.get([where.options(scheduling_strategy="SPREAD").remote() for _ in range(6)]))), "nodes")

# A 40 MB array put here is pulled by the node that needs it, in chunks.
matrix = np.random.default_rng(0).random((5_000, 1_000))
means = ray.get(column_means.options(resources={"lab_pc": 1}).remote(ray.put(matrix)))
assert np.allclose(means, matrix.mean(axis=0))
print("column means computed on the lab PC:", means[:3].round(3))

# A task retried elsewhere when its node is lost.
@ray.remote(max_retries=2)
def resilient():
    return "done"


cluster.remove_node(lab_pc)
print("after losing a node:", ray.get(resilient.remote()), "| alive nodes:", len([n for n in ray.nodes() if n["Alive"]]))
ray.shutdown()
cluster.shutdown()
