"""The typed API: a type checker sees f.remote(...) -> ObjectRef[R], get() -> R, and flags f(3).

mypy runs on a user's file in a fresh process, resolving actorkit the way a
project with an editable install does (a path entry, not an import hook).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
from _drivers import driver_env

pytest.importorskip("mypy")

USER_CODE = textwrap.dedent(
    """
    import actorkit as ray

    @ray.remote
    def f(x: int) -> str:
        return str(x)

    class Counter:
        def incr(self) -> int:
            return 1

    # mypy ignores what class decorators return; the call form is typed.
    CounterActor = ray.remote(num_cpus=2)(Counter)

    ref = f.remote(3)
    reveal_type(ref)
    reveal_type(ray.get(ref))
    reveal_type(ray.get([ref, ref]))
    reveal_type(CounterActor)
    f(3)
    f.remote("not an int")
    """
)


def test_mypy_sees_the_remote_types(tmp_path):
    (tmp_path / "user.py").write_text(USER_CODE)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy"), "user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=driver_env(),
        timeout=300,
    )
    out = proc.stdout
    # mypy writes builtins.str or str, depending on its version.
    assert re.search(r'Revealed type is "actorkit\.object_ref\.ObjectRef\[(builtins\.)?str\]"', out), out
    assert re.search(r'Revealed type is "(builtins\.)?str"', out), out
    assert re.search(r'Revealed type is "(builtins\.)?list\[(builtins\.)?str\]"', out), out
    assert "actorkit.actor.ActorClass[user.Counter]" in out, out
    assert '"RemoteFunction[[int], str]" not callable' in out, out
    assert 'incompatible type "str"; expected "int"' in out, out
    assert out.count("error:") == 2, out


def test_help_lists_every_option():
    import actorkit
    from actorkit.actor import ACTOR_OPTIONS
    from actorkit.options import TASK_OPTIONS

    text = actorkit.remote.__doc__ or ""
    missing = [name for name in sorted(TASK_OPTIONS | ACTOR_OPTIONS) if f"``{name}``" not in text]
    assert not missing, f"remote()'s docstring does not explain {missing}"
