"""Worker output in the driver: prefixes, logging, deduplication, log_to_driver.

Each test runs a driver in a fresh interpreter and reads what it printed.
Ray's format for a line a task printed is ``(task_name pid=1234) text``
(``, ip=...`` is added inside the parentheses on multi-node clusters). Output
printed by tasks that finished before ``shutdown()`` must have reached the
driver's stdout/stderr by the time the driver exits.
"""

from __future__ import annotations

import re
import textwrap

from _drivers import describe, driver_env, run_script


def prefixed(task_name: str, text: str) -> re.Pattern:
    return re.compile(
        r"\(" + re.escape(task_name) + r" pid=(\d+)(?:, ip=[^)]*)?\)\s*" + re.escape(text)
    )


def output_of(proc) -> str:
    return proc.stdout + proc.stderr


HELLO_DRIVER = textwrap.dedent(
    """
    import os
    import actorkit as ray

    @ray.remote
    def say_hello():
        print("hello from task")
        return os.getpid()

    ray.init(num_cpus=1{init_args})
    pid = ray.get(say_hello.remote())
    ray.shutdown()
    print("task pid", pid)
    """
)


def task_pid(proc) -> int:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("task pid ")]
    assert len(lines) == 1, describe(proc)
    return int(lines[0].split()[-1])


def test_print_appears_with_task_name_and_pid(tmp_path):
    proc = run_script(tmp_path, HELLO_DRIVER.format(init_args=""))
    assert proc.returncode == 0, describe(proc)
    matches = prefixed("say_hello", "hello from task").findall(output_of(proc))
    assert len(matches) == 1, describe(proc)
    assert int(matches[0]) == task_pid(proc), describe(proc)


def test_print_goes_to_driver_stdout(tmp_path):
    proc = run_script(tmp_path, HELLO_DRIVER.format(init_args=""))
    assert proc.returncode == 0, describe(proc)
    assert prefixed("say_hello", "hello from task").search(proc.stdout), describe(proc)


def test_stderr_goes_to_driver_stderr(tmp_path):
    source = textwrap.dedent(
        """
        import sys
        import actorkit as ray

        @ray.remote
        def complain():
            print("complaint on stderr", file=sys.stderr)
            return 1

        ray.init(num_cpus=1)
        print("result", ray.get(complain.remote()))
        ray.shutdown()
        """
    )
    proc = run_script(tmp_path, source)
    assert proc.returncode == 0, describe(proc)
    assert prefixed("complain", "complaint on stderr").search(proc.stderr), describe(proc)
    assert "complaint on stderr" not in proc.stdout, describe(proc)


def test_log_to_driver_false_silences_workers(tmp_path):
    proc = run_script(tmp_path, HELLO_DRIVER.format(init_args=", log_to_driver=False"))
    assert proc.returncode == 0, describe(proc)
    assert task_pid(proc) > 0
    assert "hello from task" not in output_of(proc), describe(proc)


def test_logging_warning_appears(tmp_path):
    source = textwrap.dedent(
        """
        import logging
        import actorkit as ray

        @ray.remote
        def warn_task():
            logging.warning("careful from task")
            logging.getLogger("my.module").error("error from task")
            return 1

        ray.init(num_cpus=1)
        print("result", ray.get(warn_task.remote()))
        ray.shutdown()
        """
    )
    proc = run_script(tmp_path, source)
    assert proc.returncode == 0, describe(proc)
    out = output_of(proc)
    assert "result 1" in proc.stdout.splitlines(), describe(proc)
    assert prefixed("warn_task", "").search(out), describe(proc)
    lines = out.splitlines()
    warning = [line for line in lines if "careful from task" in line]
    error = [line for line in lines if "error from task" in line]
    assert len(warning) == 1 and "warn_task pid=" in warning[0], describe(proc)
    assert len(error) == 1 and "warn_task pid=" in error[0], describe(proc)


