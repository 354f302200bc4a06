"""Pool payloads: task arguments and results whose big buffers travel in shared memory.

Who runs where::

    process with a pool (owner)                 pool worker
    apply/map: dumps_args/dumps_payload         loads(args): attach the segment (kept
    copy big buffers into a kept segment,  -->  mapped, by name), hold it, build the
    SENT; the task keeps the payload            arrays on it; free it with the last view
    loads(result): attach, hold, build     <--  dumps_payload(result, handoff=True,
    arrays; free with the last view             reuse=True): a kept segment, SENT

The bytes that travel are a small header naming the segment, the buffers' places and the
pickle of the rest (``_buffers.split_buffers``); an ordinary pickle starts with 0x80, a
payload with ``MARK`` ("M"), so ``loads`` reads either. Three ownership modes:

* **Owned by the sender** (``dumps_payload`` with no pool alive, or when the spares are all
  busy): the returned ``bytes`` object holds the segment; the segment is unlinked when that
  object is garbage-collected (the scheduler drops a task's payload when the task settles).
  Readers only attach.
* **Handed off** (``pack``, and a pool worker's results when it has no spare segment free):
  the first reader claims the segment (attaches and unlinks the name at once; the memory goes
  with the last view). ``release(data)`` frees a message that will never be read. Until then
  it stays registered with the creating process's tracker (or, in pool workers, under the
  worker's name prefix, which the pool removes when the worker dies), so nothing outlives
  its creator.
* **Reusable** (task arguments while a pool lives, and results a pool worker sends): the
  writer keeps a few segments (``MAX_SPARES``, ``SPARE_BYTES``) and refills one on the rule
  every reused block follows (``_reuse``): its state word says free, sent, or held by the
  reader whose pid it names; the reader frees it when the last object built on the memory
  is collected, only in that pid (a forked copy of its arrays never does), and a writer
  also takes back a segment whose reader died. Task arguments also keep a lease: their
  segment is not refilled while the task's payload lives (it may be sent again after a
  worker dies). Readers keep their mappings of recent segments. Creating and freeing 64 MiB
  costs several times the copy, so this is what makes big arrays fast.

Without room in shared memory (no ``/dev/shm``, or full) payloads fall back to ordinary
in-band pickles after one ``SharedMemoryWarning``. A payload that needs multiprocessing's
registered reducers (a stdlib ``Connection`` inside, or reducers the program registered;
see ``_reducers``) is an in-band pickle made with them, as the stdlib's pool sends it.

Wire format (little-endian)::

    "MCSHM1", u8 flags (HANDOFF 1, REUSE 2), u8 name length, u16 buffer count,
    u16 persistent count, the segment's name, (u64 offset, u64 length) per buffer,
    the pickle of the rest
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import struct
import threading
from collections import OrderedDict
from typing import Any, Callable, Optional

from . import _buffers, _shm
from ._buffers import (
    fill,
    layout,
    set_shm_threshold,
    shm_failed,
    split_buffers,
    unpickle_buffers,
)
from ._reducers import needs_reducers, reducing_dumps
from ._reuse import RESERVED, SENT, hold, reusable, state_word, watched_views
from ._serialize import argument_error, dumps

__all__ = [
    "MARK",
    "ShmPayload",
    "configure_worker",
    "drop_segments",
    "dumps_args",
    "dumps_payload",
    "dumps_result",
    "loads",
    "loads_later",
    "pack",
    "payload_size",
    "peek",
    "pool_closed",
    "pool_opened",
    "release",
    "unpack",
]

_handoff_prefix: Optional[str] = None  # set in pool workers: results are handed off by prefix


def configure_worker(threshold: Optional[int], prefix: Optional[str]) -> None:
    """In a pool worker: the pool's threshold, and the prefix its handed-off results use."""
    global _handoff_prefix
    set_shm_threshold(threshold)
    _handoff_prefix = prefix


# Header of a shared-memory payload. An ordinary protocol-5 pickle starts with 0x80 (PROTO);
# ours starts with "M" (MARK), so ``loads`` tells them apart from the first byte.
_MAGIC = b"MCSHM1"
# magic, flags, name length, buffer count, how many of those (the last) are persistent ids
_HEAD = struct.Struct("<6sBBHH")
_SPAN = struct.Struct("<QQ")  # offset, length of each buffer in the segment
_HANDOFF = 1
MARK = _MAGIC[0]


