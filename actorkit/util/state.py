"""The state API (Ray's ``ray.util.state``): what the cluster runs and holds, from any driver.

    from actorkit.util.state import list_actors, list_tasks, summarize_tasks

    list_tasks(filters=[("state", "=", "RUNNING")])
    list_actors(filters=[("class_name", "=", "Counter")], limit=10)
    summarize_tasks()

Each ``list_*`` returns a list of dicts with Ray's field names, read from the
node this process is connected to at the moment of the call.  ``filters`` is
a list of ``(field, "=" | "!=", value)``; values compare as strings, as in
Ray's command line.  Tasks are the last 10,000 that finished plus those not
finished; tasks a driver sends straight to a worker it leases do not pass
through the node and are not listed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .. import context

__all__ = [
    "list_actors",
    "list_metrics",
    "list_nodes",
    "list_objects",
    "list_tasks",
    "list_workers",
    "summarize_actors",
    "summarize_tasks",
]

Filter = tuple[str, str, Any]
DEFAULT_LIMIT = 100


def _rows(kind: str, filters: list[Filter] | None, limit: int | None) -> list[dict[str, Any]]:
    rows = context.current_client().request("state", kind)
    for field, op, value in filters or ():
        if op not in ("=", "!="):
            raise ValueError(f"filter ({field!r}, {op!r}, {value!r}): the predicate must be '=' or '!='")
        if rows and field not in rows[0]:
            raise ValueError(f"filter on {field!r}: {kind} have the fields {sorted(rows[0])}")
        wanted = str(value)
        rows = [row for row in rows if (str(row.get(field)) == wanted) == (op == "=")]
    return rows if limit is None else rows[:limit]


def list_metrics(filters: list[Filter] | None = None, limit: int | None = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """Application metrics (``actorkit.util.metrics``), one row per metric and tag set.

    What this process recorded is sent first, so it is counted; other
    processes send theirs as their tasks end, and otherwise within a second.
    """
    client = context.current_client()
    batch = getattr(client, "metrics", None)
    if batch is not None:
        batch.flush()
    return _rows("metrics", filters, limit)


def list_tasks(filters: list[Filter] | None = None, limit: int | None = DEFAULT_LIMIT, detail: bool = False) -> list[dict[str, Any]]:
    """Tasks and actor calls: pending, running, and the last ones finished."""
    return _rows("tasks", filters, limit)


def list_actors(filters: list[Filter] | None = None, limit: int | None = DEFAULT_LIMIT, detail: bool = False) -> list[dict[str, Any]]:
    """Actors, alive and dead, with their state, process and restarts."""
    return _rows("actors", filters, limit)


def list_objects(filters: list[Filter] | None = None, limit: int | None = DEFAULT_LIMIT, detail: bool = False) -> list[dict[str, Any]]:
    """Objects in the store, with their size and reference count."""
    return _rows("objects", filters, limit)


def list_workers(filters: list[Filter] | None = None, limit: int | None = DEFAULT_LIMIT, detail: bool = False) -> list[dict[str, Any]]:
    """Worker processes: what each runs, whether it is an actor's."""
    return _rows("workers", filters, limit)


def list_nodes(filters: list[Filter] | None = None, limit: int | None = DEFAULT_LIMIT, detail: bool = False) -> list[dict[str, Any]]:
    """The cluster's nodes with their resources."""
    return _rows("nodes", filters, limit)


def summarize_tasks() -> dict[str, Any]:
    """Task counts by function and state, as Ray's ``summarize_tasks`` gives them."""
    rows = _rows("tasks", None, None)
    summary: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = summary.setdefault(
            row["func_or_class_name"],
            {"func_or_class_name": row["func_or_class_name"], "type": row["type"], "state_counts": Counter()},
        )
        entry["state_counts"][row["state"]] += 1
    for entry in summary.values():
        entry["state_counts"] = dict(entry["state_counts"])
    return {"cluster": {"summary": summary, "total_tasks": len(rows), "summary_by": "func_name"}}


def summarize_actors() -> dict[str, Any]:
    """Actor counts by class and state."""
    rows = _rows("actors", None, None)
    summary: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = summary.setdefault(row["class_name"], {"class_name": row["class_name"], "state_counts": Counter()})
        entry["state_counts"][row["state"]] += 1
    for entry in summary.values():
        entry["state_counts"] = dict(entry["state_counts"])
    return {"cluster": {"summary": summary, "total_actors": len(rows)}}
