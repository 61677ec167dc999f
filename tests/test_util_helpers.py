"""actorkit.util.as_completed and the progress bars."""

from __future__ import annotations

import io
import sys
import types

import pytest

import actorkit as ray
from actorkit.exceptions import GetTimeoutError
from actorkit.util import SignalActor, as_completed
from actorkit.util.progress import ProgressBar, progress_enabled

TIMEOUT = 30


@ray.remote
def square(x):
    return x * x


@ray.remote
def gated(signal, x):
    ray.get(signal.wait.remote())
    return x


@ray.remote
def fail():
    raise ValueError("failed task")


def test_yields_values_as_they_complete(ray_start_shared):
    signal = SignalActor.remote()
    slow = gated.remote(signal, "slow")
    fast = [square.remote(i) for i in range(4)]
    it = as_completed([slow, *fast], timeout=TIMEOUT)
    first_four = [next(it) for _ in range(4)]
    assert sorted(first_four) == [0, 1, 4, 9]  # the blocked one comes last
    ray.get(signal.send.remote())
    assert list(it) == ["slow"]


def test_yield_obj_refs(ray_start_shared):
    refs = [square.remote(i) for i in range(5)]
    out = list(as_completed(refs, yield_obj_refs=True))
    assert sorted(out, key=refs.index) == refs
    assert sorted(ray.get(out)) == [0, 1, 4, 9, 16]


def test_errors_raise_when_reached(ray_start_shared):
    with pytest.raises(ValueError, match="failed task"):
        list(as_completed([fail.remote()]))


def test_timeout(ray_start_shared):
    signal = SignalActor.remote()
    done = square.remote(3)
    ray.get(done)
    it = as_completed([done, gated.remote(signal, 1)], timeout=0.05)
    assert next(it) == 9
    with pytest.raises(GetTimeoutError):
        next(it)
    with pytest.raises(TimeoutError):  # GetTimeoutError is a TimeoutError
        list(as_completed([gated.remote(signal, 2)], timeout=0))
    ray.get(signal.send.remote())


def test_chunk_size_and_validation(ray_start_shared):
    refs = [square.remote(i) for i in range(6)]
    assert sorted(as_completed(refs, chunk_size=4)) == [0, 1, 4, 9, 16, 25]
    with pytest.raises(ValueError):
        as_completed(refs, chunk_size=0)
    with pytest.raises(TypeError):
        as_completed([1, 2])
    assert list(as_completed([])) == []


def test_progress_off_a_terminal_is_a_few_plain_lines(ray_start_shared, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    refs = [square.remote(i) for i in range(40)]
    assert sorted(as_completed(refs, progress=True, desc="squares")) == [i * i for i in range(40)]
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err
    assert 2 <= len(lines) <= 6, lines  # a line each quarter, and the end
    assert lines[-1].startswith("squares: 40/40 100% |####################|")
    refs = [square.remote(i) for i in range(3)]
    assert sorted(as_completed(refs, progress="force")) == [0, 1, 4]
    assert capsys.readouterr().err.splitlines()[-1].startswith("as_completed: 3/3 100%")


def test_progress_on_a_terminal_redraws_one_line(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with ProgressBar(4, "work", True) as bar:
        for _ in range(4):
            bar.update()
    assert "\rwork: 4/4 100% |####################|" in terminal.getvalue()
    assert terminal.getvalue().count("\n") == 1


def test_progress_uses_tqdm_when_installed(monkeypatch):
    made = []

    class FakeTqdm:
        def __init__(self, total=None, desc=None, file=None):
            self.total, self.desc, self.n, self.closed = total, desc, 0, False
            made.append(self)

        def update(self, n=1):
            self.n += n

        def close(self):
            self.closed = True

    fake = types.ModuleType("tqdm")
    fake_auto = types.ModuleType("tqdm.auto")
    fake_auto.tqdm = FakeTqdm
    fake.auto = fake_auto
    monkeypatch.setitem(sys.modules, "tqdm", fake)
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake_auto)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    with ProgressBar(5, "work", True) as bar:
        bar.update(2)
        bar.update(3)
    assert len(made) == 1 and made[0].n == 5 and made[0].total == 5 and made[0].closed

    # In a Jupyter kernel (stderr is no terminal there), tqdm.auto draws its widget.
    class ZMQInteractiveShell:
        pass

    ipython = types.ModuleType("IPython")
    ipython.get_ipython = ZMQInteractiveShell
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with ProgressBar(2, "notebook", True) as bar:
        bar.update(2)
    assert len(made) == 2 and made[1].desc == "notebook" and made[1].n == 2


def test_progress_enabled_rules():
    assert progress_enabled(True) and progress_enabled("force")
    assert not progress_enabled(False) and not progress_enabled(None)
    with pytest.raises(ValueError, match="expected True, False or 'force'"):
        progress_enabled("yes")
    bar = ProgressBar(3, "off", False)
    bar.update(1)
    bar.close()
    assert "off" in repr(bar)
