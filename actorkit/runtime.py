"""This process's place in actorkit: starting and stopping a driver.

A process has at most one ``Client`` at a time, kept in ``context``: a
driver's (made by ``init()``) or a worker's (made when the worker starts).
``init()`` with no address spawns a node server and connects to it;
``shutdown()`` stops everything it started and returns once those processes
have exited.  The machinery of both is in ``driver``, imported on the first
``init()`` so that ``import actorkit`` stays light.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import warnings
from typing import TYPE_CHECKING, Any

from . import context
from . import runtime_env as runtime_env_module
from .context import (  # noqa: F401  (public here: tests and users read them from runtime)
    client_for,
    client_if_connected,
    current_client,
    current_executor,
    current_job_id,
    forked_error,
)

if TYPE_CHECKING:
    from .driver import Driver

_lock = threading.RLock()
_driver: Driver | _LocalDriver | None = None
_dashboard: Any = None  # the live page, when init(dashboard=True) started one

_INIT_KEYWORDS = (
    "address",
    "num_cpus",
    "num_gpus",
    "resources",
    "namespace",
    "ignore_reinit_error",
    "log_to_driver",
    "object_store_memory",
    "include_dashboard",
    "logging_level",
    "runtime_env",
    "local_mode",
    "dashboard",
    "_temp_dir",
    "_metrics_export_port",
)
_RESERVED_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def node_id() -> str:
    if _driver is not None:
        return _driver.node_info["node_id"]
    executor = context.executor
    return executor.node_id if executor is not None else ""


def namespace() -> str:
    """The namespace of this driver's job, or (in a worker) of the job of the task it runs."""
    if _driver is not None:
        return _driver.namespace
    if context.executor is None:
        return ""
    job_id = context.current_job_id()
    known = _job_namespaces.get(job_id)
    if known is None:
        known = _job_namespaces[job_id] = context.current_client().request("namespace", job_id)
    return known


_job_namespaces: dict[bytes, str] = {}  # in a worker: what the node said each job's namespace is


def is_initialized() -> bool:
    """Whether this process is connected to a live node (a driver after ``init()``, or a worker).

    False once the node died or stopped answering: then ``init()`` starts or
    joins another (and first cleans up after the dead one).
    """
    client = context.client
    return (
        context.forked_from is None
        and client is not None
        and not client.closed
        and getattr(client, "failure", None) is None
    )


def init(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    resources: dict[str, float] | None = None,
    namespace: str | None = None,
    ignore_reinit_error: bool = False,
    log_to_driver: bool = True,
    object_store_memory: int | None = None,
    include_dashboard: bool | None = None,
    logging_level: Any = None,
    runtime_env: dict[str, Any] | None = None,
    local_mode: bool | None = None,
    dashboard: bool = False,
    _temp_dir: str | None = None,
    _metrics_export_port: int | None = None,
    **unknown: Any,
) -> dict[str, Any]:
    """Start a node and connect this process to it as a driver (Ray's ``init``).

    Returns information about the node (its id, session, address).
    """
    global _driver
    if _metrics_export_port is not None:
        # Ray serves Prometheus metrics there; actorkit keeps them at the node instead.
        warnings.warn(
            "init(_metrics_export_port=...): actorkit has no Prometheus exporter; read the metrics "
            "with actorkit.util.state.list_metrics() or `actorkit status`",
            stacklevel=2,
        )
    if unknown:
        raise TypeError(
            f"init() got unexpected keyword argument(s) {sorted(unknown)}; "
            f"actorkit.init accepts {', '.join(_INIT_KEYWORDS)}"
        )
    with _lock:
        if is_initialized():
            if ignore_reinit_error:
                assert _driver is not None or context.executor is not None
                return dict(_driver.node_info) if _driver else {}
            raise RuntimeError(
                "Maybe you called actorkit.init twice by accident? This error can be suppressed "
                "by passing in 'ignore_reinit_error=True' or by calling 'actorkit.shutdown()' "
                "prior to 'actorkit.init()'."
            )
        if _driver is not None and getattr(context.client, "failure", None) is not None:
            shutdown()  # the node died: let go of it before starting or joining another
        runtime_env_module.set_job_env(runtime_env)  # checked before a node starts
        if address is not None and not isinstance(address, str):
            raise TypeError(f"init(address={address!r}): expected 'auto' or 'HOST:PORT'")
        if address is not None and address not in ("local",):
            if num_cpus is not None or num_gpus is not None or resources:
                raise ValueError(
                    "init(address=...) joins a running node, whose resources are set by "
                    "`actorkit start`; do not pass num_cpus, num_gpus or resources with it"
                )
            from . import driver  # lazy: the client, protocol and node's Manager load on init()

            _driver, context.client = driver.connect_to_cluster(address, namespace, log_to_driver)
            _shutdown_at_exit_first()
            return _started(dashboard or bool(include_dashboard))
        if local_mode is None:
            local_mode = os.environ.get("ACTORKIT_LOCAL_MODE", "") not in ("", "0")
        if local_mode:
            _driver, context.client = _start_local_mode(namespace)
            return dict(_driver.node_info)
        totals = _validated_resources(num_cpus, num_gpus, resources)
        store_memory = _validated_store_memory(object_store_memory)
        if namespace is not None and not isinstance(namespace, str):
            raise TypeError(f"init(namespace=...) must be a str, not {type(namespace).__name__}")
        from . import driver  # lazy: the client, protocol and node's Manager load on init()

        _driver, context.client = driver.start_local_node(totals, store_memory, namespace, log_to_driver, _temp_dir)
        _shutdown_at_exit_first()
        return _started(dashboard or bool(include_dashboard))


