"""Runtime environments: ``env_vars``, ``working_dir`` and ``py_modules`` for a job, task or actor.

    actorkit.init(runtime_env={"working_dir": ".", "env_vars": {"MODE": "test"}})
    f.options(runtime_env={"py_modules": ["./mylib"]}).remote()

The driver packs each local directory (or module) into a zip, puts it in the
object store once, and names it in the task's ``runtime_env`` as
``actorkit-zip:<sha256>:<object id>``: plain strings, which the node passes
on without looking.  A worker fetches and unpacks a zip once per machine
(``<session root>/runtime_resources/<sha256>``, content-addressed), then runs
the task with ``working_dir`` as its current directory and first on
``sys.path``, and each of ``py_modules`` on ``sys.path``.  Nested tasks and
actors inherit the environment of the task that submits them; a task's own
keys override the job's (``env_vars`` are merged).

``pip``, ``conda``, ``container`` and remote URIs are refused with an error
that says what to do instead: actorkit installs nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

# zipfile, hashlib, fnmatch and shutil are imported where packages are made or
# unpacked: together they would add a quarter to `import actorkit`.

SUPPORTED = ("env_vars", "working_dir", "py_modules", "excludes", "config")
MAX_PACKAGE_BYTES = 100 * 2**20
_URI = "actorkit-zip:"
_SKIPPED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".venv", ".tox", ".mypy_cache", ".pytest_cache"}
_REFUSED = {
    "pip": "actorkit installs no packages: install them on every machine (pip install ...) before starting",
    "uv": "actorkit installs no packages: install them on every machine before starting",
    "conda": "actorkit creates no conda environments: start the nodes inside the environment you need",
    "container": "actorkit runs no containers: start the nodes inside the container",
    "image_uri": "actorkit runs no containers: start the nodes inside the container",
}

_lock = threading.Lock()
_job_env: dict[str, Any] | None = None  # init(runtime_env=...) in a driver
_current: dict[str, Any] | None = None  # the running task's environment, in a worker
_packed: dict[tuple[str, str, bool], tuple[str, Any]] = {}  # (session, path, kind) -> (uri, the ref that pins the zip)


def validate(runtime_env: Any, where: str) -> None:
    """Raise a clear error for a runtime_env actorkit cannot honour."""
    if runtime_env is None:
        return
    if not isinstance(runtime_env, dict):
        raise TypeError(f"{where}: runtime_env must be a dict, not {type(runtime_env).__name__}")
    for key in runtime_env:
        if key in _REFUSED:
            raise ValueError(f"{where}: runtime_env[{key!r}] is not supported: {_REFUSED[key]}")
        if key not in SUPPORTED:
            raise ValueError(
                f"{where}: runtime_env key {key!r} is not supported by actorkit; the keys it knows are "
                f"{', '.join(SUPPORTED)}"
            )
    env_vars = runtime_env.get("env_vars") or {}
    if not isinstance(env_vars, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
        raise TypeError(f"{where}: runtime_env['env_vars'] must map str to str")
    working_dir = runtime_env.get("working_dir")
    if working_dir is not None:
        _check_local(working_dir, "working_dir", where, directory=True)
    modules = runtime_env.get("py_modules")
    if modules is not None:
        if not isinstance(modules, (list, tuple)):
            raise TypeError(f"{where}: runtime_env['py_modules'] must be a list of directories, files or modules")
        for module in modules:
            if not isinstance(module, types.ModuleType):
                _check_local(module, "py_modules", where, directory=False)
    excludes = runtime_env.get("excludes")
    if excludes is not None and not (isinstance(excludes, list) and all(isinstance(e, str) for e in excludes)):
        raise TypeError(f"{where}: runtime_env['excludes'] must be a list of glob patterns")


def _check_local(path: Any, key: str, where: str, directory: bool) -> None:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{where}: runtime_env[{key!r}] entries must be paths, not {type(path).__name__}")
    path = os.fspath(path)
    if path.startswith(_URI):
        return
    if "://" in path:
        raise ValueError(
            f"{where}: runtime_env[{key!r}]={path!r}: actorkit ships local directories only; download it "
            f"first and pass the local path"
        )
    if not os.path.exists(path) or (directory and not os.path.isdir(path)):
        kind = "directory" if directory else "directory or file"
        raise ValueError(f"{where}: runtime_env[{key!r}]={path!r} is not an existing {kind}")


def set_job_env(runtime_env: dict[str, Any] | None) -> None:
    """The environment every task and actor of this driver's job starts from."""
    global _job_env
    validate(runtime_env, "init()")
    _job_env = dict(runtime_env) if runtime_env else None
    with _lock:
        _packed.clear()  # packages of an earlier session are gone with its store


