"""Helpers for tests that run a driver program in a fresh interpreter.

Test modules import this file by name (pytest puts ``tests/`` on ``sys.path``).
The subprocess gets the directory that holds the ``actorkit`` package prepended
to ``PYTHONPATH``, runs with its working directory in a temporary folder (so
nothing from the repository is importable by accident) and is always bounded by
a timeout, so a hanging runtime fails the test instead of the session.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import actorkit

DRIVER_TIMEOUT_S = 60

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def package_root() -> str:
    """The directory that contains the ``actorkit`` package."""
    pkg_dir = getattr(actorkit, "__file__", None)
    if pkg_dir:
        pkg_dir = os.path.dirname(os.path.abspath(pkg_dir))
    else:  # namespace package (runtime not written yet)
        pkg_dir = os.path.abspath(next(iter(actorkit.__path__)))
    return os.path.dirname(pkg_dir)


def driver_env(**overrides: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("ACTORKIT_DEDUP_LOGS", "PYTHONSTARTUP", "PYTHONINSPECT"):
        env.pop(name, None)
    root = package_root()
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root + (os.pathsep + old if old else "")
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_python(
    args: list[str],
    cwd,
    *,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = DRIVER_TIMEOUT_S,
) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` and return the completed process (text mode).

    ANSI colour codes are stripped from stdout and stderr.
    """
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=str(cwd),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=env if env is not None else driver_env(),
        timeout=timeout,
    )
    proc.stdout = _ANSI.sub("", proc.stdout)
    proc.stderr = _ANSI.sub("", proc.stderr)
    return proc


def run_script(tmp_path, source: str, *, env=None, name: str = "driver.py"):
    """Write SOURCE to a file in TMP_PATH and run it as ``python FILE``."""
    path = tmp_path / name
    path.write_text(source)
    return run_python([str(path)], tmp_path, env=env)


def describe(proc: subprocess.CompletedProcess) -> str:
    """A failure message showing what the driver printed."""
    return (
        f"exit status {proc.returncode}\n--- stdout ---\n{proc.stdout}"
        f"\n--- stderr ---\n{proc.stderr}"
    )
