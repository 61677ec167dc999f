"""Application metrics (``actorkit.util.metrics``) as the node keeps them, for the state API.

Every process sends its records combined (see ``metrics_batch.py``); the
node adds them up per metric and tag set: a counter's total, a gauge's
last value, a histogram's counts per bucket, sum and count.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .records import ClientState


class MetricStatistics(NamedTuple):
    metrics: int
    series: int
    records: int


class MetricTable:
    """(metric name, tags) -> its value so far, and what each metric is."""

    def __init__(self) -> None:
        self._kinds: dict[str, tuple[str, str, tuple[float, ...]]] = {}  # name -> (kind, description, boundaries)
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
        self._records = 0

    def __repr__(self) -> str:
        return f"<MetricTable metrics={len(self._kinds)} series={len(self._values)}>"

    def statistics(self) -> MetricStatistics:
        return MetricStatistics(len(self._kinds), len(self._values), self._records)

    def on_metrics(self, _client: ClientState, message: tuple[Any, ...]) -> None:
        values = self._values
        _, records = message
        for name, kind, description, boundaries, tags, value in records:
            known = self._kinds.setdefault(name, (kind, description, tuple(boundaries)))
            if known[0] != kind:
                continue  # another process defined the name as another kind: its records are not mixed in
            key = (name, tags)
            self._records += 1
            if kind == "counter":
                values[key] = values.get(key, 0.0) + value
            elif kind == "gauge":
                values[key] = value
            else:
                buckets, total, count = value
                old = values.get(key)
                if old is not None and len(old[0]) == len(buckets):
                    buckets = [a + b for a, b in zip(old[0], buckets)]
                    total, count = total + old[1], count + old[2]
                values[key] = (buckets, total, count)

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for (name, tags), value in self._values.items():
            kind, description, boundaries = self._kinds[name]
            row: dict[str, Any] = {"name": name, "type": kind, "description": description, "tags": dict(tags)}
            if kind == "histogram":
                buckets, total, count = value
                edges = [f"<={b:g}" for b in boundaries] + [f">{boundaries[-1]:g}" if boundaries else "all"]
                row.update(count=count, sum=total, buckets=dict(zip(edges, buckets)), value=total / count if count else 0.0)
            else:
                row["value"] = value
            rows.append(row)
        return rows
