"""``actorkit status``: every node of this user on this machine, and what it runs.

It finds the node ``actorkit start`` started (``cluster.json``) and the
private node of each running ``init()`` script (the key its driver left in
its session directory, readable by this user only), connects to each as a
short-lived driver, and prints its resources, workers, actors, tasks and
the demand still waiting.  With no node it prints one line and exits 1.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from . import session
from .driver import connect_driver

_NO_NODE = (
    "No actorkit node is running on this machine: start one with `actorkit start --head`, "
    "or run a script that calls actorkit.init()."
)


def _targets(address: str) -> list[tuple[str, Any, bytes]]:
    """(what it is, data address, key) of each node to report."""
    if address != "auto":
        data_address, key, _member = session.find_cluster(address)
        return [(f"node at {address}", data_address, key)]
    found: list[tuple[str, Any, bytes]] = []
    local = session.read_local_cluster()
    if local is not None:
        data_address = local["data_address"]
        found.append(("node started by `actorkit start`", tuple(data_address) if isinstance(data_address, list) else data_address, local["authkey"]))
    root = session.session_root()
    for name in sorted(os.listdir(root)):
        session_dir = os.path.join(root, name)
        key_path = os.path.join(session_dir, session.SESSION_KEY_FILE)
        if not name.startswith("session-") or not os.path.exists(key_path):
            continue
        try:
            with open(os.path.join(session_dir, "pids")) as f:
                driver_pid, node_pid = (int(p) for p in f.read().split())
            key = session.read_key_file(key_path)
        except (OSError, ValueError):
            continue
        if not session.process_alive(node_pid):
            continue
        found.append((f"private node of pid {driver_pid} ({_command_of(driver_pid)})", os.path.join(session_dir, "data.sock"), key))
    return found


def _command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
    except OSError:
        return "?"
    # Base names: "python train.py --fast" says more in a line than two long paths.
    return " ".join(os.path.basename(w.decode(errors="replace")) for w in words if w)[:80]


def print_status(address: str = "auto") -> int:
    try:
        targets = _targets(address)
    except (ConnectionError, ValueError, PermissionError, FileNotFoundError) as e:
        print(f"actorkit status: {e}")
        return 1
    if not targets:
        print(_NO_NODE)
        return 1
    for label, data_address, key in targets:
        try:
            _report(label, data_address, key)
        except Exception as e:  # it stopped between being found and being asked, say
            print(f"{label}: cannot be reached ({type(e).__name__}: {e})")
    return 0


def _report(label: str, data_address: Any, key: bytes) -> None:
    _driver, client = connect_driver(None, data_address, key, None, False, owns_node=False)
    try:
        nodes = client.request("nodes")
        stats = client.request("stats")
        actors = client.request("state", "actors")
        tasks = client.request("state", "tasks")
        workers = client.request("state", "workers")
        metrics = client.request("state", "metrics")
    finally:
        client.close()
    print(label)
    for node in nodes:
        role = "head" if node["IsHead"] else "node"
        state = "alive" if node["Alive"] else f"dead: {node['DeathReason']}"
        print(f"  {role} {node['NodeID'][:12]}  {node['NodeManagerHostname']} ({node['NodeManagerAddress']})  {state}")
        total, available = node["Resources"], node["Available"]
        for name in sorted(total):
            used = total[name] - available.get(name, 0)
            print(f"    {name:22s} {_amount(name, used)} / {_amount(name, total[name])} used")
    print(f"  object store          {_bytes(stats['store_used'])} used, {stats['objects']} objects")
    states = Counter(t["state"] for t in tasks if t["state"] not in ("FINISHED", "FAILED", "CANCELLED"))
    running = states.pop("RUNNING", 0)
    pending = sum(states.values())
    print(f"  workers {len(workers)}  tasks: {running} running, {pending} pending, {stats['tasks_finished']} finished")
    demand: Counter[str] = Counter()
    for task in tasks:
        if task["state"].startswith("PENDING"):
            demand.update(task["required_resources"])
    if demand:
        print("  pending demand: " + ", ".join(f"{name} {amount:g}" for name, amount in sorted(demand.items())))
    alive = [a for a in actors if a["state"] != "DEAD"]
    print(f"  actors: {len(alive)} alive, {len(actors) - len(alive)} dead")
    for actor in alive:
        name = f" name={actor['name']!r}" if actor["name"] else ""
        print(f"    {actor['class_name']:20s} {actor['state']:10s} pid {actor['pid']}{name}  pending calls {actor['pending_calls']}")
    if metrics:
        print(f"  metrics: {len(metrics)}")
    for metric in metrics:
        tags = ",".join(f"{k}={v}" for k, v in metric["tags"].items())
        shown = f"{metric['value']:g}" if metric["type"] != "histogram" else f"count {metric['count']} mean {metric['value']:g}"
        print(f"    {metric['name']}{{{tags}}} {metric['type']} {shown}")


def _amount(name: str, value: float) -> str:
    return _bytes(value) if name in ("memory", "object_store_memory") else f"{value:g}"


def _bytes(value: float) -> str:
    if value >= 2**30:
        return f"{value / 2**30:.1f} GiB"
    return f"{value / 2**20:.0f} MiB"
