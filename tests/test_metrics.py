"""Application metrics (``actorkit.util.metrics``), recorded anywhere, read through the state API."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

import actorkit as ray
from actorkit.util.metrics import Counter, Gauge, Histogram
from actorkit.util.state import list_metrics


def _by_tags(name: str) -> dict[tuple, dict]:
    return {tuple(sorted(row["tags"].items())): row for row in list_metrics(filters=[("name", "=", name)])}


def test_counters_add_up_across_tasks_actors_and_the_driver(ray_start_shared):
    @ray.remote
    def work(n):
        requests = Counter("unit_requests", description="Requests served.", tag_keys=("route",))
        for _ in range(n):
            requests.inc(tags={"route": "/task"})
        return n

    @ray.remote
    class Server:
        def __init__(self):
            self.requests = Counter("unit_requests", tag_keys=("route",)).set_default_tags({"route": "/actor"})

        def serve(self):
            self.requests.inc(2)

    ray.get([work.remote(n) for n in (3, 4, 5)])
    server = Server.remote()
    ray.get([server.serve.remote() for _ in range(3)])
    Counter("unit_requests", tag_keys=("route",)).inc(0.5, tags={"route": "/driver"})
    rows = _by_tags("unit_requests")
    assert {tags: row["value"] for tags, row in rows.items()} == {
        (("route", "/task"),): 12.0,
        (("route", "/actor"),): 6.0,
        (("route", "/driver"),): 0.5,
    }
    assert rows[(("route", "/task"),)]["type"] == "counter"
    assert rows[(("route", "/task"),)]["description"] == "Requests served."


def test_a_gauge_keeps_the_last_value_and_a_histogram_counts_per_bucket(ray_start_shared):
    @ray.remote
    def observe(values):
        latency = Histogram("unit_latency_s", boundaries=[0.1, 1.0])
        for value in values:
            latency.observe(value)
        Gauge("unit_queue").set(len(values))

    ray.get(observe.remote([0.05, 0.5, 0.7]))
    ray.get(observe.remote([5.0]))
    (histogram,) = list_metrics(filters=[("name", "=", "unit_latency_s")])
    assert histogram["buckets"] == {"<=0.1": 1, "<=1": 2, ">1": 1}
    assert histogram["count"] == 4 and histogram["sum"] == pytest.approx(6.25)
    (gauge,) = list_metrics(filters=[("name", "=", "unit_queue")])
    assert gauge["value"] == 1.0 and gauge["type"] == "gauge"


def test_a_metric_pickles_to_another_process(ray_start_shared):
    counter = Counter("unit_shipped", tag_keys=("k",)).set_default_tags({"k": "v"})
    assert pickle.loads(pickle.dumps(counter)).info == counter.info

    @ray.remote
    def bump(metric):
        metric.inc(3)

    ray.get(bump.remote(counter))
    assert _by_tags("unit_shipped")[(("k", "v"),)]["value"] == 3.0


def test_bad_metrics_get_ray_s_errors():
    with pytest.raises(ValueError, match="Empty name"):
        Counter("")
    with pytest.raises(TypeError, match="tuple"):
        Counter("c", tag_keys=["a"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="value must be >0"):
        Counter("c").inc(0)
    with pytest.raises(ValueError, match="boundaries"):
        Histogram("h")
    with pytest.raises(ValueError, match="positive"):
        Histogram("h", boundaries=[0, 1])
    with pytest.raises(ValueError, match="Missing value for tag key"):
        Counter("c", tag_keys=("a",)).inc()
    with pytest.raises(ValueError, match="Unrecognized tag key"):
        Counter("c", tag_keys=("a",)).set_default_tags({"b": "x"})
    with pytest.warns(UserWarning, match="Invalid metric name"):
        Gauge("1bad").set(1)  # discarded, as in Ray
    Gauge("g").set(None)  # a no-op


def test_metrics_in_local_mode_and_in_actorkit_status(shutdown_only, tmp_path):
    ray.init(local_mode=True)
    Counter("unit_local").inc(2)
    assert list_metrics(filters=[("name", "=", "unit_local")])[0]["value"] == 2.0
    ray.shutdown()
    ray.init(num_cpus=1)
    Gauge("unit_status_gauge", tag_keys=("shard",)).set(42, tags={"shard": "a"})
    list_metrics()  # sends this process's records
    status = subprocess.run([sys.executable, "-m", "actorkit", "status"], capture_output=True, text=True, timeout=60)
    assert "unit_status_gauge{shard=a} gauge 42" in status.stdout, status.stdout + status.stderr


def test_init_accepts_ray_s_metrics_export_port_and_says_where_metrics_are(shutdown_only):
    with pytest.warns(UserWarning, match="list_metrics"):
        ray.init(num_cpus=1, _metrics_export_port=8080)
    assert ray.is_initialized()