class ShmPayload(bytes):
    """Payload bytes that keep their segment alive (owned mode). Pickles as plain bytes."""

    segment: Optional[_shm.Segment]
    lease: Optional[_Lease]

    def __reduce__(self) -> tuple[Any, ...]:
        return (bytes, (bytes(self),))


def dumps_args(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None
) -> bytes:
    """Pickle a call's ``args`` (``(args, kwargs)`` if there are keywords) on the caller's
    thread, naming the culprit on failure; the call kind says which (``CALL``/``CALL_KW``).

    Raises:
        ArgumentPicklingError: an argument cannot be pickled; nothing was sent.
    """
    try:
        return dumps_payload((args, kwargs) if kwargs is not None else args)
    except Exception as exc:
        labelled = [(f"argument {i}", a) for i, a in enumerate(args)]
        labelled += [(f"keyword argument {k!r}", v) for k, v in (kwargs or {}).items()]
        raise argument_error(fn, labelled, exc) from exc


def dumps_payload(obj: Any, *, handoff: bool = False, reuse: Optional[bool] = None) -> bytes:
    """Pickle ``obj`` like ``dumps``, with big buffers placed in shared memory (see above).

    ``handoff=False``: the returned object owns the segment (keep it while any reader may
    need it). ``handoff=True``: the first ``loads`` claims it; see ``release``.
    In a pool worker, handed-off segments carry the worker's name prefix instead of being
    tracked, and the pool removes them if the worker dies before they are read.

    Raises:
        Exception: what ``dumps`` raises for an object that cannot be pickled.
    """
    threshold = _buffers._threshold  # an attribute read: this runs for every task
    if threshold is None:
        data = dumps(obj)
        return reducing_dumps(obj) if needs_reducers(data) else data
    data, raws, persistent = split_buffers(obj, threshold)
    if needs_reducers(data):  # a stdlib Connection inside, say: as the stdlib's pool sends it
        return reducing_dumps(obj)
    if not raws:
        return data
    if reuse is None:
        reuse = not handoff
    return _place(data, raws, persistent, handoff, reuse)


def dumps_result(obj: Any) -> bytes:
    """``dumps_payload(obj, handoff=True, reuse=True)``: a pool worker's result, whose big
    buffers are handed over in a block the worker may reuse once the owner has read it.
    One plain call per result (a ``functools.partial`` with keywords builds a dict each time)."""
    threshold = _buffers._threshold
    if threshold is None:
        data = dumps(obj)
        return reducing_dumps(obj) if needs_reducers(data) else data
    data, raws, persistent = split_buffers(obj, threshold)
    if needs_reducers(data):
        return reducing_dumps(obj)
    if not raws:
        return data
    return _place(data, raws, persistent, True, True)


def _place(
    data: bytes, raws: list[memoryview], persistent: int, handoff: bool, reuse: bool
) -> bytes:
    spans, total = layout(raws)
    seg: Optional[_shm.Segment] = None
    if reuse:
        seg = _spares.take(total, handoff)
    try:
        if seg is None and reuse:
            seg = _spares.create(total, handoff)
        if seg is None:
            reuse = False
            if handoff and _handoff_prefix is not None:
                seg = _shm.Segment.create(total, prefix=_handoff_prefix, track=False)
            else:
                seg = _shm.Segment.create(total)
    except OSError as exc:
        shm_failed(exc)
        # Put the buffers back in-band: pickle again without a callback.
        return dumps(unpickle_buffers(data, raws, persistent))
    fill(seg.buf, RESERVED if reuse else 0, spans, raws)
    name = seg.name.encode()
    flags = (_HANDOFF if handoff and not reuse else 0) | (_REUSE if reuse else 0)
    head = [_HEAD.pack(_MAGIC, flags, len(name), len(spans), persistent), name]
    head.extend(_SPAN.pack(o, n) for o, n in spans)
    head.append(data)
    blob = b"".join(head)
    if reuse:
        if handoff:
            return blob
        payload = ShmPayload(blob)
        payload.segment = None
        payload.lease = _Lease(seg.name)  # leased by take()/create(); released with it
        return payload
    if handoff:
        seg.disown()
        seg.close()
        return blob
    payload = ShmPayload(blob)
    payload.segment = seg
    return payload


