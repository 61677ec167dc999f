"""``tqdm_ray.tqdm``: Ray's progress bar for tasks and actors, on actorkit's bars.

Usable in the driver and inside tasks and actors; a worker's bar reaches the
driver through the forwarded output (plain lines, as output that is not a
terminal gets them)::

    from actorkit.experimental import tqdm_ray

    @actorkit.remote
    def work(n):
        for _ in tqdm_ray.tqdm(range(n), desc="work"):
            ...
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..util.progress import ProgressBar

__all__ = ["tqdm"]


class tqdm:  # noqa: N801  (Ray's name)
    """A progress bar over ``iterable`` or ``total`` items (Ray's ``tqdm_ray.tqdm``)."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        desc: str | None = None,
        total: int | None = None,
        unit: str | None = None,
        position: int | None = None,
        flush_interval_s: float | None = None,
    ) -> None:
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self._iterable = iterable
        self.desc = desc or ""
        self.total = total
        self.n = 0
        # "force": a worker's stderr is never a terminal, and Ray's bars always show.
        self._bar = ProgressBar(total, self.desc, progress="force")

    def __repr__(self) -> str:
        return f"<tqdm_ray.tqdm {self.desc!r} {self.n}/{self.total}>"

    def __iter__(self) -> Iterator[Any]:
        if self._iterable is None:
            raise TypeError("tqdm_ray.tqdm(): iterate over a bar made with an iterable")
        try:
            for item in self._iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self._bar.update(n)

    def set_description(self, desc: str) -> None:
        self.desc = desc
        self._bar.set_description(desc)

    def refresh(self) -> None:
        """Accepted for Ray's API: the bar redraws on its own."""

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> tqdm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
