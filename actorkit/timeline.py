"""``timeline()``: the tasks that ran, as a Chrome trace (Ray's ``ray.timeline``).

Open the file in ``chrome://tracing`` or https://ui.perfetto.dev: one row per
worker process, one bar per task or actor call, from the node's record of
the tasks it placed (see ``node_state.TaskHistory``).
"""

from __future__ import annotations

from typing import Any


def timeline(filename: str | None = None) -> list[dict[str, Any]] | None:
    """The trace events of the tasks that ran; written to ``filename`` as JSON if given."""
    # Imported here: actorkit.util (filelock among it) would double `import actorkit`'s time.
    from .util.state import list_tasks

    events: list[dict[str, Any]] = []
    for task in list_tasks(limit=None):
        start, end = task["start_time_ms"], task["end_time_ms"]
        if start is None or end is None:
            continue
        events.append(
            {
                "cat": task["type"].lower(),
                "name": task["name"],
                "ph": "X",
                "ts": start * 1000,
                "dur": max(0, end - start) * 1000,
                "pid": f"node {task['node_id'][:8]}" if task["node_id"] else "node",
                "tid": f"worker {task['worker_pid']}",
                "args": {"task_id": task["task_id"], "state": task["state"], "actor_id": task["actor_id"]},
            }
        )
    if filename is None:
        return events
    import json

    with open(filename, "w") as f:
        json.dump(events, f)
    return None
