"""A FIFO of byte records in shared memory: the ring, the overflow chain, and their pacing.

``RecordFifo`` is the bottom of a queue (``ItemFifo`` adds what the records mean, ``Queue``
the API): it appends a record under the queue's process-shared mutex and removes the oldest
one, in the ring while records fit there, in a chain of overflow blocks while they do not
(see the package docstring for the guarantees, and ``_layout`` for the bytes). Every method
here runs in whichever process calls it; the mutex is held as the docstrings say.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from ._layout import (
    BLOCK_HEADER,
    BLOCK_MAPPINGS,
    FREE,
    H_CURSOR,
    H_GETS,
    H_HEAD,
    H_OVF_BYTES,
    H_OVF_COUNT,
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
    READING,
    RESERVE_STEP,
    RING_BYTES,
    SEM_MAX,
    SPARE_NAME,
    WRAP,
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
        self._closed = False

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

    def _lock(self) -> None:
        # The mutex is held for a memcpy: spin on it before sleeping, since a futex sleep and
        # wake-up cost more than most critical sections.
        mutex = self._mutex
        if mutex.acquire(False):
            return
        for _ in range(SPIN):
            if mutex.acquire(False):
                return
        mutex.acquire()

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
        self._mutex.release()
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
            self._mutex.release()
            try:
                self._space.acquire(True, max(0.0, until - now))
            finally:
                self._lock()
            now = time.monotonic()
            if now >= until:  # nobody is reading: stop pacing this producer for a while
                overflow = True
                self._spill_freely_until = now + NO_READER_S
