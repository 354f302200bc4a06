"""Queue, SimpleQueue and JoinableQueue: process-shared FIFOs whose data lives in shared memory.

Who runs where::

    producer processes                  /dev/shm                      consumer processes
    put(obj): pickle on the caller's    ┌──────────────────────────┐  get(): wait on "items",
    thread; under the mutex copy the    │ control header + ring    │  take the oldest record
    record into the ring (or the        │ (RING_BYTES, reused)     │  under the mutex (a big
    overflow chain), then post "items"  ├──────────────────────────┤  one is copied out after
                                        │ overflow blocks, chained │  releasing it), unpickle
                                        │ only while the ring is   │  outside it
                                        │ full; one emptied block  │
                                        │ is kept as a spare       │
                                        └──────────────────────────┘

Guarantees, and how:

* **No feeder thread.** ``put`` pickles on the caller's thread and writes the bytes into
  shared memory before it returns. An object that cannot be pickled raises in ``put`` itself
  (``ArgumentPicklingError`` naming its type) and nothing is enqueued; a process that put items
  and exits leaves them in the queue, readable by others, and is never held at exit by items
  nobody read (the stdlib's feeder thread blocks on a full pipe there).
* **An unbounded put never waits long for space.** The ring has a fixed size. When a record
  does not fit (the ring is full, or the record is larger than a quarter of it), it goes to an
  overflow chain of blocks, each a shared-memory file of at least ``RING_BYTES``; once the
  chain is in use every later put goes there too, and ``get`` reads the ring before the
  chain, so FIFO order holds. A producer that finds the ring full (or the chain past
  ``OVF_SOFT_BYTES``) first waits up to ``SPACE_WAIT`` for a consumer to free space, so a
  producer that outruns live consumers is paced by them and reuses warm memory; when nobody
  reads, that wait times out once and the producer spills freely for ``NO_READER_S``. The
  consumer that empties a block keeps it as the spare (if there is none) or unlinks it. A
  bounded queue (``maxsize > 0``) blocks in ``put`` on a "slots free" semaphore, as the
  stdlib's does.
* **FIFO per producer, no loss, no duplication**: records are appended and handed out under
  one process-shared mutex; "items" is posted only after the record is complete. A ring
  record of ``BIG_READ`` bytes or more is copied out with the mutex released (so a producer
  writes the next one meanwhile): it is marked READING and only the read cursor
  (``H_CURSOR``) moves past it; its space is freed (``H_HEAD`` moves) when the copy is done,
  together with any later records other consumers took meanwhile (marked FREE).
* **qsize() works**: it is counters in the header, not a semaphore's value.
* **Cleanup**: the creating process unlinks the ring, every overflow block and the named
  semaphores when its queue object is collected or at interpreter exit; all of them are
  registered (by name prefix) with the ``_shm`` tracker, which unlinks them if the creator
  dies without doing it (SIGKILL).

What a crash does: a process killed by SIGKILL while it holds the mutex (a small memcpy's
length) leaves the queue locked; one killed while copying a big record out leaves that
record's ring space unfreed (later puts spill to the overflow chain, nothing blocks). A
kept segment whose producer died before enqueuing its item, or whose consumer died between
taking the record and building the item, stays "sent": the queue has one kept segment
fewer for reuse (items then use one-offs); everything is still freed with the queue.

Wire format (integers native-endian u64 unless said otherwise, records 8-byte aligned)::

    control header (HEADER_BYTES): the H_* words below, then three 64-byte name slots
    record: u64 (payload length << 8 | kind), payload, zero padding to 8 bytes
      kind PICKLE:  a pickle (protocol 5)
      kind BYTES:   a top-level bytes object's contents, no pickle at all
      kind SEG:     u8 flags, u8 name length, u32 buffer count, u32 persistent count,
                    the segment's name, (u64 offset, u64 length) per buffer, the pickle
                    of the rest (see "Big buffers" below; these fields little-endian)
      kind WRAP:    the rest of the ring is unused; the next record starts at offset 0
      kind NEXT:    the rest of this overflow block is unused; go to the next block
      kind READING: being copied out by a consumer; FREE: taken, space not yet freed
    overflow block: the next block's name (64 bytes), then records

Big buffers: an item whose NumPy arrays, ``bytearray``/``memoryview``/``PickleBuffer``
objects and big ``bytes`` add up to ``_buffers.shm_threshold()`` bytes or more (64 KiB
by default), and a top-level ``bytes`` object too big for the ring, is split
(``_serialize.split_buffers``): the buffers are copied once into a segment of their own,
named after the queue (``<prefix>-s...``), and the record carries its name, the buffers'
places and the pickle of the rest. ``get`` builds the arrays on the segment's memory: no
copy on the way out. Creating and freeing a 64 MiB segment costs ten times the copy into a
warm one, so the queue keeps up to ``SEG_SLOTS`` segments for reuse, named in the header.
Each starts with a state word: free, sent (claimed by a producer, its record queued), or
held by the reader whose pid it names; that reader sets it free again when the last object
built on the memory is garbage-collected (``_serialize.watched_views``), and a producer
also takes back a segment whose reader has died. When every kept segment is busy, the item
gets a one-off segment (``<prefix>-o...``) that its reader unlinks on receipt. Every name
carries the queue's prefix, so the creator's cleanup and its tracker free what is left.
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import queue as _stdqueue
import secrets
import struct
import threading
import time
import weakref
from typing import Any, Iterable, Optional

from . import _buffers, _reuse, _shm
from ._buffers import (
    fill,
    has_big_bytes,
    inband_unless_big,
    layout,
    split_buffers,
    unpickle_buffers,
)
from ._errors import ArgumentPicklingError
from ._reuse import NO_WAIT_S, WAIT_MIN, WAIT_S, reusable, round_up, wait_until, watched_views
from ._serialize import dumps

# The C semaphore behind multiprocessing's locks (typeshed has no stubs for it).
_mp: Any = importlib.import_module("_multiprocessing")
SemLock: Any = _mp.SemLock

__all__ = ["Empty", "Full", "JoinableQueue", "Queue", "SimpleQueue"]

Empty = _stdqueue.Empty
Full = _stdqueue.Full

# The ring is reused for the life of the queue, so its pages are faulted in once. 8 MiB keeps a
# few 1 MiB messages in flight; /dev/shm pages are only allocated once written.
RING_BYTES = 8 << 20
# The ring's memory is reserved as it comes into use: this much at creation (so a queue that
# carries small items stays small), then in steps of RESERVE_STEP.
FIRST_RESERVE = 64 << 10
RESERVE_STEP = 1 << 20
BLOCK_HEADER = 64  # an overflow block: the next block's name, then records
NAME_BYTES = 64
# A top-level bytes object at least this big is copied raw, skipping the pickler's own copy.
RAW_MIN = 64 << 10
SEM_MAX = SemLock.SEM_VALUE_MAX
_SEMAPHORE = 1  # SemLock kind: a plain counting semaphore (kind 0 is a recursive mutex)

PICKLE, BYTES, SEG, WRAP, NEXT = 1, 2, 3, 4, 5
READING, FREE = 6, 7  # a ring record being copied out without the mutex; one already taken
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
# How many times get() retries a non-blocking acquire before it sleeps (about 20 us).
SPIN = 200
_PLAIN = frozenset({int, float, str, tuple, list, dict, type(None), bool})
_MAIN = b"__main__"
_pdumps = pickle.dumps
_ploads = pickle.loads  # records hold plain pickles: never a pool payload

# Control header, as indices of u64 words. What consumers write, what producers write and
# the rest sit on separate cache lines, so a producer and a consumer running side by side do
# not invalidate each other's line at every item.
H_HEAD = 0  # ring bytes freed (monotonic): producers may write up to here, one lap on
H_GETS = 1  # records taken from the ring
H_CURSOR = 2  # ring bytes handed to consumers (>= H_HEAD while big reads are in flight)
H_TAIL = 8  # ring bytes produced (monotonic)
H_PUTS = 9  # records written to the ring
H_OVF_COUNT = 16  # records in the overflow chain
H_OVF_READ = 17  # read offset in the head overflow block
H_OVF_WRITE = 18  # write offset in the tail overflow block
H_BLOCK_SEQ = 19
H_UNFINISHED = 20  # JoinableQueue: items put and not yet task_done()
H_JOIN_WAITERS = 21
H_OVF_BYTES = 22  # bytes of records in the overflow chain
H_RESERVED = 23  # ring bytes whose memory is reserved (posix_fallocate), from offset 0
H_SPACE_WAITERS = 24  # producers waiting for ring space
OVF_HEAD_NAME = 256  # byte offsets of the name slots
OVF_TAIL_NAME = 320
SPARE_NAME = 384  # an emptied overflow block kept for reuse (its pages are already mapped)
SEG_SLOT0 = 448  # names of the big-buffer segments kept for reuse ("" unused, "*" being made)
SEG_SLOTS = 4
HEADER_BYTES = SEG_SLOT0 + SEG_SLOTS * 64
BLOCK_MAPPINGS = 4  # overflow blocks each process keeps mapped

# Big-buffer segments (see "Big buffers" above).
SEG_RESERVED = 64  # bytes before a segment's data; the first u64 is its state
# The state word's values are _memfd's: FREE, SENT, (reader pid << 2) | HELD.
SEG_FREE, SEG_SENT, SEG_HELD = _reuse.FREE, _reuse.SENT, _reuse.HELD
SEG_REUSE, SEG_BYTES = 1, 2  # record flags: a kept segment; the item is one bytes object
SEG_MAPPINGS = 8  # big-buffer segments each process keeps mapped
_CREATING = "*"
_SEG_HEAD = struct.Struct("<BBII")
_SPAN = struct.Struct("<QQ")


def _state(block: _File) -> memoryview:
    return block.buf[:8].cast("Q")


def _holds_big_bytes(obj: Any, size: int) -> bool:
    """Whether ``obj``, pickled in ``size`` bytes, holds bytes objects to take out of band."""
    least = _buffers.shm_threshold()
    return least is not None and size >= least and has_big_bytes(obj, least)


def _any_free(blocks: list[_File]) -> bool:
    return any(_state(block)[0] == SEG_FREE for block in blocks)


def _pad(n: int) -> int:
    return (n + 7) & ~7


class _File:
    """A mapped file in the shared-memory directory. Whoever calls ``unlink`` removes the name;
    nobody else does.

    Overflow blocks are created by producers but removed by the consumer that empties them (or
    by the queue's creator), so they cannot belong to the process that made them, as a
    ``_shm.Segment`` does. Memory is reserved (``posix_fallocate``) before it is written: a
    full /dev/shm then raises ``ShmUnavailableError`` instead of killing the writer with
    SIGBUS. The ring keeps its descriptor to reserve its pages as they come into use.
    """

    def __init__(self, name: str, size: int = 0, create: bool = False, keep_fd: bool = False):
        path = os.path.join(_shm.shm_dir(), name)
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
                if not keep_fd:
                    _reserve(fd, 0, size)
            else:
                size = os.fstat(fd).st_size
            self.map = _shm.map_shared(fd, size)
        except BaseException:
            os.close(fd)
            if create:
                _File.unlink(name)
            raise
        if not keep_fd:
            os.close(fd)
            fd = -1
        self.fd = fd
        self.name = name
        self.size = size
        self.buf = memoryview(self.map)

    def __del__(self) -> None:
        if getattr(self, "fd", -1) >= 0:  # every unpickled copy of a queue holds one
            os.close(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            self.buf.release()
            self.map.close()
        except (BufferError, ValueError):  # a view is still exported; the GC will unmap it
            pass

    @staticmethod
    def path(name: str) -> str:
        return os.path.join(_shm.shm_dir(), name)

    @staticmethod
    def unlink(name: str) -> None:
        try:
            os.unlink(_File.path(name))
        except FileNotFoundError:
            pass


def _reserve(fd: int, offset: int, length: int) -> None:
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        raise _shm.ShmUnavailableError(
            exc.errno,
            f"the queue cannot reserve {length} more bytes of shared memory in "
            f"{_shm.shm_dir()} ({exc.strerror}); nothing was enqueued. Make it larger (e.g. "
            "docker run --shm-size=1g), or bound the queue (Queue(maxsize)) so producers wait "
            "for consumers instead of piling items up",
        ) from exc


def _sem_name(prefix: str, what: str) -> str:
    return f"/{prefix}-{what}"


def _new_sem(prefix: str, what: str, value: int, maxvalue: int) -> SemLock:
    # Named and kept linked while the queue lives, so a spawned process can open it by name.
    return SemLock(_SEMAPHORE, value, maxvalue, _sem_name(prefix, what), False)


def _open_sem(prefix: str, what: str, maxvalue: int) -> SemLock:
    return SemLock._rebuild(0, _SEMAPHORE, maxvalue, _sem_name(prefix, what))


def _cleanup(owner: int, prefix: str, sems: tuple[str, ...]) -> None:
    """Run in the creator only (a forked child inherits the finalizer, not the ownership)."""
    if os.getpid() != owner:
        return
    _shm.unlink_prefix(prefix)
    try:
        _shm.untrack_prefix(prefix)
    except Exception:  # at interpreter exit, nothing must raise here
        pass
    for what in sems:
        try:
            _mp.sem_unlink(_sem_name(prefix, what))
        except OSError:
            pass
    try:
        _shm.untrack_semaphores(prefix)
    except Exception:  # at interpreter exit, nothing must raise here
        pass


class Queue:
    """A process-shared FIFO with the API of ``multiprocessing.Queue``, plus batches.

    Args:
        maxsize: the most items the queue holds; ``put`` blocks (or raises ``Full``) beyond
            it. Zero or less means unbounded.

    Pass it to processes as an argument (any start method), through another queue, or in a
    pool's ``initargs``.
    """

    _joinable = False

    def __init__(self, maxsize: int = 0, *, ctx: Any = None) -> None:
        del ctx  # accepted for signature compatibility with multiprocessing.queues.Queue
        self._maxsize = maxsize if maxsize > 0 else 0
        prefix = f"manycore-q{secrets.token_hex(8)}"
        # If this process dies without cleaning up (SIGKILL), the shm tracker unlinks the
        # ring, every overflow block and the semaphores, all named after the prefix.
        _shm.track_prefix(prefix)
        _shm.track_semaphores(prefix)
        ring = _File(f"{prefix}-ring", HEADER_BYTES + RING_BYTES, create=True, keep_fd=True)
        try:
            _reserve(ring.fd, 0, HEADER_BYTES + FIRST_RESERVE)
        except BaseException:
            ring.close()
            _File.unlink(ring.name)
            _shm.untrack_prefix(prefix)
            _shm.untrack_semaphores(prefix)
            raise
        ring.buf[:HEADER_BYTES].cast("Q")[H_RESERVED] = FIRST_RESERVE
        sems = (
            ("m", "i", "w") + (("s",) if self._maxsize else ()) + (("d",) if self._joinable else ())
        )
        self._finalizer: Any = weakref.finalize(self, _cleanup, os.getpid(), prefix, sems)
        self._attach(prefix, ring, created=True)

    # --- sharing between processes ---

    def _attach(self, prefix: str, ring: _File, created: bool) -> None:
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
        self._segments: dict[str, _File] = {}  # big-buffer segments mapped here, oldest first
        self._segments_lock = threading.Lock()  # threads of this process share the dict
        self._seg_no_wait_until = 0.0
        self._spill_freely_until = 0.0
        self._closed = False
        self._local = threading.local()

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

    # --- the shared-memory FIFO ---

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
        seq = self._hdr[H_BLOCK_SEQ] = self._hdr[H_BLOCK_SEQ] + 1
        name = f"{self._prefix}-b{seq}"
        block = _File(name, BLOCK_HEADER + max(RING_BYTES, size), create=True)
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

    # --- encoding, and big buffers in segments of their own ---

    def _encode(self, obj: Any) -> tuple[int, list[Any], int]:
        """``(kind, pieces, payload length)`` for ``obj``; raises ArgumentPicklingError.

        A SEG record has claimed a segment: if it is not enqueued, pass it to ``_abandon``.
        """
        threshold = _buffers.shm_threshold()
        if type(obj) is bytes:
            if len(obj) > self._quarter and threshold is not None:
                return self._to_segment(obj, b"", [memoryview(obj)], 0, SEG_BYTES)
            if len(obj) >= RAW_MIN:
                return BYTES, [obj], len(obj)
        raws: list[memoryview] = []
        persistent = 0
        try:
            if threshold is None:
                data = dumps(obj)
            else:
                data, raws, persistent = split_buffers(obj, threshold)
        except Exception as exc:
            raise ArgumentPicklingError(
                f"cannot put a {type(obj).__name__} object on the queue: it cannot be pickled "
                f"({exc}). Put something picklable (plain data, or a name or path the consumer "
                "can use to rebuild the object); nothing was enqueued.",
                argument="item",
            ) from exc
        if raws:
            return self._to_segment(obj, data, raws, persistent, 0)
        return PICKLE, [data], len(data)

    def _to_segment(
        self, obj: Any, body: bytes, raws: list[memoryview], persistent: int, flags: int
    ) -> tuple[int, list[Any], int]:
        """Copy ``raws`` into a segment; the SEG record that names it."""
        spans, total = layout(raws)
        try:
            name, block, reuse = self._claim_segment(SEG_RESERVED + total)
        except OSError as exc:  # no room in shared memory: the item goes in band
            _buffers.shm_failed(exc)
            data = obj if flags & SEG_BYTES else dumps(obj)
            return (BYTES if flags & SEG_BYTES else PICKLE), [data], len(data)
        try:
            fill(block.buf, SEG_RESERVED, spans, raws)
            raw_name = name.encode()
            flags |= SEG_REUSE if reuse else 0
            head = _SEG_HEAD.pack(flags, len(raw_name), len(spans), persistent)
            record = b"".join([head, raw_name, *(_SPAN.pack(o, n) for o, n in spans), body])
        except BaseException:
            self._release_segment(name, block if reuse else None)
            raise
        finally:
            if not reuse:
                block.close()
        return SEG, [record], len(record)

    def _claim_segment(self, need: int) -> tuple[str, _File, bool]:
        """A segment of at least ``need`` bytes marked SENT: a free kept one (the smallest
        that fits, waiting a moment for a busy one as ``_memfd.Outbox`` does), a new kept
        one, or a one-off (``reuse`` False)."""
        need = round_up(need)
        replaced = ""
        for attempt in (0, 1):
            self._lock()
            try:
                fit, busy, empty, small = self._scan_segments(need)
                if fit is not None:
                    _state(fit[1])[0] = SEG_SENT
                    return fit[0], fit[1], True
                if (
                    attempt
                    or not busy
                    or (empty >= 0 and need < WAIT_MIN)
                    or time.monotonic() < self._seg_no_wait_until
                ):
                    if empty < 0 and small >= 0:  # a free kept segment too small: replace it
                        replaced = self._name_at(small)
                        self._set_name(small, "")
                        empty = small
                    if empty >= 0:
                        self._set_name(empty, _CREATING)
                    break
            finally:
                self._mutex.release()
            if not wait_until(functools.partial(_any_free, busy), WAIT_S):
                self._seg_no_wait_until = time.monotonic() + NO_WAIT_S
        if replaced:  # outside the mutex: freeing 64 MiB takes about 10 ms
            self._forget_segment(replaced)
            _File.unlink(replaced)
        if empty < 0:  # every kept segment is in use: a one-off, unlinked by its reader
            name = f"{self._prefix}-o{secrets.token_hex(8)}"
            return name, _File(name, need, create=True), False
        name = f"{self._prefix}-s{secrets.token_hex(8)}"
        try:
            block = _File(name, need, create=True)  # outside the mutex: this takes a while
        except BaseException:
            self._lock()
            self._set_name(empty, "")
            self._mutex.release()
            raise
        _state(block)[0] = SEG_SENT
        self._lock()
        self._set_name(empty, name)
        self._mutex.release()
        self._keep_mapped(name, block)
        return name, block, True

    def _scan_segments(
        self, need: int
    ) -> tuple[Optional[tuple[str, _File]], list[_File], int, int]:
        """Look at the kept segments (mutex held): the smallest free one that fits, the busy
        ones that fit, an empty slot and the slot of a free one too small (-1: none)."""
        fit: Optional[tuple[str, _File]] = None
        busy: list[_File] = []
        empty = small = -1
        for at in range(SEG_SLOT0, HEADER_BYTES, NAME_BYTES):
            name = self._name_at(at)
            if name == _CREATING:
                continue
            if name:
                try:
                    block = self._segment(name)
                except FileNotFoundError:
                    name = ""
                    self._set_name(at, "")
            if not name:
                empty = at if empty < 0 else empty
                continue
            free = reusable(_state(block)[0])
            if block.size >= need:
                if not free:
                    busy.append(block)
                elif fit is None or block.size < fit[1].size:
                    fit = (name, block)
            elif free and small < 0:
                small = at
        return fit, busy, empty, small

    def _segment(self, name: str) -> _File:
        """The kept segment ``name``, mapped once per process."""
        block = self._segments.get(name)
        if block is None:
            block = _File(name)
            self._keep_mapped(name, block)
        return block

    def _keep_mapped(self, name: str, block: _File) -> None:
        with self._segments_lock:
            segments = self._segments
            # Forget segments that were replaced (their names are gone), then the oldest.
            for old in [n for n in segments if not os.path.exists(_File.path(n))]:
                segments.pop(old).close()  # arrays built on it keep the memory mapped
            if len(segments) >= SEG_MAPPINGS:
                segments.pop(next(iter(segments))).close()
            segments[name] = block

    def _forget_segment(self, name: str) -> None:
        with self._segments_lock:
            block = self._segments.pop(name, None)
        if block is not None:
            block.close()  # arrays still built on it keep the memory mapped

    def _release_segment(self, name: str, block: Optional[_File]) -> None:
        """A claimed segment whose record was not enqueued: free it (kept) or unlink it."""
        if block is not None:
            _state(block)[0] = SEG_FREE
        else:
            _File.unlink(name)

    def _abandon(self, encoded: tuple[int, list[Any], int]) -> None:
        """``encoded`` will not be enqueued: release the segment a SEG record claimed."""
        kind, pieces, _ = encoded
        if kind != SEG:
            return
        flags, name_len, _, _ = _SEG_HEAD.unpack_from(pieces[0])
        name = bytes(pieces[0][_SEG_HEAD.size : _SEG_HEAD.size + name_len]).decode()
        self._release_segment(name, self._segments.get(name) if flags & SEG_REUSE else None)

    def _decode(self, kind: int, payload: bytes) -> Any:
        if kind == PICKLE:
            return _ploads(payload)
        if kind == BYTES:
            return payload
        view = memoryview(payload)
        flags, name_len, count, persistent = _SEG_HEAD.unpack_from(view)
        at = _SEG_HEAD.size
        name = bytes(view[at : at + name_len]).decode()
        if not name.startswith(self._prefix + "-") or "/" in name:
            raise pickle.UnpicklingError(f"a queue record names a foreign segment {name!r}")
        at += name_len
        spans = [_SPAN.unpack_from(view, at + i * _SPAN.size) for i in range(count)]
        body = view[at + count * _SPAN.size :]
        views: list[Any]
        if flags & SEG_REUSE:
            block = self._segment(name)
            views = watched_views(block.map, SEG_RESERVED, spans, _reuse.hold(_state(block)))
        else:
            block = _File(name)
            _File.unlink(name)  # a one-off: its memory goes with the last view
            views = [block.buf[SEG_RESERVED + o : SEG_RESERVED + o + n] for o, n in spans]
        try:
            if flags & SEG_BYTES:
                return bytes(memoryview(views[0]))
            return unpickle_buffers(body, views, persistent)
        finally:
            del views
            if not flags & SEG_REUSE:
                block.close()

    # --- public API ---

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self!r} is closed; create a new queue or stop using this one")

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Put ``obj`` on the queue; it is pickled here, before this returns.

        Raises:
            Full: the queue is bounded and stayed full (``block=False`` or the timeout ran out).
            ArgumentPicklingError: ``obj`` cannot be pickled; nothing was enqueued.
            ValueError: the queue was closed in this process.
        """
        if self._closed:
            self._check_open()
        if type(obj) in _PLAIN:
            # The hot path, inlined: plain data, C pickler, a record in the ring.
            try:
                data: Optional[bytes] = _pdumps(obj, 5, buffer_callback=inband_unless_big)
            except Exception:  # also BigBuffer: a big array in a tuple, list or dict
                data = None
            if (
                data is not None
                and _MAIN not in data
                and (len(data) < 4096 or not _holds_big_bytes(obj, len(data)))
            ):
                n = len(data)
                size = 8 + ((n + 7) & ~7)
                if self._slots is None and size <= self._quarter:
                    cap = self._cap
                    self._lock()
                    hdr = self._hdr
                    if not hdr[H_OVF_COUNT]:
                        tail = hdr[H_TAIL]
                        pos = tail % cap
                        if pos + size <= self._reserved and cap - (tail - hdr[H_HEAD]) >= size:
                            self._dataq[pos >> 3] = (n << 8) | PICKLE
                            self._data[pos + 8 : pos + 8 + n] = data
                            hdr[H_TAIL] = tail + size
                            hdr[H_PUTS] += 1
                            if self._joinable:
                                hdr[H_UNFINISHED] += 1
                            self._mutex.release()
                            self._items.release()
                            return
                    self._mutex.release()
                self._put_encoded((PICKLE, [data], n), block, timeout)
                return
        self._put_encoded(self._encode(obj), block, timeout)

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, block=False)``."""
        self.put(obj, False)

    def put_many(
        self, items: Iterable[Any], block: bool = True, timeout: Optional[float] = None
    ) -> None:
        """Put every item of ``items``, in order, in one critical section per batch.

        Every item is pickled first, so an unpicklable one raises before any is enqueued. On
        a bounded queue the items go in as slots free up; ``Full`` (or ``ShmUnavailableError``
        when /dev/shm is full) means the items before the one that failed were enqueued.
        """
        self._check_open()
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
            self._lock()
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
            self._mutex.release()
            for _ in range(written):  # announce what went in, even if a later item failed
                self._items.release()

    def _put_encoded(
        self, encoded: tuple[int, list[Any], int], block: bool, timeout: Optional[float]
    ) -> None:
        slots = self._slots
        slot = locked = False
        try:
            if slots is not None:
                if not slots.acquire(block, timeout):
                    raise Full
                slot = True
            self._lock()
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
                self._mutex.release()
        self._items.release()

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

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Remove and return the oldest item.

        Raises:
            Empty: nothing arrived (``block=False``, or the timeout ran out).
            ValueError: the queue was closed in this process.
        """
        if self._closed:
            self._check_open()
        items = self._items
        if not items.acquire(False):
            if not block:
                raise Empty
            # Spin a little before sleeping: a producer a few microseconds behind then costs
            # neither side a futex wake-up (the stdlib pays one per item here).
            for _ in range(SPIN):
                if items.acquire(False):
                    break
            else:
                if not items.acquire(True, timeout):
                    raise Empty
        self._lock()
        hdr = self._hdr
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
            self._mutex.release()
        if self._slots is not None:
            self._slots.release()
        for _ in range(wake):
            self._space.release()
        if kind == PICKLE:
            return _ploads(payload)
        return self._decode(kind, payload)

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

    def get_many(self, max_items: int, timeout: Optional[float] = None) -> list[Any]:
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
                records.append(self._read())
            wake = self._hdr[H_SPACE_WAITERS]
            self._hdr[H_SPACE_WAITERS] = 0
        finally:
            self._mutex.release()
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


class SimpleQueue(Queue):
    """``multiprocessing.SimpleQueue``: get, put, empty, close (the full Queue API works too)."""


class JoinableQueue(Queue):
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
            self._mutex.release()
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
            self._mutex.release()
        if self._done.acquire(True, timeout):
            return True
        self._mutex.acquire()  # give up our turn, unless task_done() just counted us
        try:
            if self._hdr[H_UNFINISHED] == 0:
                gone = False
            else:
                self._hdr[H_JOIN_WAITERS] -= 1
                gone = True
        finally:
            self._mutex.release()
        if not gone:
            self._done.acquire()  # the post meant for us is on its way or there
            return True
        return False
