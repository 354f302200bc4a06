"""Pickling for manycore: fast for plain data, by value for what only the caller knows.

Rules:

* ``dumps`` tries the C pickler first (about 10x cheaper than building a cloudpickle
  pickler for a small tuple). If that fails, or if the stream names ``__main__`` (a function
  or class from a script, ``python -c`` or a notebook, which a worker must not look up by
  name because the main module is never re-executed there), it pickles again with
  cloudpickle, which sends such objects by value. Its output is an ordinary protocol-5
  pickle: ``pickle.loads`` reads it (cloudpickle's output only needs cloudpickle importable).
* Functions from ``__main__`` share one namespace per process (``main_namespace``), as the
  stdlib's share the worker's main module: cloudpickle alone would give each unpickled
  function a namespace of its own, so a global that an initializer sets would never reach
  the tasks (issue 15). ``_byvalue.Pickler`` names the receiver's namespace instead of sending one;
  the names a function brings are merged into it by ``_merge_globals``'s rule: the
  receiver's values win, so state set there (by an initializer, by earlier tasks) stays;
  only a function or class that an earlier arrival put there is replaced by a newer
  definition (a notebook cell run again). A child that forked from the caller has the
  caller's main module; a child that did not (spawn, the fork servers) starts an empty one
  (``use_fresh_main``), as the stdlib's spawned children start ``__mp_main__``.
* Code sent by value keeps its file name (cloudpickle writes ``<dynamic-code>``), and the
  source lines of a file that is not on disk (a notebook cell) travel with it into the
  receiver's ``linecache``: a worker's traceback shows the user's file, line and source.
* ``FunctionCache`` keeps the pickled bytes of functions per function object, so per-item
  ``apply_async``/``submit`` pay a dict lookup instead of a pickle; a function pickled by
  value is a snapshot of what it refers to, taken anew for each pool (``new_snapshots``),
  as the stdlib's fork copies the caller when a pool starts. ``WorkerFunctionCache`` keeps
  the last functions a worker rebuilt.
* ``first_unpicklable`` and ``argument_error`` name the argument that cannot be pickled.

This is the bottom of the serialization family (layer 1), which reads upwards as:

    _namespace   the main namespace, and what rebuilds a by-value pickle into it
    _serialize   pickling rules, function caches (this module: no cloudpickle, so a worker
                 that only unpickles never loads it)
    _byvalue     cloudpickle's pickler with these rules, imported on first use
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
import sys
import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import _namespace
from ._namespace import main_namespace, use_fresh_main

if TYPE_CHECKING:
    from ._errors import ArgumentPicklingError

__all__ = [
    "PROTOCOL",
    "FunctionCache",
    "WorkerFunctionCache",
    "argument_error",
    "cloudpickle_dumps",
    "dumps",
    "dumps_callable",
    "first_unpicklable",
    "main_namespace",
    "new_snapshots",
    "use_fresh_main",
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
        return cloudpickle_dumps(obj)
    if data.find(MAIN) >= 0:  # find: faster than ``in``, which tries the needle as an int
        return cloudpickle_dumps(obj)
    return data


def cloudpickle_dumps(obj: Any, buffer_callback: Optional[Callable[[Any], Any]] = None) -> bytes:
    """``obj`` pickled by ``_byvalue.Pickler`` (cloudpickle, with ``__main__`` functions bound
    to the receiver's main namespace).

    Raises:
        Exception: whatever cloudpickle raises for an object that cannot be pickled.
    """
    from ._byvalue import dumps as by_value  # cloudpickle loads here, on first use

    return by_value(obj, buffer_callback)


def dumps_callable(obj: Any) -> bytes:
    """``dumps`` for a pool's function or initializer with its arguments. When that fails
    because something cannot be pickled by value, functions and classes of ``__main__`` are
    pickled by name instead, as the stdlib pickles them: a worker forked from the caller
    finds them in its copy of the main module (with the objects they refer to, inherited);
    any other worker raises an error that names the first failure and ``context="fork"``.

    Raises:
        Exception: what ``dumps`` raised, when pickling by name does not help either.
    """
    try:
        return dumps(obj)
    except Exception as exc:
        first = exc
    from ._byvalue import dumps_by_name

    try:
        return dumps_by_name(obj, f"{type(first).__name__}: {first}")
    except Exception:
        raise first from None


# ---------------------------------------------------------------- errors, function caches


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
    from ._errors import ArgumentPicklingError

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


_snapshot = [0]  # bumped by new_snapshots: by-value function blobs older than this are stale


def new_snapshots() -> None:
    """A pool starts: functions pickled by value from now on are snapshots taken anew."""
    _snapshot[0] += 1


class FunctionCache:
    """Pickled bytes of functions, kept per function object.

    A function importable from a module pickles to its module and name; the worker looks
    it up itself, so those bytes never go stale. A function pickled by value (``__main__``,
    a lambda, a closure) carries a snapshot of the globals and closure cells it refers to;
    it is kept until the next pool starts (``new_snapshots``). So, as with the stdlib's fork,
    a pool's workers see the caller's state as it was when the pool started (its first call
    of the function, here), and later in-place changes are not sent again at every call
    (issue 16: that cost ~15 us per ``apply_async``/``submit``).
    """

    def __init__(self) -> None:
        self._blobs: dict[int, tuple[weakref.ref[Any], bytes, int]] = {}
        self._lock = threading.Lock()

    def dumps(self, fn: Callable[..., Any]) -> bytes:
        """The pickled bytes of ``fn``.

        Raises:
            ArgumentPicklingError: ``fn`` cannot be pickled.
        """
        entry = self._blobs.get(id(fn))
        if entry is not None and entry[0]() is fn and entry[2] >= _snapshot[0]:
            return entry[1]
        try:
            blob = dumps_callable(fn)
        except Exception as exc:
            from ._errors import ArgumentPicklingError

            raise ArgumentPicklingError.for_cause(
                exc,
                f"cannot send the function {fn!r} to a worker: {exc}. Define it at module "
                "level or make the objects it captures picklable.",
                argument="function",
            ) from exc
        if type(fn) is types.FunctionType:
            # by reference: never stale (a snapshot number no pool start reaches)
            snapshot = _snapshot[0] if not _by_reference(blob) else sys.maxsize
            key = id(fn)
            ref = weakref.ref(fn, functools.partial(self._forget, key))
            with self._lock:
                self._blobs[key] = (ref, blob, snapshot)
        return blob

    def _forget(self, key: int, ref: weakref.ref[Any]) -> None:
        with self._lock:
            entry = self._blobs.get(key)
            if entry is not None and entry[0] is ref:
                del self._blobs[key]


_NAMESPACE = _namespace.__name__.encode()


def _by_reference(blob: bytes) -> bool:
    # The by-value form always names its reconstructors (cloudpickle's, or ``_namespace``'s
    # for functions from __main__); a by-reference pickle is only a module and a qualified
    # name.
    return b"cloudpickle" not in blob and _NAMESPACE not in blob


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
