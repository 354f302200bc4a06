"""Big buffers out of band: which buffers, how they are taken out of a pickle and put back.

Task arguments, results, queue items and pipe messages whose pickle-5 out-of-band buffers
(NumPy arrays, ``PickleBuffer``) or big ``bytes``/``bytearray``/``memoryview`` objects add up
to at least ``shm_threshold()`` bytes travel with their buffers in shared memory: one copy on
the way in, none on the way out. This module is what the three transports (``_payload`` for
the pool, ``_queue`` for queues, ``_memfd`` for pipes) share about it:

* **Which**: ``shm_threshold()`` (``$MANYCORE_SHM_THRESHOLD``, ``set_shm_threshold``);
  ``has_big_bytes`` finds big bytes-like objects, and ``inband_unless_big`` is a
  ``buffer_callback`` for a first cheap pickle that raises ``BigBuffer`` on a big buffer.
* **Taking them out**: ``split_buffers(obj, threshold)`` gives the pickle of the rest and the
  raw buffers; ``unpickle_buffers(body, views, persistent)`` rebuilds the object on views of
  wherever the raws were copied. The receiver's arrays and memoryviews are views of that
  memory (writable; zero-copy), while ``bytes``/``bytearray`` are copied out, since they own
  their memory. Object arrays and non-contiguous arrays are pickled in-band by NumPy itself.
* **Where they go in a block**: ``layout`` (64-byte aligned offsets) and ``fill`` (the copy).
* **Without shared memory** (no ``/dev/shm``, full, or no memory for a memfd): the writer
  sends the item in band, after one ``SharedMemoryWarning`` per process (``shm_failed``).

Who keeps the block, and when it may be refilled, is the transport's business (``_reuse``
holds the one rule they follow).
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from typing import Any, Callable, Optional

from . import _shm
from ._serialize import MAIN, PROTOCOL, cloudpickle_dumps, dumps

__all__ = [
    "DEFAULT_THRESHOLD",
    "THRESHOLD_VAR",
    "BigBuffer",
    "SharedMemoryWarning",
    "fill",
    "has_big_bytes",
    "inband_unless_big",
    "layout",
    "set_shm_threshold",
    "shm_failed",
    "shm_threshold",
    "split_buffers",
    "unpickle_buffers",
]


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


def shm_failed(exc: BaseException) -> None:
    """Warn, once per process, that big buffers go in band because shared memory failed.

    Each payload, queue item or pipe message tries again (a full /dev/shm may drain), but
    the user is told only once. Called by the writer that fell back, two frames below the
    caller's ``put``/``send``/``apply``, whose line the warning names."""
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
            # (``find``, not ``in``: ``in`` tries the needle as an int first, 60-230 ns)
            return (data if data.find(MAIN) < 0 else dumps(obj)), [], 0  # the common case
        if buffers and sum(b.raw().nbytes for b in buffers) < threshold:
            return dumps(obj), [], 0  # small arrays: in-band after all
        if (
            data is not None
            and data.find(MAIN) < 0
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
    if data is None or MAIN in data:
        buffers.clear()
        extra = []
        data = cloudpickle_dumps(obj, buffer_callback=keep)
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


_ALIGN = 64  # each buffer starts on a cache line (and NumPy's preferred alignment)


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
