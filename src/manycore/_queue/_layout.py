"""The queue's shared memory: the control header, the records, and the files that hold them.

Wire format (integers native-endian u64 unless said otherwise, records 8-byte aligned)::

    control header (HEADER_BYTES): the H_* words below, then 64-byte name slots (the
      overflow chain's head and tail, the spare block, the kept segments)
    record: u64 (payload length << 8 | kind), payload, zero padding to 8 bytes
      kind PICKLE:  a pickle (protocol 5)
      kind BYTES:   a top-level bytes object's contents, no pickle at all
      kind SEG:     u8 flags, u8 name length, u32 buffer count, u32 persistent count,
                    the segment's name, (u64 offset, u64 length) per buffer, the pickle
                    of the rest (see ``_items``; these fields little-endian)
      kind WRAP:    the rest of the ring is unused; the next record starts at offset 0
      kind NEXT:    the rest of this overflow block is unused; go to the next block
      kind READING: being copied out by a consumer; FREE: taken, space not yet freed
    overflow block: the next block's name (64 bytes), then records

Every file is named after the queue (``manycore-q<random>``): the ring ``<prefix>-ring``,
overflow blocks ``<prefix>-b<random>``, kept segments ``<prefix>-s<random>``, one-off segments
``<prefix>-o<random>``, and the named semaphores ``/<prefix>-<m|i|w|s|d>``; the creator's
cleanup and its tracker free everything with that prefix.
"""

from __future__ import annotations

import importlib
import os
import secrets
import struct
from typing import Any

from .. import _reuse, _shm
from .._errors import ManycoreError

# The C semaphore behind multiprocessing's locks (typeshed has no stubs for it).
_mp: Any = importlib.import_module("_multiprocessing")
SemLock: Any = _mp.SemLock

# The ring is reused for the life of the queue, so its pages are faulted in once. 8 MiB keeps a
# few 1 MiB messages in flight; /dev/shm pages are only allocated once written.
RING_BYTES = 8 << 20
# The ring's memory is reserved as it comes into use: this much at creation (so a queue that
# carries small items stays small), then in steps of RESERVE_STEP.
FIRST_RESERVE = 64 << 10
RESERVE_STEP = 1 << 20
BLOCK_HEADER = 64  # an overflow block: the next block's name, then records
NAME_BYTES = 64
SEM_MAX = SemLock.SEM_VALUE_MAX
_SEMAPHORE = 1  # SemLock kind: a plain counting semaphore (kind 0 is a recursive mutex)

PICKLE, BYTES, SEG, WRAP, NEXT = 1, 2, 3, 4, 5
READING, FREE = 6, 7  # a ring record being copied out without the mutex; one already taken

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
H_LOCKER = 25  # pid of the process holding the mutex (0: none, or in its first/last step)
H_BROKEN = 26  # pid of a holder that died leaving the queue damaged beyond repair (0: none)
H_OVF_DIRTY = 27  # 1 while the holder changes the overflow chain (its repair is not attempted)
OVF_HEAD_NAME = 256  # byte offsets of the name slots
OVF_TAIL_NAME = 320
SPARE_NAME = 384  # an emptied overflow block kept for reuse (its pages are already mapped)
SEG_SLOT0 = 448  # names of the big-buffer segments kept for reuse ("" unused, "*" being made)
SEG_SLOTS = 4
HEADER_BYTES = SEG_SLOT0 + SEG_SLOTS * 64
BLOCK_MAPPINGS = 4  # overflow blocks each process keeps mapped
CREATE_TRIES = 16  # random names tried for a new file before giving up (see _File.create_unique)

# Big-buffer segments (``_items``).
SEG_RESERVED = _reuse.RESERVED  # bytes before a segment's data; the first u64 is its state
# The state word's values are _reuse's: FREE, SENT, (reader pid << 2) | HELD.
SEG_FREE, SEG_SENT, SEG_HELD = _reuse.FREE, _reuse.SENT, _reuse.HELD
SEG_REUSE, SEG_BYTES = 1, 2  # record flags: a kept segment; the item is one bytes object
SEG_MAPPINGS = 8  # big-buffer segments each process keeps mapped
_CREATING = "*"
_SEG_HEAD = struct.Struct("<BBII")
_SPAN = struct.Struct("<QQ")


class QueueBrokenError(ManycoreError, RuntimeError):
    """A process died while it held the queue's lock, in the middle of a change the other
    processes cannot finish for it: what the queue holds can no longer be trusted."""


def _pad(n: int) -> int:
    return (n + 7) & ~7


def _state(block: _File) -> memoryview:
    return _reuse.state_word(block.buf)


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

    @classmethod
    def create_unique(cls, stem: str, size: int) -> tuple[str, _File]:
        """A new file named ``stem`` plus a random suffix, created exclusively: a name another
        local user made first (the queue's prefix is visible in /dev/shm) is skipped."""
        for _ in range(CREATE_TRIES):
            name = f"{stem}{secrets.token_hex(8)}"
            try:
                return name, cls(name, size, create=True)
            except FileExistsError:
                continue
        raise FileExistsError(
            f"could not create a file named {stem}<random> in {_shm.shm_dir()}: "
            f"{CREATE_TRIES} random names were all taken; remove stale manycore files there"
        )

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
