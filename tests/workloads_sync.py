"""Functions the lock and shared-value tests run in child processes (importable under spawn).

A child reports a yes/no answer through its exit code: 0 for yes, ``NO`` for no, so the
parent reads it from ``Process.exitcode`` with no other channel.
"""

from __future__ import annotations

import ctypes
import sys
import time
from typing import Any

NO = 3

# Set by pool_init in pool workers.
_shared: dict[str, Any] = {}


def inc(value: Any, lock: Any, n: int) -> None:
    """The seed's counter: ``n`` times ``with lock: value.value += 1``."""
    for _ in range(n):
        with lock:
            value.value += 1


def inc_own_lock(value: Any, n: int) -> None:
    """``n`` increments under the value's own lock (``get_lock()``)."""
    for _ in range(n):
        with value.get_lock():
            value.value += 1


def try_acquire(lock: Any, timeout: float) -> None:
    """Exit 0 if ``lock`` could be acquired within ``timeout`` seconds (then release it)."""
    if lock.acquire(timeout=timeout):
        lock.release()
        sys.exit(0)
    sys.exit(NO)


def acquire_after_release(lock: Any, trying: Any, released: Any, timeout: float) -> None:
    """Set ``trying``, then acquire ``lock``: exit 0 if that happened after the parent set
    ``released`` (the lock kept us out while it held it), 2 if before, NO on timeout."""
    trying.set()
    if not lock.acquire(timeout=timeout):
        sys.exit(NO)
    early = released.value != 1
    lock.release()
    sys.exit(2 if early else 0)


def hold(lock: Any, held: Any, seconds: float) -> None:
    """Acquire ``lock``, set the event ``held``, then keep the lock for ``seconds``."""
    lock.acquire()
    held.set()
    time.sleep(seconds)
    lock.release()


def release(lock: Any) -> None:
    """Release ``lock`` (held by someone else)."""
    lock.release()


def semaphore_take(sem: Any, count: int, timeout: float) -> None:
    """Exit 0 if ``count`` acquisitions of ``sem`` succeed within ``timeout`` each."""
    for _ in range(count):
        if not sem.acquire(timeout=timeout):
            sys.exit(NO)
    sys.exit(0)


def condition_wait(cond: Any, state: Any, waiting: Any, timeout: float) -> None:
    """Wait on ``cond`` until ``state.value`` is 1; count ourselves in ``waiting`` first.
    Exit 0 if woken with the predicate true, NO on timeout."""
    with cond:
        waiting.value += 1
        ok = cond.wait_for(lambda: state.value == 1, timeout)
    sys.exit(0 if ok else NO)


def condition_wait_once(cond: Any, waiting: Any, timeout: float) -> None:
    """One plain ``cond.wait(timeout)``: exit 0 if notified, NO on timeout."""
    with cond:
        waiting.value += 1
        ok = cond.wait(timeout)
    sys.exit(0 if ok else NO)


def event_wait(event: Any, timeout: float) -> None:
    """Exit 0 if ``event`` is set within ``timeout`` seconds."""
    sys.exit(0 if event.wait(timeout) else NO)


def event_set(event: Any) -> None:
    event.set()


def barrier_wait(barrier: Any, slots: Any, index: int, timeout: float) -> None:
    """Wait at ``barrier``; store the returned index in ``slots[index]``; exit NO if broken."""
    import threading

    try:
        slots[index] = barrier.wait(timeout)
    except threading.BrokenBarrierError:
        sys.exit(NO)


def barrier_abort(barrier: Any) -> None:
    barrier.abort()


def write_value(value: Any, new: Any) -> None:
    value.value = new


def array_add(array: Any, amount: Any) -> None:
    """Add ``amount`` to every item of ``array`` under its lock (or none, for a raw one)."""
    lock = array.get_lock() if hasattr(array, "get_lock") else None
    if lock is not None:
        lock.acquire()
    try:
        for i in range(len(array)):
            array[i] += amount
    finally:
        if lock is not None:
            lock.release()


def ping_pong(value: Any, turn: Any, rounds: int, timeout: float) -> None:
    """Child side of a two-way visibility test: wait until the parent wrote an even number,
    add one; ``rounds`` times. ``turn`` is a Condition guarding ``value``."""
    for i in range(rounds):
        with turn:
            if not turn.wait_for(lambda i=i: value.value == 2 * i, timeout):
                sys.exit(NO)
            value.value += 1
            turn.notify_all()


def string_write(chars: Any, data: bytes) -> None:
    chars.value = data


def pool_init(lock: Any, value: Any) -> None:
    _shared["lock"] = lock
    _shared["value"] = value


def pool_inc(n: int) -> int:
    """In a pool worker set up by pool_init: the counter, ``n`` times."""
    inc(_shared["value"], _shared["lock"], n)
    return n


def task_inc(value: Any, lock: Any, n: int) -> int:
    """As a pool task with the lock and value as arguments."""
    inc(value, lock, n)
    return n


def task_try_acquire(lock: Any, timeout: float) -> bool:
    if lock.acquire(timeout=timeout):
        lock.release()
        return True
    return False


def try_acquire_each(locks: list[Any], timeout: float) -> None:
    """Exit with a bit mask: bit i set if ``locks[i]`` could be acquired within ``timeout``."""
    mask = 0
    for i, lock in enumerate(locks):
        if lock.acquire(timeout=timeout):
            lock.release()
            mask |= 1 << i
    sys.exit(mask)


def inherited_rlock_not_mine(rlock: Any) -> None:
    """In a forked child of a parent that holds ``rlock``: exit 0 if the child does not
    believe it owns it and cannot take it."""
    if rlock._semlock._is_mine() or rlock._semlock._count() != 0:
        sys.exit(NO)
    sys.exit(0 if not rlock.acquire(timeout=0.1) else NO)


class Point(ctypes.Structure):
    """A Structure for Value(Point, ...) (importable, so it pickles by reference)."""

    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_double)]


def move_point(point: Any, dx: int) -> None:
    point.x += dx


def add_one(value: Any) -> None:
    value.value += 1
