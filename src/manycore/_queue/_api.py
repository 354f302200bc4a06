"""Queue, SimpleQueue and JoinableQueue: ``multiprocessing``'s queue API on an ``ItemFifo``.

``put`` and ``get`` inline the path of a small plain item (a PICKLE record in the ring),
which is most of a queue's traffic; everything else goes through ``ItemFifo`` and
``RecordFifo``. The package docstring says who runs where and what is guaranteed.
"""

from __future__ import annotations

import os
import pickle
import queue as _stdqueue
import secrets
import time
import weakref
from typing import Any, Generic, Iterable, Optional, TypeVar

from .. import _shm
from .._buffers import inband_unless_big
from .._reducers import needs_reducers
from .._serialize import MAIN as _MAIN
from ._fifo import BIG_READ, ITEMS_CHECK_S, LOCK_NOWAIT_S, NOTHING, SPIN
from ._items import ItemFifo, _holds_big_bytes, _ploads
from ._layout import (
    CREATE_TRIES,
    FIRST_RESERVE,
    H_BROKEN,
    H_CURSOR,
    H_GETS,
    H_HEAD,
    H_JOIN_WAITERS,
    H_LOCKER,
    H_OVF_COUNT,
    H_PUTS,
    H_RESERVED,
    H_SPACE_WAITERS,
    H_TAIL,
    H_UNFINISHED,
    HEADER_BYTES,
    PICKLE,
    RING_BYTES,
    WRAP,
    _cleanup,
    _File,
    _mp,
    _reserve,
    _sem_name,
)

# The attribute each of the queue's named semaphores is kept in (see RecordFifo._attach).
_SEM_ATTRS = {"m": "_mutex", "i": "_items", "w": "_space", "s": "_slots", "d": "_done"}

__all__ = ["Empty", "Full", "JoinableQueue", "Queue", "SimpleQueue"]

Empty = _stdqueue.Empty
Full = _stdqueue.Full

_T = TypeVar("_T")  # the type of the items, as the stdlib's stubs type its queues

