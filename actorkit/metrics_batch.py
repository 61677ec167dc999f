"""This process's metric records not yet sent to the node (``actorkit.util.metrics``).

Recording must cost about what a dict update costs, so records are combined
here per metric and tag set (counters add, gauges keep the last value,
histograms count per bucket) and sent as one METRICS message: when a worker
answers a task (so a driver that got the result sees what the task
recorded), when this process reads the metrics, at shutdown, and otherwise
within ``FLUSH_S`` of the first record, by a thread that sleeps on a
condition until there is something to send.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from typing import Any

from . import protocol as P

FLUSH_S = 1.0

Key = tuple[str, tuple[tuple[str, str], ...]]  # (metric name, sorted tags)


class MetricBatch:
    """Combined records per (metric, tags), and what each metric is."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._due = threading.Condition(self._lock)
        self._pending: dict[Key, Any] = {}
        self._kinds: dict[str, tuple[str, str, tuple[float, ...]]] = {}  # name -> (kind, description, boundaries)
        self._flusher: threading.Thread | None = None
        self._closed = False
        self.sent = 0

    def __repr__(self) -> str:
        return f"<MetricBatch pending={len(self._pending)} sent={self.sent}>"

    def record(
        self, name: str, kind: str, description: str, boundaries: tuple[float, ...],
        tags: tuple[tuple[str, str], ...], value: float,
    ) -> None:
        """Combine one record of metric ``name`` (of ``kind``) into what is pending."""
        key = (name, tags)
        with self._lock:
            known = self._kinds.setdefault(name, (kind, description, boundaries))
            if known[0] != kind:
                raise ValueError(f"metric {name!r} is already a {known[0]}: give the {kind} another name")
            boundaries = known[2]  # the first definition's, as the node keeps it
            if kind == "counter":
                self._pending[key] = self._pending.get(key, 0.0) + value
            elif kind == "gauge":
                self._pending[key] = value
            else:
                buckets, total, count = self._pending.get(key) or ([0] * (len(boundaries) + 1), 0.0, 0)
                buckets[bisect.bisect_left(boundaries, value)] += 1
                self._pending[key] = (buckets, total + value, count + 1)
            if self._flusher is None and not self._closed:
                self._flusher = threading.Thread(target=self._flush_later, name="actorkit-metrics", daemon=True)
                self._flusher.start()
            elif len(self._pending) == 1:
                self._due.notify()

    def flush(self) -> None:
        """Send what was recorded since the last flush (nothing if nothing was)."""
        if not self._pending:  # read without the lock: a record racing with this goes next time
            return
        with self._lock:
            records, self._pending = self._pending, {}
            message = (P.METRICS, [(name, *self._kinds[name], tags, value) for (name, tags), value in records.items()])
        self.sent += len(records)
        self._send(message)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._due.notify()

    def _flush_later(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._due.wait()
                if self._closed:
                    return
                self._due.wait(FLUSH_S)  # gather what else comes; a flush() meanwhile empties it
            try:
                self.flush()
            except Exception:
                return  # the connection is gone: nothing to send to
