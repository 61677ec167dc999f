"""A driver's start-up and shut-down: what ``init()`` and ``shutdown()`` do beyond bookkeeping.

``runtime`` keeps this process's state and imports this module on the first
``init()``: ``import actorkit`` loads none of the client, the wire protocol
or the node's Manager.  ``start_local_node`` spawns a node server and
connects to it; ``connect_to_cluster`` joins a running one; ``stop`` stops
what a driver started and returns once those processes have exited.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
from multiprocessing import AuthenticationError
from typing import Any

from . import protocol as P
from . import session, shm
from .client import Client
from .exceptions import GetTimeoutError
from .logs import LogPrinter
from .node_process import NodeManager, serve
from .procutil import main_module_hidden


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


def start_local_node(
    totals: dict[str, float],
    store_memory: int,
    namespace: str | None,
    log_to_driver: bool,
    temp_dir: str | None,
) -> tuple[Driver, Client]:
    config = session.new_node_config(totals, store_memory, os.getpid(), temp_dir)
    manager = NodeManager(
        address=config.manager_address,
        authkey=config.authkey,
        ctx=multiprocessing.get_context("spawn"),
    )
    with main_module_hidden():
        manager.start(initializer=serve, initargs=(config,))
    session.write_pids(config.session_dir, os.getpid(), manager._process.pid)  # type: ignore[attr-defined]
    session.write_session_key(config.session_dir, config.authkey)
    try:
        return connect_driver(manager, config.data_address, config.authkey, namespace, log_to_driver, owns_node=True)
    except BaseException:
        _stop_node_process(manager, config.session, config.session_dir)
        raise


def connect_driver(
    manager: NodeManager | None,
    address: Any,
    authkey: bytes,
    namespace: str | None,
    log_to_driver: bool,
    owns_node: bool,
    member: dict[str, Any] | None = None,
) -> tuple[Driver, Client]:
    """Connect this process to the node at ``address`` as a driver."""
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


def connect_to_cluster(address: str, namespace: str | None, log_to_driver: bool) -> tuple[Driver, Client]:
    """Join a running node (``actorkit start --head``) as a driver."""
    data_address, authkey, member = session.find_cluster(address)
    try:
        if address != "auto":
            data_address, member = probe_member(data_address, authkey)
        return connect_driver(None, data_address, authkey, namespace, log_to_driver, owns_node=False, member=member)
    except AuthenticationError:
        raise ConnectionError(
            f"the node at {address} refused this cluster key: set ACTORKIT_AUTHKEY or "
            f"ACTORKIT_AUTHKEY_FILE to the key written by `actorkit start --head`"
        ) from None
    except OSError as e:
        raise ConnectionError(
            f"cannot reach an actorkit node at {address}: {e}. Start one with `actorkit start --head`."
        ) from None


def probe_member(address: tuple[str, int], authkey: bytes) -> tuple[Any, dict[str, Any] | None]:
    """Whether ``address`` is a member node's: then the head's address and the member."""
    # A node that completes the handshake and then stops answering is a TimeoutError.
    channel = P.Channel(P.connect(address, authkey), timeout=P.CONNECT_TIMEOUT_S)
    try:
        info = P.call(channel, "info")
    finally:
        channel.close()
    if "head" not in info:
        return address, None
    return tuple(info["head"]), {"transfer_address": address, "session": info["session"]}


def _driver_message_handler(printer: LogPrinter | None) -> Any:
    def handle(message: tuple[Any, ...]) -> None:
        if message[0] == P.PRINT and printer is not None:
            _, task_name, pid, is_stderr, lines = message
            printer.handle(task_name, pid, is_stderr, lines)

    return handle


def stop(driver: Driver, client: Client | None) -> None:
    """Disconnect ``client``, and stop the node and every process ``driver`` started."""
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
        # are idle: it retires those it cannot see to be (see Node.disconnect).
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


def _stop_node_process(manager: NodeManager, session_id: str, session_dir: str) -> None:
    """Stop the node server process this driver started; remove what its session left."""
    manager.shutdown()
    if manager._process.exitcode is not None:  # type: ignore[attr-defined]
        # A node that was killed could not remove its segments: they are ours to remove.
        shm.unlink_session(session_id)
    shutil.rmtree(session_dir, ignore_errors=True)


def _kill_node(driver: Driver) -> None:
    """End the node process this driver started, and what it left in shared memory.

    Its workers exit by themselves once its connections close.
    """
    process = getattr(driver.manager, "_process", None)
    if process is not None and process.is_alive():
        try:
            os.kill(process.pid, signal.SIGKILL)  # works on a stopped process too
        except ProcessLookupError:
            pass
        process.join(10)
    shm.unlink_session(driver.node_info["session"])
