"""This process's place in actorkit: starting and stopping a driver, and finding the client.

A process has at most one ``Client`` at a time: a driver's (made by
``init()``) or a worker's (made when the worker starts).  Everything that
needs the node (``remote()``, ``get()``, ObjectRefs being unpickled) finds it
here.  ``init()`` with no address spawns a node server and connects to it;
``shutdown()`` stops everything it started and returns once those processes
have exited.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, Any

from . import runtime_env as runtime_env_module
from .exceptions import forked_error

if TYPE_CHECKING:
    from .client import Client
    from .logs import LogPrinter
    from .node_process import NodeManager
    from .worker import TaskExecutor

_lock = threading.RLock()
_client: Client | None = None
_driver: Driver | None = None
_executor: TaskExecutor | None = None
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
)
_RESERVED_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


class Driver:
    """What ``init()`` started or connected to, and how to stop it."""

    def __init__(
        self,
        manager: NodeManager | None,
        node_info: dict[str, Any],
        session_dir: str,
        owns_node: bool,
        namespace: str,
        log_printer: LogPrinter | None,
    ) -> None:
        self.manager = manager
        self._control: Any = None
        self.node_info = node_info
        self.session_dir = session_dir
        self.owns_node = owns_node
        self.namespace = namespace
        self.log_printer = log_printer

    @property
    def control(self) -> Any:
        """The node's control-plane proxy, connected on first use (init() need not wait for it)."""
        if self._control is None:
            assert self.manager is not None, "only the driver that started a node controls it"
            self._control = self.manager.node()  # type: ignore[attr-defined]
        return self._control

    def __repr__(self) -> str:
        return f"<Driver node={self.node_info['node_id'][:8]} session={self.node_info['session']}>"


def client_if_connected() -> Client | None:
    return _client if _forked_from is None else None


# A process forked from a driver or worker shares its sockets: using them
# would interleave bytes with the parent's. The child gets a clear error instead.
_forked_from: int | None = None


def _after_fork_in_child() -> None:
    global _forked_from
    if _client is not None and _forked_from is None:
        _forked_from = _client._pid


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def current_client() -> Client:
    """This process's client; a driver that never called ``init()`` calls it now."""
    if _forked_from is not None:
        raise forked_error(_forked_from)
    client = _client
    if client is not None and not client.closed:
        return client
    if _executor is not None:
        raise RuntimeError("this worker lost its node")
    init()
    assert _client is not None
    return _client


def client_for(ref: Any, what: str) -> Client:
    """The client to use for ``ref`` (an ObjectRef); an error if its session has ended."""
    owner = getattr(ref, "_client", None)
    if owner is not None and owner.closed:
        raise RuntimeError(
            f"{what} belongs to an actorkit session that was shut down; refs and handles do not "
            f"carry over to a new init(). Create it again in the current session."
        )
    return current_client()


def current_job_id() -> bytes:
    client = current_client()
    if _executor is not None and _executor.current is not None:
        return _executor.current.job_id
    return client.job_id


def current_executor() -> TaskExecutor | None:
    """The task executor of this worker process (None in a driver)."""
    return _executor


def enter_worker(client: Client, executor: TaskExecutor) -> None:
    global _client, _executor
    _client, _executor = client, executor


def node_id() -> str:
    if _driver is not None:
        return _driver.node_info["node_id"]
    return _executor.node_id if _executor is not None else ""


def namespace() -> str:
    return _driver.namespace if _driver is not None else ""


