"""Pickling for manycore: fast for plain data, by value for what only the caller knows.

Rules:

* ``dumps`` tries the C pickler first (about 10x cheaper than building a cloudpickle
  pickler for a small tuple). If that fails, or if the stream names ``__main__`` (a function
  or class from a script, ``python -c`` or a notebook, which a worker must not look up by
  name because the main module is never re-executed there), it pickles again with
  cloudpickle, which sends such objects by value.
* ``FunctionCache`` keeps the pickled bytes of module-level functions, so per-item
  ``apply_async``/``submit`` pay a dict lookup instead of a pickle.
* ``loads`` is ``pickle.loads`` for an ordinary pickle (cloudpickle's output only needs
  cloudpickle importable), and also reads the shared-memory payloads below.

Big buffers (``dumps_payload``, ``pack``): task arguments, results and queued messages whose
pickle-5 out-of-band buffers (NumPy arrays, ``PickleBuffer``) or big ``bytes``/``bytearray``/
``memoryview`` objects add up to at least ``shm_threshold()`` bytes are laid out in one
shared-memory segment (``_shm``); the bytes that travel are a small header naming the segment,
the buffers' offsets and the pickle of the rest. One copy on the way (into the segment); the
receiver's arrays and memoryviews are views of the segment (writable; zero-copy), while
``bytes``/``bytearray`` are copied out, since they own their memory. Object arrays and
non-contiguous arrays are pickled in-band by NumPy itself. Three ownership modes:

* owned by the sender (``dumps_payload`` with no pool alive, or when the spares are all
  busy): the returned ``bytes`` object holds the segment;
  the segment is unlinked when that object is garbage-collected (the scheduler drops a task's
  payload when the task settles). Readers only attach.
* handed off (``pack``, and a pool worker's results when it has no spare segment free): the
  first reader claims the segment (attaches and unlinks the name at once; the memory goes
  with the last view). ``release(data)`` frees a message that will never be read. Until
  then it stays registered with the creating process's tracker (or, in pool workers, under
  the worker's name prefix, which the pool removes when the worker dies), so nothing
  outlives its creator.
* reusable (task arguments while a pool lives, and results a pool worker sends): the writer
  keeps a few segments and refills one only after every reader's views of it are gone (a
  busy byte in the segment, cleared by the reader's garbage collection); readers keep their
  mappings of recent segments. Creating and freeing 64 MiB costs several times the copy,
  so this is what makes big arrays fast; see the note above ``_Spares``.

Without room in shared memory (no ``/dev/shm``, or full) payloads fall back to ordinary
in-band pickles after one ``SharedMemoryWarning``.

Nothing here decides what is trusted: the pool only ever unpickles bytes from its own
processes (see docs/design.md, "No one else gets in").
"""

from __future__ import annotations

import functools
import io
import itertools
import os
import pickle
import struct
import threading
import types
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Callable, Optional

import cloudpickle

from . import _shm
from ._errors import ArgumentPicklingError

__all__ = [
    "BigBuffer",
    "FunctionCache",
    "SharedMemoryWarning",
    "WorkerFunctionCache",
    "argument_error",
    "dumps",
    "dumps_args",
    "dumps_payload",
    "fill",
    "first_unpicklable",
    "has_big_bytes",
    "inband_unless_big",
    "layout",
    "loads",
    "pack",
    "release",
    "set_shm_threshold",
    "shm_threshold",
    "split_buffers",
    "unpack",
    "unpickle_buffers",
    "watched_views",
]

