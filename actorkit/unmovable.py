"""Values that cannot move between processes, and where they hide in a value.

Some objects pickle (with dill's help) into something that only looks like the
original: a copied ``threading.Lock`` locks nothing the original locks, and a
copy of a held one deadlocks the task; a reopened file has another position and
mode.  actorkit refuses these with a ``SerializationError`` (a ``TypeError``)
that says where the object sits, in the caller's terms, and what to pass
instead.

Finding the culprit is bounded: a value nested 100,000 deep or a graph of
millions of objects gets a short answer quickly, not a search that takes
minutes and a message that takes megabytes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

# (module, qualname) of a class in an object's MRO -> why it cannot move.
_LOCK = (
    "a lock cannot be shared between processes: a copy would lock nothing the original "
    "locks (and a copy of a held one deadlocks). Coordinate through an actor, or "
    "actorkit.util.FileLock for processes on one machine."
)
_FILE = (
    "an open file cannot move to another process: pass its path (or its contents) and "
    "open it where it is used."
)
_SOCKET = "a socket cannot move to another process: pass the address and connect where it is used."
_GENERATOR = (
    "a generator's state cannot be pickled: pass a list of its items, or make the remote "
    "function itself a generator."
)
_THREAD = "a thread cannot move to another process: start it where it runs."
_QUEUE = (
    "a queue of this process cannot be shared with another: use actorkit.util.queue.Queue, "
    "which lives in an actor."
)
_WEAKREF = "a weak reference cannot move to another process (dill would send a dead one): pass the object itself."
_REFUSED: dict[tuple[str, str], str] = {
    ("weakref", "ReferenceType"): _WEAKREF,
    ("weakref", "ProxyType"): _WEAKREF,
    ("weakref", "CallableProxyType"): _WEAKREF,
    ("_thread", "lock"): _LOCK,
    ("_thread", "RLock"): _LOCK,
    ("threading", "_RLock"): _LOCK,
    ("threading", "Condition"): _LOCK,
    ("threading", "Semaphore"): _LOCK,
    ("threading", "Event"): _LOCK,
    ("threading", "Barrier"): _LOCK,
    ("_io", "FileIO"): _FILE,
    ("_io", "BufferedReader"): _FILE,
    ("_io", "BufferedWriter"): _FILE,
    ("_io", "BufferedRandom"): _FILE,
    ("_io", "BufferedRWPair"): _FILE,
    ("_io", "TextIOWrapper"): _FILE,
    ("_socket", "socket"): _SOCKET,
    ("builtins", "generator"): _GENERATOR,
    ("builtins", "async_generator"): _GENERATOR,
    ("builtins", "coroutine"): _GENERATOR,
    ("threading", "Thread"): _THREAD,
    ("queue", "Queue"): _QUEUE,
    ("_queue", "SimpleQueue"): _QUEUE,
    ("asyncio.queues", "Queue"): _QUEUE,
}

# How far the search for a culprit may go before it settles for what it has.
MAX_DEPTH = 64
MAX_PICKLE_TRIES = 200
MAX_VISITS = 20_000


@functools.lru_cache(maxsize=4096)
def refusal(kind: type) -> str | None:
    """Why instances of ``kind`` are refused, or None when they may be pickled."""
    for klass in kind.__mro__:
        reason = _REFUSED.get((klass.__module__, klass.__qualname__))
        if reason is not None:
            return reason
    return None


class Refused(Exception):
    """Raised from inside the pickler at a refused object (internal)."""

    def __init__(self, culprit: Any, reason: str) -> None:
        super().__init__(reason)
        self.culprit = culprit
        self.reason = reason


# Names users write for classes whose real names are private.
_PUBLIC_NAMES = {
    "_thread.lock": "threading.Lock",
    "_thread.RLock": "threading.RLock",
    "_socket.socket": "socket.socket",
    "_queue.SimpleQueue": "queue.SimpleQueue",
}


def type_name(obj: Any) -> str:
    kind = type(obj)
    module = kind.__module__
    name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    return _PUBLIC_NAMES.get(name, name)


def children(obj: Any) -> Iterator[tuple[str, Any]]:
    """(path step, child) for the parts of ``obj`` that pickling would visit."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"[{k!r}]", v
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, v in enumerate(obj):
            yield f"[{i}]", v
    else:
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            for k, v in attrs.items():
                yield f".{k}", v
        for slot in getattr(type(obj), "__slots__", ()):
            if isinstance(slot, str) and hasattr(obj, slot):
                yield f".{slot}", getattr(obj, slot)
        closure = getattr(obj, "__closure__", None)
        code = getattr(obj, "__code__", None)
        if closure and code is not None:
            for name, cell in zip(code.co_freevars, closure):
                try:
                    yield f".<closure {name}>", cell.cell_contents
                except ValueError:
                    continue
        if code is not None:
            globals_ = getattr(obj, "__globals__", {})
            for name in code.co_names:
                if name in globals_:
                    yield f".<global {name}>", globals_[name]


def path_to(value: Any, target: Any) -> list[str] | None:
    """The steps from ``value`` to the object ``target`` (by identity), if found in bounds."""
    stack: list[tuple[Any, list[str]]] = [(value, [])]
    seen: set[int] = set()
    while stack and len(seen) < MAX_VISITS:
        node, steps = stack.pop()
        if node is target:
            return steps
        if id(node) in seen or len(steps) >= MAX_DEPTH:
            continue
        seen.add(id(node))
        # Reversed so the first child is searched first, as pickling meets them.
        stack.extend(reversed([(child, [*steps, step]) for step, child in children(node)]))
    return None


def deepest_failure(value: Any, pickles: Callable[[Any], bool]) -> tuple[list[str], Any]:
    """The steps to, and the object of, the deepest part of ``value`` that won't pickle."""
    seen: set[int] = {id(value)}
    node, steps = value, []
    tries = 0
    while len(steps) < MAX_DEPTH:
        for step, child in children(node):
            if id(child) in seen:
                continue
            seen.add(id(child))
            tries += 1
            if tries > MAX_PICKLE_TRIES:
                return steps, node
            if not pickles(child):
                node, steps = child, [*steps, step]
                break
        else:
            break
    return steps, node
