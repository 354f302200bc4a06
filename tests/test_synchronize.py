"""Locks and friends: the stdlib's behaviour, in one process and across real processes started
by every start method, through Pool/Executor initargs and task arguments, and with a holder
that is SIGKILLed."""

from __future__ import annotations

import functools
import gc
import multiprocessing
import multiprocessing.synchronize
import os
import pickle
import signal
import threading
import time
from typing import Any, Iterator, Optional

import cloudpickle
import pytest

import manycore
from manycore import _serialize
from manycore._context import get_context
from manycore._sharedctypes import RawArray, RawValue
from manycore._shm import Segment
from manycore._synchronize import (
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    Lock,
    RLock,
    Semaphore,
)
from tests import workloads_sync as w
from tests.helpers import TIMEOUT, call_with_timeout, wait_until

SHORT = 0.2  # a timeout that is expected to expire


@pytest.fixture(scope="module", autouse=True)
def segment_tracker() -> Iterator[None]:
    """Keep the shared-memory tracker (started by the first segment, exiting when idle)
    running for the whole module, so it is not counted as a process a test left behind."""
    keep = Segment.create(8)
    yield
    keep.unlink()
    keep.close()


def start(method: Optional[str], target: Any, *args: Any) -> Any:
    p = get_context(method).Process(target=target, args=args)
    p.start()
    return p


def finish(p: Any, timeout: float = TIMEOUT) -> Optional[int]:
    """Join ``p`` (killing it if it overstays) and return its exit code."""
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join(TIMEOUT)
        pytest.fail(f"{p} did not finish within {timeout} s")
    code: Optional[int] = p.exitcode
    return code


def sem_path(lock: Any) -> str:
    return "/dev/shm/sem." + lock._semlock.name.lstrip("/")


# ------------------------------------------------------------------------------- one process


def test_lock_acquire_release_and_timeouts() -> None:
    lock = Lock()
    assert lock.acquire() is True
    assert lock.acquire(False) is False
    assert lock.acquire(block=True, timeout=0.05) is False
    assert "owner=MainProcess" in repr(lock)
    lock.release()
    with pytest.raises(ValueError, match="released too many times"):
        lock.release()
    with lock:
        assert lock.acquire(timeout=0) is False
    assert lock.acquire(timeout=0) is True
    lock.release()


def test_lock_timeout_waits_at_least_the_timeout() -> None:
    lock = Lock()
    lock.acquire()
    began = time.monotonic()
    assert lock.acquire(timeout=SHORT) is False
    assert time.monotonic() - began >= SHORT * 0.9
    lock.release()


def test_lock_blocks_another_thread_until_released() -> None:
    lock = Lock()
    lock.acquire()
    got: list[bool] = []
    thread = threading.Thread(target=lambda: got.append(lock.acquire(timeout=TIMEOUT)))
    thread.start()
    assert not wait_until(lambda: bool(got), 0.1)
    lock.release()
    thread.join(TIMEOUT)
    assert got == [True]
    lock.release()  # any thread may release a Lock


def test_rlock_recursion_and_owner_checks() -> None:
    rlock = RLock()
    for depth in (1, 2, 3):
        assert rlock.acquire(timeout=0)
        assert rlock._semlock._count() == depth
    assert "MainProcess, 3" in repr(rlock)
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            assert rlock.acquire(timeout=0.05) is False
            rlock.release()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(TIMEOUT)
    assert len(errors) == 1 and isinstance(errors[0], AssertionError)
    errors.clear()  # its traceback holds a cycle that would keep the lock until a GC pass
    for _ in range(3):
        rlock.release()
    with pytest.raises(AssertionError, match="not owned"):
        rlock.release()
    with rlock, rlock:
        assert rlock._semlock._count() == 2


def test_semaphore_counts() -> None:
    sem = Semaphore(2)
    assert sem.get_value() == 2
    assert sem.acquire(timeout=0) and sem.acquire(timeout=0)
    assert sem.get_value() == 0
    assert sem.acquire(timeout=0.05) is False
    for _ in range(5):  # an unbounded semaphore goes above its start value
        sem.release()
    assert sem.get_value() == 5
    assert "value=5" in repr(sem)
    assert Semaphore(0).acquire(False) is False
    assert Semaphore().get_value() == 1


def test_bounded_semaphore_over_release_raises() -> None:
    sem = BoundedSemaphore(2)
    with pytest.raises(ValueError, match="released too many times"):
        sem.release()
    assert sem.acquire(timeout=0)
    sem.release()
    with pytest.raises(ValueError):
        sem.release()
    assert sem.get_value() == 2
    assert "maxvalue=2" in repr(sem)


