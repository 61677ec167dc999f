"""The state API: tasks, actors, objects, workers and nodes as the node sees them."""

from __future__ import annotations

import pytest

import actorkit as ray
from actorkit.util import SignalActor
from actorkit.util.state import (
    list_actors,
    list_nodes,
    list_objects,
    list_tasks,
    list_workers,
    summarize_actors,
    summarize_tasks,
)


# SPREAD: the node places it (a plain task may go straight to a leased worker,
# which the node does not see).
@ray.remote(scheduling_strategy="SPREAD")
def held_at(started, release):
    ray.get(started.send.remote())
    return ray.get(release.wait.remote())


@ray.remote
def state_probe(x):
    return x


@ray.remote
class Probe:
    def ping(self):
        return "pong"


def test_running_finished_and_summarized_tasks(ray_start_shared):
    started, release = SignalActor.remote(), SignalActor.remote()
    ray.get([state_probe.remote(i) for i in range(3)])
    waiting = held_at.remote(started, release)
    ray.get(started.wait.remote())
    running = list_tasks(filters=[("name", "=", "held_at"), ("state", "=", "RUNNING")])
    assert len(running) == 1 and running[0]["worker_pid"] and running[0]["type"] == "NORMAL_TASK"
    ray.get(release.send.remote())
    ray.get(waiting)
    finished = list_tasks(filters=[("name", "=", "held_at")], limit=None)
    assert [t["state"] for t in finished][-1] == "FINISHED"
    summary = summarize_tasks()["cluster"]["summary"]
    assert summary["held_at"]["state_counts"].get("FINISHED", 0) >= 1
    ray.kill(started)
    ray.kill(release)


def test_actors_workers_objects_and_nodes(ray_start_shared):
    probe = Probe.options(name="state-probe").remote()
    assert ray.get(probe.ping.remote()) == "pong"
    mine = list_actors(filters=[("name", "=", "state-probe")])
    assert len(mine) == 1 and mine[0]["state"] == "ALIVE" and mine[0]["class_name"] == "Probe"
    assert mine[0]["pid"] in {w["pid"] for w in list_workers(filters=[("worker_type", "=", "ACTOR")], limit=None)}
    assert summarize_actors()["cluster"]["summary"]["Probe"]["state_counts"]["ALIVE"] >= 1
    ref = ray.put(b"x" * 300_000)
    objects = list_objects(filters=[("object_id", "=", ref.hex())])
    assert objects and objects[0]["object_size"] >= 300_000 and objects[0]["reference_count"] >= 1
    nodes = list_nodes()
    assert len(nodes) == 1 and nodes[0]["state"] == "ALIVE" and nodes[0]["resources_total"]["CPU"] == 4
    ray.kill(probe)
    dead = list_actors(filters=[("name", "=", "state-probe")])
    assert dead == [] or dead[0]["state"] == "DEAD"


def test_bad_filters_are_clear_errors(ray_start_shared):
    with pytest.raises(ValueError, match="'=' or '!='"):
        list_tasks(filters=[("state", ">", "RUNNING")])
    with pytest.raises(ValueError, match="fields"):
        list_nodes(filters=[("colour", "=", "blue")])


def test_timeline_writes_a_chrome_trace(ray_start_shared, tmp_path):
    import json

    ray.get([state_probe.options(scheduling_strategy="SPREAD").remote(i) for i in range(4)])
    path = tmp_path / "trace.json"
    assert ray.timeline(str(path)) is None
    events = json.loads(path.read_text())
    probes = [e for e in events if e["name"] == "state_probe"]
    assert len(probes) >= 4
    assert all(e["ph"] == "X" and e["dur"] >= 0 and e["tid"].startswith("worker ") for e in probes)
    assert ray.timeline() == [e for e in ray.timeline()] and isinstance(ray.timeline(), list)