def is_initialized() -> bool:
    """Whether this process is connected to a live node (a driver after ``init()``, or a worker).

    False once the node died or stopped answering: then ``init()`` starts or
    joins another (and first cleans up after the dead one).
    """
    client = _client
    return _forked_from is None and client is not None and not client.closed and getattr(client, "failure", None) is None


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
    **unknown: Any,
) -> dict[str, Any]:
    """Start a node and connect this process to it as a driver (Ray's ``init``).

    Returns information about the node (its id, session, address).
    """
    global _client, _driver
    if unknown:
        raise TypeError(
            f"init() got unexpected keyword argument(s) {sorted(unknown)}; "
            f"actorkit.init accepts {', '.join(_INIT_KEYWORDS)}"
        )
    with _lock:
        if is_initialized():
            if ignore_reinit_error:
                assert _driver is not None or _executor is not None
                return dict(_driver.node_info) if _driver else {}
            raise RuntimeError(
                "Maybe you called actorkit.init twice by accident? This error can be suppressed "
                "by passing in 'ignore_reinit_error=True' or by calling 'actorkit.shutdown()' "
                "prior to 'actorkit.init()'."
            )
        if _driver is not None and _client is not None and getattr(_client, "failure", None) is not None:
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
            _driver, _client = _connect_to_cluster(address, namespace, log_to_driver)
            _shutdown_at_exit_first()
            return _started(dashboard or bool(include_dashboard))
        if local_mode is None:
            local_mode = os.environ.get("ACTORKIT_LOCAL_MODE", "") not in ("", "0")
        if local_mode:
            _driver, _client = _start_local_mode(namespace)
            return dict(_driver.node_info)
        totals = _validated_resources(num_cpus, num_gpus, resources)
        store_memory = _validated_store_memory(object_store_memory)
        if namespace is not None and not isinstance(namespace, str):
            raise TypeError(f"init(namespace=...) must be a str, not {type(namespace).__name__}")
        _driver, _client = _start_local_node(totals, store_memory, namespace, log_to_driver, _temp_dir)
        _shutdown_at_exit_first()
        return _started(dashboard or bool(include_dashboard))


def _started(with_dashboard: bool) -> dict[str, Any]:
    """What init() returns; with the live page started first, if asked for."""
    global _dashboard
    info = dict(_driver.node_info)  # type: ignore[union-attr]
    if with_dashboard:
        from .dashboard import Dashboard

        _dashboard = Dashboard(_client)
        info["dashboard_url"] = _dashboard.url
        print(f"actorkit dashboard: {_dashboard.url}", file=sys.stderr, flush=True)
    return info


class _LocalDriver:
    """The driver's record in local mode: no node, no processes (see ``local_mode.py``)."""

    owns_node = False
    log_printer = None

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.node_info = {"node_id": "local", "local_mode": True, "namespace": namespace}


def _start_local_mode(namespace: str | None) -> tuple[Any, Any]:
    from .local_mode import LocalClient

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


def session_root(temp_dir: str | None = None) -> str:
    """The directory holding this user's sessions (and the local cluster's files)."""
    root = os.path.join(temp_dir or tempfile.gettempdir(), f"actorkit-{os.getuid()}")
    if len(root) > 60 and os.path.isdir("/tmp"):
        # Unix socket paths are limited to ~100 bytes: keep session paths short.
        root = f"/tmp/actorkit-{os.getuid()}"
    os.makedirs(root, mode=0o700, exist_ok=True)
    _check_private(root)
    return root


def _check_private(root: str) -> None:
    """Refuse a root someone else made or may write: they could swap its sockets and read its key."""
    import stat

    st = os.lstat(root)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        problem = "is a symbolic link" if stat.S_ISLNK(st.st_mode) else "is not a directory"
    elif st.st_uid != os.getuid():
        problem = f"is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    elif stat.S_IMODE(st.st_mode) & 0o077:
        problem = f"has mode {stat.S_IMODE(st.st_mode):04o}, which lets other users in"
    else:
        return
    raise PermissionError(
        f"actorkit's session directory {root} {problem}; it must be a directory of yours with mode "
        f"0700. Remove it if nothing of yours runs from it (`rm -r {root}`, then it is made again), "
        f"`chmod 700 {root}` if it is yours, or pass init(_temp_dir=...) / set TMPDIR to another place"
    )


def new_node_config(
    totals: dict[str, float], store_memory: int, owner_pid: int, temp_dir: str | None = None, **extra: Any
) -> Any:
    """A fresh session directory and the configuration of a node serving it."""
    from .node_process import NodeConfig

    root = session_root(temp_dir)
    _remove_dead_sessions(root)
    session = os.urandom(4).hex()
    return NodeConfig(
        node_id=os.urandom(14).hex(),
        session=session,
        session_dir=tempfile.mkdtemp(prefix=f"session-{session}-", dir=root),
        authkey=os.urandom(32),
        resources=totals,
        object_store_memory=store_memory,
        owner_pid=owner_pid,
        # One worker now for a fast first task; the rest start on demand.
        prestart_workers=1 if totals["CPU"] >= 1 else 0,
        **extra,
    )


