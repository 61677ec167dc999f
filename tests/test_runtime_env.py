"""runtime_env: env_vars, working_dir and py_modules for a job, a task or an actor."""

from __future__ import annotations

import os
import textwrap

import pytest
from _drivers import describe, run_script

import actorkit as ray


def _make_tree(root):
    (root / "mylib").mkdir()
    (root / "mylib" / "__init__.py").write_text("def answer():\n    return 42\n")
    (root / "data.txt").write_text("hello from the working dir\n")
    (root / "big.bin").write_bytes(b"\0" * 1000)


def test_working_dir_and_py_modules_per_task_and_actor(ray_start_shared, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    _make_tree(project)

    @ray.remote(runtime_env={"working_dir": str(project), "excludes": ["*.bin"]})
    def read_data():
        import mylib  # importable: working_dir is on sys.path

        with open("data.txt") as f:  # relative to working_dir
            return f.read().strip(), mylib.answer(), os.path.exists("big.bin")

    assert ray.get(read_data.remote()) == ("hello from the working dir", 42, False)

    @ray.remote
    def plain_cwd():
        return os.path.exists("data.txt")

    assert ray.get(plain_cwd.remote()) is False  # the task's environment ended with it

    @ray.remote(runtime_env={"py_modules": [str(project / "mylib")], "env_vars": {"MODE": "actor"}})
    class UsesLib:
        def answer(self):
            import mylib

            return mylib.answer(), os.environ.get("MODE")

    user = UsesLib.remote()
    assert ray.get(user.answer.remote()) == (42, "actor")
    ray.kill(user)


@pytest.mark.parametrize(
    "env,match",
    [
        ({"pip": ["requests"]}, "installs no packages"),
        ({"conda": "env"}, "conda"),
        ({"working_dir": "s3://bucket/dir"}, "local directories only"),
        ({"working_dir": "/no/such/dir"}, "not an existing directory"),
        ({"py_modules": "mylib"}, "must be a list"),
        ({"colour": "blue"}, "not supported"),
    ],
)
def test_what_cannot_be_honoured_is_a_clear_error(ray_start_shared, env, match):
    @ray.remote
    def f():
        return 1

    with pytest.raises((ValueError, TypeError), match=match):
        f.options(runtime_env=env).remote()


def test_job_runtime_env_reaches_tasks_and_nested_tasks(tmp_path):
    project = tmp_path / "job"
    project.mkdir()
    _make_tree(project)
    source = textwrap.dedent(
        f"""
        import os
        import actorkit as ray

        @ray.remote
        def inner():
            import mylib
            return mylib.answer(), os.environ.get("JOB_VAR")

        @ray.remote
        def outer():
            with open("data.txt") as f:
                first = f.read().strip()
            return first, ray.get(inner.remote())

        ray.init(num_cpus=2, runtime_env={{"working_dir": {str(project)!r}, "env_vars": {{"JOB_VAR": "yes"}}}})
        print(ray.get(outer.remote()))
        print(ray.get(outer.options(runtime_env={{"env_vars": {{"JOB_VAR": "task"}}}}).remote()))
        ray.shutdown()
        """
    )
    proc = run_script(tmp_path, source)
    assert proc.returncode == 0, describe(proc)
    assert "('hello from the working dir', (42, 'yes'))" in proc.stdout, describe(proc)
    assert "('hello from the working dir', (42, 'task'))" in proc.stdout, describe(proc)