def for_call(runtime_env: dict[str, Any] | None, client: Any) -> dict[str, Any] | None:
    """The environment a new task or actor carries: inherited, merged, local paths packed."""
    base = _current if _current is not None else _job_env
    if not base and not runtime_env:
        return None
    merged = dict(base or {})
    if runtime_env:
        env_vars = {**(merged.get("env_vars") or {}), **(runtime_env.get("env_vars") or {})}
        merged.update(runtime_env)
        if env_vars:
            merged["env_vars"] = env_vars
    excludes = merged.pop("excludes", None) or []
    if merged.get("working_dir") is not None:
        merged["working_dir"] = _uri_for(os.fspath(merged["working_dir"]), excludes, client, as_package=False)
    if merged.get("py_modules"):
        merged["py_modules"] = [_uri_for(_module_path(m), excludes, client, as_package=True) for m in merged["py_modules"]]
    return merged


def _module_path(module: Any) -> str:
    if isinstance(module, types.ModuleType):
        origin = getattr(module, "__file__", None)
        if origin is None:
            raise ValueError(f"runtime_env['py_modules']: module {module.__name__} has no file to ship")
        return os.path.dirname(origin) if os.path.basename(origin) == "__init__.py" else origin
    return os.fspath(module)


def _uri_for(path: str, excludes: list[str], client: Any, as_package: bool) -> str:
    import hashlib

    if path.startswith(_URI):
        return path
    key = (client.session, os.path.abspath(path), as_package)
    with _lock:
        known = _packed.get(key)
        if known is not None:
            return known[0]
        data = _pack(path, excludes, as_package)
        sha = hashlib.sha256(data).hexdigest()
        ref = client.put(data)
        uri = f"{_URI}{sha}:{ref.hex()}"
        _packed[key] = (uri, ref)  # the ref pins the zip for as long as this process runs
        return uri


def _pack(path: str, excludes: list[str], as_package: bool) -> bytes:
    """A zip of a directory's files (or of one file), named relative to it.

    A package (a ``py_modules`` entry) keeps its own name as the top folder,
    so that unpacked, its parent folder goes on ``sys.path``.
    """
    import io
    import zipfile

    path = os.path.abspath(path)
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if os.path.isfile(path):
            archive.write(path, os.path.basename(path))
            total = os.path.getsize(path)
        else:
            top = os.path.basename(path.rstrip(os.sep)) if as_package else ""
            for folder, dirs, files in os.walk(path):
                relative_folder = os.path.relpath(folder, path)
                dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS and not _excluded(os.path.join(relative_folder, d), excludes)]
                for name in files:
                    relative = os.path.normpath(os.path.join(relative_folder, name))
                    if _excluded(relative, excludes):
                        continue
                    full = os.path.join(folder, name)
                    total += os.path.getsize(full)
                    if total > MAX_PACKAGE_BYTES:
                        raise ValueError(
                            f"runtime_env: {path} holds more than {MAX_PACKAGE_BYTES // 2**20} MiB of files; "
                            f"leave large files out with runtime_env['excludes'] (glob patterns), or put data "
                            f"in the object store with actorkit.put()"
                        )
                    archive.write(full, os.path.join(top, relative) if top else relative)
    return buffer.getvalue()


def _excluded(relative: str, excludes: list[str]) -> bool:
    import fnmatch

    relative = os.path.normpath(relative)
    return any(fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(os.path.basename(relative), pattern) for pattern in excludes)


# ------------------------------------------------------------------ workers


def enter(runtime_env: dict[str, Any] | None, fetch: Callable[[str], bytes]) -> Callable[[], None]:
    """Apply ``runtime_env`` to this worker process; returns the function that undoes it.

    ``fetch(object_id_hex)`` returns a packed zip's bytes.
    """
    global _current
    if not runtime_env:
        return _nothing
    saved_env = {name: os.environ.get(name) for name in runtime_env.get("env_vars") or {}}
    os.environ.update(runtime_env.get("env_vars") or {})
    saved_path = list(sys.path)
    saved_cwd = None
    for uri in runtime_env.get("py_modules") or ():
        sys.path.insert(0, _unpacked(uri, fetch))
    working_dir = runtime_env.get("working_dir")
    if working_dir is not None:
        folder = _unpacked(working_dir, fetch)
        saved_cwd = os.getcwd()
        os.chdir(folder)
        sys.path.insert(0, folder)
    outer, _current = _current, runtime_env

    def leave() -> None:
        global _current
        _current = outer
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        sys.path[:] = saved_path
        if saved_cwd is not None:
            os.chdir(saved_cwd)

    return leave


def _nothing() -> None:
    pass


def _unpacked(uri: str, fetch: Callable[[str], bytes]) -> str:
    """The folder holding the zip named by ``uri``, unpacked once per machine."""
    import hashlib
    import io
    import shutil
    import tempfile
    import zipfile

    _, sha, object_id = uri.split(":")
    root = os.path.join(_resources_root(), sha)
    if os.path.isdir(root):
        return root
    data = fetch(object_id)
    if hashlib.sha256(data).hexdigest() != sha:
        raise RuntimeError(f"runtime_env package {sha[:12]} arrived damaged")
    staging = tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=_resources_root())
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(staging)
    try:
        os.rename(staging, root)  # atomic: another worker may have won the race
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _resources_root() -> str:
    import tempfile

    root = os.path.join(tempfile.gettempdir(), f"actorkit-{os.getuid()}", "runtime_resources")
    os.makedirs(root, mode=0o700, exist_ok=True)
    return root
