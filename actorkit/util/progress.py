"""Progress bars for long work: ``as_completed(..., progress=True)``, ``Pool.map(..., progress=True)``.

The ``progress`` option takes:

* ``False`` (default): no bar.
* ``True``: a bar on stderr that fits where it is drawn:

  - a terminal: a bar redrawn in place (tqdm's, when tqdm is installed, else
    a plain one written with ``\\r``);
  - a Jupyter kernel: tqdm's notebook widget (``tqdm.auto``), when tqdm is
    installed;
  - anything else (a log file, a pipe, CI): a few plain lines, one each
    quarter of the way and one at the end, so the log stays readable.

* ``"force"``: the same; kept for scripts written for the earlier rule that
  ``True`` stayed quiet off a terminal.
* a string other than ``"force"`` is an error.

A plain bar looks like::

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


def progress_enabled(option: Progress) -> bool:
    """Whether a bar should be shown for ``option`` (see the module's docstring)."""
    if option is None or option is False:
        return False
    if option is True or option == "force":
        return True
    raise ValueError(f"progress={option!r}: expected True, False or 'force'")


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


def _in_jupyter() -> bool:
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return get_ipython is not None and type(get_ipython()).__name__ == "ZMQInteractiveShell"



def _tqdm() -> Any:
    """tqdm's bar class (its notebook widget in Jupyter), or None without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


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


class _LineBar(_PlainBar):
    """The bar off a terminal: a line each quarter of the way (each power of ten
    when the total is unknown) and one at the end, never a ``\\r``."""

    def __init__(self, total: int | None, desc: str, stream: TextIO) -> None:
        self._next = 1
        super().__init__(total, desc, stream)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next:
            self._draw()

    def _draw(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._drawn_n = self.n
        if self.total:
            quarter = max(1, -(-self.total // 4))
            self._next = (self.n // quarter + 1) * quarter
        else:
            self._next = max(10, self._next * 10)
        try:
            self._stream.write(self._line(now) + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self._drawn_n != self.n:
            self._draw()


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
        stream = sys.stderr
        drawable = _is_terminal(stream) or _in_jupyter()
        tqdm = _tqdm() if drawable else None
        if tqdm is not None:
            self._bar = tqdm(total=total, desc=desc or None, file=stream)
        elif _is_terminal(stream):
            self._bar = _PlainBar(total, desc or "progress", stream)
        else:
            self._bar = _LineBar(total, desc or "progress", stream)

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
