"""The life of an actor: kill, exit_actor, out of scope, restarts, shutdown.

``kill(handle)`` must leave the actor dead by the time it returns: every later
call raises ``ActorDiedError`` (no race), and calls still pending fail with it
too.  An unnamed actor whose last handle is gone ends.  An actor with
``max_restarts`` comes back after its process dies, re-running ``__init__``.

Process exits are awaited with a pidfd (an event, not a polling loop), bounded
by a timeout.  Every ``get`` has a timeout, so a hang fails the test.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import sys
import time

import pytest
from _actors import SignalActor, process_exited

import actorkit as ray
from actorkit.actor import exit_actor
from actorkit.exceptions import ActorDiedError, RayActorError

T = 30  # seconds: the bound on every get()
EXIT_TIMEOUT_S = 10


def wait_for_exit(pid: int, timeout: float = EXIT_TIMEOUT_S) -> bool:
    return process_exited(pid, timeout)


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@ray.remote
class Worker:
    def __init__(self):
        self.n = 0
        self.inits = 1

    def incr(self):
        self.n += 1
        return self.n

    def pid(self):
        return os.getpid()

    def block_on(self, signal):
        # A slow call: runs until the signal is sent.
        return ray.get(signal.wait.remote(), timeout=T)

    def slow(self, seconds, value):
        time.sleep(seconds)
        return value

    def exit_now(self):
        exit_actor()
        return "not reached"

    def crash_once(self, marker):
        """Kill this process the first time (per marker file); succeed after."""
        if not os.path.exists(marker):
            with open(marker, "w"):
                pass
            os.kill(os.getpid(), signal.SIGKILL)
        return self.n, os.getpid()


# -------------------------------------------------------------------- kill


def test_calls_after_kill_raise_at_once_no_race(ray_start_shared):
    for i in range(6):
        w = Worker.remote()
        if i % 2:
            ray.get(w.incr.remote(), timeout=T)  # kill a running actor ...
        # ... or one still starting.
        ray.kill(w)
        with pytest.raises(ActorDiedError, match="kill"):
            ray.get(w.incr.remote(), timeout=T)
        with pytest.raises(RayActorError):
            ray.get(w.pid.remote(), timeout=T)


def test_kill_ends_the_process(ray_start_shared):
    w = Worker.remote()
    pid = ray.get(w.pid.remote(), timeout=T)
    ray.kill(w)
    assert wait_for_exit(pid), f"actor process {pid} still alive after kill"


def test_pending_calls_fail_when_killed(ray_start_shared, kill_after):
    sig = kill_after(SignalActor.remote())
    w = Worker.remote()
    running = w.block_on.remote(sig)
    queued = [w.incr.remote() for _ in range(3)]
    assert ray.get(sig.wait_for_waiters.remote(1), timeout=T) == 1  # block_on runs
    ray.kill(w)
    for ref in [running, *queued]:
        with pytest.raises(ActorDiedError):
            ray.get(ref, timeout=T)


def test_pending_calls_of_threaded_actor_fail_when_killed(ray_start_shared, kill_after):
    sig = kill_after(SignalActor.remote())
    w = Worker.options(max_concurrency=2).remote()
    running = [w.block_on.remote(sig) for _ in range(2)]
    queued = w.incr.remote()
    assert ray.get(sig.wait_for_waiters.remote(2), timeout=T) == 2
    ray.kill(w)
    for ref in [*running, queued]:
        with pytest.raises(ActorDiedError):
            ray.get(ref, timeout=T)


def test_kill_of_a_killed_actor_is_harmless(ray_start_shared):
    w = Worker.remote()
    ray.kill(w)
    ray.kill(w)
    with pytest.raises(ActorDiedError):
        ray.get(w.incr.remote(), timeout=T)


def test_kill_needs_an_actor_handle(ray_start_shared):
    with pytest.raises(TypeError):
        ray.kill(ray.put(1))


def test_handle_of_killed_actor_fails_in_a_task(ray_start_shared):
    @ray.remote
    def use(handle):
        try:
            ray.get(handle.incr.remote(), timeout=T)
        except ActorDiedError:
            return "died"
        return "alive"

    w = Worker.remote()
    ray.kill(w)
    assert ray.get(use.remote(w), timeout=T) == "died"


# -------------------------------------------------------------- exit_actor


def test_exit_actor_from_inside_a_method(ray_start_shared):
    w = Worker.remote()
    pid = ray.get(w.pid.remote(), timeout=T)
    exiting = w.exit_now.remote()
    after = w.incr.remote()
    with pytest.raises(ActorDiedError):
        ray.get(exiting, timeout=T)
    with pytest.raises(ActorDiedError):
        ray.get(after, timeout=T)
    with pytest.raises(ActorDiedError):
        ray.get(w.incr.remote(), timeout=T)
    assert wait_for_exit(pid)


@ray.remote
class LeavesANote:
    def __init__(self, path):
        import atexit

        atexit.register(lambda: open(path, "w").write("atexit ran"))

    def leave(self):
        from actorkit.actor import exit_actor

        exit_actor()


def test_exit_actor_runs_the_processs_atexit_handlers(ray_start_shared, tmp_path):
    note = tmp_path / "note.txt"
    actor = LeavesANote.remote(str(note))
    with pytest.raises(ActorDiedError):
        ray.get(actor.leave.remote(), timeout=T)
    assert note.read_text() == "atexit ran"


def test_exit_actor_is_not_restarted(ray_start_shared):
    w = Worker.options(max_restarts=2).remote()
    with pytest.raises(ActorDiedError):
        ray.get(w.exit_now.remote(), timeout=T)
    with pytest.raises(ActorDiedError):
        ray.get(w.incr.remote(), timeout=T)


def test_exit_actor_in_async_actor(ray_start_shared):
    @ray.remote
    class AsyncQuitter:
        async def quit(self):
            exit_actor()

        async def ping(self):
            return "pong"

    a = AsyncQuitter.remote()
    assert ray.get(a.ping.remote(), timeout=T) == "pong"
    with pytest.raises(ActorDiedError):
        ray.get(a.quit.remote(), timeout=T)
    with pytest.raises(ActorDiedError):
        ray.get(a.ping.remote(), timeout=T)


def test_exit_actor_outside_an_actor_is_an_error(ray_start_shared):
    with pytest.raises(TypeError, match="actor"):
        exit_actor()


# ------------------------------------------------------------ out of scope


def test_unnamed_actor_ends_when_last_handle_is_collected(ray_start_shared):
    w = Worker.remote()
    pid = ray.get(w.pid.remote(), timeout=T)
    del w
    gc.collect()
    assert wait_for_exit(pid), f"actor process {pid} outlived its last handle"


def test_unnamed_actor_ends_when_last_handle_is_deleted(ray_start_shared):
    # As in CPython Ray, dropping the last reference is enough; no gc.collect().
    gc.collect()
    gc.disable()
    try:
        w = Worker.remote()
        pid = ray.get(w.pid.remote(), timeout=T)
        del w
        exited = wait_for_exit(pid, timeout=2)
    finally:
        gc.enable()
        gc.collect()
    assert exited, f"actor process {pid} outlived its last handle"


def test_out_of_scope_actor_finishes_pending_calls_first(ray_start_shared):
    w = Worker.remote()
    pid = ray.get(w.pid.remote(), timeout=T)
    refs = [w.slow.remote(0.2, "first"), w.slow.remote(0, "second")]
    del w
    gc.collect()
    assert ray.get(refs, timeout=T) == ["first", "second"]
    assert wait_for_exit(pid)


def test_handle_held_by_a_task_result_keeps_actor_alive(ray_start_shared):
    @ray.remote
    def wrap(handle):
        return [handle]

    w = Worker.remote()
    pid = ray.get(w.pid.remote(), timeout=T)
    stored = wrap.remote(w)
    del w
    gc.collect()
    [again] = ray.get(stored, timeout=T)
    assert ray.get(again.pid.remote(), timeout=T) == pid
    assert is_running(pid)
    ray.kill(again)


def test_named_actor_survives_its_handles(ray_start_shared):
    w = Worker.options(name="lifecycle-named").remote()
    pid = ray.get(w.pid.remote(), timeout=T)
    del w
    gc.collect()
    again = ray.get_actor("lifecycle-named")
    assert ray.get(again.pid.remote(), timeout=T) == pid
    ray.kill(again)
    assert wait_for_exit(pid)


# ----------------------------------------------------------------- restarts


def test_restart_after_sigkill_reruns_init(ray_start_shared, kill_after):
    # max_task_retries=1: a call that reaches the process as it dies is retried.
    w = kill_after(Worker.options(max_restarts=1, max_task_retries=1).remote())
    assert ray.get([w.incr.remote() for _ in range(3)], timeout=T) == [1, 2, 3]
    pid = ray.get(w.pid.remote(), timeout=T)
    os.kill(pid, signal.SIGKILL)
    assert wait_for_exit(pid)
    # Restarted: __init__ ran again, so the state starts over, in a new process.
    assert ray.get(w.incr.remote(), timeout=T) == 1
    new_pid = ray.get(w.pid.remote(), timeout=T)
    assert new_pid != pid
    # The one restart is used up: the next death is final.
    os.kill(new_pid, signal.SIGKILL)
    assert wait_for_exit(new_pid)
    with pytest.raises(ActorDiedError):
        ray.get(w.incr.remote(), timeout=T)


def test_no_restart_by_default(ray_start_shared):
    w = Worker.remote()
    pid = ray.get(w.pid.remote(), timeout=T)
    os.kill(pid, signal.SIGKILL)
    assert wait_for_exit(pid)
    with pytest.raises(ActorDiedError, match="SIGKILL|died"):
        ray.get(w.incr.remote(), timeout=T)


def test_call_in_flight_is_retried_with_max_task_retries(ray_start_shared, kill_after, tmp_path):
    w = kill_after(Worker.options(max_restarts=1, max_task_retries=1).remote())
    first_pid = ray.get(w.pid.remote(), timeout=T)
    ray.get(w.incr.remote(), timeout=T)
    n, pid = ray.get(w.crash_once.remote(str(tmp_path / "crashed")), timeout=T)
    assert pid != first_pid
    assert n == 0  # ran again on the restarted actor, after __init__


def test_call_in_flight_fails_without_task_retries(ray_start_shared, kill_after, tmp_path):
    w = kill_after(Worker.options(max_restarts=1).remote())
    first_pid = ray.get(w.pid.remote(), timeout=T)
    ray.get(w.incr.remote(), timeout=T)
    with pytest.raises(ActorDiedError):
        ray.get(w.crash_once.remote(str(tmp_path / "crashed")), timeout=T)
    # The actor itself was restarted.
    assert ray.get(w.incr.remote(), timeout=T) == 1
    assert ray.get(w.pid.remote(), timeout=T) != first_pid


def test_kill_with_no_restart_false_restarts(ray_start_shared, kill_after):
    w = kill_after(Worker.options(max_restarts=1, max_task_retries=1).remote())
    ray.get(w.incr.remote(), timeout=T)
    pid = ray.get(w.pid.remote(), timeout=T)
    ray.kill(w, no_restart=False)
    assert wait_for_exit(pid)
    assert ray.get(w.incr.remote(), timeout=T) == 1
    assert ray.get(w.pid.remote(), timeout=T) != pid


def test_kill_with_no_restart_true_does_not_restart(ray_start_shared):
    w = Worker.options(max_restarts=3).remote()
    ray.get(w.incr.remote(), timeout=T)
    ray.kill(w, no_restart=True)
    with pytest.raises(ActorDiedError):
        ray.get(w.incr.remote(), timeout=T)


# ----------------------------------------------------------------- shutdown


def test_handle_used_after_shutdown_is_a_clear_error(shutdown_only):
    ray.init(num_cpus=1)
    w = Worker.remote()
    ray.get(w.incr.remote(), timeout=T)
    ray.shutdown()
    # Ray raises at .remote() ("Ray has not been started yet"); either there or
    # at get(), the error must say what is wrong rather than name a lost actor.
    with pytest.raises(Exception) as info:
        ray.get(w.incr.remote(), timeout=T)
    assert re.search(r"shut ?down|not (been )?(started|initialized)|init\(\)", str(info.value)), str(
        info.value
    )


def test_shutdown_ends_actor_processes(shutdown_only):
    ray.init(num_cpus=2)
    actors = [Worker.remote() for _ in range(2)]
    detached = Worker.options(name="until-shutdown", lifetime="detached").remote()
    pids = ray.get([a.pid.remote() for a in [*actors, detached]], timeout=T)
    ray.shutdown()
    assert not [pid for pid in pids if is_running(pid)]


# ------------------------------------------------------ sys.exit in a method
#
# SystemExit out of a method ends the actor's process as if it had died: the
# call gets ActorDiedError saying so (it is not retried: it would only exit
# again), calls pending behind it go the way of a crashed actor's calls, and
# max_restarts brings the actor back on a fresh __init__.  (Unlike
# exit_actor(), which is final.)


@ray.remote
class Exiter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n

    def pid(self):
        return os.getpid()

    def leave(self, code):
        if code == "none":
            sys.exit()
        raise SystemExit(code)

    def block_on(self, signal):
        return ray.get(signal.wait.remote(), timeout=T)


@pytest.mark.parametrize("code, said", [("none", "sys.exit()"), (3, "sys.exit(3)"), ("bye", "sys.exit('bye')")])
def test_sys_exit_in_a_method_ends_the_actor(ray_start_shared, code, said):
    e = Exiter.remote()
    pid = ray.get(e.pid.remote(), timeout=T)
    leaving = e.leave.remote(code)
    behind = e.incr.remote()  # a serial actor: it cannot run before leave() is done
    with pytest.raises(ActorDiedError, match=re.escape(f"Exiter.leave() exited the actor's process via {said}")):
        ray.get(leaving, timeout=T)
    with pytest.raises(ActorDiedError, match=re.escape(said)):
        ray.get(behind, timeout=T)
    with pytest.raises(RayActorError, match=re.escape(said)):
        ray.get(e.incr.remote(), timeout=T)
    assert wait_for_exit(pid)


def test_sys_exit_restarts_with_max_restarts(ray_start_shared, kill_after):
    e = kill_after(Exiter.options(max_restarts=1).remote())
    assert ray.get([e.incr.remote(), e.incr.remote()], timeout=T) == [1, 2]
    pid = ray.get(e.pid.remote(), timeout=T)
    with pytest.raises(ActorDiedError, match=re.escape("sys.exit(3)")):
        ray.get(e.leave.remote(3), timeout=T)
    # Back on a fresh __init__, in a new process.
    assert ray.get(e.incr.remote(), timeout=T) == 1
    assert ray.get(e.pid.remote(), timeout=T) != pid
    # The one restart is used up: the next exit is final.
    with pytest.raises(ActorDiedError):
        ray.get(e.leave.remote("none"), timeout=T)
    with pytest.raises(ActorDiedError, match=re.escape("sys.exit()")):
        ray.get(e.incr.remote(), timeout=T)


def test_calls_behind_sys_exit_are_retried_with_max_task_retries(ray_start_shared, kill_after):
    e = kill_after(Exiter.options(max_restarts=1, max_task_retries=1).remote())
    assert ray.get(e.incr.remote(), timeout=T) == 1
    leaving = e.leave.remote(0)
    behind = [e.incr.remote(), e.incr.remote()]
    with pytest.raises(ActorDiedError, match=re.escape("sys.exit(0)")):
        ray.get(leaving, timeout=T)  # the exiting call itself is not retried
    assert ray.get(behind, timeout=T) == [1, 2]  # ran on the restarted actor, in order


def test_calls_behind_sys_exit_fail_without_task_retries(ray_start_shared, kill_after):
    e = kill_after(Exiter.options(max_restarts=1).remote())
    assert ray.get(e.incr.remote(), timeout=T) == 1
    leaving = e.leave.remote(0)
    behind = e.incr.remote()
    with pytest.raises(ActorDiedError):
        ray.get(leaving, timeout=T)
    with pytest.raises(ActorDiedError, match=re.escape("sys.exit(0)") + ".*max_task_retries"):
        ray.get(behind, timeout=T)
    assert ray.get(e.incr.remote(), timeout=T) == 1  # the actor itself came back


def test_sys_exit_in_a_threaded_actor_fails_the_calls_running_beside_it(ray_start_shared, kill_after):
    signal_actor = kill_after(SignalActor.remote())
    e = Exiter.options(max_concurrency=2).remote()
    blocked = e.block_on.remote(signal_actor)
    ray.get(signal_actor.wait_for_waiters.remote(1), timeout=T)  # blocked is running now
    with pytest.raises(ActorDiedError, match=re.escape("sys.exit(3)")):
        ray.get(e.leave.remote(3), timeout=T)
    with pytest.raises(ActorDiedError, match=re.escape("sys.exit(3)")):
        ray.get(blocked, timeout=T)
    ray.get(signal_actor.send.remote(), timeout=T)


def test_sys_exit_in_an_async_actor(ray_start_shared, kill_after):
    @ray.remote
    class AsyncExiter:
        def __init__(self):
            self.pid = os.getpid()

        async def leave(self):
            sys.exit(2)

        async def whoami(self):
            return self.pid

    a = kill_after(AsyncExiter.options(max_restarts=1).remote())
    pid = ray.get(a.whoami.remote(), timeout=T)
    with pytest.raises(ActorDiedError, match=re.escape("AsyncExiter.leave() exited the actor's process via sys.exit(2)")):
        ray.get(a.leave.remote(), timeout=T)
    assert wait_for_exit(pid)
    assert ray.get(a.whoami.remote(), timeout=T) != pid  # restarted
    with pytest.raises(ActorDiedError):
        ray.get(a.leave.remote(), timeout=T)
    with pytest.raises(ActorDiedError, match=re.escape("sys.exit(2)")):
        ray.get(a.whoami.remote(), timeout=T)


@ray.remote(max_retries=2, retry_exceptions=True)
def exits_with(code, attempts):
    with open(attempts, "a") as f:
        f.write("x")
    sys.exit(code)


@ray.remote
def plus_one(x):
    return x + 1


def test_sys_exit_in_a_plain_task_is_its_error(ray_start_shared, tmp_path):
    # The worker is a pooled process, not the task's own: the task fails with
    # a TaskError naming SystemExit and its code, is not retried, and
    # the pool goes on serving.
    with pytest.raises(ray.exceptions.TaskError, match="SystemExit: 4") as info:
        ray.get(exits_with.remote(4, str(tmp_path / "attempts")), timeout=T)
    assert (tmp_path / "attempts").read_text() == "x"  # an exit is no exception to retry
    assert not isinstance(info.value, SystemExit)  # a driver that does not catch it is not ended quietly
    assert ray.get(plus_one.remote(1), timeout=T) == 2
