"""actorkit is one layered engine: each module imports only from its own layer or below.

The rules, checked on the source (``ast``; no process, no import of actorkit):

(a) a module imports no actorkit module of a higher layer (``LAYERS``);
(b) actorkit modules are imported at the top of a module, not inside
    functions, except the few lazy imports in ``LAZY_IMPORTS``: each keeps
    ``import actorkit`` light, or keeps a process (the node, the driver's
    ``init()``) from loading machinery it never runs;
(c) the top-level imports form no cycle.

Imports under ``if TYPE_CHECKING:`` are exempt: they never run.  Every module
of the package must be placed in ``LAYERS``: a new module fails here until
it is.  A key names a module, or a package and everything in it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "actorkit"

# 0: leaves (the standard library only): errors, the wire protocol, shared memory, constants.
# 1: values: serialization, payloads, refs, task specs, the process's context, session files.
# 2: the node's and the client's components, and the worker that runs tasks.
# 3: processes and their start-up: the driver (runtime/driver), the node process, members, the CLI's parts.
# 4: the user's API: remote functions, actors, the top-level package, utilities.
LAYERS: dict[str, int] = {
    "actorkit.exceptions": 0,
    "actorkit.protocol": 0,
    "actorkit.shm": 0,
    "actorkit.procutil": 0,
    "actorkit.run_times": 0,
    "actorkit.metrics_batch": 0,
    "actorkit.generators": 1,
    "actorkit.strategy": 0,
    "actorkit.node_config": 0,
    "actorkit.logs": 0,
    "actorkit.unmovable": 0,
    "actorkit.runtime_env": 0,
    "actorkit.call_check": 0,
    "actorkit.dag": 0,
    "actorkit.serialization": 1,
    "actorkit.payload": 1,
    "actorkit.object_ref": 1,
    "actorkit.task_spec": 1,
    "actorkit.context": 1,
    "actorkit.session": 1,
    "actorkit.options": 1,
    "actorkit.scheduler": 1,
    "actorkit.node": 2,  # the module, or the package it becomes, and its parts
    "actorkit.client": 2,  # likewise
    "actorkit.local_mode": 2,  # the in-process stand-in for a client
    "actorkit.worker": 2,
    "actorkit.worker_process": 2,
    "actorkit.object_store": 2,
    "actorkit.object_transfer": 2,
    "actorkit.direct": 2,
    "actorkit.gate": 2,
    "actorkit.mailbox": 2,
    "actorkit.members": 2,
    "actorkit.node_state": 2,
    "actorkit.runtime": 3,
    "actorkit.driver": 3,
    "actorkit.node_process": 3,
    "actorkit.member": 3,
    "actorkit.cluster": 3,
    "actorkit.cluster_utils": 3,
    "actorkit.dashboard": 3,
    "actorkit.status": 3,
    "actorkit.api": 4,
    "actorkit.actor": 4,
    "actorkit.remote_function": 4,
    "actorkit.timeline": 4,
    "actorkit.util": 4,
    "actorkit.experimental": 4,
    "actorkit": 4,  # the package's __init__ (this key names no others)
    "actorkit.__main__": 4,
}

_LIGHT = "import actorkit stays light"
# (importing module, imported module) -> (the names it may import lazily, why it is lazy)
LAZY_IMPORTS: dict[tuple[str, str], tuple[frozenset[str], str]] = {
    ("actorkit.runtime", "actorkit.driver"): (
        frozenset({"driver"}),
        f"{_LIGHT}: the client, the wire protocol and the node's Manager load on the first init()",
    ),
    ("actorkit.runtime", "actorkit.local_mode"): (
        frozenset({"LocalClient"}),
        f"{_LIGHT}: asyncio and the in-process runner load only for init(local_mode=True)",
    ),
    ("actorkit.runtime", "actorkit.dashboard"): (
        frozenset({"Dashboard"}),
        f"{_LIGHT}: http.server and email load only for init(dashboard=True)",
    ),
    ("actorkit.api", "actorkit.remote_function"): (
        frozenset({"RemoteFunction"}),
        f"{_LIGHT}: cloudpickle and the payload codec load on the first @remote, not on import",
    ),
    ("actorkit.actor", "actorkit.remote_function"): (
        frozenset({"_Export", "encode_arguments", "function_bytes_to_send"}),
        f"{_LIGHT}: as for api.remote (an actor class, its creation and its calls)",
    ),
    ("actorkit.actor", "actorkit.task_spec"): (
        frozenset({"ActorSpec", "TaskSpec"}),
        f"{_LIGHT}: the payload codec (pickle, mmap, shm) loads with the first call",
    ),
    ("actorkit.actor", "actorkit.protocol"): (
        frozenset({"protocol"}),
        f"{_LIGHT}: multiprocessing.connection and socket load with the first call",
    ),
    ("actorkit.timeline", "actorkit.util.state"): (
        frozenset({"list_tasks"}),
        f"{_LIGHT}: actorkit.util's __init__ loads serialization (cloudpickle), filelock and the pools",
    ),
    ("actorkit.__main__", "actorkit.status"): (
        frozenset({"print_status"}),
        "`actorkit start`, which runs a node in this process, loads no driver client",
    ),
    ("actorkit.__main__", "actorkit.dashboard"): (
        frozenset({"Dashboard"}),
        "http.server loads for `actorkit dashboard` only, not in a node started by `actorkit start`",
    ),
    ("actorkit.payload", "actorkit.serialization"): (
        frozenset({"serialize"}),
        "the node uses payloads but never loads cloudpickle (encode() serves the processes that run user code)",
    ),
    ("actorkit.task_spec", "actorkit.serialization"): (
        frozenset({"dumps"}),
        "the node reads task specs but never loads cloudpickle (only a submitting process pickles)",
    ),
    ("actorkit.node_process", "actorkit.node"): (
        frozenset({"Node", "NodeControl"}),
        "a driver imports node_process for NodeManager at init(): the node's code loads in the node process only",
    ),
    ("actorkit.worker_process", "actorkit.worker"): (
        frozenset({"WorkerArgs", "main"}),
        "the node spawns workers but loads none of their machinery (client, mailbox): the child does",
    ),
}


class Import(NamedTuple):
    module: str  # the importing module
    path: str  # its file, relative to the package's parent
    line: int
    target: str  # the actorkit module imported
    names: tuple[str, ...]  # the names imported (from X import a, b), or the module's
    top_level: bool  # False when inside a function


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, is_package: bool, source: str, path: str, known: Iterable[str]) -> list[Import]:
    """The imports of actorkit modules in ``source`` (the text of ``module``)."""
    known = set(known)
    tree = ast.parse(source, filename=path)
    found: list[Import] = []

    def resolve(node: ast.Import | ast.ImportFrom) -> list[tuple[str, str]]:
        if isinstance(node, ast.Import):
            return [(alias.name, alias.name) for alias in node.names]
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        # `from package import name`: the submodule if there is one, else the package.
        return [
            (f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin, alias.name)
            for alias in node.names
        ]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            visit_one(child, in_function)

    def visit_one(child: ast.AST, in_function: bool) -> None:
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            by_target: dict[str, list[str]] = {}
            for target, name in resolve(child):
                if target == "actorkit" or target.startswith("actorkit."):
                    by_target.setdefault(target, []).append(name)
            for target, names in by_target.items():
                found.append(Import(module, path, child.lineno, target, tuple(names), not in_function))
            return
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                visit_one(other, in_function)
            return
        nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        visit(child, nested)

    visit(tree, False)
    return found


def all_imports(root: Path = PACKAGE_DIR) -> list[Import]:
    modules = package_modules(root)
    found: list[Import] = []
    for name, path in modules.items():
        relative = str(path.relative_to(root.parent))
        found += imports_of(name, path.name == "__init__.py", path.read_text(), relative, modules)
    return found


def layer_of(module: str, layers: dict[str, int] = LAYERS) -> int | None:
    """The layer of ``module``: its own entry, else its closest package's (not the root's)."""
    if module in layers:
        return layers[module]
    parts = module.split(".")
    for end in range(len(parts) - 1, 1, -1):
        prefix = ".".join(parts[:end])
        if prefix in layers:
            return layers[prefix]
    return None


def unplaced(modules: Iterable[str], layers: dict[str, int] = LAYERS) -> list[str]:
    return [m for m in modules if layer_of(m, layers) is None]


def upward_imports(imports: Iterable[Import], layers: dict[str, int] = LAYERS) -> list[str]:
    problems = []
    for imp in imports:
        own, theirs = layer_of(imp.module, layers), layer_of(imp.target, layers)
        if own is not None and theirs is not None and theirs > own:
            problems.append(
                f"{imp.path}:{imp.line}: {imp.module} (layer {own}) imports {imp.target} (layer {theirs}): "
                f"rule (a), a module imports only from its layer or below"
            )
    return problems


def lazy_imports(
    imports: Iterable[Import], allowed: dict[tuple[str, str], tuple[frozenset[str], str]] = LAZY_IMPORTS
) -> list[str]:
    problems = []
    for imp in imports:
        if imp.top_level:
            continue
        entry = allowed.get((imp.module, imp.target))
        extra = sorted(set(imp.names) - entry[0]) if entry is not None else list(imp.names)
        if extra:
            problems.append(
                f"{imp.path}:{imp.line}: {imp.module} imports {imp.target} ({', '.join(extra)}) inside a "
                f"function: rule (b), import it at the top, or add it to LAZY_IMPORTS with the reason it must wait"
            )
    return problems


def unused_allowances(
    imports: Iterable[Import], allowed: dict[tuple[str, str], tuple[frozenset[str], str]] = LAZY_IMPORTS
) -> list[str]:
    used: dict[tuple[str, str], set[str]] = {}
    for imp in imports:
        if not imp.top_level:
            used.setdefault((imp.module, imp.target), set()).update(imp.names)
    return [
        f"LAZY_IMPORTS[{key}] allows {sorted(names - used.get(key, set()))}, which are not imported lazily any more"
        for key, (names, _why) in allowed.items()
        if names - used.get(key, set())
    ]


def cycles(imports: Iterable[Import]) -> list[list[str]]:
    """The strongly connected components (of more than one module) of the top-level import graph."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.top_level and imp.target != imp.module:
            graph.setdefault(imp.module, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def describe_cycle(component: list[str], imports: Iterable[Import]) -> str:
    members = set(component)
    edges = sorted(
        f"{imp.path}:{imp.line} {imp.module} -> {imp.target}"
        for imp in imports
        if imp.top_level and imp.module in members and imp.target in members and imp.module != imp.target
    )
    return f"rule (c), a cycle of top-level imports among {', '.join(component)}:\n    " + "\n    ".join(edges)


# ------------------------------------------------------------------ the package


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return all_imports()


def test_every_module_is_placed_in_a_layer():
    missing = unplaced(package_modules())
    assert not missing, f"modules with no layer in LAYERS (place them): {missing}"


def test_imports_go_downward(imports):
    problems = upward_imports(imports)
    assert not problems, "\n".join(problems)


def test_actorkit_modules_are_imported_at_the_top(imports):
    problems = lazy_imports(imports)
    assert not problems, "\n".join(problems)


def test_every_lazy_import_allowed_is_still_lazy(imports):
    problems = unused_allowances(imports)
    assert not problems, "\n".join(problems)


def test_lazy_imports_allowed_go_downward_too():
    for (module, target), (names, why) in LAZY_IMPORTS.items():
        assert names and why, (module, target)
        assert layer_of(target) is not None and layer_of(module) is not None, (module, target)
        assert layer_of(target) <= layer_of(module), f"{module} -> {target} goes up"  # type: ignore[operator]


def test_top_level_imports_form_no_cycle(imports):
    found = cycles(imports)
    assert not found, "\n".join(describe_cycle(c, imports) for c in found)


# ------------------------------------------------------------------ the checker itself


def _imports_of(sources: dict[str, str]) -> list[Import]:
    found: list[Import] = []
    for name, text in sources.items():
        found += imports_of(name, False, text, name.replace(".", "/") + ".py", sources)
    return found


def test_the_checker_sees_an_upward_import_and_names_its_line():
    layers = {"actorkit.low": 0, "actorkit.high": 1}
    found = _imports_of({"actorkit.low": "import os\n\nfrom .high import thing\n", "actorkit.high": "from . import low\n"})
    problems = upward_imports(found, layers)
    assert len(problems) == 1
    assert problems[0].startswith("actorkit/low.py:3: actorkit.low (layer 0) imports actorkit.high (layer 1)")
    assert "rule (a)" in problems[0]


def test_the_checker_sees_a_lazy_import_unless_allowed_and_exempts_type_checking():
    sources = {
        "actorkit.a": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from .b import Hidden\n"
            "def f():\n"
            "    from .b import thing, other\n"
            "    return thing\n"
            "class C:\n"
            "    def m(self):\n"
            "        import actorkit.b\n"
        ),
        "actorkit.b": "",
    }
    found = _imports_of(sources)
    assert [(i.line, i.top_level) for i in found] == [(5, False), (9, False)]  # not the TYPE_CHECKING one
    problems = lazy_imports(found, {})
    assert [p.split(":")[1] for p in problems] == ["5", "9"] and "rule (b)" in problems[0]
    allowed = {("actorkit.a", "actorkit.b"): (frozenset({"thing", "actorkit.b"}), "why")}
    assert lazy_imports(found, allowed) == [
        "actorkit/a.py:5: actorkit.a imports actorkit.b (other) inside a function: rule (b), import it at "
        "the top, or add it to LAZY_IMPORTS with the reason it must wait"
    ]
    stale = {("actorkit.a", "actorkit.c"): (frozenset({"x"}), "why")}
    assert unused_allowances(found, stale) and not unused_allowances(found, {("actorkit.a", "actorkit.b"): (frozenset({"other"}), "")})


