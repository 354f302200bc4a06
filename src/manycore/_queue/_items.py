"""Items on a queue: how an object becomes a record, and big buffers in segments of their own.

Big buffers: an item whose NumPy arrays, ``bytearray``/``memoryview``/``PickleBuffer``
objects and big ``bytes`` add up to ``_buffers.shm_threshold()`` bytes or more (64 KiB
by default), and a top-level ``bytes`` object too big for the ring, is split
(``_buffers.split_buffers``): the buffers are copied once into a segment of their own,
named after the queue (``<prefix>-s...``), and the record carries its name, the buffers'
places and the pickle of the rest. ``get`` builds the arrays on the segment's memory: no
copy on the way out. Creating and freeing a 64 MiB segment costs ten times the copy into a
warm one, so the queue keeps up to ``SEG_SLOTS`` segments for reuse, named in the header.
They follow the rule every reused block follows (``_reuse``): each starts with a state
word, free, sent (claimed by a producer, its record queued), or held by the reader whose pid
it names; that reader sets it free again when the last object built on the memory is
garbage-collected, and a producer also takes back a segment whose reader has died. When
every kept segment is busy, the item gets a one-off segment (``<prefix>-o...``) that its
reader unlinks on receipt. Every name carries the queue's prefix, so the creator's cleanup
and its tracker free what is left.

Small items are one PICKLE record (``Queue.put`` inlines that path), a big top-level
``bytes`` object a BYTES record (no pickle at all), and an item with big buffers a SEG
record (``_layout`` has the bytes).
"""

from __future__ import annotations

import functools
import os
import pickle
import threading
import time
from typing import Any, Optional

from .. import _buffers, _reuse
from .._buffers import fill, has_big_bytes, layout, split_buffers, unpickle_buffers
from .._errors import ArgumentPicklingError
from .._reducers import needs_reducers, reducing_dumps
from .._reuse import (
    WAIT_MIN,
    WAIT_S,
    no_wait_after,
    reusable,
    round_up,
    wait_until,
    watched_views,
)
from .._serialize import dumps
from ._fifo import RecordFifo
from ._layout import (
    _CREATING,
    _SEG_HEAD,
    _SPAN,
    BYTES,
    HEADER_BYTES,
    NAME_BYTES,
    PICKLE,
    SEG,
    SEG_BYTES,
    SEG_FREE,
    SEG_MAPPINGS,
    SEG_RESERVED,
    SEG_REUSE,
    SEG_SENT,
    SEG_SLOT0,
    _File,
    _state,
)

__all__ = ["ItemFifo"]

# A top-level bytes object at least this big is copied raw, skipping the pickler's own copy.
RAW_MIN = 64 << 10
_ploads = pickle.loads  # records hold plain pickles (never a pool payload)


def _holds_big_bytes(obj: Any, size: int) -> bool:
    """Whether ``obj``, pickled in ``size`` bytes, holds bytes objects to take out of band."""
    least = _buffers.shm_threshold()
    return least is not None and size >= least and has_big_bytes(obj, least)


def _any_free(blocks: list[_File]) -> bool:
    return any(_state(block)[0] == SEG_FREE for block in blocks)


class ItemFifo(RecordFifo):
    """A ``RecordFifo`` of Python objects: encoding and decoding records, and the kept
    segments of big items (named in the header, mapped once per process)."""

    def _attach(self, prefix: str, ring: _File, created: bool) -> None:
        super()._attach(prefix, ring, created)
        self._segments: dict[str, _File] = {}  # big-buffer segments mapped here, oldest first
        self._segments_lock = threading.Lock()  # threads of this process share the dict
        self._seg_no_wait_until = 0.0

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
            if needs_reducers(data):  # a stdlib Connection, say: as the stdlib's put sends it
                data, raws, persistent = reducing_dumps(obj), [], 0
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
                self._unlock()
            if not wait_until(functools.partial(_any_free, busy), WAIT_S):
                self._seg_no_wait_until = time.monotonic() + no_wait_after(len(busy))
        if replaced:  # outside the mutex: freeing 64 MiB takes about 10 ms
            self._forget_segment(replaced)
            _File.unlink(replaced)
        if empty < 0:  # every kept segment is in use: a one-off, unlinked by its reader
            name, block = _File.create_unique(f"{self._prefix}-o", need)
            return name, block, False
        try:
            # outside the mutex: this takes a while
            name, block = _File.create_unique(f"{self._prefix}-s", need)
        except BaseException:
            self._lock()
            self._set_name(empty, "")
            self._unlock()
            raise
        _state(block)[0] = SEG_SENT
        self._lock()
        self._set_name(empty, name)
        self._unlock()
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