_pid = os.getpid()  # written next to the mutex while this process holds it (see _fifo)


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def _left(deadline: Optional[float]) -> Optional[float]:
    """Seconds until ``deadline`` (None: no deadline), never negative."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


_PLAIN = frozenset({int, float, str, tuple, list, dict, type(None), bool})
_pdumps = pickle.dumps


class Queue(ItemFifo, Generic[_T]):
    """A process-shared FIFO with the API of ``multiprocessing.Queue``, plus batches.

    Args:
        maxsize: the most items the queue holds; ``put`` blocks (or raises ``Full``) beyond
            it. Zero or less means unbounded.

    Pass it to processes as an argument (any start method), through another queue, or in a
    pool's ``initargs``.
    """

    def __init__(self, maxsize: int = 0, *, ctx: Any = None) -> None:
        del ctx  # accepted for signature compatibility with multiprocessing.queues.Queue
        self._maxsize = maxsize if maxsize > 0 else 0
        sems = (
            ("m", "i", "w") + (("s",) if self._maxsize else ()) + (("d",) if self._joinable else ())
        )
        for attempt in range(CREATE_TRIES):
            prefix = f"manycore-q{secrets.token_hex(8)}"
            try:
                self._create(prefix, sems)
                return
            except FileExistsError:
                # Another local user took one of the names (the prefix shows in /dev/shm as
                # soon as the ring exists): start again under a fresh random prefix.
                if attempt == CREATE_TRIES - 1:
                    raise

    def _create(self, prefix: str, sems: tuple[str, ...]) -> None:
        # If this process dies without cleaning up (SIGKILL), the shm tracker unlinks the
        # ring, every overflow block and the semaphores, all named after the prefix.
        _shm.track_prefix(prefix)
        _shm.track_semaphores(prefix)
        ring = None
        try:
            ring = _File(f"{prefix}-ring", HEADER_BYTES + RING_BYTES, create=True, keep_fd=True)
            _reserve(ring.fd, 0, HEADER_BYTES + FIRST_RESERVE)
            ring.buf[:HEADER_BYTES].cast("Q")[H_RESERVED] = FIRST_RESERVE
            self._attach(prefix, ring, created=True)
        except BaseException:
            # Whatever exists was made by us (creation is exclusive): remove only that.
            if ring is not None:
                ring.close()
                _File.unlink(ring.name)
            for what in sems:
                sem = getattr(self, _SEM_ATTRS[what], None)
                if sem is not None:
                    try:
                        _mp.sem_unlink(_sem_name(prefix, what))
                    except OSError:
                        pass
            for attr in _SEM_ATTRS.values():
                self.__dict__.pop(attr, None)
            _shm.untrack_prefix(prefix)
            _shm.untrack_semaphores(prefix)
            raise
        self._finalizer: Any = weakref.finalize(self, _cleanup, os.getpid(), prefix, sems)

    # --- sharing between processes ---

    def __getstate__(self) -> tuple[str, int]:
        return (self._prefix, self._maxsize)

    def __setstate__(self, state: tuple[str, int]) -> None:
        prefix, self._maxsize = state
        try:
            ring = _File(f"{prefix}-ring", keep_fd=True)
        except FileNotFoundError:
            raise ValueError(
                "the queue no longer exists: the process that created it collected it or "
                "exited. Keep a reference to the queue in its creator while others use it."
            ) from None
        self._finalizer = None  # only the creator cleans up
        self._attach(prefix, ring, created=False)

    def __repr__(self) -> str:
        return f"<manycore.{type(self).__name__} {self._prefix} maxsize={self._maxsize}>"

    # --- public API ---

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self!r} is closed; create a new queue or stop using this one")

    def put(self, obj: _T, block: bool = True, timeout: Optional[float] = None) -> None:
        """Put ``obj`` on the queue; it is pickled here, before this returns.

        Raises:
            Full: the queue is bounded and stayed full (``block=False`` or the timeout ran out).
            ArgumentPicklingError: ``obj`` cannot be pickled; nothing was enqueued.
            ValueError: the queue was closed in this process.
        """
        if self._closed:
            self._check_open()
        self._put_here = True  # see empty()
        if type(obj) in _PLAIN:
            # The hot path, inlined: plain data, C pickler, a record in the ring.
            try:
                data: Optional[bytes] = _pdumps(obj, 5, buffer_callback=inband_unless_big)
            except Exception:  # also BigBuffer: a big array in a tuple, list or dict
                data = None
            if (
                data is not None
                and data.find(_MAIN) < 0  # find: faster than ``in`` (no int check)
                and not needs_reducers(data)
                and (len(data) < 4096 or not _holds_big_bytes(obj, len(data)))
            ):
                n = len(data)
                size = 8 + ((n + 7) & ~7)
                if self._slots is None and size <= self._quarter:
                    cap = self._cap
                    hdr = self._hdr
                    # RecordFifo._lock's first step, inlined: an uncontended mutex.
                    if self._mutex.acquire(False):
                        hdr[H_LOCKER] = _pid
                        if hdr[H_BROKEN]:
                            self._unlock()
                            self._raise_broken()
                    elif not self._lock(timeout if block else LOCK_NOWAIT_S):
                        raise Full
                    if not hdr[H_OVF_COUNT]:
                        tail = hdr[H_TAIL]
                        pos = tail % cap
                        if pos + size <= self._reserved and cap - (tail - hdr[H_HEAD]) >= size:
                            self._dataq[pos >> 3] = (n << 8) | PICKLE
                            self._data[pos + 8 : pos + 8 + n] = data
                            hdr[H_TAIL] = tail + size  # the record is in (see _repair)
                            hdr[H_PUTS] += 1
                            if self._joinable:
                                hdr[H_UNFINISHED] += 1
                            hdr[H_LOCKER] = 0
                            self._mutex.release()
                            self._items.release()
                            return
                    self._unlock()
                self._put_encoded((PICKLE, [data], n), block, timeout)
                return
        self._put_encoded(self._encode(obj), block, timeout)

    def put_nowait(self, obj: _T) -> None:
        """``put(obj, block=False)``."""
        self.put(obj, False)

    def put_many(
        self, items: Iterable[_T], block: bool = True, timeout: Optional[float] = None
    ) -> None:
        """Put every item of ``items``, in order, in one critical section per batch.

        Every item is pickled first, so an unpicklable one raises before any is enqueued. On
        a bounded queue the items go in as slots free up; ``Full`` (or ``ShmUnavailableError``
        when /dev/shm is full) means the items before the one that failed were enqueued.
        """
        self._check_open()
        self._put_here = True  # see empty()
        encoded: list[tuple[int, list[Any], int]] = []
        try:
            for obj in items:
                encoded.append(self._encode(obj))
        except BaseException:
            for one in encoded:
                self._abandon(one)
            raise
        written = 0
        if self._slots is not None:
            try:
                for one in encoded:
                    self._put_encoded(one, block, timeout)  # releases its own on failure
                    written += 1
            except BaseException:
                for one in encoded[written + 1 :]:
                    self._abandon(one)
                raise
            return
        try:
            if not self._lock(timeout if block else LOCK_NOWAIT_S):
                raise Full
        except BaseException:
            for one in encoded:
                self._abandon(one)
            raise
        try:
            hdr, cap, data, dataq = self._hdr, self._cap, self._data, self._dataq
            for kind, pieces, length in encoded:
                size = 8 + ((length + 7) & ~7)
                if kind == PICKLE and not hdr[H_OVF_COUNT] and size <= self._quarter:
                    tail = hdr[H_TAIL]  # the hot path of _write, inlined
                    pos = tail % cap
                    if pos + size <= self._reserved and cap - (tail - hdr[H_HEAD]) >= size:
                        dataq[pos >> 3] = (length << 8) | PICKLE
                        data[pos + 8 : pos + 8 + length] = pieces[0]
                        hdr[H_TAIL] = tail + size
                        hdr[H_PUTS] += 1
                        written += 1
                        continue
                self._write_waiting(kind, pieces, length)  # may raise: /dev/shm is full
                written += 1
        except BaseException:
            for one in encoded[written:]:
                self._abandon(one)
            raise
        finally:
            if self._joinable:
                self._hdr[H_UNFINISHED] += written
            self._unlock()
            for _ in range(written):  # announce what went in, even if a later item failed
                self._items.release()

    def _put_encoded(
        self, encoded: tuple[int, list[Any], int], block: bool, timeout: Optional[float]
    ) -> None:
        slots = self._slots
        slot = locked = False
        deadline = None if timeout is None or not block else time.monotonic() + timeout
        try:
            if slots is not None:
                if not slots.acquire(block, timeout):
                    raise Full
                slot = True
            wait = LOCK_NOWAIT_S if not block else _left(deadline)
            if not self._lock(wait):
                raise Full
            locked = True
            self._write_waiting(*encoded)
            if self._joinable:
                self._hdr[H_UNFINISHED] += 1
        except BaseException:  # Full, no room, or an interrupt while waiting
            if slots is not None and slot:
                slots.release()  # nothing went in: give the slot back
            self._abandon(encoded)
            raise
        finally:
            if locked:
                self._unlock()
        self._items.release()

    def get(self, block: bool = True, timeout: Optional[float] = None) -> _T:
        """Remove and return the oldest item.

        Raises:
            Empty: nothing arrived (``block=False``, or the timeout ran out).
            ValueError: the queue was closed in this process.
        """
        if self._closed:
            self._check_open()
        items = self._items
        deadline = None
        looked = False  # a call that must not block has looked without a token
        while True:
            # token: this call holds one of the "items" posts. Without one, it still takes
            # an item the header counts (see _wait_for_item); a token then left over only
            # makes a consumer look again and find nothing (RecordFifo._read).
            token = items.acquire(False)
            if not token:
                if not block:
                    if looked or not self.qsize():
                        raise Empty
                    looked = True
                else:
                    # Spin a little before sleeping: a producer a few microseconds behind
                    # then costs neither side a futex wake-up (the stdlib pays one per item).
                    for _ in range(SPIN):
                        if items.acquire(False):
                            token = True
                            break
                    else:
                        if timeout is not None and deadline is None:
                            deadline = time.monotonic() + timeout
                        token = self._wait_for_item(deadline)
            hdr = self._hdr
            if self._mutex.acquire(False):  # RecordFifo._lock's first step, inlined
                hdr[H_LOCKER] = _pid
                if hdr[H_BROKEN]:
                    if token:
                        items.release()
                    self._unlock()
                    self._raise_broken()
            elif not self._lock(
                (timeout if deadline is None else _left(deadline)) if block else LOCK_NOWAIT_S
            ):
                if token:
                    items.release()  # the item stays for another consumer
                raise Empty
            try:
                head = hdr[H_HEAD]
                # The hot path, inlined: a small record in the ring, no big read in flight.
                if hdr[H_PUTS] != hdr[H_GETS] and hdr[H_CURSOR] == head:
                    cap = self._cap
                    pos = head % cap
                    word = self._dataq[pos >> 3]
                    n = word >> 8
                    if word != WRAP and n < BIG_READ:
                        payload = bytes(self._data[pos + 8 : pos + 8 + n])
                        hdr[H_HEAD] = hdr[H_CURSOR] = head + 8 + ((n + 7) & ~7)
                        hdr[H_GETS] += 1
                        kind = word & 0xFF
                    else:
                        kind, payload = self._take_ring()
                else:
                    kind, payload = self._read()
                wake = hdr[H_SPACE_WAITERS]
                if wake:
                    hdr[H_SPACE_WAITERS] = 0
            finally:
                hdr[H_LOCKER] = 0
                self._mutex.release()
            if kind != NOTHING:
                break
            if deadline is None and timeout is not None:
                deadline = time.monotonic() + timeout
        if self._slots is not None:
            self._slots.release()
        for _ in range(wake):
            self._space.release()
        if kind == PICKLE:
            return _ploads(payload)  # type: ignore[no-any-return]
        return self._decode(kind, payload)  # type: ignore[no-any-return]

    def _wait_for_item(self, deadline: Optional[float]) -> bool:
        """Wait until there is an item to take: True with an "items" token taken, False for
        one the header counts with no token to be had.

        A consumer killed after it took a token and before it took the record leaves that
        record with no token, and nobody posts one again (a repair does so only after a
        death inside the mutex): waiting on the semaphore alone, every consumer would miss
        that item until another is put, and the queue's last item would stay unseen for
        good. So the wait looks at the header every ``ITEMS_CHECK_S``.

        Raises:
            Empty: the deadline passed with no item.
        """
        items = self._items
        while True:
            left = _left(deadline)
            if items.acquire(True, ITEMS_CHECK_S if left is None else min(left, ITEMS_CHECK_S)):
                return True
            if self.qsize():
                return False
            if left is not None and left <= ITEMS_CHECK_S:
                raise Empty

    def get_nowait(self) -> _T:
        """``get(block=False)``."""
        return self.get(False)

    def get_many(self, max_items: int, timeout: Optional[float] = None) -> list[_T]:
        """Wait up to ``timeout`` for one item, then take up to ``max_items`` without waiting.

        Raises:
            Empty: no item arrived within ``timeout`` (``timeout=0`` does not wait).
        """
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        first = self.get(timeout != 0, timeout if timeout else None)
        taken = 0
        while taken < max_items - 1 and self._items.acquire(False):
            taken += 1
        records = []
        self._lock()
        try:
            for _ in range(taken):
                record = self._read()
                if record[0] != NOTHING:
                    records.append(record)
            taken = len(records)
            wake = self._hdr[H_SPACE_WAITERS]
            self._hdr[H_SPACE_WAITERS] = 0
        finally:
            self._unlock()
        if self._slots is not None:
            for _ in range(taken):
                self._slots.release()
        for _ in range(wake):
            self._space.release()
        items = [first]
        for i, (kind, payload) in enumerate(records):
            try:
                items.append(_ploads(payload) if kind == PICKLE else self._decode(kind, payload))
            except BaseException:
                for later in records[i + 1 :]:  # lost with this one: free their segments
                    self._abandon((later[0], [later[1]], len(later[1])))
                raise
        return items

    def qsize(self) -> int:
        """How many items are in the queue now (exact at the moment it was read)."""
        hdr = self._hdr
        return int(hdr[H_PUTS] - hdr[H_GETS] + hdr[H_OVF_COUNT])

    def empty(self) -> bool:
        """Whether the queue holds no items now.

        Raises:
            OSError: this process put on the queue and then closed it. The stdlib's queue
                closes its pipe then (an unused one's ``close()`` has nothing to close),
                and its ``empty()`` raises; manycore's does as well.
        """
        if self._closed and self._put_here:
            raise OSError(f"{self!r} is closed in this process (after a put)")
        return self.qsize() == 0

    def full(self) -> bool:
        return bool(self._maxsize) and self.qsize() >= self._maxsize

    def close(self) -> None:
        """Stop using the queue in this process; items already put stay for the others."""
        self._closed = True

    def join_thread(self) -> None:
        """Nothing to wait for: ``put`` writes to shared memory before it returns."""
        if not self._closed:
            raise ValueError(f"call close() before join_thread() on {self!r}")

    def cancel_join_thread(self) -> None:
        """Nothing to cancel: there is no feeder thread that could hold this process at exit."""

    def _manycore_handed_to(self, process: Any) -> None:
        """Nothing to do: the queue needs no per-process bookkeeping."""


class SimpleQueue(Queue[_T]):
    """``multiprocessing.SimpleQueue``: get, put, empty, close (the full Queue API works too).

    As the stdlib's, whose ``close()`` closes both ends of its pipe, every ``get``, ``put``
    and ``empty`` after ``close()`` raises ``OSError``.
    """

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(f"{self!r} is closed; create a new queue or stop using this one")

    def empty(self) -> bool:
        """Whether the queue holds no items now.

        Raises:
            OSError: the queue was closed in this process.
        """
        self._check_open()
        return self.qsize() == 0


class JoinableQueue(Queue[_T]):
    """A Queue that also counts unfinished items: ``task_done()`` and ``join()``."""

    _joinable = True

    def task_done(self) -> None:
        """Mark one item taken with ``get`` as processed.

        Raises:
            ValueError: called more times than items were put.
        """
        assert self._done is not None
        self._lock()
        try:
            if self._hdr[H_UNFINISHED] == 0:
                raise ValueError("task_done() called more times than there were items put")
            self._hdr[H_UNFINISHED] -= 1
            wake = self._hdr[H_JOIN_WAITERS] if self._hdr[H_UNFINISHED] == 0 else 0
            self._hdr[H_JOIN_WAITERS] -= wake
        finally:
            self._unlock()
        for _ in range(wake):
            self._done.release()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait until every item put has been marked with ``task_done()``.

        Returns True when they all have; False if ``timeout`` (an addition to the stdlib,
        which has none) ran out first.
        """
        assert self._done is not None
        self._lock()
        try:
            if self._hdr[H_UNFINISHED] == 0:
                return True
            self._hdr[H_JOIN_WAITERS] += 1
        finally:
            self._unlock()
        if self._done.acquire(True, timeout):
            return True
        self._lock()  # give up our turn, unless task_done() just counted us
        try:
            if self._hdr[H_UNFINISHED] == 0:
                gone = False
            else:
                self._hdr[H_JOIN_WAITERS] -= 1
                gone = True
        finally:
            self._unlock()
        if not gone:
            self._done.acquire()  # the post meant for us is on its way or there
            return True
        return False
