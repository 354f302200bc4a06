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
  the tasks (issue 15). ``Pickler`` names the receiver's namespace instead of sending one;
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
import io
import linecache
import os
import pickle
import sys
import threading
import types
import weakref
from collections import ChainMap, OrderedDict
from collections.abc import Iterable
from typing import Any, Callable, Optional

import cloudpickle

from ._errors import ArgumentPicklingError

__all__ = [
    "PROTOCOL",
    "FunctionCache",
    "Pickler",
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
    if MAIN in data:
        return cloudpickle_dumps(obj)
    return data


def cloudpickle_dumps(obj: Any, buffer_callback: Optional[Callable[[Any], Any]] = None) -> bytes:
    """``obj`` pickled by ``Pickler`` (cloudpickle, with ``__main__`` functions bound to the
    receiver's main namespace).

    Raises:
        Exception: whatever cloudpickle raises for an object that cannot be pickled.
    """
    out = io.BytesIO()
    Pickler(out, protocol=PROTOCOL, buffer_callback=buffer_callback).dump(obj)
    return out.getvalue()


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
    out = io.BytesIO()
    try:
        _ByNamePickler(out, f"{type(first).__name__}: {first}").dump(obj)
    except Exception:
        raise first from None
    return out.getvalue()


# ---------------------------------------------------------------- the main namespace

_fresh_main: Optional[dict[str, Any]] = None  # set by use_fresh_main in a child
# Per name: the object an arrival put into the main namespace (see _merge_globals).
_arrived: dict[str, Any] = {}


def use_fresh_main() -> None:
    """In a child that did not fork from the caller: by-value ``__main__`` functions share a
    new, empty namespace rather than whatever this process's main module holds (a fork
    server's copy of the caller as it was long ago, or the ``python -c`` launcher's)."""
    global _fresh_main
    module = types.ModuleType("__mp_main__")
    _fresh_main = module.__dict__
    _fresh_main["__builtins__"] = __builtins__
    _arrived.clear()


def main_namespace() -> dict[str, Any]:
    """The namespace that functions from ``__main__`` share in this process: the main
    module's (the caller's, or its copy in a forked child), or a fresh one in a child that
    did not fork from the caller (``use_fresh_main``)."""
    if _fresh_main is not None:
        return _fresh_main
    main = sys.modules.get("__main__")
    if main is None:  # an embedding without a main module
        use_fresh_main()
        assert _fresh_main is not None
        return _fresh_main
    return main.__dict__


def _is_main(fn: types.FunctionType) -> bool:
    namespace = fn.__globals__
    return namespace is main_namespace() or namespace.get("__name__") == "__main__"


class _MainNamespace:
    """Stands for the receiver's ``main_namespace()`` in a pickle."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (main_namespace, ())


_MAIN_NAMESPACE = _MainNamespace()


def _make_main_function(
    code: types.CodeType, namespace: dict[str, Any], name: Any, defaults: Any, closure: Any
) -> types.FunctionType:
    return types.FunctionType(code, namespace, name, defaults, closure)


def _set_main_function_state(fn: types.FunctionType, state: Any) -> None:
    """cloudpickle's function state, with the globals merged by ``_merge_globals``."""
    attributes, slots = state
    fn.__dict__.update(attributes)
    slots = dict(slots)
    _merge_globals(fn.__globals__, slots.pop("__globals__", {}))
    closure = slots.pop("__closure__", None)
    slots.pop("_cloudpickle_submodules", None)  # only kept the submodules imported
    if closure is not None:
        for mine, sent in zip(fn.__closure__ or (), closure):
            try:
                mine.cell_contents = sent.cell_contents
            except ValueError:  # an empty cell
                pass
    for name, value in slots.items():
        setattr(fn, name, value)


def _merge_globals(namespace: dict[str, Any], sent: dict[str, Any]) -> None:
    """Merge a function's pickled globals into the main namespace.

    The namespace's values win: what an initializer or an earlier task bound there is what
    the function sees, as with the stdlib's shared main module. A function or class is
    replaced by a newer one only when an earlier arrival put it there and nothing here
    rebound it since (a helper redefined in a notebook reaches a pool that is running)."""
    if namespace is not main_namespace():  # a function with a namespace of its own
        namespace.update(sent)
        return
    for name, value in sent.items():
        if name not in namespace:
            namespace[name] = value
            _arrived[name] = value
            continue
        current = namespace[name]
        if (
            current is not value
            and current is _arrived.get(name)
            and isinstance(value, (types.FunctionType, type))
        ):
            namespace[name] = value
            _arrived[name] = value


# ---------------------------------------------------------------- code with its source


def _rebuild_code(args: tuple[Any, ...], filename: str, lines: Optional[list[str]]) -> Any:
    if lines is not None and filename not in linecache.cache:
        # No mtime: linecache.checkcache keeps the entry (there is no file to compare with).
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    return types.CodeType(*args)


_cloudpickle_code_reduce = cloudpickle.Pickler.dispatch_table[types.CodeType]


def _code_reduce(code: types.CodeType) -> tuple[Any, ...]:
    """cloudpickle's reduction of a code object, with the real file name put back, and the
    source lines when the file is not on disk but ``linecache`` has them (IPython's cells)."""
    rebuild, args = _cloudpickle_code_reduce(code)
    filename = code.co_filename
    args = tuple(filename if type(a) is str and a == "<dynamic-code>" else a for a in args)
    lines = None
    entry = linecache.cache.get(filename)
    if entry is not None and len(entry) == 4 and not os.path.exists(filename):
        lines = list(entry[2])
    if rebuild is not types.CodeType:  # a future cloudpickle: leave its form alone
        return (rebuild, args)
    return (_rebuild_code, (args, filename, lines))


class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle's pickler, with functions from ``__main__`` bound to the receiver's main
    namespace and code that keeps its file name (see the module docstring)."""

    # the C pickler reads ``dispatch_table`` when it is built: a class attribute
    dispatch_table = ChainMap({types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table)

    def _function_getnewargs(self, func: types.FunctionType) -> tuple[Any, ...]:
        newargs = super()._function_getnewargs(func)
        if not _is_main(func):
            return newargs  # type: ignore[no-any-return]
        code, _, name, defaults, closure = newargs
        return code, _MAIN_NAMESPACE, name, defaults, closure

    def _dynamic_function_reduce(self, func: types.FunctionType) -> tuple[Any, ...]:
        reduced = super()._dynamic_function_reduce(func)
        if not _is_main(func) or len(reduced) != 6:
            return reduced  # type: ignore[no-any-return]
        _, newargs, state, items, pairs, _ = reduced
        return (_make_main_function, newargs, state, items, pairs, _set_main_function_state)


# ---------------------------------------------------------------- by name, when by value fails


def _main_object(qualname: str) -> Any:
    """``qualname`` looked up in this process's main module, if it is the caller's (or a
    forked copy of it); None otherwise."""
    if _fresh_main is not None:
        return None
    obj: Any = sys.modules.get("__main__")
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def _by_name(qualname: str, why: str) -> Any:
    """What ``_ByNamePickler`` sent: ``qualname`` of the caller's ``__main__``."""
    obj = _main_object(qualname)
    if obj is None:
        raise pickle.UnpicklingError(
            f"{qualname} (from __main__) was sent by name, as the call could not be "
            f"pickled by value ({why}), and this process was not forked from the caller: it "
            'has no such name. Start the pool with context="fork" (manycore.get_context('
            '"fork").Pool, ProcessPoolExecutor(mp_context="fork")), whose workers inherit the '
            "main module and what it refers to, as with the stdlib's default on Linux; or "
            "make what it refers to picklable, or create it in the worker (an initializer "
            "that sets a global)."
        )
    return obj


class _ByNamePickler(Pickler):
    """Functions and classes that ``__main__`` holds under their name are pickled by that
    name (see ``dumps_callable``)."""

    def __init__(self, file: Any, why: str) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self.why = why

    def reducer_override(self, obj: Any) -> Any:
        if (
            isinstance(obj, (types.FunctionType, type))
            and getattr(obj, "__module__", None) == "__main__"
        ):
            qualname = obj.__qualname__
            if "<" not in qualname and _main_object(qualname) is obj:
                return (_by_name, (qualname, self.why))
        return super().reducer_override(obj)


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


def _by_reference(blob: bytes) -> bool:
    # The by-value form always names its reconstructors (cloudpickle's, or this module's for
    # functions from __main__); a by-reference pickle is only a module and a qualified name.
    return b"cloudpickle" not in blob and __name__.encode() not in blob


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
