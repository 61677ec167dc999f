"""The node server ("raylet"): scheduler, resource ledger, worker pool, object directory.

The node runs in its own spawned process (see ``node_process.py``).  Its
data plane (tasks and objects) is one listener served by one event loop
thread that owns all of the node's state::

    accept thread ──(authenticated sockets)──┐
    other threads ──(call_soon closures)─────┼──▶ wakeup pipe ─┐
    client sockets (drivers, workers) ───────┴─────────────────┼─▶ selector ─▶ handlers
    worker process sentinels (death) ──────────────────────────┘      │
                                                   schedule() ◀───────┘ then flush outboxes

Nothing in the loop blocks: sockets are non-blocking and outgoing messages
are queued per client and written as one frame per loop turn.  The
components and how they fit are in ``server.py``.
"""

from .records import ActorState, ClientState, ObjectEntry, TaskRecord, WorkerState
from .server import Node, NodeControl

__all__ = ["ActorState", "ClientState", "Node", "NodeControl", "ObjectEntry", "TaskRecord", "WorkerState"]
