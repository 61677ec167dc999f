"""A node that outlives its drivers: ``actorkit start --head``, ``stop``, ``status``.

``actorkit start --head`` runs a node server with no owning driver; drivers
join it with ``actorkit.init(address="auto")`` (this machine) or
``init(address="HOST:PORT")``.  The node writes where it listens to
``cluster.json`` and its key (32 random bytes) to ``cluster.key`` (mode 0600)
in this user's actorkit directory; a driver elsewhere gets the key through
``ACTORKIT_AUTHKEY`` (hex) or ``ACTORKIT_AUTHKEY_FILE``.  Every connection
passes multiprocessing's HMAC challenge with that key before anything is
unpickled.  The node listens on loopback unless told otherwise.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
from multiprocessing import AuthenticationError
from typing import Any

from . import node_process, runtime, session
from .member import MemberNode
from .node_process import NodeManager, serve, wait_until_stopped
from .procutil import set_process_name
from .session import find_cluster, read_local_cluster

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def run_head(
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    host: str,
    port: int | None,
    object_store_memory: int | None,
    register: bool = True,
    on_listening: Any = None,
) -> None:
    """Run a head node in this process until ``actorkit stop`` or a signal.

    ``register``: write ``cluster.json`` and the key for ``init(address="auto")``
    and ``actorkit stop`` (``cluster_utils.Cluster`` does not).
    ``on_listening(address, config)`` is called once it listens on TCP.
    """
    existing = read_local_cluster()
    if register and existing is not None and session.node_alive(existing):
        raise SystemExit("a node started by `actorkit start` already runs here; `actorkit stop` it first")
    if register:
        session.remove_stale_key_file(session.cluster_files()[1])  # a suspect key file stops us before any process starts
    totals = runtime._validated_resources(num_cpus, num_gpus, resources)
    store_memory = runtime._validated_store_memory(object_store_memory)
    tcp = (host, port) if port is not None else None
    config = session.new_node_config(totals, store_memory, owner_pid=0, tcp_address=tcp)
    key = session.key_from_environment()
    if key is not None:
        config = config._replace(authkey=key)
    set_process_name("actorkit:node")
    # The Manager (stop) stays on a local socket; drivers elsewhere use the data port.
    server = NodeManager(address=config.manager_address, authkey=config.authkey).get_server()  # type: ignore[attr-defined]
    serve(config)
    session.write_pids(config.session_dir, os.getpid(), os.getpid())
    info_path, key_path = session.cluster_files()
    if register:
        _write_cluster_files(config.authkey, {"data_address": config.data_address, "pid": os.getpid(), "session_dir": config.session_dir})
    threading.Thread(target=server.serve_forever, name="actorkit-manager", daemon=True).start()

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if port is not None:
        host, port = node_process.listening[-1]
        if on_listening is not None:
            on_listening(f"{host}:{port}", config)
    where = f"{host}:{port}" if port is not None else "this machine (unix socket)"
    print(f"actorkit node {config.node_id[:8]} listening on {where}", flush=True)
    if port is not None:
        _warn_if_exposed(host)
    print("ready", flush=True)
    try:
        wait_until_stopped()
    except KeyboardInterrupt:
        if node_process._control is not None:
            node_process._control.stop()
    finally:
        if register:
            for path in (info_path, key_path):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        server.listener.close()  # removes its socket file, before the directory goes
        shutil.rmtree(config.session_dir, ignore_errors=True)


def _warn_if_exposed(host: str) -> None:
    if host not in _LOOPBACK:
        print(
            f"warning: listening on {host}, beyond this machine: anyone who can reach it and "
            f"holds the cluster's key can run code here",
            file=sys.stderr,
            flush=True,
        )


def _write_cluster_files(authkey: bytes, info: dict[str, Any]) -> None:
    info_path, key_path = session.cluster_files()
    session.write_key_file(key_path, authkey)
    with open(info_path + ".tmp", "w") as f:
        json.dump(info, f)
    os.replace(info_path + ".tmp", info_path)


def run_member(
    address: str,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    host: str,
    port: int | None,
    object_store_memory: int | None,
    register: bool = True,
    on_ready: Any = None,
) -> None:
    """Join the head at ``address`` with this machine until the head stops, ``actorkit stop`` or a signal."""
    if address == "auto":
        raise SystemExit("actorkit start --address needs the head's HOST:PORT")
    head_address, key, _ = find_cluster(address)
    totals = runtime._validated_resources(num_cpus, num_gpus, resources)
    store_memory = runtime._validated_store_memory(object_store_memory)
    try:
        member = MemberNode(head_address, key, totals, host, port or 0, store_memory)
    except AuthenticationError:
        raise SystemExit(
            f"the head at {address} refused this node's key: set ACTORKIT_AUTHKEY or "
            f"ACTORKIT_AUTHKEY_FILE to the key written by `actorkit start --head`"
        ) from None
    except OSError as e:
        raise SystemExit(f"cannot reach the head at {address}: {e}") from None
    existing = read_local_cluster()
    register = register and not (existing is not None and session.node_alive(existing))
    if register:
        _write_cluster_files(
            key,
            {
                "data_address": head_address,
                "pid": os.getpid(),
                "session_dir": member.config.session_dir,
                "member": {"transfer_address": member.transfer_address, "session": member.config.session},
            },
        )

    def stop(_signum: int, _frame: Any) -> None:
        member.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    where = "{}:{}".format(*member.transfer_address)
    print(f"actorkit node {member.node_id[:8]} joined the head at {address}; serving objects on {where}", flush=True)
    _warn_if_exposed(host)
    def joined(member: MemberNode) -> None:
        print("ready", flush=True)
        if on_ready is not None:
            on_ready(member)

    try:
        member.run(joined)
    finally:
        if register:
            for path in session.cluster_files():
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
    print(f"actorkit node {member.node_id[:8]} stopped: {member.why_stopped}", flush=True)


def start_head_in_background(argv: list[str]) -> int:
    """Start ``actorkit start ... --block`` (a head or a member) detached; return once it is ready.

    The node's own output goes to ``head.log`` beside the cluster files: it
    must not hold the terminal (or a caller's pipes) open after this returns.
    """
    log_path = os.path.join(session.session_root(), "head.log" if "--head" in argv else "node.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "actorkit", *argv, "--block"],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        if line.strip() == "ready":
            break
        lines.append(line.rstrip())
    else:
        proc.wait()
        print("\n".join(lines))
        print(f"the node failed to start (exit code {proc.returncode}); see {log_path}", file=sys.stderr)
        return 1
    proc.stdout.close()
    print("\n".join(lines))
    print("Connect with:  actorkit.init(address='auto')   Stop with:  actorkit stop")
    return 0


def stop_local_cluster() -> int:
    """Stop the node started on this machine by ``actorkit start``."""
    info = read_local_cluster()
    if info is None or not session.node_alive(info):
        print("no actorkit node started by `actorkit start` runs on this machine")
        for path in session.cluster_files():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return 0
    os.kill(info["pid"], signal.SIGTERM)
    if not _wait_for_exit(info["pid"], 10):
        os.kill(info["pid"], signal.SIGKILL)
    print(f"stopped the actorkit node (pid {info['pid']})")
    return 0


def _wait_for_exit(pid: int, timeout: float) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)
