"""Locks and friends that work in every process manycore starts, however it was started.

``Lock``, ``RLock``, ``Semaphore``, ``BoundedSemaphore``, ``Condition``, ``Event`` and
``Barrier`` subclass the stdlib's ``multiprocessing.synchronize`` classes (so ``isinstance``
checks and ``except`` clauses keep working) and keep their semantics; what changes is how
they are made and how they travel:

* **Named POSIX semaphores.** Each lock is a ``_multiprocessing.SemLock`` on a semaphore
  named ``/mp-manycore-<random>`` (``/dev/shm/sem.mp-manycore-...`` on Linux; mode 0600,
  an unguessable name). Another process opens it by name, so it works after unpickling in a
  process started by fork, spawn, the fork server or anything else. The stdlib's locks made
  by the "fork" context cannot do this: they unlink their name at once and rely on the
  child inheriting the mapping through ``fork()``, so they refuse to pickle, and a process
  that was not forked from the creator has no way to reach them.
* **Pickling anywhere.** ``__getstate__`` does not require the stdlib's "spawning popen"
  (``context.assert_spawning``), so a lock may go into ``Process`` arguments under every
  start method, ``Pool``/``Executor`` ``initargs`` and task arguments, and queue items.
  Composite objects (``Condition``, ``Event``, ``Barrier``) pickle the handles of the
  semaphores (and, for ``Barrier``, the shared memory) they are made of.
* **Lifetime.** The creating process owns the name: it unlinks it when its object is
  garbage-collected, or when the process exits (``multiprocessing.util.Finalize``, which
  runs at interpreter exit and at the end of a ``Process``), after its non-daemonic
  children were joined, so a child started just before the parent's script ended can
  still open it. Processes that opened the
  semaphore keep using it after the name is gone. A lock must stay referenced in its
  creator until every other process has unpickled it, as with the stdlib. Each name is
  registered with the ``_shm`` tracker before the semaphore exists, so a creator killed by
  SIGKILL does not leave it in ``/dev/shm`` (one tracker round trip per lock created).
* **Speed.** On Python 3.10+ ``Lock``, ``RLock``, ``Semaphore`` and ``BoundedSemaphore``
  *are* ``_multiprocessing.SemLock`` objects (subclasses of it and of the stdlib class), so
  ``with lock:``, ``acquire`` and ``release`` run in C with no Python frame; the stdlib's
  locks wrap a ``SemLock`` and pay a Python call for ``__enter__``/``__exit__``. Python 3.9
  allocates ``SemLock`` objects in a way that crashes a subclass (``PyObject_New``, no room
  for a subclass's garbage-collector header), so there they wrap one, as the stdlib does.
* **After fork.** The per-process bookkeeping of a ``SemLock`` (who holds an ``RLock``, how
  many times) is reset in a forked child, so a child never believes it owns a lock its
  parent's thread held.

A holder that dies
------------------
A POSIX semaphore has no owner the kernel knows of, so a lock held by a process that dies
(SIGKILL, ``os._exit``, a crash) stays held. Nothing deadlocks silently if the others use
timeouts: ``acquire(timeout=s)`` returns ``False`` after ``s`` seconds, ``Condition.wait``,
``Event.wait`` and ``Barrier.wait`` take timeouts too. To recover, a process that knows the
holder is dead (its ``Process.exitcode`` is set) may call ``release()`` on a ``Lock`` or a
``Semaphore``, which any process may release; an ``RLock`` can only be released by its owner,
so replace it with a new one.

A process killed while it waits on a ``Condition`` (or an ``Event``, or a ``Barrier``, both
built on one) would hang the stdlib's next ``notify()``/``set()`` forever: it waits, with no
timeout, for every sleeper it wakes to acknowledge. Here ``notify()`` waits at most
``NOTIFY_GRACE`` (2 s) and then carries on without the dead. A process killed while it
*holds* the condition's lock (for the few instructions between ``with cond:`` and the
sleep) leaves that lock held, as above: use timeouts.
"""

from __future__ import annotations

import copyreg
import ctypes
import importlib
import os
import secrets
import sys
import time
import weakref
from multiprocessing import synchronize as _mps
from multiprocessing import util as _util
from typing import Any, Callable, Optional

from . import _shm

__all__ = [
    "SEM_VALUE_MAX",
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Lock",
    "RLock",
    "Semaphore",
]

# The C extension behind multiprocessing.synchronize (no type stubs).
_multiprocessing: Any = importlib.import_module("_multiprocessing")