# Reusable segments (see "Reusable" above). A pool worker keeps the few segments it hands
# results over in, and a process with a pool keeps those of its tasks' arguments: at most
# MAX_SPARES of them, and at most SPARE_BYTES times the largest one's size in all (no more
# memory than four of the biggest payload, while small segments beside a big one each take
# a place of their own: a map of 16 MiB arrays, then an executor's 128 MiB chunk, each
# keep theirs instead of pushing the other's out at every call).
_REUSE = 2
MAX_SPARES = 8
SPARE_BYTES = 4


class _Lease:
    """Held by an owned payload (task arguments): its segment is not refilled while the
    payload lives, whatever its state word says (the task may be sent again)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __del__(self) -> None:
        try:
            _spares.release(self.name)
        except Exception:  # interpreter shutdown
            pass


class _Spare:
    """A reusable segment and its state word (``_reuse``)."""

    __slots__ = ("segment", "state")

    def __init__(self, segment: _shm.Segment) -> None:
        self.segment = segment
        self.state = state_word(segment.buf)

    def close(self) -> None:
        self.state.release()
        self.segment.unlink()
        self.segment.close()


class _Spares:
    """The reusable segments this process made (see above)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spares: list[_Spare] = []
        self.leased: set[str] = set()
        self.pid = os.getpid()
        self.pools = 0  # live pools in this process (arguments are reused only while > 0)

    def _mine(self) -> bool:
        if self.pid != os.getpid():  # a forked child: the parent's spares are not ours
            self.spares, self.leased, self.pid, self.pools = [], set(), os.getpid(), 0
            return False
        return True

    def owns(self, name: str) -> bool:
        return self._mine() and any(s.segment.name == name for s in self.spares)

    def _free(self, spare: _Spare) -> bool:
        return spare.segment.name not in self.leased and reusable(spare.state[0])

    def take(self, need: int, handoff: bool) -> Optional[_shm.Segment]:
        """A spare with room for ``need`` bytes that may be refilled, marked sent (and
        leased for an owned payload), or None."""
        with self.lock:
            self._mine()
            for spare in self.spares:
                room = spare.segment.size - RESERVED
                if need <= room <= 2 * need + (1 << 20) and self._free(spare):
                    self._claim(spare, handoff)
                    return spare.segment
        return None

    def _claim(self, spare: _Spare, handoff: bool) -> None:
        spare.state[0] = SENT  # the reader holds it, then frees it with its last view
        if not handoff:
            self.leased.add(spare.segment.name)

    def create(self, need: int, handoff: bool) -> Optional[_shm.Segment]:
        """A new reusable segment, or None when this process keeps enough already."""
        if not handoff and self.pools <= 0:
            return None
        with self.lock:
            self._mine()
            while self.spares and self._full(need + RESERVED):
                idle = next((s for s in self.spares if self._free(s)), None)
                if idle is None:
                    return None
                self.spares.remove(idle)  # the oldest idle one
                idle.close()
            if handoff and _handoff_prefix is not None:
                seg = _shm.Segment.create(need + RESERVED, prefix=_handoff_prefix, track=False)
            else:
                seg = _shm.Segment.create(need + RESERVED)
            spare = _Spare(seg)
            self.spares.append(spare)
            self._claim(spare, handoff)
            return seg

    def _full(self, size: int) -> bool:
        """Whether one more spare of ``size`` bytes would exceed the bounds (above)."""
        if len(self.spares) >= MAX_SPARES:
            return True
        sizes = [s.segment.size for s in self.spares]
        return sum(sizes) + size > SPARE_BYTES * max(max(sizes), size)

    def release(self, name: str) -> None:
        self.leased.discard(name)

    def clear(self) -> None:
        """Unlink every spare (a pool worker at exit, or the last pool of a process closed).
        Readers' views stay valid: only the names go."""
        with self.lock:
            if not self._mine():
                return
            while self.spares:
                self.spares.pop().close()


