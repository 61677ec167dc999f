"""Benchmark workloads, baselines and the measuring worker (see run.py and README.md).

This file is what runs inside each measuring subprocess::

    python benchmarks/workloads.py ROW SYSTEM PARAMS_JSON

It measures one row for one system and prints its figures as lines that start
with ``@@BENCH@@`` followed by a JSON object on stdout.  Running it as the main
module matters: the workloads then live in ``__main__``, so Ray's and
actorkit's cloudpickle ship them by value to their workers, and spawn-context
``multiprocessing`` children re-import this file (as ``__mp_main__``) to find
them by name.  Every workload is therefore a module-level function or class,
and heavy imports (numpy, the framework) happen inside the workloads.

Systems:

* ``actorkit`` / ``ray``: one set of workloads written against Ray's core API;
  the module is ``import actorkit as ray`` or ``import ray``, picked by the
  system name.  Ray starts with ``init(num_cpus=2, include_dashboard=False)``.
* ``baseline:NAME``: the standard-library reference of a row (``pool``: spawn
  ``Pool(2)``; ``ppe``: ``ProcessPoolExecutor(2)`` on the spawn context;
  ``manager``: a method call round trip on a spawn-context ``BaseManager``
  proxy serving a trivial object) or an in-process floor (``memcpy``,
  ``floor``, ``serial``: what the machine does with no framework at all).

Framework rows time only the measured section: the framework is imported and
initialised, workers are warmed up, then the section is timed; results are
printed before ``shutdown()`` so that a hanging shutdown loses no figure.
``cold_start`` is the exception: it times import, init, one trivial task and
shutdown together.

Memory figures come from ``TreeMemorySampler``: a thread that sums ``Pss``
(``/proc/PID/smaps_rollup``) over this process and all its descendants every
~20 ms.  Growth is the peak minus the value sampled just before the measured
section (after start-up and warm-up).  Pss splits a shared page between the
processes that map it, so shared memory is counted once.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.managers import BaseManager
from typing import Any

MARKER = "@@BENCH@@"
NUM_CPUS = 2
SHUTDOWN_GRACE_S = 30.0  # a framework's shutdown() longer than this is reported as hung
MB = 2**20

Params = dict[str, Any]
Result = dict[str, Any]


# --------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; ``--quick`` and ``--full`` pick other instances."""

    tasks_sync: int = 1000
    tasks_async: int = 5000
    put_calls: int = 10_000
    get_calls: int = 10_000
    put_gb_mb: int = 100
    put_gb_reps: int = 10
    large_array_mb: int = 200
    large_array_tasks: int = 8
    map_tasks: int = 2000
    nested_parents: int = 100
    nested_children: int = 4
    actor_sync: int = 1000
    actor_async: int = 5000
    refs_in_object: int = 10_000
    put_drop: int = 20_000
    put_drop_mb: int = 1
    imap_items: int = 10_000


DEFAULT_SIZES = Sizes()
QUICK_SIZES = Sizes(
    tasks_sync=200,
    tasks_async=1000,
    put_calls=1000,
    get_calls=1000,
    put_gb_mb=20,
    put_gb_reps=5,
    large_array_mb=40,
    map_tasks=400,
    nested_parents=20,
    actor_sync=200,
    actor_async=1000,
    refs_in_object=2000,
    put_drop=2000,
    imap_items=2000,
)
FULL_SIZES = dataclasses.replace(DEFAULT_SIZES, put_drop=100_000)


# --------------------------------------------------------------------------
# Workload building blocks (module level: picklable by reference and by value)
# --------------------------------------------------------------------------


def noop(*_args: Any) -> None:
    """A task that does nothing."""
    return None


def busy(loops: int) -> int:
    """Pure-Python busy work; ``loops`` is calibrated by the runner to ~1 ms."""
    x = 0
    for i in range(loops):
        x += i
    return x


def array_sum(arr: Any) -> float:
    """Sum of a numpy array (touches every byte of it)."""
    return float(arr.sum())


def nested_parent(module_name: str, child: Any, n: int) -> int:
    """A task that submits ``n`` child tasks and waits for them."""
    ray = importlib.import_module(module_name)
    return len(ray.get([child.remote() for _ in range(n)]))


