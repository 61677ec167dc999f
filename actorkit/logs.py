"""Showing workers' output in the driver, as Ray does.

Each line is printed as ``(task_name pid=1234) line``.  With deduplication
on (the default; ``ACTORKIT_DEDUP_LOGS=0`` turns it off), the first time a
line appears it is printed at once; the same line (numbers ignored) from
*other* processes within the next few seconds is counted instead, and printed
once with ``[repeated Nx across cluster]`` when the window closes.  Repeats
from one process are always printed: a loop's output stays a loop's output.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time

DEDUP_WINDOW_S = 5.0
_NUMBERS = re.compile(r"\S*\d\S*")


class _Seen:
    """A line seen recently: when, from which processes, how often repeated."""

    __slots__ = ("first_at", "pids", "repeats", "last_text", "is_stderr")

    def __init__(self, first_at: float, pids: set[int], is_stderr: bool) -> None:
        self.first_at = first_at
        self.pids = pids
        self.repeats = 0
        self.last_text = ""
        self.is_stderr = is_stderr


class LogPrinter:
    """Prints forwarded worker output in the driver, deduplicated across processes."""

    def __init__(self, dedup: bool | None = None) -> None:
        if dedup is None:
            dedup = os.environ.get("ACTORKIT_DEDUP_LOGS", os.environ.get("RAY_DEDUP_LOGS", "1")) != "0"
        self.dedup = dedup
        self._seen: dict[tuple[bool, str], _Seen] = {}
        self._lock = threading.Lock()
        self._expiring = threading.Condition(self._lock)
        self._flusher: threading.Thread | None = None
        self._closed = False

    def handle(self, name: str, pid: int, is_stderr: bool, lines: list[str]) -> None:
        for line in lines:
            text = f"({name} pid={pid}) {line}"
            if not self.dedup or not line.strip():
                _emit(text, is_stderr)
                continue
            key = (is_stderr, _NUMBERS.sub("", line))
            now = time.monotonic()
            with self._lock:
                seen = self._seen.get(key)
                if seen is None or now - seen.first_at > DEDUP_WINDOW_S:
                    self._report(key)
                    self._seen[key] = _Seen(now, {pid}, is_stderr=is_stderr)
                elif pid not in seen.pids or seen.repeats:
                    seen.pids.add(pid)
                    seen.repeats += 1
                    seen.last_text = text
                    self._start_flusher()
                    continue
            _emit(text, is_stderr)

    def _report(self, key: tuple[bool, str]) -> None:
        seen = self._seen.pop(key, None)
        if seen is not None and seen.repeats:
            _emit(f"{seen.last_text} [repeated {seen.repeats}x across cluster]", seen.is_stderr)

    def _start_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name="actorkit-log-dedup", daemon=True)
            self._flusher.start()
        self._expiring.notify()

    def _flush_loop(self) -> None:
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                for key in [k for k, s in self._seen.items() if now - s.first_at > DEDUP_WINDOW_S]:
                    self._report(key)
                pending = [s.first_at for s in self._seen.values() if s.repeats]
                timeout = min(pending) + DEDUP_WINDOW_S - now if pending else None
                self._expiring.wait(timeout)

    def close(self) -> None:
        """Print the repeat counts still pending."""
        with self._lock:
            self._closed = True
            for key in list(self._seen):
                self._report(key)
            self._expiring.notify()


def _emit(text: str, is_stderr: bool) -> None:
    stream = sys.stderr if is_stderr else sys.stdout
    try:
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass  # the driver's stream is closed
