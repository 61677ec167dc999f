"""Drivers whose code lives in ``__main__``: a script, ``-c``, stdin, a REPL.

Each driver runs in a fresh interpreter (cwd: a temporary folder) and defines a
remote function, a lambda and a closure, plus a class whose instances travel to
and from tasks. Nothing of it is importable by the workers, so it must be
shipped by value. Every run is bounded by a timeout.
"""

from __future__ import annotations

import textwrap

from _drivers import describe, driver_env, run_python, run_script

# Driver code shared by the script, -c and stdin variants.
DRIVER = textwrap.dedent(
    """
    import actorkit as ray

    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

        def norm2(self):
            return self.x * self.x + self.y * self.y

    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    def norm2(p):
        return p.norm2()

    @ray.remote
    def mirror(p):
        return Point(p.y, p.x)

    def make_adder(n):
        def adder(x):
            return x + n
        return adder

    add_ten = ray.remote(make_adder(10))
    triple = ray.remote(lambda x: 3 * x)

    ray.init(num_cpus=2)
    print("squares", ray.get([square.remote(i) for i in range(5)]))
    print("closure", ray.get(add_ten.remote(5)))
    print("lambda", ray.get(triple.remote(7)))
    print("norm2", ray.get(norm2.remote(Point(3, 4))))
    m = ray.get(mirror.remote(Point(1, 2)))
    print("mirror", type(m).__name__, m.x, m.y)
    ray.shutdown()
    print("done")
    """
)

EXPECTED_LINES = [
    "squares [0, 1, 4, 9, 16]",
    "closure 15",
    "lambda 21",
    "norm2 25",
    "mirror Point 2 1",
    "done",
]


def assert_driver_ok(proc) -> None:
    assert proc.returncode == 0, describe(proc)
    lines = [line.strip() for line in proc.stdout.splitlines()]
    for expected in EXPECTED_LINES:
        assert expected in lines, describe(proc)


def test_script_file(tmp_path):
    proc = run_script(tmp_path, DRIVER)
    assert_driver_ok(proc)


def test_python_dash_c(tmp_path):
    proc = run_python(["-c", DRIVER], tmp_path)
    assert_driver_ok(proc)


def test_script_piped_on_stdin(tmp_path):
    proc = run_python(["-"], tmp_path, stdin=DRIVER)
    assert_driver_ok(proc)


def test_interactive_session(tmp_path):
    # The REPL needs a blank line to close each block; prompts go to stderr.
    session = textwrap.dedent(
        """
        import actorkit as ray
        ray.init(num_cpus=2)
        @ray.remote
        def square(x):
            return x * x

        def make_adder(n):
            def adder(x):
                return x + n
            return adder

        add_ten = ray.remote(make_adder(10))
        triple = ray.remote(lambda x: 3 * x)
        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

        @ray.remote
        def mirror(p):
            return Point(p.y, p.x)

        print("squares", ray.get([square.remote(i) for i in range(5)]))
        print("closure", ray.get(add_ten.remote(5)))
        print("lambda", ray.get(triple.remote(7)))
        m = ray.get(mirror.remote(Point(1, 2)))
        print("mirror", type(m).__name__, m.x, m.y)
        ray.shutdown()
        print("done")
        """
    )
    proc = run_python(["-q", "-i"], tmp_path, stdin=session)
    assert proc.returncode == 0, describe(proc)
    lines = [line.strip() for line in proc.stdout.splitlines()]
    for expected in [
        "squares [0, 1, 4, 9, 16]",
        "closure 15",
        "lambda 21",
        "mirror Point 2 1",
        "done",
    ]:
        assert expected in lines, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)


def test_script_that_imports_a_local_module(tmp_path):
    # Code imported by the driver from its own folder (not installed anywhere).
    (tmp_path / "helpers_mod.py").write_text("def double(x):\n    return 2 * x\n")
    source = textwrap.dedent(
        """
        import actorkit as ray
        import helpers_mod

        @ray.remote
        def use_helper(x):
            return helpers_mod.double(x)

        ray.init(num_cpus=1)
        print("helper", ray.get(use_helper.remote(21)))
        ray.shutdown()
        """
    )
    proc = run_script(tmp_path, source)
    assert proc.returncode == 0, describe(proc)
    assert "helper 42" in proc.stdout.splitlines(), describe(proc)


def test_driver_exit_without_shutdown_cleans_up(tmp_path):
    source = textwrap.dedent(
        """
        import os
        import actorkit as ray

        @ray.remote
        def pid():
            return os.getpid()

        ray.init(num_cpus=1)
        print("worker", ray.get(pid.remote()), "driver", os.getpid(), flush=True)
        # no ray.shutdown(): the exit of the driver must clean up
        """
    )
    proc = run_script(tmp_path, source)
    assert proc.returncode == 0, describe(proc)
    worker_lines = [line for line in proc.stdout.splitlines() if line.startswith("worker ")]
    assert len(worker_lines) == 1, describe(proc)
    _, worker_pid, _, driver_pid = worker_lines[0].split()
    worker_pid = int(worker_pid)
    assert worker_pid != int(driver_pid)
    # The worker the driver used is gone (or a zombie awaiting its reaper).
    try:
        with open(f"/proc/{worker_pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = None
    assert state in (None, "Z"), f"worker {worker_pid} still running (state {state})"


def test_not_initialized_in_fresh_interpreter(tmp_path):
    proc = run_python(
        ["-c", "import actorkit; print('initialized', actorkit.is_initialized())"], tmp_path
    )
    assert proc.returncode == 0, describe(proc)
    assert "initialized False" in proc.stdout.splitlines(), describe(proc)


def test_import_is_light(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        before = set(sys.modules)
        import actorkit
        import actorkit.exceptions
        heavy = ["numpy", "socket", "ssl", "asyncio", "multiprocessing.connection"]
        print("before", sorted(m for m in heavy if m in before))
        print("after", sorted(m for m in heavy if m in sys.modules))
        """
    )
    proc = run_python(["-c", code], tmp_path, env=driver_env())
    assert proc.returncode == 0, describe(proc)
    lines = proc.stdout.splitlines()
    assert "before []" in lines, describe(proc)  # the interpreter itself is clean
    assert "after []" in lines, describe(proc)


def test_import_starts_no_thread_or_process(tmp_path):
    code = textwrap.dedent(
        """
        import os, threading
        import actorkit
        pid = os.getpid()
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
        print("threads", threading.active_count(), "children", len(children))
        """
    )
    proc = run_python(["-c", code], tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert "threads 1 children 0" in proc.stdout.splitlines(), describe(proc)


def test_driver_exit_without_shutdown_stops_the_node_before_multiprocessing_exits(tmp_path):
    # multiprocessing's exit function waits a second for a Manager's server and then
    # terminates it: the node must have been stopped by shutdown() before that runs,
    # so it exits by itself (code 0), not by SIGTERM, and the script exits at once.
    source = textwrap.dedent(
        """
        import atexit

        manager = []
        # Registered before actorkit is imported: runs after every other exit handler.
        atexit.register(lambda: print("node exit code", manager[0]._process.exitcode, flush=True))

        import actorkit as ray

        ray.init(num_cpus=1)
        manager.append(ray.runtime._driver.manager)
        """
    )
    proc = run_script(tmp_path, source)
    assert proc.returncode == 0, describe(proc)
    assert "node exit code 0" in proc.stdout.splitlines(), describe(proc)
