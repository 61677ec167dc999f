"""How long each function's runs take, and which functions count as short.

Both the node and a driver line tasks up on a busy worker (the node behind a
running task, the driver on a lent worker), and both only behind a function
known to be short: a task lined up behind a long one waits for it even if
another worker comes free.  This is the one definition of "short" they share.
"""

from __future__ import annotations

SHORT_RUNS = 5  # runs seen before a function counts as short: one quick run may be luck
SHORT_S = 0.005  # a moving average under this is short
_WEIGHT = 0.2  # of the newest run in the moving average


class RunTimes:
    """Function id -> moving average of its run time, and how many runs it has seen."""

    __slots__ = ("_runs",)

    def __init__(self) -> None:
        self._runs: dict[bytes, tuple[float, int]] = {}

    def record(self, function_id: bytes, took: float) -> None:
        average, runs = self._runs.get(function_id, (took, 0))
        self._runs[function_id] = ((1 - _WEIGHT) * average + _WEIGHT * took, runs + 1)

    def short_average(self, function_id: bytes) -> float | None:
        """The function's average run time if it is known to be short, else None."""
        average, runs = self._runs.get(function_id, (1.0, 0))
        return average if runs >= SHORT_RUNS and average < SHORT_S else None

    def __len__(self) -> int:
        return len(self._runs)

    def __repr__(self) -> str:
        short = sum(1 for f in self._runs if self.short_average(f) is not None)
        return f"<RunTimes functions={len(self._runs)} short={short}>"