def test_the_checker_finds_a_cycle_only_among_top_level_imports():
    sources = {
        "actorkit.a": "from . import b\n",
        "actorkit.b": "from .c import x\n",
        "actorkit.c": "def f():\n    from . import a\n",
    }
    assert cycles(_imports_of(sources)) == []
    sources["actorkit.c"] = "from . import a\n"
    found = _imports_of(sources)
    assert cycles(found) == [["actorkit.a", "actorkit.b", "actorkit.c"]]
    assert "actorkit/c.py:1 actorkit.c -> actorkit.a" in describe_cycle(cycles(found)[0], found)


def test_a_package_key_places_its_modules_but_not_look_alike_names():
    layers = {"actorkit.node": 2, "actorkit": 4}
    assert layer_of("actorkit.node", layers) == 2
    assert layer_of("actorkit.node.scheduling", layers) == 2
    assert layer_of("actorkit.node_process", layers) is None  # not part of the package actorkit.node
    assert layer_of("actorkit.new_module", layers) is None  # the root's key places only the root
    assert unplaced(["actorkit", "actorkit.new_module"], layers) == ["actorkit.new_module"]


def test_from_package_import_resolves_submodules_and_names():
    sources = {"actorkit": "", "actorkit.a": "from . import b, something\nfrom actorkit import b as bee\n", "actorkit.b": ""}
    found = _imports_of(sources)
    assert sorted((i.target, i.names) for i in found) == [
        ("actorkit", ("something",)),
        ("actorkit.b", ("b",)),
        ("actorkit.b", ("b",)),
    ]
