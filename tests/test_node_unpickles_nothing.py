"""The node never unpickles a user value or a user class.

It has none of the user's code: a class defined in the driver's ``__main__``
does not exist there, and loading one from the user's modules would run the
user's code in the process every driver depends on.  Values, errors and the
classes of ``retry_exceptions`` cross it as opaque bytes; only the processes
that run the user's code (workers, actors, drivers) load them.

The driver below uses traps: classes whose creation, and values whose
unpickling, append the name of the process doing it (``/proc/self/comm``:
``actorkit:node``, ``actorkit:worker``) to a file, as does importing the
user's module.  Traps are defined both in ``__main__`` (cloudpickle ships them
by value) and in an importable module (pickled by reference), so that neither
way of loading a class can slip through the node unseen.
"""

from __future__ import annotations

import textwrap

from _drivers import describe, run_script

TRAP_MODULE = """
import os

MARK = {mark!r}


def process_name():
    with open("/proc/self/comm") as f:
        return f.read().strip()


def record(what):
    with open(MARK, "a") as f:
        f.write(f"{{process_name()}} {{os.getpid()}} {{what}}\\n")


record("import usermod")


class ModError(Exception):
    pass


class ModValue:
    def __init__(self, n):
        self.n = n

    def __setstate__(self, state):
        record("ModValue")
        self.__dict__.update(state)
"""

DRIVER = """
import os

import actorkit as ray
from usermod import ModError, ModValue, record

ATTEMPTS = {attempts!r}


class TrapMeta(type):
    # Runs wherever cloudpickle rebuilds a class defined here.
    def __init__(cls, name, bases, namespace, **kwargs):
        super().__init__(name, bases, namespace, **kwargs)
        record("class " + name)


class MainError(Exception, metaclass=TrapMeta):
    pass


class MainValue(metaclass=TrapMeta):
    def __init__(self, n, blob=b""):
        self.n = n
        self.blob = blob

    def __setstate__(self, state):
        record("MainValue")
        self.__dict__.update(state)


def attempt():
    with open(ATTEMPTS, "a") as f:
        f.write("x")
    with open(ATTEMPTS) as f:
        return len(f.read())


@ray.remote(max_retries=3, retry_exceptions=[MainError, ModError])
def flaky():
    n = attempt()
    if n == 1:
        raise MainError("first attempt")
    if n == 2:
        raise ModError("second attempt")
    return MainValue(n)


@ray.remote
def echo(a, b, *, c, nested):
    return [MainValue(a.n + b.n + c.n), ModValue(len(nested)), nested, a]


@ray.remote
def fail(value):
    raise MainError(value)


@ray.remote
class Holder:
    def __init__(self, value, other):
        self.value = value
        self.other = other

    def swap(self, value):
        old, self.value = self.value, value
        return old

    def raises(self):
        raise ModError(ModValue(7))


ray.init(num_cpus=2)
assert ray.get(flaky.remote(), timeout=30).n == 3

big = MainValue(1, b"x" * (2 << 20))  # large enough for a shared-memory segment
put_ref = ray.put(MainValue(10))
out = ray.get(echo.remote(big, ModValue(2), c=put_ref, nested=[put_ref, ModValue(3)]), timeout=30)
assert out[0].n == 13 and out[1].n == 2 and len(out[3].blob) == 2 << 20
assert ray.get(out[2][0]).n == 10 and out[2][1].n == 3
assert ray.get(ray.put([big, ModValue(5)]))[0].blob == big.blob

try:
    ray.get(fail.remote(MainValue(6)), timeout=30)
except MainError as e:
    assert e.cause.args[0].n == 6
else:
    raise AssertionError("fail() did not raise")

holder = Holder.remote(MainValue(20), other=ModValue(21))
assert ray.get(holder.swap.remote(ModValue(22)), timeout=30).n == 20
assert ray.get(holder.swap.remote(MainValue(23)), timeout=30).n == 22
try:
    ray.get(holder.raises.remote(), timeout=30)
except ModError as e:
    assert e.cause.args[0].n == 7
else:
    raise AssertionError("raises() did not raise")

# The node is still alive and serving after all of that.
assert ray.get(echo.remote(MainValue(1), ModValue(1), c=MainValue(1), nested=[]), timeout=30)[0].n == 3
ray.shutdown()
print("DRIVER-OK")
"""


def test_node_loads_no_user_class_or_value(tmp_path):
    mark = tmp_path / "loaded.txt"
    attempts = tmp_path / "attempts.txt"
    (tmp_path / "usermod.py").write_text(textwrap.dedent(TRAP_MODULE.format(mark=str(mark))))
    proc = run_script(tmp_path, DRIVER.format(attempts=str(attempts)))
    assert proc.returncode == 0 and "DRIVER-OK" in proc.stdout, describe(proc)
    # The retry happened in the worker: two application errors, then success.
    assert attempts.read_text() == "xxx"
    loads = [line.split(" ", 2) for line in mark.read_text().splitlines()]
    by_node = [line for line in loads if line[0] == "actorkit:node"]
    assert not by_node, f"the node loaded user code or values: {by_node}\n{describe(proc)}"
    # The traps work: the processes that run user code did spring them.
    in_workers = {what for name, _pid, what in loads if name == "actorkit:worker"}
    for what in ("import usermod", "class MainError", "class MainValue", "MainValue", "ModValue"):
        assert what in in_workers, f"trap {what!r} never fired in a worker: {loads}"