@pytest.mark.parametrize("cls", [Semaphore, BoundedSemaphore])
def test_semaphore_bad_values_say_what_to_pass(cls: Any) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        cls(-1)
    with pytest.raises(TypeError, match="must be an int"):
        cls(1.5)
    with pytest.raises(ValueError, match="SEM_VALUE_MAX"):
        cls(multiprocessing.synchronize.SEM_VALUE_MAX + 1)


def test_condition_in_one_process() -> None:
    cond = Condition()
    with pytest.raises(AssertionError):
        cond.wait(0)  # without holding the lock
    with cond:
        assert cond.wait(0.05) is False
        assert cond.wait_for(lambda: False, 0.05) is False
        assert cond.wait_for(lambda: 7, 0.05) == 7
        cond.notify()  # nobody waits: a no-op
        cond.notify_all()
    with Condition(Lock()) as entered:
        assert entered is True


def test_event_in_one_process() -> None:
    event = Event()
    assert not event.is_set()
    assert event.wait(0.05) is False
    event.set()
    assert event.is_set() and event.wait(0) is True and event.wait() is True
    event.set()  # twice: still set
    assert event.is_set()
    event.clear()
    assert not event.is_set() and event.wait(0) is False
    assert "unset" in repr(event)


def test_barrier_in_one_process() -> None:
    calls: list[int] = []
    barrier = Barrier(1, action=lambda: calls.append(1), timeout=TIMEOUT)
    assert barrier.parties == 1 and barrier.n_waiting == 0 and not barrier.broken
    assert barrier.wait() == 0
    assert calls == [1]
    barrier.abort()
    assert barrier.broken
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait()
    barrier.reset()
    assert not barrier.broken and barrier.wait() == 0
    with pytest.raises(ValueError, match="parties"):
        Barrier(0)


def test_barrier_with_threads() -> None:
    barrier = Barrier(3)
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(barrier.wait(TIMEOUT))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert sorted(results) == [0, 1, 2]


def test_they_are_the_stdlib_types() -> None:
    sync = multiprocessing.synchronize
    assert isinstance(Lock(), sync.Lock)
    assert isinstance(RLock(), sync.RLock)
    assert isinstance(Semaphore(), sync.Semaphore)
    assert isinstance(BoundedSemaphore(), sync.BoundedSemaphore)
    assert isinstance(Condition(), sync.Condition)
    assert isinstance(Event(), sync.Event)
    assert isinstance(Barrier(2), threading.Barrier)


# ---------------------------------------------------------------------------------- pickling


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps, _serialize.dumps])
def test_every_kind_pickles_without_a_spawning_popen(dumps: Any) -> None:
    lock, rlock, sem, bsem = Lock(), RLock(), Semaphore(3), BoundedSemaphore(2)
    cond, event, barrier = Condition(), Event(), Barrier(2)
    copies = pickle.loads(dumps((lock, rlock, sem, bsem, cond, event, barrier)))
    lock2, rlock2, sem2, bsem2, cond2, event2, barrier2 = copies
    assert type(lock2) is Lock and type(cond2) is Condition and type(barrier2) is Barrier
    # The copies share the originals' semaphores and memory.
    lock.acquire()
    assert lock2.acquire(timeout=0) is False
    lock2.release()  # any process (here: any object) may release a Lock
    assert lock.acquire(timeout=0) is True
    assert sem2.get_value() == 3 and sem2.acquire(timeout=0) and sem.get_value() == 2
    with pytest.raises(ValueError):
        bsem2.release()
    event.set()
    assert event2.is_set()
    assert barrier2.parties == 2 and barrier2._cond._lock._semlock.name == (
        barrier._cond._lock._semlock.name
    )
    barrier.abort()
    assert barrier2.broken
    rlock.acquire()
    assert rlock2.acquire(timeout=0) is False  # a different object: not its owner
    rlock.release()


def test_unpickling_after_the_creator_released_it_says_why() -> None:
    data = pickle.dumps(Lock())  # the Lock is garbage at once: its name is unlinked
    gc.collect()
    with pytest.raises(FileNotFoundError, match="keep a reference"):
        pickle.loads(data)


def test_names_are_unlinked_when_collected() -> None:
    locks = [Lock(), RLock(), Semaphore(), BoundedSemaphore()]
    paths = [sem_path(lock) for lock in locks]
    assert all(os.path.exists(p) for p in paths)
    assert all(oct(os.stat(p).st_mode & 0o777) == "0o600" for p in paths)
    del locks
    gc.collect()
    assert not any(os.path.exists(p) for p in paths)