# SemLock kinds, as the C extension numbers them (multiprocessing.synchronize uses the same).
RECURSIVE_MUTEX, SEMAPHORE = 0, 1
SEM_VALUE_MAX: int = _multiprocessing.SemLock.SEM_VALUE_MAX

# The leak fixture in tests/conftest.py watches /dev/shm names starting with "sem.mp-".
NAME_PREFIX = "/mp-manycore-"

# Whether our lock classes subclass _multiprocessing.SemLock itself (see the docstring).
SUBCLASS_SEMLOCK = sys.version_info >= (3, 10)

# Every lock in this process, to reset their ownership bookkeeping in a forked child.
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for obj in list(_LIVE):
        try:
            obj._semlock._after_fork()
        except Exception:  # pragma: no cover - a half-built object
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _unlink(name: str) -> None:
    try:
        _multiprocessing.sem_unlink(name)
    except OSError:  # already gone (unlinked by hand, or a second call)
        pass
    try:
        _shm.untrack_semaphore(name)
    except Exception:  # at interpreter exit, nothing must raise here
        pass


def _create(cls: type, kind: int, value: int, maxvalue: int) -> Any:
    """A new lock object of class ``cls`` on a new named semaphore owned by this process."""
    for _ in range(100):
        name = NAME_PREFIX + secrets.token_hex(10)
        # Registered first, so the tracker unlinks it even if we are killed right after.
        _shm.track_semaphore(name)
        try:
            if SUBCLASS_SEMLOCK:
                obj = _multiprocessing.SemLock.__new__(cls, kind, value, maxvalue, name, False)
            else:
                obj = object.__new__(cls)
                obj._semlock = _multiprocessing.SemLock(kind, value, maxvalue, name, False)
        except FileExistsError:  # pragma: no cover - 80 random bits
            _shm.untrack_semaphore(name)
            continue
        except BaseException:
            _shm.untrack_semaphore(name)
            raise
        break
    else:  # pragma: no cover
        raise FileExistsError("could not find a free name for a semaphore in /dev/shm")
    _adopt(obj)
    # Unlinks in this process only (Finalize checks the pid), at GC or at exit. At exit,
    # below priority 0: multiprocessing's exit function runs the finalizers of priority 0
    # and up, then joins the children, then runs the rest; a child that had not yet
    # unpickled the lock when the parent's script ended must still find its name (#5).
    _util.Finalize(obj, _unlink, (name,), exitpriority=-1)
    return obj


def _reopen(cls: type, kind: int, maxvalue: int, name: str) -> Any:
    """Unpickling: open the named semaphore in this process."""
    try:
        if SUBCLASS_SEMLOCK:
            # The handle (0) is ignored on POSIX: _rebuild opens the name.
            obj = cls._rebuild(0, kind, maxvalue, name)  # type: ignore[attr-defined]
        else:
            obj = object.__new__(cls)
            obj._semlock = _multiprocessing.SemLock._rebuild(0, kind, maxvalue, name)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"cannot open the semaphore of this {cls.__name__} ({name}): its creator has "
            "already released it (the object was garbage-collected, or the creating process "
            "exited) before this process unpickled it; keep a reference to it in the "
            "creating process until every process that uses it has started"
        ) from None
    _adopt(obj)
    return obj


def _adopt(obj: Any) -> None:
    obj._is_fork_ctx = False  # read by the stdlib's methods on Python 3.12+
    if not SUBCLASS_SEMLOCK:
        # Bound C methods, as the stdlib does: no Python frame for acquire/release.
        obj.acquire = obj._semlock.acquire
        obj.release = obj._semlock.release
    _LIVE.add(obj)


class _SemLockSubclass(_multiprocessing.SemLock):  # type: ignore[misc]
    """Python 3.10+: the lock is the SemLock; the stdlib's methods find it as ``_semlock``."""

    @property
    def _semlock(self) -> Any:
        return self

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        # Without the stdlib's assert_spawning: picklable anywhere.
        return (_reopen, (type(self), self.kind, self.maxvalue, self.name))


class _SemLockWrapper:
    """Python 3.9: the lock holds a SemLock in ``_semlock``, as the stdlib's does."""

    _semlock: Any

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        sl = self._semlock
        return (_reopen, (type(self), sl.kind, sl.maxvalue, sl.name))


_Impl: Any = _SemLockSubclass if SUBCLASS_SEMLOCK else _SemLockWrapper


