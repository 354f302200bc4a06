"""Big messages over a Pipe: buffers in a memfd whose descriptor travels with the message.

Who runs where::

    sending end (any process)                        receiving end
    send(obj): split out the big buffers,            recv(): read the length word -2,
    copy them into a memfd from the Outbox           recvmsg() the descriptor with the
    (one copy), write the length word -2, then       blob's length, read the blob, map the
    sendmsg(blob length + blob, SCM_RIGHTS fd)       memfd (once per memfd, the Inbox) and
                                                     build the arrays on it: no copy

Why a descriptor and not a name: the kernel keeps the memfd alive while the message sits in
the socket, and frees it if the message is never read (the socket closed, or every process
holding it died, SIGKILL included). No tracker, no name to guess, no /dev/shm size limit,
and a sender may exit right after ``send`` (the common case of a child sending its result).

Reuse: creating and freeing a 64 MiB memfd costs ten times the copy into a warm one (the
kernel zeroes and frees every page), so each sending end keeps up to ``KEPT`` memfds, on
the rule every reused block follows (``_reuse``): a memfd starts with a state word (free,
sent, or held by the reader whose pid it names); the reader frees it when the last object
built on its memory is garbage-collected, and the sender refills only a free one or one
whose reader has died. Blocks under ``WAIT_MIN`` are made at once while fewer than ``KEPT``
exist; bigger ones, which cost far more to make, wait a moment for a busy one first
(``WAIT_S``, then not again for ``NO_WAIT_S`` if the reader holds on to what it got:
``_reuse.no_wait_after``). When every kept memfd is busy a message gets a one-off memfd,
freed with the reader's last view. The memfds are sealed against shrinking: a reader never
maps memory that can vanish under it (SIGBUS).

Wire format after the stdlib's 4-byte length word ``FD_MESSAGE`` (-2, which no stdlib
message uses)::

    u64 blob length  (sent together with the descriptor, in one sendmsg)
    blob: u8 flags, u32 buffer count, u32 persistent count, (u64 offset, u64 length) per
          buffer, then the pickle of the rest (``_buffers.split_buffers``)
"""

from __future__ import annotations

import array
import fcntl
import mmap
import os
import socket
import stat
import struct
import time
from collections import OrderedDict
from typing import Any, Optional

from ._buffers import fill, unpickle_buffers
from ._reuse import (
    RESERVED,
    SENT,
    WAIT_MIN,
    WAIT_S,
    hold,
    no_wait_after,
    reusable,
    round_up,
    state_word,
    wait_until,
    watched_views,
)
from ._shm import map_shared

__all__ = [
    "FD_MESSAGE",
    "Inbox",
    "Outbox",
    "blob_for",
    "parse_fds",
]

FD_MESSAGE = -2
KEPT = 3  # memfds a sending end keeps for reuse
MAPPED = 4  # memfds a receiving end keeps mapped
REUSE = 1  # blob flag: a kept memfd (the reader keeps it mapped and frees it when done)
_BLOB_HEAD = struct.Struct("<BII")
_SPAN = struct.Struct("<QQ")
_SEALS = (
    getattr(fcntl, "F_SEAL_SHRINK", 0x2)
    | getattr(fcntl, "F_SEAL_GROW", 0x4)
    | getattr(fcntl, "F_SEAL_SEAL", 0x1)
)
_F_ADD_SEALS = getattr(fcntl, "F_ADD_SEALS", 1033)
_F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", 1034)