def test_print_from_nested_task(tmp_path):
    source = textwrap.dedent(
        """
        import actorkit as ray

        @ray.remote
        def inner():
            print("inner speaks")
            return 2

        @ray.remote
        def outer():
            print("outer speaks")
            return ray.get(inner.remote()) + 1

        ray.init(num_cpus=1)
        print("result", ray.get(outer.remote()))
        ray.shutdown()
        """
    )
    proc = run_script(tmp_path, source)
    assert proc.returncode == 0, describe(proc)
    out = output_of(proc)
    assert "result 3" in proc.stdout.splitlines(), describe(proc)
    assert prefixed("outer", "outer speaks").search(out), describe(proc)
    assert prefixed("inner", "inner speaks").search(out), describe(proc)


# Four tasks print the same line at about the same time from four workers. Each
# task first blocks reading its own FIFO; the driver opens all four for writing
# (each open returns once its task is reading) before closing any, so the four
# tasks are running at once, in four processes, when they print.
DEDUP_DRIVER = textwrap.dedent(
    """
    import os
    import tempfile
    import actorkit as ray

    @ray.remote
    def same_line(gate):
        with open(gate) as f:
            f.read()
        print("the very same line")
        return os.getpid()

    folder = tempfile.mkdtemp()
    gates = [os.path.join(folder, f"gate{i}") for i in range(4)]
    for gate in gates:
        os.mkfifo(gate)
    ray.init(num_cpus=4)
    refs = [same_line.remote(gate) for gate in gates]
    writers = [open(gate, "w") for gate in gates]
    for writer in writers:
        writer.close()
    pids = ray.get(refs)
    ray.shutdown()
    print("distinct pids", len(set(pids)))
    """
)


def run_dedup_driver(tmp_path, **env):
    proc = run_script(tmp_path, DEDUP_DRIVER, env=driver_env(**env))
    assert proc.returncode == 0, describe(proc)
    # Precondition: the four tasks ran in four different worker processes.
    assert "distinct pids 4" in proc.stdout.splitlines(), describe(proc)
    return proc


def test_identical_lines_are_deduplicated_by_default(tmp_path):
    proc = run_dedup_driver(tmp_path)
    lines = [line for line in output_of(proc).splitlines() if "the very same line" in line]
    assert 1 <= len(lines) < 4, describe(proc)
    assert prefixed("same_line", "the very same line").search(lines[0]), describe(proc)


def test_deduplicated_lines_are_summarised(tmp_path):
    # Ray prints the first line, then "[repeated 3x across cluster]" for the rest.
    proc = run_dedup_driver(tmp_path)
    lines = [line for line in output_of(proc).splitlines() if "the very same line" in line]
    plain = [line for line in lines if "[repeated" not in line]
    counts = [int(n) for line in lines for n in re.findall(r"\[repeated (\d+)x", line)]
    assert len(plain) + sum(counts) == 4, describe(proc)
    assert counts, describe(proc)


def test_dedup_can_be_turned_off(tmp_path):
    proc = run_dedup_driver(tmp_path, ACTORKIT_DEDUP_LOGS="0")
    out = output_of(proc)
    matches = prefixed("same_line", "the very same line").findall(out)
    assert len(matches) == 4, describe(proc)
    assert len(set(matches)) == 4, describe(proc)  # one line per worker pid
    assert "[repeated" not in out, describe(proc)


ACTOR_REPR_DRIVER = textwrap.dedent(
    """
    import actorkit as ray

    @ray.remote
    class Indexed:
        def __init__(self, index):
            self.index = index
            print("init output")

        def __repr__(self):
            return f"Indexed(index={self.index})"

        def say(self):
            print("method output")

    @ray.remote
    class Plain:
        def say(self):
            print("plain output")

    ray.init(num_cpus=2)
    ray.get([Indexed.remote(1).say.remote(), Plain.remote().say.remote()])
    ray.shutdown()
    """
)


def test_actor_output_is_prefixed_with_its_repr_when_it_defines_one(tmp_path):
    proc = run_script(tmp_path, ACTOR_REPR_DRIVER)
    out = output_of(proc)
    assert proc.returncode == 0, describe(proc)
    assert prefixed("Indexed(index=1)", "method output").search(out), describe(proc)
    assert prefixed("Indexed", "init output").search(out), describe(proc)  # __repr__ needs __init__ done
    assert prefixed("Plain", "plain output").search(out), describe(proc)
