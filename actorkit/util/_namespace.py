"""One module namespace per process for functions shipped by value (private).

A function defined in ``__main__`` (a script, a REPL, a notebook) cannot be
imported by a worker, so cloudpickle ships it *by value*, and each unpickled
function gets a fresh dict of its own as its globals.  That breaks a pattern
``multiprocessing`` users rely on::

    def init(v):          # Pool(initializer=init, initargs=(5,))
        global state
        state = v

    def work(x):          # pool.map(work, ...): must see state == 5
        return state + x

``init`` and ``work`` arrive in separate pickles, so ``work`` would read its
own copy of ``state``.  ``bind_to_process_namespace`` gives every function
shipped by value from one module a single shared globals dict in this
process, as if the module had been imported: the first function's globals
become the namespace, and later functions are rebound to it.  A name already
in the namespace keeps its value (so what an initializer set wins over the
value pickled from the driver), new names are added.  Functions from
importable modules (pickled by reference) already share their module's
globals and are returned unchanged.
"""

from __future__ import annotations

import sys
import types
from collections import OrderedDict
from typing import Any

_MAX_SCOPES = 32
_namespaces: OrderedDict[tuple[Any, str], dict[str, Any]] = OrderedDict()


def _shipped_by_value(fn: types.FunctionType) -> bool:
    module = sys.modules.get(fn.__module__ or "")
    return getattr(module, "__dict__", None) is not fn.__globals__


def _rebind(value: Any, old: dict[str, Any], ns: dict[str, Any], memo: dict[int, Any]) -> Any:
    if not isinstance(value, types.FunctionType) or value.__globals__ is not old:
        return value
    new = memo.get(id(value))
    if new is None:
        new = types.FunctionType(value.__code__, ns, value.__name__, value.__defaults__, value.__closure__)
        new.__kwdefaults__ = value.__kwdefaults__
        new.__qualname__ = value.__qualname__
        new.__module__ = value.__module__
        new.__doc__ = value.__doc__
        new.__annotations__ = value.__annotations__
        new.__dict__.update(value.__dict__)
        memo[id(value)] = new
    return new


def bind_to_process_namespace(fn: Any, scope: Any = None) -> Any:
    """``fn``, sharing one globals dict with the other by-value functions of its module and scope here."""
    if not isinstance(fn, types.FunctionType) or not _shipped_by_value(fn):
        return fn
    key = (scope, fn.__module__ or "__main__")
    globals_ = fn.__globals__
    ns = _namespaces.get(key)
    if ns is None:
        _namespaces[key] = globals_
        while len(_namespaces) > _MAX_SCOPES:
            _namespaces.popitem(last=False)
        return fn
    _namespaces.move_to_end(key)
    if ns is globals_:
        return fn
    memo: dict[int, Any] = {}
    for name, value in list(globals_.items()):
        if name not in ns:
            ns[name] = _rebind(value, globals_, ns, memo)
    return _rebind(fn, globals_, ns, memo)
