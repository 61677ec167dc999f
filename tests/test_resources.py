"""Resources and scheduling: demands, concurrency limits, GPU ids, blocked-get release."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest

import actorkit as ray
from actorkit import exceptions

WORK_S = 0.05  # how long each task works, so that tasks overlap when allowed


@ray.remote(num_cpus=0)
class Tracker:
    """Counts tasks running at once, per key; remembers the peak and any clash."""

    def __init__(self):
        self.running: dict = {}
        self.peak: dict = {}
        self.clashes = 0
        self.order: list = []

    def enter(self, key, exclusive=False):
        n = self.running.get(key, 0) + 1
        if exclusive and n > 1:
            self.clashes += 1
        self.running[key] = n
        self.peak[key] = max(self.peak.get(key, 0), n)

    def leave(self, key):
        self.running[key] -= 1

    def record(self, item):
        self.order.append(item)

    def report(self):
        return self.peak, self.clashes, self.order


@ray.remote(num_cpus=0)
class Gate:
    """A gate tasks wait at until the test opens it."""

    def __init__(self):
        self.opened = asyncio.Event()
        self.arrived = 0
        self.all_arrived = asyncio.Event()
        self.expected = 1 << 30

    async def wait(self):
        self.arrived += 1
        if self.arrived >= self.expected:
            self.all_arrived.set()
        await self.opened.wait()

    async def wait_for_arrivals(self, n):
        self.expected = n
        if self.arrived >= n:
            self.all_arrived.set()
        await self.all_arrived.wait()

    def open(self):
        self.opened.set()


def work(tracker, key, exclusive=False):
    # No get(): a task blocked in get() lends its CPU, which would let more run.
    # Calls from one task reach the tracker in order, and its "leave" before the
    # node hears the task is done, so the counts are exact.
    tracker.enter.remote(key, exclusive)
    time.sleep(WORK_S)
    tracker.leave.remote(key)


@ray.remote(resources={"custom": 1})
def custom_task(tracker):
    work(tracker, "custom")


@ray.remote(num_cpus=1)
def cpu_task(tracker):
    work(tracker, "cpu")


@ray.remote(num_gpus=1)
def gpu_task(tracker):
    (gpu,) = ray.get_gpu_ids()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == str(gpu)
    work(tracker, f"gpu{gpu}", exclusive=True)
    return gpu


@ray.remote(num_gpus=0.5)
def half_gpu_task(gate):
    ray.get(gate.wait.remote())
    return ray.get_gpu_ids()


@ray.remote(resources={"custom": 1})
def ordered_task(tracker, i):
    ray.get(tracker.record.remote(i))


def _start_resources_node():
    ray.init(num_cpus=4, num_gpus=2, resources={"custom": 2, "accelerator_type:V100": 1})


@pytest.fixture(scope="module")
def _resources_node():
    if ray.is_initialized():
        ray.shutdown()
    _start_resources_node()
    yield
    ray.shutdown()


@pytest.fixture
def resources_node(_resources_node):
    """A node with GPUs and custom resources, restarted after a shutdown_only test."""
    if not ray.is_initialized() or ray.cluster_resources().get("custom") != 2:
        ray.shutdown()
        _start_resources_node()
    yield


def test_totals_are_what_init_declared(resources_node):
    total = ray.cluster_resources()
    assert total["CPU"] == 4 and total["GPU"] == 2 and total["custom"] == 2
    assert total["memory"] > 0


def test_custom_resource_caps_concurrency(resources_node):
    tracker = Tracker.remote()
    ray.get([custom_task.remote(tracker) for _ in range(8)])
    peak, _, _ = ray.get(tracker.report.remote())
    assert peak["custom"] == 2


def test_cpus_cap_concurrency(resources_node):
    tracker = Tracker.remote()
    ray.get([cpu_task.remote(tracker) for _ in range(10)])
    peak, _, _ = ray.get(tracker.report.remote())
    assert 2 <= peak["cpu"] <= 4  # parallel, never beyond the CPUs (workers start on demand)


def test_whole_gpus_are_never_shared(resources_node):
    tracker = Tracker.remote()
    gpus = ray.get([gpu_task.remote(tracker) for _ in range(8)])
    peak, clashes, _ = ray.get(tracker.report.remote())
    assert clashes == 0
    assert set(gpus) <= {0, 1}
    assert all(n == 1 for key, n in peak.items() if key.startswith("gpu"))


def test_half_gpus_share_one_gpu(resources_node):
    gate = Gate.remote()
    refs = [half_gpu_task.remote(gate) for _ in range(2)]
    ray.get(gate.wait_for_arrivals.remote(2))  # both run at once: 0.5 + 0.5 on one GPU
    ray.get(gate.open.remote())
    ids = ray.get(refs)
    assert ids[0] == ids[1] and len(ids[0]) == 1


def test_queued_tasks_start_in_submission_order(resources_node):
    tracker = Tracker.remote()
    ray.get([ordered_task.options(resources={"custom": 2}).remote(tracker, i) for i in range(6)])
    _, _, order = ray.get(tracker.report.remote())
    assert order == list(range(6))


@ray.remote(resources={"custom": 1})
def hold_custom(gate):
    ray.get(gate.wait.remote())
    return ray.get_runtime_context().get_assigned_resources()


def test_available_resources_reflect_running_tasks(resources_node):
    gate = Gate.remote()
    ref = hold_custom.remote(gate)
    ray.get(gate.wait_for_arrivals.remote(1))
    assert ray.available_resources().get("custom", 0) == 1
    ray.get(gate.open.remote())
    assigned = ray.get(ref)
    assert assigned["custom"] == 1 and assigned["CPU"] == 1
    assert ray.available_resources()["custom"] == 2


@ray.remote(num_cpus=1, num_gpus=1)
def blocked_parent(depth):
    """Gets children while holding a GPU: its CPU is lent meanwhile, its GPU is not."""
    if depth == 0:
        return ray.get_gpu_ids()
    return ray.get(leaf.remote()) + [ray.get_gpu_ids()[0]]


@ray.remote(num_cpus=1)
def leaf():
    return [ray.available_resources().get("GPU", 0)]


def test_blocked_get_lends_cpus_but_keeps_gpus(shutdown_only):
    ray.init(num_cpus=1, num_gpus=1)
    # One CPU: the child can only run because the parent lends its CPU while blocked.
    gpu_left, parent_gpu = ray.get(blocked_parent.remote(1), timeout=30)
    assert gpu_left == 0  # the GPU stayed with the blocked parent
    assert parent_gpu == 0


@ray.remote(num_cpus=1)
def fan_out(n):
    return sum(ray.get([fan_in.remote() for _ in range(n)]))


@ray.remote(num_cpus=1)
def fan_in():
    return sum(ray.get([leaf_value.remote() for _ in range(2)]))


@ray.remote(num_cpus=1)
def leaf_value():
    return 1


def test_more_nested_blocking_tasks_than_cpus_finish(shutdown_only):
    ray.init(num_cpus=2)
    assert ray.get([fan_out.remote(3) for _ in range(3)], timeout=60) == [6, 6, 6]


def test_accelerator_type_pins_to_nodes_that_have_it(resources_node):
    @ray.remote(accelerator_type="V100")
    def on_v100():
        return ray.get_runtime_context().get_assigned_resources()

    assert ray.get(on_v100.remote())["accelerator_type:V100"] == 0.001
    never = on_v100.options(accelerator_type="TPU").remote()
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(never, timeout=0.3)
    ray.cancel(never)


def test_unsatisfiable_demand_warns_and_times_out(tmp_path):
    script = textwrap.dedent(
        """
        import actorkit as ray
        ray.init(num_cpus=1)

        @ray.remote(num_gpus=1)
        def needs_gpu():
            return 1

        ref = needs_gpu.remote()
        try:
            ray.get(ref, timeout=0.5)
        except ray.exceptions.GetTimeoutError:
            print("timed out")
        ray.shutdown()
        """
    )
    root = os.path.dirname(os.path.dirname(ray.__file__))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "timed out" in proc.stdout
    assert "needs_gpu" in proc.stderr and "GPU" in proc.stderr


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_cpus": -1}, "num_cpus"),
        ({"num_cpus": "two"}, "num_cpus"),
        ({"num_gpus": 1.5}, "num_gpus"),
        ({"resources": {"CPU": 1}}, "num_cpus"),
        ({"resources": {"custom": -2}}, "custom"),
        ({"memory": -5}, "memory"),
        ({"accelerator_type": 3}, "accelerator_type"),
        ({"max_calls": -1}, "max_calls"),
        ({"runtime_env": {"pip": ["requests"]}}, "pip"),
        ({"runtime_env": {"env_vars": {"A": 1}}}, "env_vars"),
    ],
)
def test_invalid_demands_are_refused_at_decoration(options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ray.remote(**options)(len)
    with pytest.raises((ValueError, TypeError), match=message):
        ray.remote(len).options(**options)


@ray.remote(max_calls=2)
def worker_pid():
    return os.getpid()


def test_max_calls_recycles_the_worker(resources_node):
    pids = [ray.get(worker_pid.remote()) for _ in range(6)]
    for pid in set(pids):
        assert pids.count(pid) <= 2


@ray.remote(runtime_env={"env_vars": {"ACTORKIT_TEST_VAR": "set"}})
def read_env():
    return os.environ.get("ACTORKIT_TEST_VAR")


@ray.remote
def read_env_plain():
    return os.environ.get("ACTORKIT_TEST_VAR")


def test_runtime_env_vars_apply_to_their_task_only(resources_node):
    assert ray.get(read_env.remote()) == "set"
    assert ray.get([read_env_plain.remote() for _ in range(4)]) == [None] * 4


@ray.remote
def context():
    ctx = ray.get_runtime_context()
    return ctx.get_job_id(), ctx.get_task_id(), ctx.get_node_id(), ctx.get_actor_id()


def test_runtime_context_names_job_task_and_node(resources_node):
    driver = ray.get_runtime_context()
    job, task, node, actor = ray.get(context.remote())
    assert job == driver.get_job_id()
    assert task and driver.get_task_id() is None
    assert node == driver.get_node_id()
    assert actor is None


@ray.remote(num_cpus=1)
def cpu_pid():
    return os.getpid()


@ray.remote(num_cpus=1, num_gpus=1)
def gpu_pid_and_devices():
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_gpu_tasks_never_run_in_a_worker_that_ran_cpu_work(shutdown_only):
    ray.init(num_cpus=2, num_gpus=1)
    cpu_pids = set(ray.get([cpu_pid.remote() for _ in range(6)], timeout=30))
    assert ray.available_resources()["CPU"] == 2  # gives back the workers lent to this driver: idle now
    gpu_pid, devices = ray.get(gpu_pid_and_devices.remote(), timeout=30)
    assert gpu_pid not in cpu_pids  # a fresh worker, where CUDA has not started yet
    assert devices == "0"
    again, _ = ray.get(gpu_pid_and_devices.remote(), timeout=30)
    assert again not in cpu_pids  # reused for GPU work only
