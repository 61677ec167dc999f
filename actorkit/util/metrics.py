"""Application metrics (Ray's ``ray.util.metrics``): counters, gauges and histograms.

    from actorkit.util.metrics import Counter, Gauge, Histogram

    requests = Counter("requests", description="Requests served.", tag_keys=("route",))
    requests.inc(tags={"route": "/"})
    Gauge("queue_length").set(7)
    Histogram("latency_s", boundaries=[0.01, 0.1, 1]).observe(0.03)

Any process (driver, task, actor) records; records are combined in the
process and sent to the node (``metrics_batch.py``), which adds them up.
Read them with ``actorkit.util.state.list_metrics()`` or ``actorkit status``.
Ray exports the same metrics to Prometheus; actorkit has no exporter.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from .. import runtime

__all__ = ["Counter", "Gauge", "Histogram"]

# Prometheus' rule for metric names: Ray discards (with a warning) what breaks it.
_VALID_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class Metric:
    """What the three kinds share: a name, a description, tag keys and default tags."""

    _kind = ""

    def __init__(self, name: str, description: str = "", tag_keys: tuple[str, ...] | None = None) -> None:
        if not name:
            raise ValueError("Empty name is not allowed. Please provide a metric name.")
        self._discarded = not _VALID_NAME.match(name)
        if self._discarded:
            warnings.warn(
                f"Invalid metric name: {name!r}. Its records are discarded: metric names can only contain "
                f"letters, numbers, _ and :, and cannot start with a number.",
                UserWarning,
                stacklevel=3,
            )
        self._name = name
        self._description = description
        self._tag_keys: tuple[str, ...] = tag_keys or ()
        if not isinstance(self._tag_keys, tuple):
            raise TypeError(f"tag_keys should be a tuple of str, got {type(self._tag_keys).__name__}")
        for key in self._tag_keys:
            if not isinstance(key, str):
                raise TypeError(f"Tag keys must be str, got {type(key).__name__} ({key!r}).")
        self._default_tags: dict[str, str] = {}
        self._boundaries: tuple[float, ...] = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r} tag_keys={self._tag_keys}>"

    def __reduce__(self) -> Any:
        # Sent to another process, it is the same metric there (not its records).
        return _rebuild, (type(self), self._name, self._description, self._tag_keys, self._boundaries, self._default_tags)

    def set_default_tags(self, default_tags: dict[str, str]) -> Metric:
        """Tags used by every record that does not give its own; returns the metric itself."""
        for key, value in default_tags.items():
            if key not in self._tag_keys:
                raise ValueError(f"Unrecognized tag key {key!r}: {self._name!r} has the tag keys {self._tag_keys}.")
            if not isinstance(value, str):
                raise TypeError(f"Tag values must be str, got {type(value).__name__} for {key!r}.")
        self._default_tags = dict(default_tags)
        return self

    @property
    def info(self) -> dict[str, Any]:
        return {
            "name": self._name,
            "description": self._description,
            "tag_keys": self._tag_keys,
            "default_tags": self._default_tags,
        }

    def _record(self, value: float, tags: dict[str, str] | None) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"value must be int or float, got {type(value).__name__}.")
        if self._discarded:
            return
        final = self._default_tags
        if tags:
            for key, tag_value in tags.items():
                if not isinstance(tag_value, str):
                    raise TypeError(f"Tag values must be str, got {type(tag_value).__name__} for {key!r}.")
            final = {**self._default_tags, **tags}
        missing = [key for key in self._tag_keys if key not in final]
        if missing:
            raise ValueError(f"Missing value for tag key(s): {','.join(missing)} (metric {self._name!r}).")
        batch = _batch()
        if batch is None:
            return  # no node to report to (not initialized): as in Ray, the record goes nowhere
        batch.record(self._name, self._kind, self._description, self._boundaries, tuple(sorted(final.items())), float(value))


class Counter(Metric):
    """A total that only goes up."""

    _kind = "counter"

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        """Add ``value`` (default 1, must be positive)."""
        if isinstance(value, (int, float)) and value <= 0:
            raise ValueError(f"value must be >0, got {value}")
        self._record(value, tags)


class Gauge(Metric):
    """A value that goes up and down: the last one set counts."""

    _kind = "gauge"

    def set(self, value: float | None, tags: dict[str, str] | None = None) -> None:
        """Set the gauge to ``value`` (``None``: do nothing)."""
        if value is None:
            return
        self._record(value, tags)


class Histogram(Metric):
    """How many observations fell in each bucket (``<= boundary``), with their sum and count."""

    _kind = "histogram"

    def __init__(
        self,
        name: str,
        description: str = "",
        boundaries: list[float] | None = None,
        tag_keys: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(name, description, tag_keys)
        if not boundaries:
            raise ValueError(
                "boundaries argument should be provided when using the Histogram class, "
                "e.g. Histogram('name', boundaries=[1.0, 2.0])"
            )
        for index, boundary in enumerate(boundaries):
            if boundary <= 0:
                raise ValueError(
                    f"Invalid `boundaries` argument at index {index}, {boundaries}. Use positive values."
                )
        self.boundaries = list(boundaries)
        self._boundaries = tuple(sorted(boundaries))

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        """Count ``value`` in its bucket."""
        self._record(value, tags)

    @property
    def info(self) -> dict[str, Any]:
        return {**super().info, "boundaries": self.boundaries}


def _batch() -> Any:
    client = runtime.client_if_connected()
    return getattr(client, "metrics", None) if client is not None else None


def _rebuild(
    cls: type[Metric], name: str, description: str, tag_keys: tuple[str, ...],
    boundaries: tuple[float, ...], default_tags: dict[str, str],
) -> Metric:
    metric = Histogram(name, description, list(boundaries), tag_keys) if cls is Histogram else cls(name, description, tag_keys)
    return metric.set_default_tags(default_tags) if default_tags else metric