# ------------------------------------------------------------------------- across processes


def test_locks_reach_children_of_every_start_method(start_method: Optional[str]) -> None:
    held, free = [Lock(), RLock(), Semaphore(1), BoundedSemaphore(1)], [Lock(), RLock()]
    for lock in held:
        lock.acquire()
    # Bits 0-3: the held ones (must time out); bits 4-5: the free ones.
    p = start(start_method, w.try_acquire_each, held + free, SHORT)
    assert finish(p) == 0b110000
    for lock in held:
        lock.release()
    p = start(start_method, w.try_acquire_each, held, TIMEOUT)
    assert finish(p) == 0b1111


def test_a_child_waits_for_the_parent_to_release(start_method: Optional[str]) -> None:
    lock, trying, released = Lock(), Event(), RawValue("i", 0)
    lock.acquire()
    p = start(start_method, w.acquire_after_release, lock, trying, released, TIMEOUT)
    assert trying.wait(TIMEOUT), "the child never tried the lock"
    time.sleep(0.1)  # room for a broken lock to let the child in early (it reports that)
    released.value = 1
    lock.release()
    assert finish(p) == 0  # the child got the lock, and only after the release


def test_counter_in_processes_reaches_the_exact_total(start_method: Optional[str]) -> None:
    from manycore._sharedctypes import Value

    total, lock = Value("i", 0), Lock()
    workers = [start(start_method, w.inc, total, lock, 2000) for _ in range(4)]
    assert [finish(p) for p in workers] == [0, 0, 0, 0]
    assert total.value == 8000


def test_holder_sigkilled_acquire_with_timeout_and_recover(start_method: Optional[str]) -> None:
    lock, held = Lock(), Event()
    holder = start(start_method, w.hold, lock, held, 3600)
    assert held.wait(TIMEOUT), "the holder never took the lock"
    os.kill(holder.pid, signal.SIGKILL)
    assert finish(holder) == -signal.SIGKILL
    # The lock stays held by the dead process: nobody deadlocks who uses a timeout...
    assert lock.acquire(timeout=SHORT) is False
    other = start(start_method, w.try_acquire, lock, SHORT)
    assert finish(other) == w.NO
    # ...and a process that knows the holder died may release a Lock for it.
    lock.release()
    other = start(start_method, w.try_acquire, lock, TIMEOUT)
    assert finish(other) == 0
    assert lock.acquire(timeout=TIMEOUT)
    lock.release()


def test_rlock_held_at_fork_is_not_the_childs() -> None:
    rlock = RLock()
    with rlock:
        p = start("fork", w.inherited_rlock_not_mine, rlock)
        assert finish(p) == 0


def test_semaphore_across_processes(start_method: Optional[str]) -> None:
    sem = Semaphore(0)
    p = start(start_method, w.semaphore_take, sem, 3, TIMEOUT)
    for _ in range(3):
        sem.release()
    assert finish(p) == 0
    assert sem.get_value() == 0
    p = start(start_method, w.semaphore_take, sem, 1, SHORT)
    assert finish(p) == w.NO


def _wait_for_waiters(cond: Any, waiting: Any, n: int) -> None:
    def enough() -> bool:
        with cond:
            return bool(waiting.value == n)

    assert wait_until(enough, TIMEOUT), f"{n} waiters never arrived ({waiting.value})"


def test_condition_notify_wakes_one_and_notify_all_the_rest(
    start_method: Optional[str],
) -> None:
    cond, waiting = Condition(), RawValue("i", 0)
    waiters = [start(start_method, w.condition_wait_once, cond, waiting, TIMEOUT) for _ in range(3)]
    _wait_for_waiters(cond, waiting, 3)
    with cond:
        cond.notify()
    assert wait_until(lambda: sum(not p.is_alive() for p in waiters) >= 1, TIMEOUT)
    # Exactly one was woken: the other two are still counted as sleepers (a state, not a
    # moment: a second wake-up would have taken its sleeper off the count in notify()).
    assert cond._sleeping_count.get_value() == 2
    assert sum(not p.is_alive() for p in waiters) == 1
    with cond:
        cond.notify_all()
    assert [finish(p) for p in waiters] == [0, 0, 0]