PROTOCOL = 5
_MAIN = b"__main__"


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` so that any process of the pool can rebuild it.

    Raises:
        Exception: whatever cloudpickle raises for an object that cannot be pickled.
    """
    try:
        data = pickle.dumps(obj, PROTOCOL)
    except Exception:
        return cloudpickle.dumps(obj, PROTOCOL)  # type: ignore[no-any-return]
    if _MAIN in data:
        return cloudpickle.dumps(obj, PROTOCOL)  # type: ignore[no-any-return]
    return data


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


def first_unpicklable(labelled: Iterable[tuple[str, Any]]) -> tuple[str, Any, Exception] | None:
    """The first ``(label, value)`` whose value cannot be pickled, with its error, or None."""
    for label, value in labelled:
        try:
            dumps(value)
        except Exception as exc:
            return label, value, exc
    return None


def argument_error(
    fn: Callable[..., Any], labelled: Iterable[tuple[str, Any]], exc: Exception
) -> ArgumentPicklingError:
    """An error that names the first of ``labelled`` (arguments, input items) that fails."""
    name = getattr(fn, "__qualname__", None) or repr(fn)
    culprit = first_unpicklable(labelled)
    if culprit is None:
        return ArgumentPicklingError(
            f"cannot send the arguments of {name}() to a worker: {exc}", argument=None
        )
    where, value, inner = culprit
    return ArgumentPicklingError(
        f"cannot send {where} of {name}() to a worker: a {type(value).__name__} object cannot "
        f"be pickled ({inner}). Pass something picklable (plain data, or a path/name the task "
        "can use to open or build the object itself).",
        argument=where,
    )


class FunctionCache:
    """Pickled bytes of functions that pickle by reference, kept per function object.

    A function importable from a module pickles to its module and name; the worker looks
    it up itself, so those bytes never go stale and are worth keeping (pickling costs a
    few microseconds, a dict lookup far less). A function pickled by value (``__main__``,
    a lambda, a closure) captures its globals and closure cells, whose contents may change
    in place between calls; it is pickled afresh at every call so that each call sees the
    current state. A ``map`` pickles its function once for all its items either way.
    """

    def __init__(self) -> None:
        self._blobs: dict[int, tuple[weakref.ref[Any], bytes]] = {}
        self._lock = threading.Lock()

    def dumps(self, fn: Callable[..., Any]) -> bytes:
        """The pickled bytes of ``fn``.

        Raises:
            ArgumentPicklingError: ``fn`` cannot be pickled.
        """
        entry = self._blobs.get(id(fn))
        if entry is not None and entry[0]() is fn:
            return entry[1]
        try:
            blob = dumps(fn)
        except Exception as exc:
            raise ArgumentPicklingError(
                f"cannot send the function {fn!r} to a worker: {exc}. Define it at module "
                "level or make the objects it captures picklable.",
                argument="function",
            ) from exc
        if type(fn) is types.FunctionType and _by_reference(blob):
            key = id(fn)
            ref = weakref.ref(fn, functools.partial(self._forget, key))
            with self._lock:
                self._blobs[key] = (ref, blob)
        return blob

    def _forget(self, key: int, ref: weakref.ref[Any]) -> None:
        with self._lock:
            entry = self._blobs.get(key)
            if entry is not None and entry[0] is ref:
                del self._blobs[key]


def _by_reference(blob: bytes) -> bool:
    # cloudpickle's by-value form always names its own reconstructors; a by-reference
    # pickle is only a module and a qualified name.
    return b"cloudpickle" not in blob


class WorkerFunctionCache:
    """In a worker: the last few functions rebuilt from their pickled bytes."""

    SIZE = 64

    def __init__(self) -> None:
        self._fns: OrderedDict[bytes, Callable[..., Any]] = OrderedDict()
        self._last_blob: bytes | None = None
        self._last_fn: Callable[..., Any] | None = None

    def get(self, blob: bytes) -> Callable[..., Any]:
        if blob is self._last_blob and self._last_fn is not None:
            return self._last_fn
        fn = self._fns.get(blob)
        if fn is None:
            fn = loads(blob)
            self._fns[blob] = fn
            if len(self._fns) > self.SIZE:
                self._fns.popitem(last=False)
        else:
            self._fns.move_to_end(blob)
        self._last_blob, self._last_fn = blob, fn
        return fn


# --------------------------------------------------------------------------------------------
# Big buffers through shared memory.


class SharedMemoryWarning(ResourceWarning):
    """Shared memory could not be used; big data goes through pipes instead (slower)."""


THRESHOLD_VAR = "MANYCORE_SHM_THRESHOLD"
# Below this many bytes of buffers a pipe is as fast as a segment. Measured on our 2-core CI
# machine (2026-11-27), Pool(1).apply(identity, (array,)) round trips, best of 7x20:
#   16 KiB: pipe 249 us, shared memory 342 us;  64 KiB: 430 / 353 us;  128 KiB: 786 / 381 us;
#   1 MiB: 6979 / 464 us;  4 MiB: 26.7 / 1.0 ms.  So the crossing is a little under 64 KiB.
DEFAULT_THRESHOLD = 1 << 16


def _threshold_from_env() -> Optional[int]:
    raw = os.environ.get(THRESHOLD_VAR)
    if raw is None or raw == "":
        return DEFAULT_THRESHOLD
    if raw.lower() in ("off", "none", "never"):
        return None
    try:
        return max(1, int(raw))
    except ValueError:
        return DEFAULT_THRESHOLD


_threshold: Optional[int] = _threshold_from_env()
_handoff_prefix: Optional[str] = None  # set in pool workers: results are handed off by prefix
_warned = False


def shm_threshold() -> Optional[int]:
    """Payloads whose big buffers add up to this many bytes go through shared memory (None:
    never). Set with ``set_shm_threshold`` or ``$MANYCORE_SHM_THRESHOLD`` (bytes, or "off")."""
    return _threshold


def set_shm_threshold(nbytes: Optional[int]) -> None:
    """Change the threshold for this process and the pools it starts afterwards (their
    workers use the value their pool was created with). ``None`` turns shared memory off."""
    global _threshold
    if nbytes is not None and nbytes < 1:
        raise ValueError(f"the shared-memory threshold must be at least 1 byte (got {nbytes})")
    _threshold = nbytes


def _configure_worker(threshold: Optional[int], prefix: Optional[str]) -> None:
    """In a pool worker: the pool's threshold, and the prefix its handed-off results use."""
    global _threshold, _handoff_prefix
    _threshold = threshold
    _handoff_prefix = prefix


def _shm_failed(exc: BaseException) -> None:
    # Each payload tries again (a full /dev/shm may drain), but the user is told only once.
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"manycore cannot use shared memory ({exc}); big arrays and buffers will go "
            "through pipes (or a queue's ring) instead, which is much slower. Give /dev/shm "
            f"more room (e.g. docker run --shm-size=1g) or set ${_shm.DIR_VAR} to a larger "
            "tmpfs directory; on a Pipe the memory is the machine's (memfd): free some, or "
            "raise the descriptor limit (ulimit -n) if that is what the error names.",
            SharedMemoryWarning,
            stacklevel=4,
        )


# Header of a shared-memory payload. An ordinary protocol-5 pickle starts with 0x80 (PROTO);
# ours starts with "M", so ``loads`` tells them apart from the first byte.
_MAGIC = b"MCSHM1"
# magic, flags, name length, buffer count, how many of those (the last) are persistent ids
_HEAD = struct.Struct("<6sBBHH")
_SPAN = struct.Struct("<QQ")  # offset, length of each buffer in the segment
_HANDOFF = 1
_ALIGN = 64
_M = _MAGIC[0]


class ShmPayload(bytes):
    """Payload bytes that keep their segment alive (owned mode). Pickles as plain bytes."""

    segment: Optional[_shm.Segment]
    lease: Optional[_Lease]

    def __reduce__(self) -> tuple[Any, ...]:
        return (bytes, (bytes(self),))


def _rebuild_bytes(view: Any) -> bytes:
    return bytes(memoryview(view))  # from a ctypes array directly, 5x slower


def _rebuild_bytearray(view: Any) -> bytearray:
    return bytearray(memoryview(view))


def _rebuild_memoryview(view: Any, fmt: str, shape: tuple[int, ...]) -> memoryview:
    mv: Any = memoryview(view).cast("B")  # a ctypes view's format is "<B": make it plain
    return mv if fmt == "B" and len(shape) == 1 else mv.cast(fmt, shape)  # type: ignore[no-any-return]


class _Keeper:
    """A buffer callback: buffers of ``threshold`` bytes or more go out of band."""

    __slots__ = ("buffers", "threshold")

    def __init__(self, buffers: list[pickle.PickleBuffer], threshold: int) -> None:
        self.buffers = buffers
        self.threshold = threshold

    def __call__(self, buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes < self.threshold:
            return True  # small: in-band
        self.buffers.append(buf)
        return False


class _BigBytesPickler(pickle.Pickler):
    """Sends big bytes, bytearray and memoryview objects out of band too (NumPy arrays and
    PickleBuffers already are, through the buffer callback). The C pickler never asks
    ``reducer_override`` about exact bytes, so they are caught as persistent ids, collected
    in ``extra`` and rebuilt by ``_BigBytesUnpickler``. Used only for payloads that hold such
    an object (a Python call per pickled object is too slow for everything)."""

    def __init__(self, file: Any, threshold: int, callback: Callable[[Any], Any]) -> None:
        super().__init__(file, PROTOCOL, buffer_callback=callback)
        self._min = threshold
        self.extra: list[pickle.PickleBuffer] = []

    def persistent_id(self, obj: Any) -> Any:
        t = type(obj)
        if t is bytes or t is bytearray:
            if len(obj) < self._min:
                return None
            kind: tuple[Any, ...] = (0,) if t is bytes else (1,)
        elif t is memoryview and obj.nbytes >= self._min and obj.c_contiguous:
            kind = (2, obj.format, obj.shape)
        else:
            return None
        self.extra.append(pickle.PickleBuffer(obj))
        return ("manycore-buffer", len(self.extra) - 1, *kind)


class _BigBytesUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, buffers: list[Any], extra: list[Any]) -> None:
        super().__init__(file, buffers=buffers)
        self._extra = extra

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "manycore-buffer"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        view = self._extra[pid[1]]
        kind = pid[2]
        if kind == 0:
            return _rebuild_bytes(view)
        if kind == 1:
            return _rebuild_bytearray(view)
        return _rebuild_memoryview(view, pid[3], pid[4])


def has_big_bytes(obj: Any, threshold: int, depth: int = 2) -> bool:
    """Whether ``obj``, or an item of it (two levels deep, the first 256 items of each
    tuple, list or dict), is a bytes-like object of ``threshold`` bytes or more."""
    t = type(obj)
    if t is bytes or t is bytearray:
        return len(obj) >= threshold
    if t is memoryview:
        return bool(obj.nbytes >= threshold)
    if depth:
        if t is tuple or t is list:
            return any(has_big_bytes(x, threshold, depth - 1) for x in obj[:256])
        if t is dict:
            return any(
                has_big_bytes(v, threshold, depth - 1) for _, v in zip(range(256), obj.values())
            )
    return False


def split_buffers(obj: Any, threshold: int) -> tuple[bytes, list[memoryview], int]:
    """``obj`` pickled with its big buffers taken out: ``(pickle, raws, persistent)``.

    ``raws`` are the buffers' memory (NumPy arrays and ``PickleBuffer`` objects of
    ``threshold`` bytes or more each, then big ``bytes``/``bytearray``/``memoryview`` objects;
    the last ``persistent`` of them are those, see ``_BigBytesPickler``). When they add up to
    less than ``threshold``, ``raws`` is empty and ``pickle`` is an ordinary one, as
    ``dumps`` makes. ``unpickle_buffers`` rebuilds the object from views of the raws.

    Raises:
        Exception: what ``dumps`` raises for an object that cannot be pickled.
    """
    buffers: list[pickle.PickleBuffer] = []
    data: Optional[bytes] = None
    # Big bytes-like objects are pickled in-band by default: they go to a pickler that takes
    # them out. A big one on its own goes there at once (pickling it in band first would
    # copy it, and searching the copy for __main__ costs as much again).
    t = type(obj)
    if not ((t is bytes or t is bytearray or t is memoryview) and has_big_bytes(obj, threshold)):
        try:
            data = pickle.dumps(obj, PROTOCOL, buffer_callback=buffers.append)
        except Exception:  # e.g. a memoryview, or something only cloudpickle can do
            data = None
        if data is not None and not buffers and len(data) < threshold:
            return (data if _MAIN not in data else dumps(obj)), [], 0  # the common case
        if buffers and sum(b.raw().nbytes for b in buffers) < threshold:
            return dumps(obj), [], 0  # small arrays: in-band after all
        if (
            data is not None
            and _MAIN not in data
            and len(data) >= threshold
            and has_big_bytes(obj, threshold)
        ):
            data = None  # big bytes inside: take them out too
    keep = _Keeper(buffers, threshold)
    extra: list[pickle.PickleBuffer] = []
    if data is None:
        buffers.clear()
        try:
            out = io.BytesIO()
            pickler = _BigBytesPickler(out, threshold, keep)
            pickler.dump(obj)
            data, extra = out.getvalue(), pickler.extra
        except Exception:
            data = None
    if data is None or _MAIN in data:
        buffers.clear()
        extra = []
        data = cloudpickle.dumps(obj, PROTOCOL, buffer_callback=keep)
    return data, [b.raw() for b in buffers] + [b.raw() for b in extra], len(extra)


class BigBuffer(Exception):
    """Raised by ``inband_unless_big`` on meeting a buffer worth moving out of band."""


def inband_unless_big(buf: pickle.PickleBuffer) -> bool:
    """A ``buffer_callback`` for a first, cheap pickle: small buffers go in band; a buffer of
    ``shm_threshold()`` bytes or more raises ``BigBuffer``, so the caller takes the object
    apart with ``split_buffers`` instead of copying the buffer into the pickle."""
    threshold = _threshold
    if threshold is not None and buf.raw().nbytes >= threshold:
        raise BigBuffer
    return True


def unpickle_buffers(body: Any, buffers: list[Any], persistent: int) -> Any:
    """The object ``split_buffers`` took apart, from ``body`` (its pickle) and views of its
    raws (``buffers``, in the same order)."""
    if not persistent:
        return pickle.loads(body, buffers=buffers)
    split = len(buffers) - persistent
    return _BigBytesUnpickler(io.BytesIO(body), buffers[:split], buffers[split:]).load()


def dumps_payload(obj: Any, *, handoff: bool = False, reuse: Optional[bool] = None) -> bytes:
    """Pickle ``obj`` like ``dumps``, with big buffers placed in shared memory (see above).

    ``handoff=False``: the returned object owns the segment (keep it while any reader may
    need it). ``handoff=True``: the first ``loads`` claims it; see ``release``.
    In a pool worker, handed-off segments carry the worker's name prefix instead of being
    tracked, and the pool removes them if the worker dies before they are read.

    Raises:
        Exception: what ``dumps`` raises for an object that cannot be pickled.
    """
    threshold = _threshold
    if threshold is None:
        return dumps(obj)
    data, raws, persistent = split_buffers(obj, threshold)
    if not raws:
        return data
    if reuse is None:
        reuse = not handoff
    return _place(data, raws, persistent, handoff, reuse)


def layout(raws: list[memoryview]) -> tuple[list[tuple[int, int]], int]:
    """Where ``raws`` go in one block: ``(offset, length)`` of each, 64-byte aligned, and the
    bytes they need in all."""
    spans = []
    total = 0
    for raw in raws:
        spans.append((total, raw.nbytes))
        total += -(-raw.nbytes // _ALIGN) * _ALIGN
    return spans, total


def fill(view: memoryview, base: int, spans: list[tuple[int, int]], raws: list[memoryview]) -> None:
    """Copy ``raws`` into ``view`` at ``base`` plus their ``layout`` offsets."""
    for (offset, length), raw in zip(spans, raws):
        view[base + offset : base + offset + length] = raw


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
        _shm_failed(exc)
        # Put the buffers back in-band: pickle again without a callback.
        return dumps(unpickle_buffers(data, raws, persistent))
    fill(seg.buf, _RESERVED if reuse else 0, spans, raws)
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


# Reusable segments. Creating a segment costs far more than filling it (the kernel allocates
# and zeroes every page, and frees them at unlink: about 2.5 us per 4 KiB page on our CI
# machine, so 40 ms for 64 MiB against 6 ms for the copy). So a pool worker keeps the few
# segments it hands results over in, and a process with a pool keeps those of its tasks'
# arguments, and fills them again once every reader is done with them. "Done" is a byte at the
# start of the segment: the writer sets it, and the reader clears it when the last of the
# views it built (NumPy arrays, memoryviews) is garbage-collected; the writer never refills a
# segment whose byte is set, so nobody's array changes under it. A reader that dies leaves
# the byte set: that segment is not reused, and goes when the writer trims its spares.
_REUSE = 2
_RESERVED = 64  # bytes before the data of a reusable segment; byte 0 is the busy flag
_MAX_SPARES = 4


class _Lease:
    """Held by an owned payload (task arguments): its segment is not refilled while the
    payload lives, whatever the busy byte says (the task may be sent again)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __del__(self) -> None:
        try:
            _spares.release(self.name)
        except Exception:  # interpreter shutdown
            pass


class _Spares:
    """The reusable segments this process made (see above)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.segments: list[_shm.Segment] = []
        self.leased: set[str] = set()
        self.pid = os.getpid()
        self.pools = 0  # live pools in this process (arguments are reused only while > 0)

    def _mine(self) -> bool:
        if self.pid != os.getpid():  # a forked child: the parent's spares are not ours
            self.segments, self.leased, self.pid, self.pools = [], set(), os.getpid(), 0
            return False
        return True

    def owns(self, name: str) -> bool:
        return self._mine() and any(seg.name == name for seg in self.segments)

    def take(self, need: int, handoff: bool) -> Optional[_shm.Segment]:
        """A spare with room for ``need`` bytes that nobody uses, marked busy (and leased
        for an owned payload), or None."""
        with self.lock:
            self._mine()
            for seg in self.segments:
                room = seg.size - _RESERVED
                if (
                    need <= room <= 2 * need + (1 << 20)
                    and seg.name not in self.leased
                    and seg.buf[0] == 0
                ):
                    self._claim(seg, handoff)
                    return seg
        return None

    def _claim(self, seg: _shm.Segment, handoff: bool) -> None:
        seg.buf[0] = 1  # busy until every reader's views are gone
        if not handoff:
            self.leased.add(seg.name)

    def create(self, need: int, handoff: bool) -> Optional[_shm.Segment]:
        """A new reusable segment, or None when this process keeps enough already."""
        if not handoff and self.pools <= 0:
            return None
        with self.lock:
            self._mine()
            if len(self.segments) >= _MAX_SPARES:
                idle = [s for s in self.segments if s.name not in self.leased and s.buf[0] == 0]
                if not idle:
                    return None
                self._drop(idle[0])
            if handoff and _handoff_prefix is not None:
                seg = _shm.Segment.create(need + _RESERVED, prefix=_handoff_prefix, track=False)
            else:
                seg = _shm.Segment.create(need + _RESERVED)
            self.segments.append(seg)
            self._claim(seg, handoff)
            return seg

    def _drop(self, seg: _shm.Segment) -> None:
        self.segments.remove(seg)
        seg.unlink()
        seg.close()

    def release(self, name: str) -> None:
        self.leased.discard(name)

    def clear(self) -> None:
        """Unlink every spare (a pool worker at exit, or the last pool of a process closed).
        Readers' views stay valid: only the names go."""
        with self.lock:
            if not self._mine():
                return
            for seg in list(self.segments):
                self._drop(seg)


_spares = _Spares()


def _pool_opened() -> None:
    """A pool started in this process: task arguments may use reusable segments."""
    with _spares.lock:
        _spares._mine()
        _spares.pools += 1


def _pool_closed() -> None:
    """A pool of this process stopped; with the last one, the spares go."""
    with _spares.lock:
        _spares._mine()
        _spares.pools -= 1
        last = _spares.pools <= 0
    if last:
        _spares.clear()
        _drop_attached()  # workers' segments: their names are going with the workers


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


def _tracked_views(seg: _shm.Segment, spans: list[tuple[int, int]]) -> list[Any]:
    """Views of a reusable segment's buffers that clear its busy byte once the last object
    built on any of them is gone (see ``watched_views``)."""
    mm = seg._mmap
    assert mm is not None  # a reusable segment has at least its reserved bytes
    flag = seg.buf[0:1]

    def all_gone() -> None:
        flag[0] = 0

    return watched_views(mm, _RESERVED, spans, all_gone)


def watched_views(
    mm: Any, base: int, spans: list[tuple[int, int]], all_gone: Callable[[], None]
) -> list[Any]:
    """Writable views of ``mm[base + offset : base + offset + length]`` for each span; once
    the last object built on any of them is garbage-collected, ``all_gone()`` runs (in
    whatever thread collects it: it must only write memory, never take a lock).

    The views are ctypes arrays over the mapping: whatever keeps a view of their memory
    (a NumPy array and every array derived from it, a memoryview) keeps a reference to the
    ctypes object itself, so its collection means nobody uses the memory any more. (A
    memoryview slice would not do: NumPy re-exports the underlying buffer and drops the
    slice at once.)"""
    try:
        import ctypes
    except ImportError:  # pragma: no cover - a Python without ctypes: never mark it free
        view = memoryview(mm)
        return [view[base + o : base + o + n] for o, n in spans]
    views: list[Any] = []
    for offset, length in spans:
        if length:
            views.append((ctypes.c_ubyte * length).from_buffer(mm, base + offset))
        else:
            views.append(bytearray())
    total = len(views)
    gone = itertools.count(1)  # next() is atomic: no lock, which a finalizer must not take

    def one_gone() -> None:
        if next(gone) == total:
            all_gone()

    for view in views:
        if isinstance(view, bytearray):
            one_gone()  # nothing of the segment in it
        else:
            weakref.finalize(view, one_gone)
    return views


def loads(data: Any) -> Any:
    """Unpickle ``data``: an ordinary pickle, or a shared-memory payload (see above).

    Raises:
        FileNotFoundError: a shared-memory payload whose segment is gone (its owner freed it,
            or it was already read once if it was handed off).
        Exception: whatever unpickling raises.
    """
    if data and data[0] == _M:
        return _loads_shm(data)
    return pickle.loads(data)


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
            buffers = [view[_RESERVED + o : _RESERVED + o + n] for o, n in spans]
        else:
            buffers = _tracked_views(seg, spans)
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
    if not data or data[0] != _M:
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
    if not data or data[0] != _M:
        return 0
    _, _, spans, _, _ = _parse(data)
    return sum(n for _, n in spans)
