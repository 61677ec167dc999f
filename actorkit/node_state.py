"""What the state API reads from a node: rows of tasks, actors, objects, workers and nodes.

The node answers ``request("state", kind)`` with ``snapshot(node, kind)``:
plain dicts with Ray's field names (``ray.util.state``), built from the
node's own tables at that moment, plus ``TaskHistory``, the last tasks that
finished, so that ``list_tasks()`` and ``timeline()`` show what ran.

Tasks a driver sent straight to a worker it leases (see ``node/leases.py``)
never pass through the node: they are not listed.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .node import Node, TaskRecord
    from .payload import Payload

HISTORY = 10_000  # finished tasks kept for list_tasks() and timeline()

# time.monotonic() to wall-clock milliseconds, as Ray's state API reports times.
_WALL_OFFSET_MS = (time.time() - time.monotonic()) * 1000


def _ms(monotonic: float) -> int:
    return int(monotonic * 1000 + _WALL_OFFSET_MS)


class TaskHistory:
    """The last ``HISTORY`` tasks that finished on this node, oldest first."""

    def __init__(self, size: int = HISTORY) -> None:
        self._rows: deque[tuple[Any, ...]] = deque(maxlen=size)
        self.recorded = 0

    def __repr__(self) -> str:
        return f"<TaskHistory kept={len(self._rows)} recorded={self.recorded}>"

    def finished(self, task: TaskRecord, payloads: list[Payload]) -> None:
        # Only the fields shown: the record itself holds the task's arguments.
        failed = bool(payloads) and payloads[0].is_error
        state = "CANCELLED" if task.cancelled else "FAILED" if failed else "FINISHED"
        spec = task.spec
        self._rows.append(
            (spec.task_id, spec.name, spec.actor_id, spec.job_id, task.parent, spec.resources,
             state, task.started_at, time.monotonic(), task.pid)
        )
        self.recorded += 1

    def rows(self, node_id: str) -> list[dict[str, Any]]:
        return [_row(*fields, node_id) for fields in self._rows]


def _row(
    task_id: bytes,
    name: str,
    actor_id: bytes | None,
    job_id: bytes,
    parent: bytes | None,
    resources: dict[str, float],
    state: str,
    started: float,
    ended: float | None,
    pid: int,
    node_id: str | None,
) -> dict[str, Any]:
    return {
        "task_id": task_id.hex(),
        "name": name,
        "func_or_class_name": name,
        "state": state,
        "type": _task_type(name, actor_id),
        "actor_id": actor_id.hex() if actor_id else None,
        "job_id": job_id.hex(),
        "node_id": node_id,
        "worker_pid": pid or None,
        "parent_task_id": parent.hex() if parent else None,
        "required_resources": dict(resources),
        "start_time_ms": _ms(started) if started else None,
        "end_time_ms": _ms(ended) if ended else None,
    }


def _task_type(name: str, actor_id: bytes | None) -> str:
    if not actor_id:
        return "NORMAL_TASK"
    return "ACTOR_CREATION_TASK" if name.endswith(".__init__") else "ACTOR_TASK"


def _pid_of(worker: Any) -> int:
    process = getattr(worker, "process", None)
    return getattr(process, "pid", 0) or 0


def tasks(node: Node) -> list[dict[str, Any]]:
    rows = node.tasks.history.rows(node.config.node_id)
    for task in node.tasks.pending.values():
        actor = node.actors.by_id.get(task.spec.actor_id) if task.spec.actor_id else None
        if task.worker is not None or (actor is not None and task.spec.task_id in actor.inflight):
            state = "RUNNING"
        elif task.unresolved:
            state = "PENDING_ARGS_AVAIL"
        elif actor is not None:
            state = "SUBMITTED_TO_WORKER"  # queued at its actor
        else:
            state = "PENDING_NODE_ASSIGNMENT"
        worker = task.worker or (actor.worker if actor is not None else None)
        node_id = worker.node.node_id if worker is not None else None
        spec = task.spec
        rows.append(
            _row(spec.task_id, spec.name, spec.actor_id, spec.job_id, task.parent, spec.resources,
                 state, task.started_at, None, task.pid, node_id)
        )
    return rows


def actors(node: Node) -> list[dict[str, Any]]:
    rows = []
    for actor in node.actors.by_id.values():
        spec = actor.spec
        worker = actor.worker
        rows.append(
            {
                "actor_id": spec.actor_id.hex(),
                "class_name": spec.class_name,
                "state": actor.state,
                "name": spec.name or "",
                "namespace": spec.namespace or "",
                "job_id": spec.job_id.hex(),
                "pid": _pid_of(worker) or None,
                "node_id": worker.node.node_id if worker is not None else None,
                "is_detached": spec.detached,
                "max_restarts": spec.max_restarts,
                "num_restarts": _restarts(spec.max_restarts, actor.restarts_left),
                "pending_calls": len(actor.queue) + len(actor.inflight),
                "required_resources": dict(spec.resources),
            }
        )
    return rows


def _restarts(max_restarts: int, left: int) -> int:
    return 0 if max_restarts < 0 else max(0, max_restarts - left)


def objects(node: Node) -> list[dict[str, Any]]:
    rows = []
    for object_id, entry in node.objects.entries.items():
        payload = entry.payload
        rows.append(
            {
                "object_id": object_id.hex(),
                "reference_count": entry.refcount,
                "object_size": payload.nbytes if payload is not None else None,
                "task_status": "FINISHED" if payload is not None else "PENDING",
                "type": "SHARED_MEMORY" if payload is not None and payload.segment else "INLINE",
                "is_error": bool(payload is not None and payload.is_error),
                "node_id": node.config.node_id,
            }
        )
    return rows


def workers(node: Node) -> list[dict[str, Any]]:
    rows = []
    for worker in node.workers.values():
        task = worker.task
        rows.append(
            {
                "worker_id": worker.worker_id,
                "pid": _pid_of(worker) or None,
                "node_id": worker.node.node_id,
                "worker_type": "ACTOR" if worker.actor is not None else "WORKER",
                "is_alive": not worker.retiring,
                "actor_id": worker.actor.spec.actor_id.hex() if worker.actor is not None else None,
                "current_task": task.spec.name if task is not None else None,
                "lent": worker.lessee is not None,
                "blocked": worker.blocked,
            }
        )
    return rows


def nodes(node: Node) -> list[dict[str, Any]]:
    rows = []
    for record in node.nodes.values():
        described = record.describe()
        rows.append(
            {
                "node_id": record.node_id,
                "state": "ALIVE" if record.alive else "DEAD",
                "node_name": record.hostname,
                "node_ip": record.address,
                "is_head_node": described["IsHead"],
                "resources_total": described["Resources"],
                "resources_available": described["Available"],
                "pid": record.pid or (os.getpid() if record.client is None else None),
                "death_reason": record.death,
            }
        )
    return rows


def metrics(node: Node) -> list[dict[str, Any]]:
    return node.metrics.rows()


_KINDS = {"tasks": tasks, "actors": actors, "objects": objects, "workers": workers, "nodes": nodes, "metrics": metrics}


def snapshot(node: Node, kind: str) -> list[dict[str, Any]]:
    """The rows of one kind (``tasks``, ``actors``, ``objects``, ``workers``, ``nodes``)."""
    rows_of = _KINDS.get(kind)
    if rows_of is None:
        raise ValueError(f"unknown state kind {kind!r}; expected one of {sorted(_KINDS)}")
    return rows_of(node)
