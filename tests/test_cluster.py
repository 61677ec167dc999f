"""The command line and joining a running node: start --head, init(address=...), status, stop."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

import actorkit

ROOT = os.path.dirname(os.path.dirname(actorkit.__file__))


@pytest.fixture
def cluster_dir():
    # Short: unix socket paths are limited to about 100 bytes.
    path = tempfile.mkdtemp(prefix="ak", dir="/tmp")
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cluster_env(cluster_dir):
    """An environment whose actorkit files live in a directory of their own (no clash with a real cluster)."""
    env = dict(os.environ, TMPDIR=str(cluster_dir), PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    yield env
    subprocess.run([sys.executable, "-m", "actorkit", "stop"], env=env, capture_output=True, timeout=30)


def cli(env, *args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "actorkit", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def driver(env, source, timeout=60):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_head_node_serves_several_drivers_and_detached_actors(cluster_env, cluster_dir):
    started = cli(cluster_env, "start", "--head", "--num-cpus", "2", "--resources", '{"node_a": 1}')
    assert started.returncode == 0, started.stderr
    assert "listening" in started.stdout and "address='auto'" in started.stdout
    key_file = cluster_dir / f"actorkit-{os.getuid()}" / "cluster.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600" and len(key_file.read_bytes()) == 32

    first = driver(
        cluster_env,
        """
        import actorkit as ray
        ray.init(address="auto", namespace="lab")

        @ray.remote
        class Keeper:
            def __init__(self):
                self.n = 0
            def incr(self):
                self.n += 1
                return self.n

        keeper = Keeper.options(name="keeper", lifetime="detached").remote()
        print("first", ray.get(keeper.incr.remote()), ray.cluster_resources()["node_a"])
        """,
    )
    assert first.returncode == 0, first.stderr
    assert "first 1 1" in first.stdout

    second = driver(
        cluster_env,
        """
        import actorkit as ray
        ray.init(address="auto", namespace="lab")
        print("second", ray.get(ray.get_actor("keeper").incr.remote()))
        """,
    )
    assert second.returncode == 0, second.stderr
    assert "second 2" in second.stdout  # the detached actor outlived the first driver

    status = cli(cluster_env, "status")
    assert status.returncode == 0, status.stderr
    assert "CPU" in status.stdout and "node_a" in status.stdout

    stopped = cli(cluster_env, "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    again = driver(cluster_env, "import actorkit as ray\nray.init(address='auto')\n")
    assert again.returncode != 0 and "actorkit start --head" in again.stderr


def test_tcp_and_a_wrong_key(cluster_env):
    port = 20000 + os.getpid() % 20000
    started = cli(cluster_env, "start", "--head", "--num-cpus", "1", "--port", str(port))
    assert started.returncode == 0, started.stderr
    good = driver(
        cluster_env,
        f"""
        import actorkit as ray
        ray.init(address="127.0.0.1:{port}")
        print("sum", ray.get(ray.remote(sum).remote([1, 2, 3])))
        """,
    )
    assert good.returncode == 0, good.stderr
    assert "sum 6" in good.stdout
    bad = driver(
        dict(cluster_env, ACTORKIT_AUTHKEY="00" * 32),
        f"""
        import actorkit as ray
        ray.init(address="127.0.0.1:{port}")
        """,
    )
    assert bad.returncode != 0
    assert "refused this cluster key" in bad.stderr


def test_address_needs_no_resources_and_a_valid_form():
    with pytest.raises(ValueError, match="resources"):
        actorkit.init(address="auto", num_cpus=2)
    with pytest.raises(ValueError, match="HOST:PORT"):
        actorkit.init(address="nonsense")


def test_a_driver_that_leaves_a_task_on_its_lent_worker(cluster_env):
    """The node cannot see that task: the worker keeps its CPU until it is done."""
    started = cli(cluster_env, "start", "--head", "--num-cpus", "2")
    assert started.returncode == 0, started.stderr
    first = driver(
        cluster_env,
        """
        import os, time
        import actorkit as ray
        from actorkit import runtime

        ray.init(address="auto")

        @ray.remote
        def sleeper(seconds):
            time.sleep(seconds)
            return os.getpid()

        ray.get(sleeper.remote(0))
        client = runtime.current_client()
        for _ in range(3):
            before = client.stats["direct"]
            orphan = ray.get(sleeper.remote(0))
            if client.stats["direct"] > before:
                break
        sleeper.remote(60)
        print("direct", client.stats["direct"], "orphan", orphan)
        """,
    )
    assert first.returncode == 0, first.stderr
    assert "direct 0" not in first.stdout, first.stdout
    orphan = first.stdout.split()[-1]
    second = driver(
        cluster_env,
        """
        import os
        import actorkit as ray

        ray.init(address="auto")

        @ray.remote
        def pid():
            return os.getpid()

        print("available", ray.available_resources().get("CPU"))
        print("pids", *sorted({str(p) for p in ray.get([pid.remote() for _ in range(4)])}))
        """,
    )
    assert second.returncode == 0, second.stderr
    assert "available 1" in second.stdout, second.stdout
    assert orphan not in second.stdout.split("pids")[1], second.stdout


def test_a_driver_that_shuts_down_gives_back_its_idle_workers(cluster_env):
    """The head keeps them for the next driver instead of retiring them."""
    started = cli(cluster_env, "start", "--head", "--num-cpus", "2")
    assert started.returncode == 0, started.stderr
    script = """
        import os
        import actorkit as ray
        from actorkit import runtime

        ray.init(address="auto")
        client = runtime.current_client()
        print("retired", client.request("stats")["workers_retired"])

        @ray.remote
        def pid():
            return os.getpid()

        for _ in range(5):
            ray.get([pid.remote() for _ in range(20)])
        print("direct", client.stats["direct"])
        ray.shutdown()
        """
    first = driver(cluster_env, script)
    assert first.returncode == 0, first.stderr
    assert "direct 0" not in first.stdout, first.stdout
    second = driver(cluster_env, script)
    assert second.returncode == 0, second.stderr
    assert "retired 0" in second.stdout, (first.stdout, second.stdout)