def test_condition_wait_for_and_timeout(start_method: Optional[str]) -> None:
    cond, state, waiting = Condition(Lock()), RawValue("i", 0), RawValue("i", 0)
    waiter = start(start_method, w.condition_wait, cond, state, waiting, TIMEOUT)
    _wait_for_waiters(cond, waiting, 1)
    with cond:
        cond.notify_all()  # the predicate is still false: it waits on
    # The handshake: it is a sleeper again, so it saw the predicate false and went back.
    assert wait_until(lambda: cond._sleeping_count.get_value() == 1, TIMEOUT)
    assert waiter.is_alive()
    with cond:
        state.value = 1
        cond.notify_all()
    assert finish(waiter) == 0
    state.value = 0
    waiter = start(start_method, w.condition_wait, cond, state, waiting, SHORT)
    assert finish(waiter) == w.NO


def test_event_across_processes(start_method: Optional[str]) -> None:
    event = Event()
    waiter = start(start_method, w.event_wait, event, TIMEOUT)
    setter = start(start_method, w.event_set, event)
    assert finish(setter) == 0
    assert finish(waiter) == 0
    assert event.is_set()
    event.clear()
    waiter = start(start_method, w.event_wait, event, SHORT)
    assert finish(waiter) == w.NO


def test_barrier_across_processes(start_method: Optional[str]) -> None:
    actions = RawValue("i", 0)
    barrier = Barrier(3, action=functools.partial(w.add_one, actions), timeout=TIMEOUT)
    slots = RawArray("i", [-1, -1, -1])
    parties = [start(start_method, w.barrier_wait, barrier, slots, i, TIMEOUT) for i in range(2)]
    assert wait_until(lambda: barrier.n_waiting == 2, TIMEOUT)
    index = barrier.wait(TIMEOUT)
    assert [finish(p) for p in parties] == [0, 0]
    assert sorted([slots[0], slots[1], index]) == [0, 1, 2]
    assert barrier.n_waiting == 0 and not barrier.broken
    assert actions.value == 1  # the action ran once, in whichever process came last


def test_barrier_abort_breaks_waiters_in_other_processes(start_method: Optional[str]) -> None:
    barrier, slots = Barrier(3), RawArray("i", 2)
    parties = [start(start_method, w.barrier_wait, barrier, slots, i, TIMEOUT) for i in range(2)]
    assert wait_until(lambda: barrier.n_waiting == 2, TIMEOUT)
    aborter = start(start_method, w.barrier_abort, barrier)
    assert finish(aborter) == 0
    assert [finish(p) for p in parties] == [w.NO, w.NO]
    assert barrier.broken
    barrier.reset()
    assert not barrier.broken


def test_barrier_timeout_breaks_it() -> None:
    barrier = Barrier(2)
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(SHORT)
    assert barrier.broken


# ------------------------------------------------------------------ pools and executors


def test_pool_initargs_and_task_args(start_method: Optional[str]) -> None:
    from manycore._sharedctypes import Value

    lock, total = Lock(), Value("i", 0)
    with manycore.Pool(
        2, initializer=w.pool_init, initargs=(lock, total), context=start_method
    ) as pool:
        assert pool.map_async(w.pool_inc, [300] * 4, chunksize=1).get(TIMEOUT) == [300] * 4
        assert pool.apply_async(w.task_inc, (total, lock, 300)).get(TIMEOUT) == 300
        lock.acquire()
        assert pool.apply_async(w.task_try_acquire, (lock, SHORT)).get(TIMEOUT) is False
        lock.release()
        assert pool.apply_async(w.task_try_acquire, (lock, TIMEOUT)).get(TIMEOUT) is True
    assert total.value == 1500


def test_executor_initargs_and_task_args() -> None:
    from manycore._sharedctypes import Value

    lock, total = Lock(), Value("i", 0)
    with manycore.ProcessPoolExecutor(2, initializer=w.pool_init, initargs=(lock, total)) as ex:
        futures = [ex.submit(w.pool_inc, 250) for _ in range(2)]
        futures.append(ex.submit(w.task_inc, total, lock, 250))
        assert [f.result(TIMEOUT) for f in futures] == [250] * 3
    assert total.value == 750


# ----------------------------------------------------------------- a waiter that is killed


def _notify_all(cond: Any) -> None:
    with cond:
        cond.notify_all()


