"""Pickling for manycore: fast for plain data, by value for what only the caller knows.

Rules:

* ``dumps`` tries the C pickler first (about 10x cheaper than building a cloudpickle
  pickler for a small tuple). If that fails, or if the stream names ``__main__`` (a function
  or class from a script, ``python -c`` or a notebook, which a worker must not look up by
  name because the main module is never re-executed there), it pickles again with
  cloudpickle, which sends such objects by value. Its output is an ordinary protocol-5
  pickle: ``pickle.loads`` reads it (cloudpickle's output only needs cloudpickle importable).
* ``FunctionCache`` keeps the pickled bytes of module-level functions, so per-item
  ``apply_async``/``submit`` pay a dict lookup instead of a pickle; ``WorkerFunctionCache``
  keeps the last functions a worker rebuilt.
* ``first_unpicklable`` and ``argument_error`` name the argument that cannot be pickled.

This is the bottom of the serialization family (layer 1), which reads upwards as:

    _serialize   pickling rules, function caches (this module)
    _buffers     big buffers out of band: the threshold, split_buffers/unpickle_buffers,
                 where buffers go in a block (layout/fill)
    _reuse       the one rule for reusing a shared-memory block (its state word)
    _memfd       big Pipe messages: buffers in a memfd sent with the message
    _payload     pool payloads: dumps_payload/loads, segments kept for reuse

Nothing here decides what is trusted: the pool only ever unpickles bytes from its own
processes (see docs/design.md, "No one else gets in").
"""

from __future__ import annotations

import functools
import pickle
import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Callable

import cloudpickle

from ._errors import ArgumentPicklingError

__all__ = [
    "PROTOCOL",
    "FunctionCache",
    "WorkerFunctionCache",
    "argument_error",
    "dumps",
    "first_unpicklable",
]

PROTOCOL = 5
MAIN = b"__main__"  # a pickle naming this must be made by cloudpickle (see ``dumps``)


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` so that any process of the pool can rebuild it.

    Raises:
        Exception: whatever cloudpickle raises for an object that cannot be pickled.
    """
    try:
        data = pickle.dumps(obj, PROTOCOL)
    except Exception:
        return cloudpickle.dumps(obj, PROTOCOL)  # type: ignore[no-any-return]
    if MAIN in data:
        return cloudpickle.dumps(obj, PROTOCOL)  # type: ignore[no-any-return]
    return data


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
        return ArgumentPicklingError.for_cause(
            exc, f"cannot send the arguments of {name}() to a worker: {exc}", argument=None
        )
    where, value, inner = culprit
    return ArgumentPicklingError.for_cause(
        inner,
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
            raise ArgumentPicklingError.for_cause(
                exc,
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
            fn = pickle.loads(blob)  # function blobs are plain pickles (FunctionCache)
            self._fns[blob] = fn
            if len(self._fns) > self.SIZE:
                self._fns.popitem(last=False)
        else:
            self._fns.move_to_end(blob)
        self._last_blob, self._last_fn = blob, fn
        return fn
