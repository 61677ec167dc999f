"""``as_completed``: results of many refs in the order they finish, with an optional progress bar."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import actorkit
from actorkit.exceptions import GetTimeoutError

from .progress import Progress, ProgressBar


def as_completed(
    refs: Iterable[actorkit.ObjectRef],
    *,
    progress: Progress = False,
    timeout: float | None = None,
    yield_obj_refs: bool = False,
    chunk_size: int = 1,
    desc: str = "as_completed",
) -> Iterator[Any]:
    """Yield the results of ``refs`` as their tasks finish (Ray's ``ray.util.as_completed``).

    By default the **values** are yielded, as Ray's ``as_completed`` does; pass
    ``yield_obj_refs=True`` to get the ObjectRefs instead (then ``get`` them
    yourself, e.g. to handle each failure separately).  A task that failed
    raises its error when its value is yielded.

    Order: each step blocks in ``wait()`` until at least ``chunk_size`` refs
    (or all that remain) are ready, then yields every ref already ready, in the
    order of ``refs``.  Unlike Ray (whose default ``chunk_size`` is 10), the
    default is 1: a result is yielded as soon as it exists.

    ``timeout``: seconds for the whole iteration, measured from the first
    ``next()``; when it passes with refs still pending, ``GetTimeoutError``
    (a ``TimeoutError``) is raised.

    ``progress``: ``True`` shows a bar on stderr when it is a terminal,
    ``"force"`` shows it anyway (see ``actorkit.util.progress``).
    """
    refs = list(refs)
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    for ref in refs:
        if not isinstance(ref, actorkit.ObjectRef):
            raise TypeError(f"as_completed() expects ObjectRefs, got {type(ref).__name__}")
    return _as_completed(refs, progress, timeout, yield_obj_refs, chunk_size, desc)


def _as_completed(
    refs: list[actorkit.ObjectRef],
    progress: Progress,
    timeout: float | None,
    yield_obj_refs: bool,
    chunk_size: int,
    desc: str,
) -> Iterator[Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    remaining = list(dict.fromkeys(refs))  # wait() needs unique refs
    with ProgressBar(len(remaining), desc, progress) as bar:
        while remaining:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            waiting = remaining
            wanted = min(chunk_size, len(waiting))
            ready, remaining = actorkit.wait(waiting, num_returns=wanted, timeout=left)
            timed_out = len(ready) < wanted
            if remaining and not timed_out:  # take whatever else is ready too, without blocking
                more, remaining = actorkit.wait(remaining, num_returns=len(remaining), timeout=0)
                if more:
                    done = set(ready) | set(more)
                    ready = [r for r in waiting if r in done]
            for ref in ready:
                bar.update(1)
                yield ref if yield_obj_refs else actorkit.get(ref)
            if timed_out:
                raise GetTimeoutError(
                    f"as_completed() timed out after {timeout} s with {len(remaining)} of "
                    f"{len(refs)} results pending"
                )