def write_pids(session_dir: str, driver_pid: int, node_pid: int) -> None:
    # Written whole or not at all: another driver's init() may be reading it.
    pids_tmp = os.path.join(session_dir, "pids.tmp")
    with open(pids_tmp, "w") as f:
        f.write(f"{driver_pid} {node_pid}\n")
    os.replace(pids_tmp, os.path.join(session_dir, "pids"))


SESSION_KEY_FILE = "session.key"


def write_session_key(session_dir: str, authkey: bytes) -> None:
    """Leave the node's key in its (0700) session directory, mode 0600, for
    ``actorkit status`` run by the same user: a private node shows there too."""
    fd = os.open(os.path.join(session_dir, SESSION_KEY_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(authkey)


def _start_local_node(
    totals: dict[str, float],
    store_memory: int,
    namespace: str | None,
    log_to_driver: bool,
    temp_dir: str | None,
) -> tuple[Driver, Client]:
    import multiprocessing

    from .node_process import NodeManager, serve
    from .procutil import main_module_hidden

    config = new_node_config(totals, store_memory, os.getpid(), temp_dir)
    manager = NodeManager(
        address=config.manager_address,
        authkey=config.authkey,
        ctx=multiprocessing.get_context("spawn"),
    )
    with main_module_hidden():
        manager.start(initializer=serve, initargs=(config,))
    write_pids(config.session_dir, os.getpid(), manager._process.pid)  # type: ignore[attr-defined]
    write_session_key(config.session_dir, config.authkey)
    try:
        return _connect_driver(manager, config.data_address, config.authkey, namespace, log_to_driver, owns_node=True)
    except BaseException:
        _stop_node_process(manager, config.session, config.session_dir)
        raise


def _connect_driver(
    manager: NodeManager | None,
    address: Any,
    authkey: bytes,
    namespace: str | None,
    log_to_driver: bool,
    owns_node: bool,
    member: dict[str, Any] | None = None,
) -> tuple[Driver, Client]:
    """Connect this process to the node at ``address`` as a driver."""
    from . import protocol as P
    from .client import Client
    from .exceptions import GetTimeoutError
    from .logs import LogPrinter

    printer = LogPrinter() if log_to_driver else None
    job_id = os.urandom(4)
    # Without a namespace a driver gets an anonymous one of its own, as in Ray.
    namespace = namespace or f"anonymous-{job_id.hex()}"
    client = Client(
        P.connect(address, authkey),
        session="",
        job_id=job_id,
        role="driver",
        namespace=namespace,
        authkey=authkey,
        transfer_address=(member or {}).get("transfer_address"),
        on_message=_driver_message_handler(printer),
    )
    client.node_address = address
    try:
        info = client.request("info", timeout=P.CONNECT_TIMEOUT_S)
    except BaseException as e:
        client.close()
        if isinstance(e, GetTimeoutError):
            raise TimeoutError(
                f"the actorkit node at {P.describe(address)} accepted this driver but did not answer "
                f"within {P.CONNECT_TIMEOUT_S:g} s (is it stopped or hung?); "
                f"ACTORKIT_CONNECT_TIMEOUT_S sets this limit"
            ) from None
        raise
    # On a member node's machine, this driver's objects are that member's to serve.
    client.session = (member or {}).get("session") or info["session"]
    client.store_capacity = info["object_store_memory"]
    node_info = {
        "node_id": info["node_id"],
        "session": info["session"],
        "session_dir": info["session_dir"],
        "address": address,
    }
    return Driver(manager, node_info, info["session_dir"], owns_node, namespace, printer), client


def _connect_to_cluster(address: str, namespace: str | None, log_to_driver: bool) -> tuple[Driver, Client]:
    """Join a running node (``actorkit start --head``) as a driver."""
    from multiprocessing import AuthenticationError

    from .cluster import find_cluster, probe_member

    data_address, authkey, member = find_cluster(address)
    try:
        if address != "auto":
            data_address, member = probe_member(data_address, authkey)
        return _connect_driver(None, data_address, authkey, namespace, log_to_driver, owns_node=False, member=member)
    except AuthenticationError:
        raise ConnectionError(
            f"the node at {address} refused this cluster key: set ACTORKIT_AUTHKEY or "
            f"ACTORKIT_AUTHKEY_FILE to the key written by `actorkit start --head`"
        ) from None
    except OSError as e:
        raise ConnectionError(
            f"cannot reach an actorkit node at {address}: {e}. Start one with `actorkit start --head`."
        ) from None


def _remove_dead_sessions(root: str) -> None:
    """Remove what sessions whose driver and node were both killed left behind.

    Segments go by their session's lock (see ``shm``), wherever the session's
    directory was.  A directory goes with its session's segments; one whose
    session has no lock (an older actorkit's) is dead when neither its driver
    nor its node process exists and its node's socket accepts no connection,
    and is left alone while young (it may still be starting).
    """
    import time

    from . import shm

    dead = shm.reap_dead_sessions()
    for entry in os.listdir(root):
        if not entry.startswith("session-"):
            continue
        path = os.path.join(root, entry)
        if entry.split("-")[1] in dead:
            shutil.rmtree(path, ignore_errors=True)
            continue
        if os.path.exists(shm.lock_path(entry.split("-")[1])):
            continue  # alive: its lock is held (a free one was just reaped)
        try:
            if time.time() - os.stat(path).st_mtime < 60:
                continue
            with open(os.path.join(path, "pids")) as f:
                pids = [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            continue  # starting right now, or not ours
        if len(pids) != 2 or any(process_alive(pid) for pid in pids) or _listening(os.path.join(path, "data.sock")):
            continue
        shm.unlink_session(entry.split("-")[1])
        shutil.rmtree(path, ignore_errors=True)


def _listening(address: str) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(address)
        except OSError:
            return False
    return True


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _driver_message_handler(printer: LogPrinter | None) -> Any:
    from . import protocol as P

    def handle(message: tuple[Any, ...]) -> None:
        if message[0] == P.PRINT and printer is not None:
            printer.handle(*message[1:])

    return handle


def shutdown() -> None:
    """Disconnect, and stop the node and every process this driver started."""
    global _client, _driver, _dashboard
    with _lock:
        driver, client = _driver, _client
        if driver is None:
            return
        _driver = _client = None
        if _dashboard is not None:
            _dashboard.stop()
            _dashboard = None
        if _forked_from is not None:
            return  # the node belongs to the parent process: leave it alone
        if isinstance(driver, _LocalDriver):
            client.close()
            return
        dead = client is not None and getattr(client, "failure", None) is not None
        if driver.owns_node and dead:
            # It died or stopped answering: asking it to stop could wait forever
            # (a stopped process never answers). It is this driver's child: end it.
            _kill_node(driver)
        elif driver.owns_node:
            try:
                driver.control.stop()
            except Exception:
                pass  # the node is already gone
        elif client is not None:
            # A node that others share keeps the workers lent to this driver that
            # are idle: it retires those it cannot see to be (see Node._disconnect).
            try:
                client.return_idle_leases()
            except Exception:
                pass  # the node is already gone
        if client is not None:
            client.close()
        if driver.log_printer is not None:
            driver.log_printer.close()
        driver._control = None
        if driver.owns_node and driver.manager is not None:
            _stop_node_process(driver.manager, driver.node_info["session"], driver.session_dir)


def _stop_node_process(manager: NodeManager, session: str, session_dir: str) -> None:
    """Stop the node server process this driver started; remove what its session left."""
    from . import shm

    manager.shutdown()
    if manager._process.exitcode is not None:  # type: ignore[attr-defined]
        # A node that was killed could not remove its segments: they are ours to remove.
        shm.unlink_session(session)
    shutil.rmtree(session_dir, ignore_errors=True)


def _kill_node(driver: Driver) -> None:
    """End the node process this driver started, and what it left in shared memory.

    Its workers exit by themselves once its connections close.
    """
    import signal

    from . import shm

    process = getattr(driver.manager, "_process", None)
    if process is not None and process.is_alive():
        try:
            os.kill(process.pid, signal.SIGKILL)  # works on a stopped process too
        except ProcessLookupError:
            pass
        process.join(10)
    shm.unlink_session(driver.node_info["session"])


atexit.register(shutdown)