_spares = _Spares()


def pool_opened() -> None:
    """A pool started in this process: task arguments may use reusable segments."""
    with _spares.lock:
        _spares._mine()
        _spares.pools += 1


def pool_closed() -> None:
    """A pool of this process stopped; with the last one, the spares go."""
    with _spares.lock:
        _spares._mine()
        _spares.pools -= 1
        last = _spares.pools <= 0
    if last:
        drop_segments()  # workers' segments too: their names are going with the workers


def drop_segments() -> None:
    """Unlink this process's spares and unmap the segments it attached (a pool worker at
    exit, the last pool of a process closed). Objects built on them keep their memory."""
    _spares.clear()
    _drop_attached()


# Segments this process attached recently, by name: a reused segment is mapped once.
_attached: OrderedDict[str, _shm.Segment] = OrderedDict()
_attached_pid = [os.getpid()]
_attached_lock = threading.Lock()
_MAX_ATTACHED = 8


def _attach_cached(name: str) -> _shm.Segment:
    with _attached_lock:
        if _attached_pid[0] != os.getpid():
            _attached.clear()
            _attached_pid[0] = os.getpid()
        seg = _attached.get(name)
        if seg is not None:
            _attached.move_to_end(name)
            return seg
        seg = _shm.Segment.attach(name)
        # Forget segments their writer has unlinked (they will not come again), then the
        # oldest beyond the bound; views already built keep their memory mapped.
        for old in [n for n in _attached if not os.path.exists(seg._path[: -len(name)] + n)]:
            _attached.pop(old).close()
        _attached[name] = seg
        while len(_attached) > _MAX_ATTACHED:
            _attached.popitem(last=False)[1].close()
        return seg


def _drop_attached() -> None:
    with _attached_lock:
        while _attached:
            _attached.popitem()[1].close()


def _held_views(seg: _shm.Segment, spans: list[tuple[int, int]]) -> list[Any]:
    """Views of a reusable segment's buffers, the segment held by this process until the
    last object built on any of them is gone (``_reuse``)."""
    mm = seg._mmap
    assert mm is not None  # a reusable segment has at least its reserved bytes
    return watched_views(mm, RESERVED, spans, hold(state_word(mm)))


def loads(data: Any) -> Any:
    """Unpickle ``data``: an ordinary pickle, or a shared-memory payload (see above).

    Raises:
        FileNotFoundError: a shared-memory payload whose segment is gone (its owner freed it,
            or it was already read once if it was handed off).
        Exception: whatever unpickling raises.
    """
    if data and data[0] == MARK:
        return _loads_shm(data)
    return pickle.loads(data)


def loads_later(data: Any) -> bytes | Callable[[], Any]:
    """``loads`` in two steps: what needs the sender's segment now (attach or claim it, hold
    its buffers), and the unpickling, which runs code that came with the data, returned as
    a function to call later, on another thread; or, for an ordinary pickle, which needs
    nothing now, ``data`` itself, for ``pickle.loads`` later (no function object per result:
    one fewer object for the garbage collector to track while per-item results wait).

    The caller's engine thread takes the first step for a result as it arrives (the
    worker's segment may be gone once the worker is), and the thread that reads the
    result takes the second, so a result that is slow to rebuild stalls nobody else.

    Raises:
        FileNotFoundError: a shared-memory payload whose segment is gone.
    """
    if not data or data[0] != MARK:
        return bytes(data)
    flags, name, spans, persistent, body = _parse(data)
    if flags & _REUSE:
        if _spares.owns(name):  # our own segment: rare, and read at once
            value = _loads_shm(data)
            return lambda: value
        seg = _attach_cached(name)
        buffers = _held_views(seg, spans)
        return functools.partial(unpickle_buffers, body, buffers, persistent)
    seg = _shm.Segment._claim(name) if flags & _HANDOFF else _shm.Segment.attach(name)
    view = seg.buf
    buffers = [view[o : o + n] for o, n in spans]
    del view

    def rebuild() -> Any:
        try:
            return unpickle_buffers(body, buffers, persistent)
        finally:
            seg.close()  # the objects built on the memory keep it mapped

    return rebuild