class _Memfd:
    __slots__ = ("fd", "map", "size", "state")

    def __init__(self, size: int) -> None:
        fd = os.memfd_create("manycore-message", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            os.posix_fallocate(fd, 0, size)  # no room: ENOSPC/ENOMEM here, not SIGBUS later
            fcntl.fcntl(fd, _F_ADD_SEALS, _SEALS)
            self.map = map_shared(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.size = size
        self.state = state_word(self.map)

    def free(self) -> bool:
        return reusable(self.state[0])

    def close(self) -> None:
        self.state.release()
        _close_quietly(self.map)
        os.close(self.fd)


class Outbox:
    """The memfds one sending end keeps (see above). Not shared with forked children."""

    def __init__(self) -> None:
        self.kept: list[_Memfd] = []
        self.pid = os.getpid()
        self.no_wait_until = 0.0

    def claim(self, need: int) -> tuple[_Memfd, bool]:
        """A memfd with room for ``need`` bytes, marked sent, and whether it is kept.

        Raises:
            OSError: no memory for a new one.
        """
        if self.pid != os.getpid():  # a forked child: the parent's memfds are not ours
            self.close()
            self.pid = os.getpid()
        need = round_up(need)
        fit: Optional[_Memfd] = None
        small: Optional[_Memfd] = None
        for m in self.kept:
            if m.free():
                if m.size >= need:
                    if fit is None or m.size < fit.size:
                        fit = m
                elif small is None:
                    small = m
        if fit is None and (need >= WAIT_MIN or len(self.kept) >= KEPT):
            fit = self._wait_for_one(need)
        if fit is None:
            if len(self.kept) >= KEPT and small is not None:
                self.kept.remove(small)  # too small for what is sent now: replace it
                small.close()
            if len(self.kept) >= KEPT:
                return _Memfd(need), False  # all in use: a one-off
            fit = _Memfd(need)
            self.kept.append(fit)
        fit.state[0] = SENT
        return fit, True

    def _wait_for_one(self, need: int) -> Optional[_Memfd]:
        """A kept memfd that fits and frees up within ``WAIT_S`` (its reader is about to drop
        the last message), or None. Cheaper than a new one; a reader that holds on to what it
        got turns the waiting off for a while (``_reuse.no_wait_after``)."""
        busy = [m for m in self.kept if m.size >= need]
        if not busy or time.monotonic() < self.no_wait_until:
            return None
        if wait_until(lambda: any(m.free() for m in busy), WAIT_S):
            return next(m for m in busy if m.free())
        self.no_wait_until = time.monotonic() + no_wait_after(len(busy))
        return None

    def close(self) -> None:
        for m in self.kept:  # in a forked child: its copies of the parent's (harmless)
            m.close()
        self.kept = []


def blob_for(
    memfd: _Memfd,
    kept: bool,
    body: bytes,
    raws: list[memoryview],
    spans: list[tuple[int, int]],
    persistent: int,
) -> bytes:
    """Copy ``raws`` into ``memfd`` at their ``spans`` (``_buffers.layout``); the blob
    that describes them."""
    view = memoryview(memfd.map)
    try:
        fill(view, RESERVED, spans, raws)
    finally:
        view.release()
    head = _BLOB_HEAD.pack(REUSE if kept else 0, len(spans), persistent)
    return b"".join([head, *(_SPAN.pack(o, n) for o, n in spans), body])


def _sealed(fd: int) -> bool:
    try:
        return fcntl.fcntl(fd, _F_GET_SEALS) & _SEALS == _SEALS
    except OSError:  # a file system without seals: not a memfd
        return False


def parse_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors of an SCM_RIGHTS message (the caller closes them)."""
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(data[: len(data) - len(data) % a.itemsize])
            fds.extend(a)
    return fds


class Inbox:
    """The memfds one receiving end keeps mapped, by inode (a kept memfd comes back with a
    new descriptor number each time)."""

    def __init__(self) -> None:
        self.mapped: OrderedDict[tuple[int, int], mmap.mmap] = OrderedDict()

    def rebuild(self, blob: Any, fd: int) -> Any:
        """The object the blob describes, on the memory of ``fd`` (which this closes).

        Raises:
            OSError: the descriptor is not a sealed memfd big enough for the blob's buffers.
        """
        try:
            view = memoryview(blob)
            flags, count, persistent = _BLOB_HEAD.unpack_from(view)
            at = _BLOB_HEAD.size
            spans = [_SPAN.unpack_from(view, at + i * _SPAN.size) for i in range(count)]
            body = view[at + count * _SPAN.size :]
            st = os.fstat(fd)
            end = RESERVED + max((o + n for o, n in spans), default=0)
            if not stat.S_ISREG(st.st_mode) or st.st_size < end or not _sealed(fd):
                raise OSError(
                    "a big message on this pipe came with a descriptor that is not a sealed "
                    "memfd of the right size; only manycore ends can send big buffers to "
                    "manycore ends"
                )
            if flags & REUSE:
                mm = self._map(fd, st)
                buffers = watched_views(mm, RESERVED, spans, hold(state_word(mm)))
            else:
                whole = memoryview(map_shared(fd, st.st_size))  # freed with the last view
                buffers = [whole[RESERVED + o : RESERVED + o + n] for o, n in spans]
                del whole
        finally:
            os.close(fd)
        return unpickle_buffers(body, buffers, persistent)

    def _map(self, fd: int, st: os.stat_result) -> mmap.mmap:
        key = (st.st_dev, st.st_ino)
        mm = self.mapped.get(key)
        if mm is not None and len(mm) == st.st_size:
            self.mapped.move_to_end(key)
            return mm
        mm = map_shared(fd, st.st_size)
        self.mapped[key] = mm
        while len(self.mapped) > MAPPED:
            _close_quietly(self.mapped.popitem(last=False)[1])
        return mm

    def close(self) -> None:
        while self.mapped:
            _close_quietly(self.mapped.popitem()[1])


def _close_quietly(mm: mmap.mmap) -> None:
    """Unmap, unless arrays are still built on it (then the last of them unmaps it)."""
    try:
        mm.close()
    except (BufferError, ValueError):
        pass