class Actor:
    """A trivial actor."""

    def m(self, x: Any = None) -> Any:
        return x


class AsyncActor:
    """A trivial async actor (its method is a coroutine)."""

    async def m(self, x: Any = None) -> Any:
        return x


class Trivial:
    """The object a baseline Manager serves."""

    def ping(self, x: Any = None) -> Any:
        return x


class BenchManager(BaseManager):
    """A bare ``multiprocessing`` manager serving ``Trivial``."""


BenchManager.register("Trivial", Trivial)


# --------------------------------------------------------------------------
# Memory of a process tree, read from /proc (psutil is not available)
# --------------------------------------------------------------------------


def _descendants(root: int) -> list[int]:
    """``root`` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def tree_pss_bytes(root: int | None = None) -> int:
    """Pss summed over ``root`` (default: this process) and its descendants."""
    return sum(_pss_bytes(pid) for pid in _descendants(os.getpid() if root is None else root))


def _devshm_used() -> int:
    try:
        return shutil.disk_usage("/dev/shm").used
    except OSError:
        return 0


class TreeMemorySampler:
    """Context manager: peak Pss of this process tree, sampled every ``interval`` s.

    ``growth`` is the peak minus the value sampled on entry.  The ``/dev/shm``
    usage is tracked the same way (``shm_growth``) for information: shared
    memory that no process maps does not show in Pss.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.baseline = self.peak = 0
        self.shm_baseline = self.shm_peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mem-sampler", daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, tree_pss_bytes())
        self.shm_peak = max(self.shm_peak, _devshm_used())
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeMemorySampler:
        self.baseline = self.peak = tree_pss_bytes()
        self.shm_baseline = self.shm_peak = _devshm_used()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    @property
    def shm_growth(self) -> int:
        return self.shm_peak - self.shm_baseline

    def extra(self) -> dict[str, float]:
        return {
            "peak_growth_mb": round(self.growth / MB, 1),
            "devshm_growth_mb": round(self.shm_growth / MB, 1),
            "baseline_mb": round(self.baseline / MB, 1),
            "samples": self.samples,
        }


# --------------------------------------------------------------------------
# Helpers for workloads
# --------------------------------------------------------------------------


def res(metric: str, value: float, **extra: Any) -> Result:
    """One measured figure of a workload."""
    return {"metric": metric, "value": value, "extra": extra}


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# The map row is a ratio of two timings of 2000 ms of work, taken seconds apart
# on a machine whose speed drifts by 10-20%: each (the serial reference too)
# is the best of this many runs, as timeit takes the best.
MAP_REPEATS = 3


def _best(fn: Callable[[], Any]) -> float:
    return min(_timed(fn) for _ in range(MAP_REPEATS))


def import_framework(system: str) -> Any:
    """``import actorkit as ray`` or ``import ray``, by system name."""
    return importlib.import_module("ray" if system == "ray" else "actorkit")