def _parse(data: Any) -> tuple[int, str, list[tuple[int, int]], int, memoryview]:
    view = memoryview(data)
    magic, flags, name_len, count, persistent = _HEAD.unpack_from(view)
    if magic != _MAGIC:
        raise pickle.UnpicklingError("not a manycore payload")
    at = _HEAD.size
    name = bytes(view[at : at + name_len]).decode()
    at += name_len
    spans = [_SPAN.unpack_from(view, at + i * _SPAN.size) for i in range(count)]
    at += count * _SPAN.size
    return flags, name, spans, persistent, view[at:]


def _loads_shm(data: Any) -> Any:
    flags, name, spans, persistent, body = _parse(data)
    if flags & _REUSE:
        own = _spares.owns(name)
        seg = _attach_cached(name) if not own else _shm.Segment.attach(name)
        view = seg.buf
        buffers: list[Any]
        if own:
            buffers = [view[RESERVED + o : RESERVED + o + n] for o, n in spans]
        else:
            buffers = _held_views(seg, spans)
        try:
            return unpickle_buffers(body, buffers, persistent)
        finally:
            del buffers, view
            if own:
                seg.close()
    seg = _shm.Segment._claim(name) if flags & _HANDOFF else _shm.Segment.attach(name)
    view = seg.buf
    buffers = [view[o : o + n] for o, n in spans]
    try:
        return unpickle_buffers(body, buffers, persistent)
    finally:
        del buffers, view
        seg.close()  # the objects built on the memory keep it mapped


def pack(obj: Any) -> bytes:
    """Pickle ``obj`` for another process: small bytes, with big buffers in a segment that the
    reader of ``unpack`` takes over. ``release`` frees a message that will never be unpacked;
    otherwise the segment lives until this process ends (the tracker frees it then, even after
    SIGKILL), so unpack before the sender exits.

    Raises:
        Exception: what ``dumps`` raises for an object that cannot be pickled.
    """
    return dumps_payload(obj, handoff=True)


def unpack(data: Any) -> Any:
    """Rebuild what ``pack`` made (any ``bytes``-like). Big arrays come back as views of
    shared memory; a message can be unpacked once.

    Raises:
        FileNotFoundError: its segment is gone (already unpacked or released, or the sender
            exited before this process read it).
    """
    return loads(data)


def release(data: Any) -> None:
    """Free the shared memory of a ``pack``ed message that will not be unpacked (idempotent;
    nothing to do for a message without big buffers)."""
    if not data or data[0] != MARK:
        return
    try:
        _, name, _, _, _ = _parse(data)
    except Exception:
        return
    if not name.startswith(_shm.PREFIX) or "/" in name:
        return
    try:
        os.unlink(os.path.join(_shm.shm_dir(), name))
    except OSError:
        pass


def payload_size(data: Any) -> int:
    """Bytes of shared memory a payload refers to (0 for an ordinary pickle)."""
    if not data or data[0] != MARK:
        return 0
    _, _, spans, _, _ = _parse(data)
    return sum(n for _, n in spans)


PEEK_LIMIT = 1 << 16  # bytes: a payload longer than this is not peeked into


class _CodeFree(pickle.Unpickler):
    """An unpickler that refuses every global, so no callable (and no ``__reduce__`` of the
    sender's choosing) can run: only plain data comes out."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name}: peek rebuilds plain data only")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("peek rebuilds plain data only")


def peek(data: Any) -> Any:
    """Rebuild an ordinary pickle of plain data (numbers, strings, bytes, tuples, lists,
    dicts, sets), for a message about it, without running any code that came with it.

    The caller uses it to describe a task whose worker died: the task's arguments are
    someone else's pickle, and rebuilding them for real could run anything (a ``__reduce__``
    that segfaults took a caller down that way, issue 13).

    Raises:
        ValueError: ``data`` is a shared-memory payload or longer than ``PEEK_LIMIT``.
        pickle.UnpicklingError: it holds anything but plain data.
    """
    if not data or data[0] == MARK or len(data) > PEEK_LIMIT:
        raise ValueError("not peeked into: a shared-memory payload, or too long")
    return _CodeFree(io.BytesIO(data)).load()
