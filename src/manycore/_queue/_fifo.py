"""A FIFO of byte records in shared memory: the ring, the overflow chain, and their pacing.

``RecordFifo`` is the bottom of a queue (``ItemFifo`` adds what the records mean, ``Queue``
the API): it appends a record under the queue's process-shared mutex and removes the oldest
one, in the ring while records fit there, in a chain of overflow blocks while they do not
(see the package docstring for the guarantees, and ``_layout`` for the bytes). Every method
here runs in whichever process calls it; the mutex is held as the docstrings say.
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Any, Optional

from .. import _reuse
from ._layout import (
    BLOCK_HEADER,
    BLOCK_MAPPINGS,
    BYTES,
    FREE,
    H_BROKEN,
    H_CURSOR,
    H_GETS,
    H_HEAD,
    H_LOCKER,
    H_OVF_BYTES,
    H_OVF_COUNT,
    H_OVF_DIRTY,
    H_OVF_READ,
    H_OVF_WRITE,
    H_PUTS,
    H_RESERVED,
    H_SPACE_WAITERS,
    H_TAIL,
    HEADER_BYTES,
    NAME_BYTES,
    NEXT,
    OVF_HEAD_NAME,
    OVF_TAIL_NAME,
    PICKLE,
    READING,
    RESERVE_STEP,
    RING_BYTES,
    SEG,
    SEM_MAX,
    SPARE_NAME,
    WRAP,
    QueueBrokenError,
    _File,
    _new_sem,
    _open_sem,
    _pad,
    _reserve,
)

__all__ = ["RecordFifo"]

# A ring record at least this big is copied out with the mutex released (see _take_ring).
BIG_READ = 64 << 10

# A producer that finds the ring full waits this long for a consumer to free space before
# its record goes to the overflow chain: the ring's pages are warm, a new block's are not,
# so a producer slightly ahead of its consumers is paced by them instead of spilling, while
# one with no consumer at all pays this once per spill, never a deadlock.
SPACE_WAIT = 0.05
# The same pacing applies once the overflow chain holds this much, so a fast producer reuses
# a few warm blocks instead of creating new ones. A wait that timed out (no reader) turns the
# pacing off for this producer for NO_READER_S: a process about to exit never waits long.
OVF_SOFT_BYTES = 16 << 20
NO_READER_S = 1.0
# How many times a process retries a non-blocking acquire before it sleeps (about 20 us).
SPIN = 200
# A process waiting for the mutex looks this often whether its holder died (see _take_over).
LOCK_CHECK_S = 0.1
# A consumer waiting for "items" looks this often whether the header counts an item anyway:
# one whose token a consumer took and then died with, before it took the record, is posted
# by nobody again (Queue.get, _wait_for_item).
ITEMS_CHECK_S = 0.1
# A call that must not block (get_nowait, put_nowait) still waits this long for the mutex: it
# is held for a memcpy, so only a holder that died or was stopped keeps it longer.
LOCK_NOWAIT_S = 0.02
NOTHING = 0  # _read's kind when there was no record after all
# The mutex taken with no holder named for this long means its holder died in the moment
# between the semaphore and the pid word (see _take_over): far beyond any live holder's stay.
STALE_S = 5.0
UNNAMED = 1 << 62  # H_BROKEN's value for a dead holder whose pid is unknown

_pid = os.getpid()  # written as the mutex's holder; a forked child writes its own


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


class RecordFifo:
    """The shared-memory FIFO of one queue, as this process sees it (mapped once per process;
    every unpickled copy of the queue maps it again)."""

    _joinable = False
    _maxsize = 0

    def _attach(self, prefix: str, ring: _File, created: bool) -> None:
        """Map the queue ``prefix`` (its ring already open) and open or create its semaphores."""
        self._prefix = prefix
        self._ring = ring
        self._hdr = ring.buf[:HEADER_BYTES].cast("Q")
        self._data = ring.buf[HEADER_BYTES:]
        self._dataq = self._data.cast("Q")
        self._cap = RING_BYTES
        self._reserved = int(self._hdr[H_RESERVED])  # only grows; re-read when short
        self._quarter = RING_BYTES // 4
        make = _new_sem if created else (lambda p, w, v, m: _open_sem(p, w, m))
        self._mutex = make(prefix, "m", 1, 1)
        self._items = make(prefix, "i", 0, SEM_MAX)
        self._space = make(prefix, "w", 0, SEM_MAX)
        self._slots = make(prefix, "s", self._maxsize, self._maxsize) if self._maxsize else None
        self._done = make(prefix, "d", 0, SEM_MAX) if self._joinable else None
        self._blocks: dict[str, _File] = {}
        self._spill_freely_until = 0.0
        self._unnamed_since = 0.0  # since when the mutex was seen taken with no holder named
        self._closed = False
        self._put_here = False  # whether this process put on the queue (see Queue.empty)

    def _block(self, name: str) -> _File:
        block = self._blocks.pop(name, None)
        if block is None:
            block = _File(name)
            if len(self._blocks) >= BLOCK_MAPPINGS:
                self._forget_block(next(iter(self._blocks)))
        self._blocks[name] = block  # most recently used last
        return block

    def _retire(self, name: str) -> None:
        """An overflow block was emptied: keep it as the spare, or unlink it (mutex held)."""
        if not self._name_at(SPARE_NAME):
            self._set_name(SPARE_NAME, name)
        else:
            self._forget_block(name)
            _File.unlink(name)

    def _new_block(self, size: int) -> tuple[str, _File]:
        """A block with room for ``size`` bytes of records: the spare if it is big enough."""
        spare = self._name_at(SPARE_NAME)
        if spare:
            block = self._block(spare)
            if block.size >= BLOCK_HEADER + size:
                self._set_name(SPARE_NAME, "")
                block.buf[:NAME_BYTES] = bytes(NAME_BYTES)
                return spare, block
        # A random name: the prefix shows in /dev/shm, so a counted name could be taken by
        # another local user before we create it (O_EXCL would then fail the put).
        name, block = _File.create_unique(f"{self._prefix}-b", BLOCK_HEADER + max(RING_BYTES, size))
        if len(self._blocks) >= BLOCK_MAPPINGS:
            self._forget_block(next(iter(self._blocks)))
        self._blocks[name] = block
        return name, block

    def _forget_block(self, name: str) -> None:
        block = self._blocks.pop(name, None)
        if block is not None:
            block.close()

    def _name_at(self, offset: int) -> str:
        raw = bytes(self._ring.buf[offset : offset + NAME_BYTES])
        return raw.rstrip(b"\0").decode()

    def _set_name(self, offset: int, name: str, buf: Optional[memoryview] = None) -> None:
        raw = name.encode().ljust(NAME_BYTES, b"\0")
        (self._ring.buf if buf is None else buf)[offset : offset + NAME_BYTES] = raw

    def _lock(self, timeout: Optional[float] = None) -> bool:
        """Take the mutex within ``timeout`` seconds (None: however long a live holder keeps
        it); False if that ran out. A holder found dead is taken over from (``_take_over``).

        Raises:
            QueueBrokenError: a holder died leaving damage ``_repair`` could not undo.
        """
        # The mutex is held for a memcpy: spin on it before sleeping, since a futex sleep and
        # wake-up cost more than most critical sections.
        mutex = self._mutex
        if not mutex.acquire(False):
            for _ in range(SPIN):
                if mutex.acquire(False):
                    break
            else:
                if not self._lock_slow(timeout):
                    return False
        hdr = self._hdr
        hdr[H_LOCKER] = _pid
        if hdr[H_BROKEN]:
            self._unlock()
            self._raise_broken()
        return True

    def _unlock(self) -> None:
        self._hdr[H_LOCKER] = 0  # before the release: a waiter never takes over from us
        self._mutex.release()

    def _lock_slow(self, timeout: Optional[float]) -> bool:
        """Wait for the mutex in steps of LOCK_CHECK_S, looking between steps whether its
        holder died (SIGKILL, the OOM killer): otherwise a dead holder would block every
        other process for good, whatever their timeouts."""
        mutex = self._mutex
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            step = LOCK_CHECK_S
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
            if step > 0 and mutex.acquire(True, step):
                self._unnamed_since = 0.0
                return True
            holder = int(self._hdr[H_LOCKER])
            now = time.monotonic()
            if holder:
                self._unnamed_since = 0.0
                if self._take_over(holder):
                    return True
            elif not self._unnamed_since:
                self._unnamed_since = now
            elif now - self._unnamed_since >= STALE_S and self._take_over(0):
                return True
            if deadline is not None and now >= deadline:
                return False

    def _take_over(self, holder: int) -> bool:
        """If ``holder``, the process named as the mutex's holder, has died, become the holder
        in its place (the semaphore stays taken) and repair what it left half done.

        ``holder`` 0: the mutex has stayed taken with no holder named for STALE_S, seen by
        this process at every step: a holder killed in the moment between taking the
        semaphore and writing its pid, or between clearing it and releasing (a live one
        passes that moment in microseconds; one stopped there for STALE_S would then find a
        second holder: the one risk this rule takes).

        The claim must go to one waiter only: they serialize on an exclusive ``flock`` of the
        ring, taken on a descriptor opened for this claim alone (so a forked copy of this
        process does not share it) and dropped by the kernel if the claimant dies too. The
        holder word is checked again under it: a waiter that took over before us wrote its
        own pid there.
        """
        hdr = self._hdr
        if holder == _pid or (holder and _reuse.process_alive(holder)):
            return False
        try:
            fd = os.open(self._ring.path(self._ring.name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # another waiter is claiming it: look again at the next step
                return False
            if hdr[H_LOCKER] != holder:
                return False
            if self._mutex.acquire(False):  # released meanwhile: taken the ordinary way
                hdr[H_LOCKER] = _pid
                return True
            hdr[H_LOCKER] = _pid
        finally:
            os.close(fd)  # drops the flock
        self._unnamed_since = 0.0
        try:
            self._repair(holder or UNNAMED)
        except BaseException:
            self._unlock()
            raise
        return True

    def _raise_broken(self) -> None:
        pid = self._hdr[H_BROKEN]
        raise QueueBrokenError(
            f"{'a process' if pid == UNNAMED else f'process {pid}'} died while it held the "
            f"lock of {self!r}, in the "
            "middle of changing it, and the change cannot be finished or undone: the queue's "
            "contents can no longer be trusted. Create a new queue (and see what killed that "
            "process: SIGKILL, the OOM killer)."
        )

    def _repair(self, holder: int) -> None:
        """Make the header agree with the records after taking over from a dead ``holder``
        (mutex held), or mark the queue broken.

        The ring is the truth: a record is complete once ``H_TAIL`` passes it and taken once
        ``H_CURSOR`` does, so the counters are recomputed from a walk of the ring, and
        "items" is posted for every record nobody holds a token for (a dead producer never
        posted its own; a surplus post only makes a consumer look again, see ``_read``).
        A change of the overflow chain cut short is not repaired: the queue is marked broken.
        """
        hdr = self._hdr
        try:
            if hdr[H_OVF_DIRTY]:
                raise ValueError("the overflow chain was being changed")
            in_ring = self._count_ring()
        except ValueError:
            hdr[H_BROKEN] = holder
            self._raise_broken()
        hdr[H_PUTS] = hdr[H_GETS] + in_ring
        records = in_ring + hdr[H_OVF_COUNT]
        hdr[H_SPACE_WAITERS] = 0
        self._space.release()  # a producer waiting for space looks again
        for sem, wanted in ((self._items, records), (self._slots, self._maxsize - records)):
            if sem is None:
                continue
            try:
                missing = wanted - sem._get_value()
                for _ in range(missing):
                    sem.release()
            except (ValueError, NotImplementedError, OSError):  # full, or no sem_getvalue
                pass

    def _count_ring(self) -> int:
        """The records in the ring not yet taken; ValueError if the ring makes no sense.
        Records taken but not freed are freed, except those a consumer is copying out."""
        hdr, cap, dataq = self._hdr, self._cap, self._dataq
        head, cursor, tail = int(hdr[H_HEAD]), int(hdr[H_CURSOR]), int(hdr[H_TAIL])
        if cursor < head:  # a get stores H_HEAD, then H_CURSOR
            hdr[H_CURSOR] = cursor = head
        if cursor > tail or tail - head > cap:
            raise ValueError("the ring's cursors are out of order")
        at = head  # taken records: mark them free (unless being copied out), sweep the head
        sweep = True
        while at < cursor:
            pos = at % cap
            word = dataq[pos >> 3]
            if word == WRAP:
                at += cap - pos
            else:
                if word & 0xFF == READING:
                    sweep = False
                elif word & 0xFF != FREE:
                    dataq[pos >> 3] = (word >> 8 << 8) | FREE
                at += 8 + _pad(word >> 8)
            if sweep:
                hdr[H_HEAD] = min(at, cursor)
        count = 0
        at = cursor
        while at < tail:
            pos = at % cap
            word = dataq[pos >> 3]
            if word == WRAP:
                at += cap - pos
                continue
            if word & 0xFF not in (PICKLE, BYTES, SEG) or pos + 8 + (word >> 8) > cap:
                raise ValueError(f"a record at {pos} of the ring is garbled")
            at += 8 + _pad(word >> 8)
            count += 1
        if at != tail:
            raise ValueError("the ring's last record runs past its tail")
        return count

    def _write(self, kind: int, pieces: list[Any], length: int, overflow: bool) -> bool:
        """Append one record (the caller holds the mutex); False if the ring is full and
        ``overflow`` is False, so the caller may wait for space first."""
        hdr = self._hdr
        size = 8 + _pad(length)
        if hdr[H_OVF_COUNT] == 0 and size <= self._quarter:
            tail = hdr[H_TAIL]
            pos = tail % self._cap
            skip = self._cap - pos if pos + size > self._cap else 0
            room = self._cap - (tail - hdr[H_HEAD]) >= skip + size
            if room and (pos if not skip else 0) + size > self._reserved:
                room = self._reserve_ring((pos if not skip else 0) + size)
            if room:
                if skip:
                    self._dataq[pos >> 3] = WRAP
                    pos = 0
                self._put_record(self._data, self._dataq, pos, kind, pieces, length)
                hdr[H_TAIL] = tail + skip + size
                hdr[H_PUTS] += 1
                return True
            if not overflow:
                return False
        if not overflow and hdr[H_OVF_BYTES] >= OVF_SOFT_BYTES:
            return False  # pace the producer rather than grow the chain (see SPACE_WAIT)
        self._write_overflow(kind, pieces, length, size)
        return True

    def _reserve_ring(self, end: int) -> bool:
        """Make sure ring bytes up to ``end`` are reserved (mutex held); False if /dev/shm is
        full, so the record goes to the overflow chain (which raises if it cannot grow)."""
        self._reserved = int(self._hdr[H_RESERVED])
        if end <= self._reserved:
            return True
        new = min(self._cap, -(-end // RESERVE_STEP) * RESERVE_STEP)
        try:
            _reserve(self._ring.fd, HEADER_BYTES + self._reserved, new - self._reserved)
        except OSError:
            return False
        self._hdr[H_RESERVED] = self._reserved = new
        return True

    @staticmethod
    def _put_record(
        data: memoryview, dataq: memoryview, pos: int, kind: int, pieces: list[Any], length: int
    ) -> None:
        dataq[pos >> 3] = (length << 8) | kind
        pos += 8
        for piece in pieces:
            n = len(piece) if type(piece) is bytes else memoryview(piece).nbytes
            data[pos : pos + n] = piece if type(piece) is bytes else memoryview(piece).cast("B")
            pos += n

    def _write_overflow(self, kind: int, pieces: list[Any], length: int, size: int) -> None:
        hdr = self._hdr
        hdr[H_OVF_DIRTY] = 1
        tail_name = self._name_at(OVF_TAIL_NAME) if hdr[H_OVF_COUNT] or hdr[H_OVF_READ] else ""
        block = self._block(tail_name) if tail_name else None
        pos = hdr[H_OVF_WRITE]
        if block is None or pos + size > block.size:
            name, new = self._new_block(size)
            if block is None:
                self._set_name(OVF_HEAD_NAME, name)
                hdr[H_OVF_READ] = BLOCK_HEADER
            else:
                if pos + 8 <= block.size:
                    block.buf[pos : pos + 8].cast("Q")[0] = NEXT
                self._set_name(0, name, block.buf)
            self._set_name(OVF_TAIL_NAME, name)
            block, pos = new, BLOCK_HEADER
        self._put_record(block.buf, block.buf.cast("Q"), pos, kind, pieces, length)
        hdr[H_OVF_WRITE] = pos + size
        hdr[H_OVF_COUNT] += 1
        hdr[H_OVF_BYTES] += size
        hdr[H_OVF_DIRTY] = 0

    def _take_ring(self) -> tuple[int, bytes]:
        """Remove the oldest ring record; the caller holds the mutex (on return too).

        A big record is copied out with the mutex released, so a producer can write the next
        one meanwhile: it is marked READING and only the read cursor moves past it; the space
        it holds is freed (``H_HEAD`` moves) once the copy is done. A small record read while
        a big one is in flight is marked FREE, for that reader to sweep.
        """
        hdr, cap, dataq = self._hdr, self._cap, self._dataq
        cursor = hdr[H_CURSOR]
        pos = cursor % cap
        word = dataq[pos >> 3]
        if word == WRAP:
            if hdr[H_HEAD] == cursor:
                hdr[H_HEAD] = cursor + cap - pos
            cursor += cap - pos
            pos = 0
            word = dataq[0]
        n = word >> 8
        end = cursor + 8 + ((n + 7) & ~7)
        hdr[H_CURSOR] = end
        hdr[H_GETS] += 1
        if n < BIG_READ:
            payload = bytes(self._data[pos + 8 : pos + 8 + n])
            if hdr[H_HEAD] == cursor:
                hdr[H_HEAD] = end
            else:
                dataq[pos >> 3] = (n << 8) | FREE
            return word & 0xFF, payload
        dataq[pos >> 3] = (n << 8) | READING
        self._unlock()
        try:
            payload = bytes(self._data[pos + 8 : pos + 8 + n])
        finally:
            self._lock()
        dataq[pos >> 3] = (n << 8) | FREE
        head, cursor = hdr[H_HEAD], hdr[H_CURSOR]
        while head != cursor:  # free every record before the cursor that nobody still reads
            at = head % cap
            w = dataq[at >> 3]
            if w == WRAP:
                head += cap - at
            elif w & 0xFF == FREE:
                head += 8 + (((w >> 8) + 7) & ~7)
            else:
                break
        hdr[H_HEAD] = head
        return word & 0xFF, payload

    def _read(self) -> tuple[int, bytes]:
        """Remove the oldest record; the caller holds the mutex and knows there is one."""
        hdr = self._hdr
        if hdr[H_PUTS] != hdr[H_GETS]:
            return self._take_ring()
        if not hdr[H_OVF_COUNT]:
            return NOTHING, b""  # a surplus "items" post after a repair: nothing to take
        hdr[H_OVF_DIRTY] = 1
        name = self._name_at(OVF_HEAD_NAME)
        block = self._block(name)
        pos = hdr[H_OVF_READ]
        word = block.buf[pos : pos + 8].cast("Q")[0] if pos + 8 <= block.size else NEXT
        if word == NEXT:
            next_name = bytes(block.buf[:NAME_BYTES]).rstrip(b"\0").decode()
            self._retire(name)
            self._set_name(OVF_HEAD_NAME, next_name)
            name, block, pos = next_name, self._block(next_name), BLOCK_HEADER
            word = block.buf[pos : pos + 8].cast("Q")[0]
        length = word >> 8
        payload = bytes(block.buf[pos + 8 : pos + 8 + length])
        hdr[H_OVF_READ] = pos + 8 + _pad(length)
        hdr[H_OVF_COUNT] -= 1
        hdr[H_OVF_BYTES] -= 8 + _pad(length)
        if hdr[H_OVF_COUNT] == 0:  # the chain is empty: drop it, puts go to the ring again
            self._retire(name)
            hdr[H_OVF_READ] = 0
            hdr[H_OVF_WRITE] = 0
        hdr[H_OVF_DIRTY] = 0
        return word & 0xFF, payload

    def _write_waiting(self, kind: int, pieces: list[Any], length: int) -> None:
        """Write one record, waiting up to SPACE_WAIT for a consumer to free ring space
        before the record goes to the overflow chain. Holds the mutex except while waiting."""
        until = 0.0
        overflow = self._spill_freely_until > 0 and time.monotonic() < self._spill_freely_until
        while not self._write(kind, pieces, length, overflow):
            now = time.monotonic()
            if not until:
                until = now + SPACE_WAIT
            self._hdr[H_SPACE_WAITERS] += 1
            self._unlock()
            try:
                self._space.acquire(True, max(0.0, until - now))
            finally:
                self._lock()
            now = time.monotonic()
            if now >= until:  # nobody is reading: stop pacing this producer for a while
                overflow = True
                self._spill_freely_until = now + NO_READER_S