def init_framework(ray: Any, system: str) -> None:
    if system == "ray":
        ray.init(num_cpus=NUM_CPUS, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(num_cpus=NUM_CPUS)


def _spawn_pool(processes: int = NUM_CPUS) -> Any:
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(processes)
    pool.map(noop, range(4 * processes))  # make sure every worker is up
    return pool


def _numpy() -> Any:
    import numpy

    return numpy


def _array(np: Any, mb: int, random: bool = False) -> Any:
    n = mb * MB // 8
    if random:
        return np.random.default_rng(0).random(n)
    return np.ones(n)


# --------------------------------------------------------------------------
# Framework workloads: written once against Ray's API (``ray`` is the module)
# --------------------------------------------------------------------------


def fw_cold_start(system: str, p: Params) -> list[Result]:
    """Import, init, one trivial task, shutdown: all timed from before the import."""
    t0 = time.perf_counter()
    ray = import_framework(system)
    t_import = time.perf_counter()
    init_framework(ray, system)
    t_init = time.perf_counter()
    ray.get(ray.remote(noop).remote())
    t_first = time.perf_counter()
    ray.shutdown()
    t_end = time.perf_counter()
    return [
        res(
            "in_process",
            t_end - t0,
            import_s=round(t_import - t0, 4),
            init_s=round(t_init - t_import, 4),
            first_result_s=round(t_first - t0, 4),
            shutdown_s=round(t_end - t_first, 4),
        )
    ]


def fw_tasks_sync(ray: Any, p: Params) -> list[Result]:
    f = ray.remote(noop)
    ray.get([f.remote() for _ in range(20)])
    n = p["tasks_sync"]
    el = _timed(lambda: [ray.get(f.remote()) for _ in range(n)])
    return [res("round_trip", el / n * 1e6, n=n)]


def fw_tasks_async(ray: Any, p: Params) -> list[Result]:
    f = ray.remote(noop)
    ray.get([f.remote() for _ in range(100)])
    n = p["tasks_async"]
    el = _timed(lambda: ray.get([f.remote() for _ in range(n)]))
    return [res("rate", n / el, n=n, seconds=round(el, 4))]


def fw_put_calls(ray: Any, p: Params) -> list[Result]:
    for _ in range(100):
        ray.put(0)
    n = p["put_calls"]

    def loop() -> None:
        for _ in range(n):
            ray.put(0)

    return [res("rate", n / _timed(loop), n=n)]


def fw_get_calls(ray: Any, p: Params) -> list[Result]:
    ref = ray.put(0)
    for _ in range(100):
        ray.get(ref)
    n = p["get_calls"]

    def loop() -> None:
        for _ in range(n):
            ray.get(ref)

    return [res("rate", n / _timed(loop), n=n)]


def fw_put_gigabytes(ray: Any, p: Params) -> list[Result]:
    np = _numpy()
    arr = _array(np, p["put_gb_mb"])
    ray.put(arr)
    reps = p["put_gb_reps"]

    def loop() -> None:
        for _ in range(reps):
            ray.put(arr)

    el = _timed(loop)
    return [res("bandwidth", reps * arr.nbytes / el / 1e9, mb=p["put_gb_mb"], reps=reps)]


def fw_large_array(ray: Any, p: Params) -> list[Result]:
    np = _numpy()
    arr = _array(np, p["large_array_mb"], random=True)
    expected = float(arr.sum())
    f = ray.remote(array_sum)
    ray.get([f.remote(np.zeros(8)) for _ in range(2 * NUM_CPUS)])  # workers up
    n = p["large_array_tasks"]
    with TreeMemorySampler() as mem:
        t0 = time.perf_counter()
        ref = ray.put(arr)
        sums = ray.get([f.remote(ref) for _ in range(n)])
        el = time.perf_counter() - t0
    if any(abs(s - expected) > 1e-6 * abs(expected) for s in sums):
        raise AssertionError(f"wrong sums: {sums[:3]}... expected {expected}")
    return [res("time", el, tasks=n), res("peak_mem", mem.growth / arr.nbytes, **mem.extra())]


def fw_map(ray: Any, p: Params) -> list[Result]:
    loops, n = p["busy_loops"], p["map_tasks"]
    f = ray.remote(busy)
    ray.get([f.remote(loops) for _ in range(2 * NUM_CPUS)])
    el = _best(lambda: ray.get([f.remote(loops) for _ in range(n)]))
    return [res("efficiency", p["serial_s"] / (el * NUM_CPUS), wall_s=round(el, 4))]


def _framework_pool(ray: Any) -> Any:
    """The framework's multiprocessing.Pool drop-in (actorkit.util / ray.util)."""
    import importlib

    return importlib.import_module(f"{ray.__name__}.util.multiprocessing").Pool(NUM_CPUS)


def _pool_rows(pool: Any, p: Params) -> list[Result]:
    loops, n, items = p["busy_loops"], p["map_tasks"], p["imap_items"]
    pool.map(noop, range(4 * NUM_CPUS))  # warm: every worker started
    t_map = _timed(lambda: pool.map(busy, [loops] * n))
    t_imap = _timed(lambda: sum(1 for _ in pool.imap(noop, range(items))))
    return [res("map_rate", n / t_map), res("imap_rate", items / t_imap)]


def fw_pool(ray: Any, p: Params) -> list[Result]:
    pool = _framework_pool(ray)
    try:
        return _pool_rows(pool, p)
    finally:
        pool.terminate()


def bl_pool_mp(p: Params) -> list[Result]:
    pool = _spawn_pool()
    try:
        return _pool_rows(pool, p)
    finally:
        pool.close()
        pool.join()


def fw_nested(ray: Any, p: Params) -> list[Result]:
    child, parent = ray.remote(noop), ray.remote(nested_parent)
    parents, k = p["nested_parents"], p["nested_children"]
    ray.get([parent.remote(ray.__name__, child, k) for _ in range(NUM_CPUS)])
    el = _timed(lambda: ray.get([parent.remote(ray.__name__, child, k) for _ in range(parents)]))
    return [res("rate", parents * (k + 1) / el, seconds=round(el, 4))]


def _actor_sync(ray: Any, cls: type, n: int) -> list[Result]:
    a = ray.remote(cls).remote()
    ray.get([a.m.remote() for _ in range(20)])
    el = _timed(lambda: [ray.get(a.m.remote()) for _ in range(n)])
    return [res("round_trip", el / n * 1e6, n=n)]


def _actor_async(ray: Any, cls: type, n: int, n_actors: int = 1) -> list[Result]:
    actors = [ray.remote(cls).remote() for _ in range(n_actors)]
    ray.get([a.m.remote() for a in actors for _ in range(20)])
    el = _timed(lambda: ray.get([actors[i % n_actors].m.remote() for i in range(n)]))
    return [res("rate", n / el, n=n, seconds=round(el, 4))]


def fw_actor_calls_sync(ray: Any, p: Params) -> list[Result]:
    return _actor_sync(ray, Actor, p["actor_sync"])


def fw_actor_calls_async(ray: Any, p: Params) -> list[Result]:
    return _actor_async(ray, Actor, p["actor_async"])


def fw_async_actor_calls_async(ray: Any, p: Params) -> list[Result]:
    return _actor_async(ray, AsyncActor, p["actor_async"])


def fw_n_n_actor_calls_async(ray: Any, p: Params) -> list[Result]:
    return _actor_async(ray, Actor, p["actor_async"], n_actors=NUM_CPUS)


def fw_get_10k_refs(ray: Any, p: Params) -> list[Result]:
    n = p["refs_in_object"]
    outer = ray.put([ray.put(i) for i in range(n)])
    got: list[Any] = []
    el = _timed(lambda: got.append(ray.get(outer)))
    if len(got[0]) != n:
        raise AssertionError(f"got {len(got[0])} refs, expected {n}")
    return [res("time", el, n=n)]


def fw_put_and_drop(ray: Any, p: Params) -> list[Result]:
    np = _numpy()
    arr = _array(np, p["put_drop_mb"])
    for _ in range(10):
        ray.put(arr)
    n = p["put_drop"]

    def loop() -> None:
        for _ in range(n):
            ray.put(arr)

    with TreeMemorySampler() as mem:
        el = _timed(loop)
    return [res("rate", n / el, n=n), res("peak_mem", mem.growth / MB, **mem.extra())]


# --------------------------------------------------------------------------
# Baselines (standard library and in-process floors)
# --------------------------------------------------------------------------


def bl_cold_start_pool(p: Params) -> list[Result]:
    import multiprocessing

    t0 = time.perf_counter()
    pool = multiprocessing.get_context("spawn").Pool(NUM_CPUS)
    pool.apply(noop)
    t_first = time.perf_counter()
    pool.close()
    pool.join()
    t_end = time.perf_counter()
    return [
        res(
            "in_process",
            t_end - t0,
            first_result_s=round(t_first - t0, 4),
            shutdown_s=round(t_end - t_first, 4),
        )
    ]


def bl_tasks_sync_ppe(p: Params) -> list[Result]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    n = p["tasks_sync"]
    with ProcessPoolExecutor(NUM_CPUS, mp_context=multiprocessing.get_context("spawn")) as ex:
        for fut in [ex.submit(noop) for _ in range(20)]:
            fut.result()
        el = _timed(lambda: [ex.submit(noop).result() for _ in range(n)])
    return [res("round_trip", el / n * 1e6, n=n)]


def _pool_apply_async_rate(n: int) -> list[Result]:
    pool = _spawn_pool()
    try:
        el = _timed(lambda: [r.get() for r in [pool.apply_async(noop) for _ in range(n)]])
    finally:
        pool.close()
        pool.join()
    return [res("rate", n / el, n=n, seconds=round(el, 4))]


def _manager_call_seconds(n: int) -> float:
    import multiprocessing

    with BenchManager(ctx=multiprocessing.get_context("spawn")) as mgr:
        proxy = mgr.Trivial()  # type: ignore[attr-defined]
        for _ in range(100):
            proxy.ping()
        return _timed(lambda: [proxy.ping() for _ in range(n)]) / n


def _manager_rate(n: int) -> list[Result]:
    return [res("rate", 1.0 / _manager_call_seconds(n), n=n)]


def _manager_round_trip(n: int) -> list[Result]:
    return [res("round_trip", _manager_call_seconds(n) * 1e6, n=n)]


def bl_put_gigabytes_memcpy(p: Params) -> list[Result]:
    np = _numpy()
    arr = _array(np, p["put_gb_mb"])
    dst = np.empty_like(arr)
    np.copyto(dst, arr)
    reps = p["put_gb_reps"]

    def loop() -> None:
        for _ in range(reps):
            np.copyto(dst, arr)

    el = _timed(loop)
    fresh = _timed(lambda: np.copy(arr))  # includes page faults of a new buffer
    return [
        res(
            "bandwidth",
            reps * arr.nbytes / el / 1e9,
            fresh_copy_gbps=round(arr.nbytes / fresh / 1e9, 2),
        )
    ]


def bl_large_array_pool(p: Params) -> list[Result]:
    np = _numpy()
    arr = _array(np, p["large_array_mb"], random=True)
    n = p["large_array_tasks"]
    pool = _spawn_pool()
    try:
        with TreeMemorySampler() as mem:
            t0 = time.perf_counter()
            sums = [r.get() for r in [pool.apply_async(array_sum, (arr,)) for _ in range(n)]]
            el = time.perf_counter() - t0
    finally:
        pool.close()
        pool.join()
    assert len(sums) == n
    return [res("time", el, tasks=n), res("peak_mem", mem.growth / arr.nbytes, **mem.extra())]


def bl_large_array_floor(p: Params) -> list[Result]:
    np = _numpy()
    arr = _array(np, p["large_array_mb"], random=True)
    n = p["large_array_tasks"]
    with TreeMemorySampler() as mem:
        t0 = time.perf_counter()
        copy = np.copy(arr)
        t_copy = time.perf_counter() - t0
        t_sums = _timed(lambda: [array_sum(copy) for _ in range(n)])
    floor = t_copy + t_sums / NUM_CPUS
    return [
        res("time", floor, copy_s=round(t_copy, 4), sums_s=round(t_sums, 4)),
        res("peak_mem", mem.growth / arr.nbytes, **mem.extra()),
    ]


def bl_map_pool(p: Params) -> list[Result]:
    loops, n = p["busy_loops"], p["map_tasks"]
    pool = _spawn_pool()
    try:
        el = _best(lambda: pool.map(busy, [loops] * n))
    finally:
        pool.close()
        pool.join()
    return [res("efficiency", p["serial_s"] / (el * NUM_CPUS), wall_s=round(el, 4))]


def bl_map_serial(p: Params) -> list[Result]:
    loops, n = p["busy_loops"], p["map_tasks"]
    el = _best(lambda: [busy(loops) for _ in range(n)])
    return [res("efficiency", p["serial_s"] / (el * NUM_CPUS), wall_s=round(el, 4))]


# --------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A goal: ``ratio`` (vs the metric's reference) or ``abs`` (the value itself)."""

    kind: str  # "ratio" | "abs"
    op: str  # "<=" | ">="
    value: float

    def text(self, unit: str = "") -> str:
        if self.kind == "ratio":
            return f"{self.op} {self.value:.3g}x"
        return f"{self.op} {self.value:g} {unit}".rstrip()

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        x = ratio if self.kind == "ratio" else value
        if x is None:
            return None
        return x <= self.value if self.op == "<=" else x >= self.value


@dataclass(frozen=True)
class Metric:
    key: str
    unit: str
    better: str  # "lower" | "higher"
    ref: str | None  # the system the ratio is taken against
    target: Target | None = None


@dataclass(frozen=True)
class Row:
    name: str
    doc: str
    metrics: tuple[Metric, ...]
    framework: Callable[..., list[Result]]
    baselines: dict[str, Callable[[Params], list[Result]]] = field(default_factory=dict)
    cold: bool = False  # the framework workload imports/inits/shuts down itself
    runner_wall: bool = False  # also report the subprocess wall time seen by the runner


def _m(key: str, unit: str, better: str, ref: str | None, target: Target | None = None) -> Metric:
    return Metric(key, unit, better, ref, target)


ROWS: tuple[Row, ...] = (
    Row(
        "cold_start",
        "import + init + one trivial task + shutdown, in a fresh process",
        (
            _m("in_process", "s", "lower", "baseline:pool", Target("ratio", "<=", 2)),
            _m("subprocess_wall", "s", "lower", "baseline:pool", Target("ratio", "<=", 2)),
        ),
        fw_cold_start,
        {"pool": bl_cold_start_pool},
        cold=True,
        runner_wall=True,
    ),
    Row(
        "single_client_tasks_sync",
        "sequential get(f.remote()) of a no-op",
        (_m("round_trip", "us", "lower", "baseline:ppe", Target("ratio", "<=", 1)),),
        fw_tasks_sync,
        {"ppe": bl_tasks_sync_ppe},
    ),
    Row(
        "single_client_tasks_async",
        "N no-op tasks submitted, then all gotten",
        (_m("rate", "tasks/s", "higher", "baseline:pool", Target("ratio", ">=", 0.5)),),
        fw_tasks_async,
        {"pool": lambda p: _pool_apply_async_rate(p["tasks_async"])},
    ),
    Row(
        "single_client_put_calls",
        "put() of a small int, N times",
        (_m("rate", "ops/s", "higher", "baseline:manager", Target("ratio", ">=", 1 / 3)),),
        fw_put_calls,
        {"manager": lambda p: _manager_rate(p["put_calls"])},
    ),
    Row(
        "single_client_get_calls",
        "get() of one small put object, N times",
        (_m("rate", "ops/s", "higher", "baseline:manager", Target("ratio", ">=", 1 / 3)),),
        fw_get_calls,
        {"manager": lambda p: _manager_rate(p["get_calls"])},
    ),
    Row(
        "single_client_put_gigabytes",
        "put() of a 100 MB float64 array, repeatedly",
        (_m("bandwidth", "GB/s", "higher", "baseline:memcpy"),),
        fw_put_gigabytes,
        {"memcpy": bl_put_gigabytes_memcpy},
    ),
    Row(
        "large_array_to_8_tasks",
        "a 200 MB array put once and passed to 8 tasks returning arr.sum()",
        (
            _m("time", "s", "lower", "baseline:floor", Target("ratio", "<=", 1.5)),
            _m("peak_mem", "x array", "lower", "baseline:floor", Target("abs", "<=", 1.3)),
        ),
        fw_large_array,
        {"pool": bl_large_array_pool, "floor": bl_large_array_floor},
    ),
    Row(
        "map_2000_1ms",
        "2000 tasks of ~1 ms pure-Python work; efficiency = serial / (wall * 2 cores)",
        (_m("efficiency", "", "higher", "baseline:pool", Target("abs", ">=", 0.8)),),
        fw_map,
        {"pool": bl_map_pool, "serial": bl_map_serial},
    ),
    Row(
        "nested_100x4",
        "100 tasks each submitting 4 no-op child tasks and getting them",
        (_m("rate", "tasks/s", "higher", "ray"),),
        fw_nested,
    ),
    Row(
        "1_1_actor_calls_sync",
        "sequential get(a.m.remote()) on one actor",
        (_m("round_trip", "us", "lower", "baseline:manager", Target("ratio", "<=", 4)),),
        fw_actor_calls_sync,
        {"manager": lambda p: _manager_round_trip(p["actor_sync"])},
    ),
    Row(
        "1_1_actor_calls_async",
        "N calls on one actor submitted, then all gotten",
        (_m("rate", "calls/s", "higher", "baseline:pool", Target("ratio", ">=", 0.5)),),
        fw_actor_calls_async,
        {"pool": lambda p: _pool_apply_async_rate(p["actor_async"])},
    ),
    Row(
        "1_1_async_actor_calls_async",
        "N calls on one async actor (async def method) submitted, then all gotten",
        (_m("rate", "calls/s", "higher", "baseline:pool"),),
        fw_async_actor_calls_async,
        {"pool": lambda p: _pool_apply_async_rate(p["actor_async"])},
    ),
    Row(
        "n_n_actor_calls_async",
        "N calls round robin over 2 actors submitted, then all gotten",
        (_m("rate", "calls/s", "higher", "baseline:pool"),),
        fw_n_n_actor_calls_async,
        {"pool": lambda p: _pool_apply_async_rate(p["actor_async"])},
    ),
    Row(
        "single_client_get_object_containing_10k_refs",
        "get() of one put object holding a list of 10,000 ObjectRefs",
        (_m("time", "s", "lower", "ray"),),
        fw_get_10k_refs,
    ),
    Row(
        "put_and_drop_memory",
        "put() of a 1 MB array, dropped at once, N times; peak tree memory growth",
        (_m("rate", "ops/s", "higher", "ray"), _m("peak_mem", "MB", "lower", "ray")),
        fw_put_and_drop,
    ),
)
ROWS = ROWS + (
    Row(
        "pool_map_and_imap",
        "util.multiprocessing.Pool: map of ~1 ms tasks, imap of tiny items, vs multiprocessing.Pool",
        (
            _m("map_rate", "tasks/s", "higher", "baseline:mp_pool", Target("ratio", ">=", 0.9)),
            _m("imap_rate", "items/s", "higher", "baseline:mp_pool", Target("ratio", ">=", 0.9)),
        ),
        fw_pool,
        {"mp_pool": bl_pool_mp},
    ),
)
ROWS_BY_NAME = {row.name: row for row in ROWS}


def systems_of(row: Row) -> list[str]:
    """Every system that can measure ``row``, baselines first."""
    return [f"baseline:{name}" for name in row.baselines] + ["actorkit", "ray"]


# --------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(MARKER + json.dumps(payload) + "\n")
    sys.stdout.flush()


def shutdown_with_deadline(ray: Any, grace: float) -> None:
    """``ray.shutdown()`` on this thread; if it takes over ``grace`` s, report and exit.

    A watchdog thread waits on an event (no polling); on expiry it prints
    ``shutdown_hung_s`` and ends the process, so a hung shutdown costs ``grace``
    seconds instead of the runner's whole timeout.  The runner then kills what
    the process left behind.
    """
    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(grace):
            _emit({"shutdown_hung_s": grace})
            os._exit(3)

    threading.Thread(target=watchdog, name="shutdown-watchdog", daemon=True).start()
    t0 = time.perf_counter()
    try:
        ray.shutdown()
    finally:
        done.set()
    _emit({"shutdown_s": round(time.perf_counter() - t0, 4)})


def worker_main(row_name: str, system: str, p: Params) -> int:
    """Measure one row for one system; print the results as marked JSON lines."""
    row = ROWS_BY_NAME[row_name]
    try:
        if system.startswith("baseline:"):
            _emit({"results": row.baselines[system.split(":", 1)[1]](p)})
        elif row.cold:
            _emit({"results": row.framework(system, p)})
        else:
            ray = import_framework(system)
            init_framework(ray, system)
            try:
                # Results go out before shutdown: a hanging shutdown loses no figure.
                _emit({"results": row.framework(ray, p)})
            finally:
                shutdown_with_deadline(ray, SHUTDOWN_GRACE_S)
    except BaseException as exc:  # every failure becomes a report
        _emit({"error": f"{type(exc).__name__}: {exc}"[:300]})
        sys.stdout.flush()
        raise
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