def test_notify_carries_on_when_a_waiter_was_killed(start_method: Optional[str]) -> None:
    cond, waiting = Condition(), RawValue("i", 0)
    victim = start(start_method, w.condition_wait_once, cond, waiting, TIMEOUT)
    _wait_for_waiters(cond, waiting, 1)
    os.kill(victim.pid, signal.SIGKILL)
    assert finish(victim) == -signal.SIGKILL
    live = start(start_method, w.condition_wait_once, cond, waiting, TIMEOUT)
    _wait_for_waiters(cond, waiting, 2)
    # The stdlib's notify_all() would wait forever for the dead waiter to acknowledge.
    call_with_timeout(_notify_all, cond, timeout=TIMEOUT)
    assert finish(live) == 0
    # The bookkeeping is still right: the next waiter is woken, and only once.
    again = start(start_method, w.condition_wait_once, cond, waiting, TIMEOUT)
    _wait_for_waiters(cond, waiting, 3)
    call_with_timeout(_notify_all, cond, timeout=TIMEOUT)
    assert finish(again) == 0
    with cond:
        assert cond._sleeping_count.get_value() == cond._woken_count.get_value() == 0
        assert cond._wait_semaphore.get_value() == 0


def test_event_set_returns_when_a_waiter_was_killed() -> None:
    event = Event()
    victim = start(None, w.event_wait, event, TIMEOUT)
    assert wait_until(lambda: event._cond._sleeping_count.get_value() == 1, TIMEOUT)
    victim.kill()
    assert finish(victim) == -signal.SIGKILL
    call_with_timeout(event.set, timeout=TIMEOUT)
    assert event.is_set()
    event.clear()
    waiter = start(None, w.event_wait, event, TIMEOUT)
    assert wait_until(lambda: event._cond._sleeping_count.get_value() >= 1, TIMEOUT)
    call_with_timeout(event.set, timeout=TIMEOUT)
    assert finish(waiter) == 0


_KILLED_OWNER = r"""
import os, time
import manycore
lock, queue, value = manycore.Lock(), manycore.Queue(), manycore.Value("i", 1)
queue.put("kept")
print(" ".join(sorted(n for n in os.listdir("/dev/shm") if "manycore" in n)), flush=True)
time.sleep(120)
"""


def test_semaphores_are_freed_when_their_creator_is_sigkilled() -> None:
    """Locks' and queues' named semaphores are tracked like segments: a creator killed by
    SIGKILL (no finalizer runs) leaves nothing in /dev/shm."""
    from tests import helpers

    before = set(os.listdir("/dev/shm"))
    with helpers.python_running(_KILLED_OWNER) as proc:
        assert proc.stdout is not None
        names = set(helpers.read_line(proc.stdout).split()) - before
        assert any(n.startswith("sem.mp-manycore") for n in names), names
        assert any(n.startswith("sem.manycore-q") for n in names), names
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=helpers.TIMEOUT)
        left = helpers.shm_left(names, 30.0)
        assert not left, f"left behind after SIGKILL: {sorted(left)}"


# --- a quiet exit (issue 15: "lost sys.stderr" at exit) ----------------------------------------

EVERY_KIND = """
import manycore as mp
kept = [mp.Value("i", 1), mp.Lock(), mp.Queue(), mp.Event(), mp.Condition(), mp.Barrier(2),
        mp.RawArray("i", 3)]
"""

# What interpreter exit does, in order, with warnings shown: the exit handlers run, then the
# objects still alive are collected. The tracker process's Popen object is one of them; if it
# still thought its child unreaped it would warn, and at a real exit (sys.stderr gone by then)
# Python prints "lost sys.stderr" in place of that warning.
EXIT_THEN_COLLECT = """
import atexit, gc, warnings
import manycore as mp
from manycore import _shm
warnings.simplefilter("always")
lock = mp.Lock()
atexit._run_exitfuncs()
_shm._tracker._proc = None
gc.collect()
"""


def test_exit_after_making_every_kind_of_object_prints_nothing() -> None:
    from tests import helpers

    result = helpers.run_python(["-c", EVERY_KIND])
    assert result.returncode == 0
    assert result.stderr == ""


def test_the_shm_tracker_is_left_running_without_a_warning() -> None:
    from tests import helpers

    result = helpers.run_python(["-c", EXIT_THEN_COLLECT])
    assert result.returncode == 0
    assert result.stderr == ""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_semaphores_bound_acquire_runs_in_a_worker(method: str) -> None:
    # ``executor.submit(sem.acquire)`` pickles the bound method; on Python 3.9 that is the
    # bare SemLock's (CPython's test_saturation does this).
    sem = manycore.Semaphore(0)
    with manycore.get_context(method).Pool(1) as pool:
        taken = pool.apply_async(sem.acquire, (True, 60))
        sem.release()
        assert taken.get(timeout=90) is True
    assert sem.acquire(timeout=0.1) is False  # the worker took the one release