def _reopen_raw(kind: int, maxvalue: int, name: str) -> Any:
    """Unpickling on Python 3.9: the bare SemLock that a bound ``acquire``/``release`` names."""
    return _reopen(_SemLockWrapper, kind, maxvalue, name)._semlock


def _reduce_raw(sl: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    if not (sl.name or "").startswith(NAME_PREFIX):  # the stdlib's own: not picklable, as before
        raise TypeError(f"cannot pickle {type(sl).__module__}.{type(sl).__qualname__} object")
    return (_reopen_raw, (sl.kind, sl.maxvalue, sl.name))


if not SUBCLASS_SEMLOCK:
    # On Python 3.9 a lock's ``acquire`` is the bare SemLock's bound method (as the stdlib's
    # is), so ``pickle.dumps(sem.acquire)`` (say, ``executor.submit(sem.acquire)``) pickles
    # the bare SemLock: manycore's open theirs again by name, as the lock itself does.
    copyreg.pickle(_multiprocessing.SemLock, _reduce_raw)


class Lock(_Impl, _mps.Lock):  # type: ignore[misc]
    """A non-recursive lock (``multiprocessing.Lock``); any process may release it."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Lock:  # a subclass may take arguments
        return _create(cls, SEMAPHORE, 1, 1)  # type: ignore[no-any-return]

    def __init__(self) -> None:
        pass  # built by __new__


class RLock(_Impl, _mps.RLock):  # type: ignore[misc]
    """A recursive lock (``multiprocessing.RLock``); only its owner may release it."""

    def __new__(cls, *args: Any, **kwargs: Any) -> RLock:  # a subclass may take arguments
        return _create(cls, RECURSIVE_MUTEX, 1, 1)  # type: ignore[no-any-return]

    def __init__(self) -> None:
        pass


class Semaphore(_Impl, _mps.Semaphore):  # type: ignore[misc]
    """A counting semaphore (``multiprocessing.Semaphore``)."""

    def __new__(cls, value: int = 1, *args: Any, **kwargs: Any) -> Semaphore:
        _check_value(value, cls.__name__)
        return _create(cls, SEMAPHORE, value, SEM_VALUE_MAX)  # type: ignore[no-any-return]

    def __init__(self, value: int = 1) -> None:
        pass


class BoundedSemaphore(_Impl, _mps.BoundedSemaphore):  # type: ignore[misc]
    """A semaphore whose ``release()`` above its initial value raises ``ValueError``."""

    def __new__(cls, value: int = 1, *args: Any, **kwargs: Any) -> BoundedSemaphore:
        _check_value(value, cls.__name__)
        return _create(cls, SEMAPHORE, value, value)  # type: ignore[no-any-return]

    def __init__(self, value: int = 1) -> None:
        pass


def _check_value(value: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} value must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} initial value must be >= 0, not {value}")
    if value > SEM_VALUE_MAX:
        raise ValueError(
            f"{what} initial value {value} is above this system's SEM_VALUE_MAX "
            f"({SEM_VALUE_MAX}); use a smaller value"
        )


class _Parts:
    """What the stdlib's ``Condition``/``Event`` constructors ask of their ``ctx``."""

    Lock = Lock
    RLock = RLock
    Semaphore = Semaphore

    @staticmethod
    def Condition(lock: Any = None) -> Condition:
        return Condition(lock)


# How long notify() waits for the sleepers it wakes to say so before it concludes that the
# rest died inside wait(). The stdlib waits forever, so one waiter killed while waiting hangs
# every later notify()/Event.set(). Longer: a notify() that meets a dead waiter takes longer;
# shorter: a live sleeper that the machine does not schedule for this long loses its wake-up
# (it waits on until its own timeout). Woken sleepers normally answer within milliseconds.
NOTIFY_GRACE = 2.0


class Condition(_mps.Condition):
    """A condition variable (``multiprocessing.Condition``) on a lock (default: an RLock).

    The stdlib's algorithm (counting semaphores for sleepers, wake-ups and acknowledgements),
    except that ``notify()`` waits at most ``NOTIFY_GRACE`` seconds for the sleepers it woke:
    wake-ups nobody took by then went to processes that died while waiting, and are
    withdrawn; acknowledgements still owed by slow sleepers are remembered (``_owed``) so the
    next ``notify()`` does not count them twice.
    """

    _lock: Any
    _sleeping_count: Any
    _woken_count: Any
    _wait_semaphore: Any
    _owed: Any

    def __init__(self, lock: Any = None) -> None:
        super().__init__(lock, ctx=_Parts)  # type: ignore[arg-type]
        self._owed = Semaphore(0)

    def __getstate__(self) -> tuple[Any, ...]:
        return (
            self._lock,
            self._sleeping_count,
            self._woken_count,
            self._wait_semaphore,
            self._owed,
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        *parts, self._owed = state
        super().__setstate__(tuple(parts))  # type: ignore[misc]

    def notify(self, n: int = 1) -> None:
        assert self._lock._semlock._is_mine(), "lock is not owned"
        assert not self._wait_semaphore.acquire(False), (
            "notify: should not have been able to acquire _wait_semaphore"
        )
        # Acknowledgements that arrived since the last notify: from sleepers that timed out
        # (they leave the sleeping count), or owed to an earlier notify that stopped waiting.
        while self._woken_count.acquire(False):
            if self._owed.acquire(False):
                continue
            res = self._sleeping_count.acquire(False)
            assert res, "notify: bug in sleeping_count.acquire - res should not be False"

        sleepers = 0
        while sleepers < n and self._sleeping_count.acquire(False):
            self._wait_semaphore.release()  # wake up one sleeper
            sleepers += 1
        if not sleepers:
            return
        deadline = time.monotonic() + NOTIFY_GRACE
        acked = 0
        while acked < sleepers and self._woken_count.acquire(
            True, max(0.0, deadline - time.monotonic())
        ):
            acked += 1
        # Withdraw wake-ups nobody took (sleepers that timed out meanwhile, or died).
        untaken = 0
        while self._wait_semaphore.acquire(False):
            untaken += 1
        for _ in range(sleepers - acked - untaken):
            self._owed.release()  # taken, but not yet acknowledged: expect it later


class Event(_mps.Event):
    """An event flag (``multiprocessing.Event``): set, clear, wait."""

    _cond: Any
    _flag: Any

    def __init__(self) -> None:
        super().__init__(ctx=_Parts)  # type: ignore[arg-type]

    def __getstate__(self) -> tuple[Any, Any]:
        return (self._cond, self._flag)

    def __setstate__(self, state: tuple[Any, Any]) -> None:
        self._cond, self._flag = state

    def __repr__(self) -> str:  # the stdlib's from 3.11 on; 3.9 and 3.10 give none
        try:
            state = "set" if self.is_set() else "unset"
        except Exception:  # a closed or foreign segment
            state = "unknown"
        return f"<{type(self).__qualname__} at {id(self):#x} {state}>"


_TwoInts = ctypes.c_int * 2


class Barrier(_mps.Barrier):
    """A barrier for ``parties`` processes (``multiprocessing.Barrier``).

    Its state and count live in two ints of shared memory (a ctypes ``c_int * 2`` over a
    ``_shm.Segment`` of its own, which pickles by name), guarded by a ``Condition``; the
    algorithm is ``threading.Barrier``'s, which reads and writes them through the stdlib
    class's ``_state``/``_count`` properties over ``self._array``. (Not a ``RawArray``:
    ``_sharedctypes`` sits above this module, since its wrappers take an ``RLock``.)
    """

    _state: int  # annotations only: the stdlib's properties stay
    _count: int

    def __init__(
        self,
        parties: int,
        action: Optional[Callable[[], object]] = None,
        timeout: Optional[float] = None,
    ) -> None:
        if not isinstance(parties, int) or isinstance(parties, bool) or parties < 1:
            raise ValueError(f"Barrier parties must be an int >= 1, not {parties!r}")
        segment = _shm.Segment.create(ctypes.sizeof(_TwoInts))  # zeroed: filling, 0 waiting
        self.__setstate__((parties, action, timeout, Condition(), segment))

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._parties, self._action, self._timeout, self._cond, self._segment = state
        self._array = _TwoInts.from_buffer(self._segment.buf)

    def __getstate__(self) -> tuple[Any, ...]:
        return (self._parties, self._action, self._timeout, self._cond, self._segment)

    def __repr__(self) -> str:
        try:
            state = {0: "filling", 1: "draining", -1: "resetting", -2: "broken"}.get(
                self._state, "unknown"
            )
            waiting: object = self._count
        except Exception:
            state, waiting = "unknown", "unknown"
        return f"<{type(self).__qualname__} {state}, waiters={waiting}/{self._parties}>"
