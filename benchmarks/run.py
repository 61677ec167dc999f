"""Benchmark runner: actorkit against the standard library (and Ray) in one run.

Usage (from the repository root)::

    .venv/bin/python benchmarks/run.py                 # every row, every system found
    .venv/bin/python benchmarks/run.py --quick         # small sizes, smoke test
    .venv/bin/python benchmarks/run.py --only actor,put --systems actorkit,baseline
    .venv/bin/python benchmarks/run.py --json results.json

The runner measures nothing itself except the calibration of the
``map_2000_1ms`` busy loop (a loop count that takes ~1 ms here, and the serial
time of all the calls, passed to every system).  For every selected row and
system it starts a fresh subprocess, ``python benchmarks/workloads.py ROW
SYSTEM PARAMS``, in a new session, and reads the marked JSON lines it prints
(see workloads.py for how each figure is taken).  A fresh process per
measurement keeps cold start and memory figures clean, and a crash or a hang
costs only that measurement: after ``--timeout`` seconds the runner kills the
subprocess's process group and reports ``failed: <reason>``.  Processes of the
subprocess's session still alive 3 s after it exits are reported in the notes
and killed; new ``/dev/shm`` entries left behind are reported too.

The ``ray`` system runs the same workloads under ``--ray-python`` (default
``benchmarks/.ray-venv/bin/python``) with ``import ray``; ``actorkit`` runs
them under this interpreter with ``import actorkit as ray``.

Each metric names the system its ratio is taken against (normally a baseline
measured in the same run; ``ray`` for rows the standard library has no
equivalent of) and whether lower or higher is better.  The ratio is always
``value / reference``: for a "lower" metric a ratio below 1 beats the
reference, for a "higher" metric a ratio above 1 does.  Targets (README.md)
are checked for the non-baseline systems and shown in the ``met`` column.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workloads import (
    DEFAULT_SIZES,
    FULL_SIZES,
    MAP_REPEATS,
    MARKER,
    MB,
    NUM_CPUS,
    QUICK_SIZES,
    ROWS,
    ROWS_BY_NAME,
    Metric,
    Params,
    Result,
    Row,
    busy,
    res,
    systems_of,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WORKER = BENCH_DIR / "workloads.py"
DEFAULT_RAY_PYTHON = BENCH_DIR / ".ray-venv" / "bin" / "python"
LEFTOVER_GRACE_S = 3.0  # processes of a measurement may outlive it this long


@dataclass
class Outcome:
    """What one subprocess produced."""

    results: list[Result]
    wall_s: float
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def _session_processes(sid: int) -> list[tuple[int, str]]:
    """Live processes of session ``sid`` (the runner starts each worker in a new one)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        comm = data[data.find(b"(") + 1 : data.rfind(b")")].decode(errors="replace")
        fields = data.rsplit(b")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != b"Z":
            found.append((int(entry), comm))
    return found


def _still_alive_after(procs: list[tuple[int, str]], grace: float) -> list[tuple[int, str]]:
    """Those of ``procs`` still running ``grace`` s from now.

    Waits on pidfds (no polling loop): helpers such as multiprocessing's
    resource tracker legitimately exit a moment after the process they serve.
    """
    if not procs:
        return []
    fds: dict[int, tuple[int, str]] = {}
    unwatchable: list[tuple[int, str]] = []
    poller = select.poll()
    for pid, name in procs:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        except OSError:  # no pidfd support: count it as still alive
            unwatchable.append((pid, name))
            continue
        fds[fd] = (pid, name)
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + grace
    alive = dict(fds)
    try:
        while alive and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                alive.pop(fd, None)
    finally:
        for fd in fds:
            os.close(fd)
    return list(alive.values()) + unwatchable


def _shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def _shm_size(names: Sequence[str]) -> int:
    total = 0
    for name in names:
        try:
            total += os.stat(f"/dev/shm/{name}").st_blocks * 512
        except OSError:
            pass
    return total


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def run_worker(
    python: str, row: Row, system: str, params: Params, timeout: float, env: dict[str, str]
) -> Outcome:
    """Run one measurement subprocess and collect its marked JSON lines."""
    cmd = [python, str(WORKER), row.name, system, json.dumps(params)]
    shm_before = _shm_entries()
    # Output goes to files, not pipes: a leaked grandchild holding a pipe open
    # must not keep the runner waiting once the measuring process has exited.
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            stdout=out_f,
            stderr=err_f,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        wall = time.perf_counter() - t0
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()

    outcome = Outcome(results=[], wall_s=wall)
    for line in out.splitlines():
        if line.startswith(MARKER):
            payload = json.loads(line[len(MARKER) :])
            outcome.results.extend(payload.get("results", []))
            if "error" in payload:
                outcome.error = payload["error"]
            if "shutdown_s" in payload:
                outcome.notes.append(f"shutdown {payload['shutdown_s']:.2f}s")
            if "shutdown_hung_s" in payload:
                outcome.notes.append(f"shutdown hung > {payload['shutdown_hung_s']:g}s")
    if outcome.results and outcome.error:
        outcome.notes.append(f"error after results: {outcome.error}")
        outcome.error = None
    if timed_out:
        reason = f"timeout after {timeout:g}s"
        if outcome.results:
            outcome.notes.append(f"{reason} after results; killed")
        elif outcome.error:
            outcome.error += f" (then {reason})"
        else:
            outcome.error = reason
    elif outcome.error is None and not outcome.results:
        outcome.error = f"exit {proc.returncode}: {_last_line(err) or 'no output'}"

    leftovers = _still_alive_after(_session_processes(proc.pid), LEFTOVER_GRACE_S)
    if leftovers:
        names = sorted({name for _, name in leftovers})
        outcome.notes.append(f"left {len(leftovers)} processes ({', '.join(names)[:80]}); killed")
        for pid, _ in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    new_shm = sorted(_shm_entries() - shm_before)
    if new_shm:
        outcome.notes.append(
            f"{len(new_shm)} new /dev/shm entries remain ({_shm_size(new_shm) / MB:.0f} MB)"
        )
    return outcome


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def calibrate_busy_loops(target_s: float = 1e-3) -> int:
    """Loop count for which ``busy(loops)`` takes about ``target_s`` here.

    A rough estimate from one long call, refined on a batch of 100 short calls
    (the best of three), which is how the tasks will run it.
    """
    loops = 1000
    while _timed(functools.partial(busy, loops)) < 0.02:
        loops *= 2
    loops = max(1, round(loops * target_s / _timed(functools.partial(busy, loops))))
    best = min(serial_seconds(loops, 100) for _ in range(3)) / 100
    return max(1, round(loops * target_s / best))


def serial_seconds(loops: int, n: int) -> float:
    """Time of ``n`` calls of ``busy(loops)`` one after the other, in this process."""
    t0 = time.perf_counter()
    for _ in range(n):
        busy(loops)
    return time.perf_counter() - t0


def ray_version(python: str) -> str | None:
    """Ray's version under ``python``, or None if it cannot import ray and numpy."""
    try:
        proc = subprocess.run(
            [python, "-c", "import ray, numpy; print(ray.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env("ray"),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _loadavg() -> float:
    """The 1-minute load average (a hint that something else shared the CPUs)."""
    return os.getloadavg()[0]


def _env(system: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if system == "ray":
        env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    else:
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    return env


@dataclass
class Record:
    """One line of the report."""

    row: str
    metric: Metric
    system: str
    value: float | None
    extra: dict[str, Any]
    error: str | None
    notes: list[str]
    ratio: float | None = None
    met: bool | None = None

    def to_json(self) -> dict[str, Any]:
        m = self.metric
        return {
            "row": self.row,
            "metric": m.key,
            "system": self.system,
            "value": self.value,
            "unit": m.unit,
            "better": m.better,
            "ratio": self.ratio,
            "ratio_vs": m.ref,
            "target": m.target.text(m.unit) if m.target else None,
            "target_met": self.met,
            "extra": self.extra,
            "error": self.error,
            "notes": self.notes,
        }


COLD_REPEATS = 3


def records_for(row: Row, system: str, outcome: Outcome) -> list[Record]:
    by_metric = {r["metric"]: r for r in outcome.results}
    if row.runner_wall and outcome.results:
        by_metric["subprocess_wall"] = res("subprocess_wall", outcome.wall_s)
    records = []
    for metric in row.metrics:
        r = by_metric.get(metric.key)
        error = None if r else (outcome.error or "metric missing")
        records.append(
            Record(
                row.name,
                metric,
                system,
                r["value"] if r else None,
                r["extra"] if r else {},
                error,
                outcome.notes,
            )
        )
    return records


def add_ratios(records: list[Record]) -> None:
    """Fill ``ratio`` (value / the metric's reference system) and ``met``."""
    values = {(r.row, r.metric.key, r.system): r.value for r in records}
    for r in records:
        ref = values.get((r.row, r.metric.key, r.metric.ref)) if r.metric.ref else None
        if r.value is not None and ref:
            r.ratio = r.value / ref
        if r.metric.target and not r.system.startswith("baseline"):
            r.met = r.metric.target.met(r.value, r.ratio)


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 99.95:
        return f"{value:.1f}"
    return f"{value:#.3g}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(records: list[Record]) -> str:
    header = ("row", "system", "figure", "ratio", "vs", "better", "target", "met", "notes")
    lines = []
    for r in records:
        m = r.metric
        name = r.row if m is ROWS_BY_NAME[r.row].metrics[0] else f"  {r.row}:{m.key}"
        if r.error:
            figure, ratio = _clip(f"failed: {r.error}", 72), "-"
        else:
            figure = f"{_fmt(r.value or 0.0)} {m.unit}".rstrip()
            ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        met = {True: "yes", False: "NO", None: ""}[r.met]
        target = m.target.text(m.unit) if m.target else ""
        notes = "; ".join(r.notes)
        lines.append((name, r.system, figure, ratio, m.ref or "-", m.better, target, met, notes))
    widths = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(header)]
    out = []
    for cells in [header, *lines]:
        out.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if cells is header:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _selected(names: str | None, candidates: Sequence[str], prefix: bool) -> list[str]:
    if not names:
        return list(candidates)
    wanted = [w.strip() for w in names.split(",") if w.strip()]
    if prefix:
        return [c for c in candidates if any(c == w or c.startswith(w + ":") for w in wanted)]
    return [c for c in candidates if any(w in c for w in wanted)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--only", help="comma list of row names (substring match)")
    ap.add_argument(
        "--systems",
        help="comma list among actorkit, baseline (or baseline:NAME), ray "
        "(default: all; ray when its interpreter imports ray)",
    )
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes, for smoke testing")
    size.add_argument("--full", action="store_true", help="full sizes (100k put-and-drop)")
    ap.add_argument("--json", type=Path, help="write the results as JSON to this file")
    ap.add_argument(
        "--ray-python",
        default=str(DEFAULT_RAY_PYTHON) if DEFAULT_RAY_PYTHON.exists() else None,
        help="interpreter of a venv with ray and numpy (default: benchmarks/.ray-venv)",
    )
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per measurement")
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    return ap.parse_args(argv)


def _plan(args: argparse.Namespace) -> Iterator[tuple[Row, str]]:
    rows = [ROWS_BY_NAME[n] for n in _selected(args.only, [r.name for r in ROWS], False)]
    for row in rows:
        for system in _selected(args.systems, systems_of(row), True):
            yield row, system


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for row in ROWS:
            print(f"{row.name:46} {row.doc}")
        return 0

    sizes = QUICK_SIZES if args.quick else FULL_SIZES if args.full else DEFAULT_SIZES
    params: Params = dataclasses.asdict(sizes)
    plan = list(_plan(args))
    if not plan:
        print("nothing selected", file=sys.stderr)
        return 2

    ray_ver = None
    if any(system == "ray" for _, system in plan):
        ray_ver = ray_version(args.ray_python) if args.ray_python else None
        if ray_ver is None:
            why = f"no ray in {args.ray_python}" if args.ray_python else "no --ray-python"
            print(f"ray: skipped ({why})", file=sys.stderr)
            explicit = args.systems and "ray" in args.systems.split(",")
            if not explicit:
                plan = [(row, s) for row, s in plan if s != "ray"]

    if any(row.name in ("map_2000_1ms", "pool_map_and_imap") for row, _ in plan):
        params["busy_loops"] = calibrate_busy_loops()
        # The best of as many runs as the map row takes of its parallel timings.
        params["serial_s"] = min(
            serial_seconds(params["busy_loops"], params["map_tasks"]) for _ in range(MAP_REPEATS)
        )
        print(
            f"map: busy({params['busy_loops']}) ~ 1 ms; serial {params['map_tasks']} calls "
            f"= {params['serial_s']:.3f}s",
            file=sys.stderr,
        )

    records: list[Record] = []
    load_start = _loadavg()
    t_start = time.perf_counter()
    for row, system in plan:
        if system == "ray" and ray_ver is None:
            outcome = Outcome([], 0.0, error="ray not importable (see --ray-python)")
        else:
            python = args.ray_python if system == "ray" else sys.executable
            # A cold start is one sample of a few hundred milliseconds: the best of
            # a few, for every system alike (as for the map row's timings).
            tries = [run_worker(python, row, system, params, args.timeout, _env(system))]
            while row.cold and len(tries) < COLD_REPEATS and not tries[-1].error:
                tries.append(run_worker(python, row, system, params, args.timeout, _env(system)))
            outcome = min(tries, key=lambda o: (o.error is not None, o.wall_s))
        status = f"failed: {outcome.error}" if outcome.error else "ok"
        if outcome.notes:
            status += f" [{'; '.join(outcome.notes)}]"
        print(f"{row.name} / {system}: {status} ({outcome.wall_s:.1f}s)", file=sys.stderr)
        records.extend(records_for(row, system, outcome))
    add_ratios(records)

    print()
    print(format_table(records))
    total = time.perf_counter() - t_start
    load_end = _loadavg()
    print(f"\n{len(plan)} measurements in {total:.0f}s; ratio = value / the 'vs' system's value")
    print(f"load average (1 min) at start {load_start:.2f}, at end {load_end:.2f}", end="")
    print(f" -- over {NUM_CPUS}: other work shared the CPUs" if load_start > NUM_CPUS else "")

    if args.json:
        meta = {
            "python": sys.version.split()[0],
            "ray": ray_ver,
            "cpus": os.cpu_count(),
            "num_cpus": NUM_CPUS,
            "sizes": "quick" if args.quick else "full" if args.full else "default",
            "params": params,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "total_s": round(total, 1),
            "loadavg_start": load_start,
            "loadavg_end": load_end,
        }
        doc = {"meta": meta, "results": [r.to_json() for r in records]}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