def _started(with_dashboard: bool) -> dict[str, Any]:
    """What init() returns; with the live page started first, if asked for."""
    global _dashboard
    info = dict(_driver.node_info)  # type: ignore[union-attr]
    if with_dashboard:
        from .dashboard import Dashboard  # lazy: http.server loads only for init(dashboard=True)

        _dashboard = Dashboard(context.client)
        info["dashboard_url"] = _dashboard.url
        print(f"actorkit dashboard: {_dashboard.url}", file=sys.stderr, flush=True)
    return info


class _LocalDriver:
    """The driver's record in local mode: no node, no processes (see ``local_mode.py``)."""

    owns_node = False
    log_printer = None

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.node_info: dict[str, Any] = {"node_id": "local", "local_mode": True, "namespace": namespace}


def _start_local_mode(namespace: str | None) -> tuple[Any, Any]:
    from .local_mode import (
        LocalClient,  # lazy: asyncio and the in-process runner load only in local mode
    )

    client = LocalClient(namespace)
    return _LocalDriver(client.namespace), client


def _shutdown_at_exit_first() -> None:
    # atexit runs the last registered handler first, and multiprocessing registers
    # its exit function when first imported (during init()). Run after it,
    # shutdown() came too late: that function asked the node's Manager server to
    # exit, and waited a second for a node that stops only when shutdown() says
    # so before terminating it. Registered again now, shutdown() runs first.
    atexit.unregister(shutdown)
    atexit.register(shutdown)


def _validated_resources(
    num_cpus: Any, num_gpus: Any, resources: dict[str, float] | None
) -> dict[str, float]:
    totals: dict[str, float] = {}
    for name, value, default in (
        ("num_cpus", num_cpus, os.cpu_count() or 1),
        ("num_gpus", num_gpus, 0),
    ):
        if value is None:
            value = default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"init({name}={value!r}): expected a number >= 0")
        totals["CPU" if name == "num_cpus" else "GPU"] = value
    if totals["GPU"] != int(totals["GPU"]):
        raise ValueError(f"init(num_gpus={num_gpus!r}): the number of GPUs must be whole")
    totals["memory"] = max(_physical_memory() * 7 // 10, 0)
    if resources is not None and not isinstance(resources, dict):
        raise TypeError(f"init(resources={resources!r}): expected a dict of resource name -> amount")
    for name, amount in (resources or {}).items():
        if name in _RESERVED_RESOURCES:
            keyword = {"CPU": "num_cpus", "GPU": "num_gpus"}.get(name, name)
            raise ValueError(
                f"init(resources={{{name!r}: ...}}): {name!r} is a built-in resource; "
                f"use the {keyword}= argument instead"
            )
        if not isinstance(name, str):
            raise TypeError(f"init(resources=...): resource names must be strings, not {name!r}")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            raise ValueError(f"init(resources={{{name!r}: {amount!r}}}): expected a number >= 0")
        totals[name] = amount
    return totals


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30


def _validated_store_memory(object_store_memory: Any) -> int:
    if object_store_memory is None:
        return int(_physical_memory() * 0.3)
    if isinstance(object_store_memory, bool) or not isinstance(object_store_memory, int):
        raise TypeError(f"init(object_store_memory={object_store_memory!r}): expected a number of bytes")
    if object_store_memory <= 0:
        raise ValueError(f"init(object_store_memory={object_store_memory!r}): must be positive")
    return object_store_memory


def shutdown() -> None:
    """Disconnect, and stop the node and every process this driver started."""
    global _driver, _dashboard
    with _lock:
        driver, client = _driver, context.client
        if driver is None:
            return
        _driver = context.client = None
        if _dashboard is not None:
            _dashboard.stop()
            _dashboard = None
        if context.forked_from is not None:
            return  # the node belongs to the parent process: leave it alone
        if isinstance(driver, _LocalDriver):
            client.close()  # type: ignore[union-attr]
            return
        from . import driver as bootstrap  # loaded already: init() imported it

        bootstrap.stop(driver, client)


context.auto_init = init  # what current_client() calls in a driver that never called init()
atexit.register(shutdown)
