"""Ray's classic DAG API: ``bind``, ``InputNode``, ``MultiOutputNode``, ``execute``."""

from __future__ import annotations

import pytest

import actorkit as ray
from actorkit.dag import InputNode, MultiOutputNode


@ray.remote
def add(a, b):
    return a + b


@ray.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def incr(self, by=1):
        self.n += by
        return self.n


def test_function_graph_with_inputs(ray_start_shared):
    with InputNode() as inp:
        dag = add.bind(add.bind(inp[0], 1), inp[1])
    assert ray.get(dag.execute(2, 3)) == 6
    assert ray.get(dag.execute(10, 20)) == 31  # each execute runs anew
    with InputNode() as inp:
        whole = add.bind(inp, inp)
    assert ray.get(whole.execute(4)) == 8
    with InputNode() as inp:
        by_name = add.bind(inp.x, inp["y"])
    assert ray.get(by_name.execute(x=1, y=2)) == 3


def test_actor_nodes_and_shared_nodes_run_once(ray_start_shared):
    counter = Counter.bind(10)
    first = counter.incr.bind(1)
    dag = MultiOutputNode([first, counter.incr.bind(first)])
    refs = dag.execute()
    assert ray.get(refs) == [11, 22]  # one actor; `first` ran once


def test_live_actor_method_bind(ray_start_shared):
    live = Counter.remote(0)
    with InputNode() as inp:
        dag = live.incr.bind(inp)
    assert ray.get(dag.execute(5)) == 5
    assert ray.get(dag.execute(5)) == 10
    ray.kill(live)


def test_whole_input_with_several_arguments_is_a_clear_error(ray_start_shared):
    with InputNode() as inp:
        dag = add.bind(inp, 1)
    with pytest.raises(ValueError, match="inp\\[0\\]"):
        dag.execute(1, 2)
