"""A head and a member in separate network namespaces, joined over a virtual link.

Closest to two machines that one machine can get: the nodes reach each other
only through the link's addresses, and cutting the link (not killing a
process) is how a node gets cut off.  Needs root and ``ip``; skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

import actorkit

ROOT = os.path.dirname(os.path.dirname(actorkit.__file__))
HEAD_IP, MEMBER_IP = "10.231.0.1", "10.231.0.2"


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def namespaces():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and the `ip` command")
    tag = f"{os.getpid() % 100000}"
    head, member = f"akh{tag}", f"akm{tag}"
    steps = [
        ("netns", "add", head),
        ("netns", "add", member),
        ("link", "add", f"vh{tag}", "type", "veth", "peer", "name", f"vm{tag}"),
        ("link", "set", f"vh{tag}", "netns", head),
        ("link", "set", f"vm{tag}", "netns", member),
        ("-n", head, "addr", "add", f"{HEAD_IP}/24", "dev", f"vh{tag}"),
        ("-n", member, "addr", "add", f"{MEMBER_IP}/24", "dev", f"vm{tag}"),
        ("-n", head, "link", "set", f"vh{tag}", "up"),
        ("-n", member, "link", "set", f"vm{tag}", "up"),
        ("-n", head, "link", "set", "lo", "up"),
        ("-n", member, "link", "set", "lo", "up"),
    ]
    try:
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot set up network namespaces here: ip {' '.join(step)}: {done.stderr.strip()}")
        yield head, member, f"vm{tag}"
    finally:
        _ip("netns", "del", head)
        _ip("netns", "del", member)


def _start(namespace: str, env: dict[str, str], *args: str) -> tuple[subprocess.Popen, str]:
    """Start ``actorkit start ... --block`` in ``namespace``; return it and what it printed until ready."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-m", "actorkit", "start", *args, "--block"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    printed = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "ready":
            return proc, "\n".join(printed)
        printed.append(line.rstrip())
    proc.wait()
    raise AssertionError(f"node failed to start: {printed} {proc.stderr.read() if proc.stderr else ''}")


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def test_nodes_in_separate_network_namespaces(namespaces):
    head_ns, member_ns, member_link = namespaces
    key = os.urandom(32).hex()
    base = dict(os.environ, ACTORKIT_AUTHKEY=key, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    head_dir, member_dir = tempfile.mkdtemp(prefix="akh", dir="/tmp"), tempfile.mkdtemp(prefix="akm", dir="/tmp")
    head, printed = _start(
        head_ns, dict(base, TMPDIR=head_dir), "--head", "--host", HEAD_IP, "--port", "7601", "--num-cpus", "1"
    )
    member = None
    try:
        assert f"listening on {HEAD_IP}:7601" in printed
        member, printed = _start(
            member_ns,
            dict(base, TMPDIR=member_dir),
            "--address", f"{HEAD_IP}:7601", "--host", MEMBER_IP, "--num-cpus", "1", "--resources", '{"far": 1}',
        )
        assert "joined the head" in printed
        script = f"""
            import subprocess, numpy as np, actorkit as ray
            from actorkit.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            ray.init(address="{HEAD_IP}:7601")
            far = next(n["NodeID"] for n in ray.nodes() if n["Resources"].get("far"))

            @ray.remote
            def double(a):
                return a * 2, ray.get_runtime_context().get_node_id()

            array = np.random.default_rng(1).random(2_500_000)  # 20 MB, both ways over the link
            doubled, where = ray.get(double.options(resources={{"far": 1}}).remote(array))
            assert where == far and np.array_equal(doubled, array * 2)

            started, never = ray.util.SignalActor.remote(), ray.util.SignalActor.remote()

            @ray.remote(max_retries=1)
            def long_task(started, never):
                if ray.get_runtime_context().get_node_id() == far:
                    started.send.remote()
                    ray.get(never.wait.remote())
                return ray.get_runtime_context().get_node_id()

            soft = NodeAffinitySchedulingStrategy(far, soft=True)
            task = long_task.options(scheduling_strategy=soft).remote(started, never)
            ray.get(started.wait.remote())
            subprocess.run(["ip", "-n", "{member_ns}", "link", "set", "{member_link}", "down"], check=True)
            assert ray.get(task, timeout=30) != far  # retried on the head once the member was cut off
            assert not next(n for n in ray.nodes() if n["NodeID"] == far)["Alive"]
            print("cluster ok")
        """
        done = subprocess.run(
            ["ip", "netns", "exec", head_ns, sys.executable, "-c", textwrap.dedent(script)],
            env=dict(base, TMPDIR=head_dir),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "cluster ok" in done.stdout
        # Cut off, the member notices the silence and stops by itself.
        assert member.wait(timeout=30) == 0
    finally:
        head_err = _stop(head)
        if member is not None:
            _stop(member)
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(member_dir, ignore_errors=True)
    assert "beyond this machine" in head_err  # it said it listens past loopback
