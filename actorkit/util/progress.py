"""Progress bars for long work: ``as_completed(..., progress=True)``, ``Pool.map(..., progress=True)``.

The ``progress`` option takes:

* ``False`` (default): no bar.
* ``True``: a bar on stderr **when stderr is a terminal**; quiet otherwise, so
  that logs and CI output stay clean.
* ``"force"``: a bar on stderr even when it is not a terminal (one line per
  update at most ten times a second, then a final line).
* a string other than ``"force"`` is an error.

The bar is tqdm's (``tqdm.auto``, so Jupyter gets its widget) when tqdm is
importable, and otherwise a plain one-line bar written with ``\\r``::

    map: 1200/2000  60% |############--------| 3841.2/s 0.3s

tqdm is optional: actorkit does not depend on it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Literal, TextIO

Progress = bool | Literal["force"] | None

_BAR_WIDTH = 20
_MIN_INTERVAL_S = 0.1


def progress_enabled(option: Progress, stream: TextIO | None = None) -> bool:
    """Whether a bar should be shown for ``option`` (see the module's docstring)."""
    if option is None or option is False:
        return False
    if option == "force":
        return True
    if option is True:
        stream = stream if stream is not None else sys.stderr
        try:
            return bool(stream is not None and stream.isatty())
        except (AttributeError, ValueError):
            return False
    raise ValueError(f"progress={option!r}: expected True, False or 'force'")


class _PlainBar:
    """The fallback bar: one line on ``stream``, redrawn in place."""

    def __init__(self, total: int | None, desc: str, stream: TextIO) -> None:
        self.total = total
        self.desc = desc
        self.n = 0
        self._stream = stream
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._drawn_n = -1
        self._draw()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last_draw >= _MIN_INTERVAL_S or (self.total is not None and self.n >= self.total):
            self._draw(now)

    def _line(self, now: float) -> str:
        elapsed = now - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = min(1.0, self.n / self.total)
            filled = int(frac * _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            return f"{self.desc}: {self.n}/{self.total} {frac:4.0%} |{bar}| {rate:.1f}/s {elapsed:.1f}s"
        return f"{self.desc}: {self.n} done {rate:.1f}/s {elapsed:.1f}s"

    def _draw(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._last_draw = now
        self._drawn_n = self.n
        try:
            self._stream.write("\r" + self._line(now))
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed stream must not break the work

    def close(self) -> None:
        if self._drawn_n != self.n:
            self._draw()
        try:
            self._stream.write("\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass


class ProgressBar:
    """A progress bar over ``total`` items (``None``: unknown), or nothing when disabled.

    Use as a context manager; call ``update(n)`` as items complete.
    """

    def __init__(self, total: int | None, desc: str = "", progress: Progress = True) -> None:
        self.enabled = progress_enabled(progress)
        self.total = total
        self.desc = desc
        self._bar: Any = None
        if not self.enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._bar = _PlainBar(total, desc or "progress", sys.stderr)
        else:
            self._bar = tqdm(total=total, desc=desc or None, file=sys.stderr)

    def __repr__(self) -> str:
        kind = "off" if self._bar is None else type(self._bar).__name__
        n = getattr(self._bar, "n", 0)
        return f"<ProgressBar {self.desc!r} {n}/{self.total} ({kind})>"

    def update(self, n: int = 1) -> None:
        if self._bar is not None and n:
            self._bar.update(n)

    def set_description(self, desc: str) -> None:
        self.desc = desc
        bar = self._bar
        if bar is None:
            return
        if hasattr(bar, "set_description"):
            bar.set_description(desc)  # tqdm's
        else:
            bar.desc = desc

    def close(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
