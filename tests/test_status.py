"""``actorkit status`` sees the private node of a running init() script, and says so when there is none."""

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

DRIVER = textwrap.dedent(
    """
    import sys
    import actorkit as ray

    ray.init(num_cpus=2)

    @ray.remote
    class Librarian:
        def ping(self):
            return "pong"

    keeper = Librarian.options(name="librarian").remote()
    assert ray.get(keeper.ping.remote()) == "pong"
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    ray.shutdown()
    """
)


@pytest.fixture
def private_env():
    path = tempfile.mkdtemp(prefix="aks", dir="/tmp")  # short: unix socket paths are limited
    env = dict(os.environ, TMPDIR=path, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    yield env
    shutil.rmtree(path, ignore_errors=True)


def status(env):
    return subprocess.run([sys.executable, "-m", "actorkit", "status"], env=env, capture_output=True, text=True, timeout=60)


def test_no_node_is_one_line(private_env):
    proc = status(private_env)
    assert proc.returncode == 1
    assert proc.stdout.strip().count("\n") == 0 and "No actorkit node is running" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_status_lists_a_scripts_private_node_and_its_actors(private_env, tmp_path):
    script = pathlib.Path(tmp_path) / "library.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen(
        [sys.executable, str(script)], env=private_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert driver.stdout.readline().strip() == "ready"
        proc = status(private_env)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert f"private node of pid {driver.pid}" in out and "library.py" in out, out
        assert "Librarian" in out and "name='librarian'" in out and "ALIVE" in out, out
        assert "CPU" in out and " / 2 used" in out, out
        assert "GiB" in out or "MiB" in out, out
    finally:
        driver.stdin.close()
        driver.wait(timeout=60)
    assert driver.returncode == 0
