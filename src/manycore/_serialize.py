"""Pickling for manycore: fast for plain data, by value for what only the caller knows.

Rules:

* ``dumps`` tries the C pickler first (about 10x cheaper than building a cloudpickle
  pickler for a small tuple). If that fails, or if the stream names ``__main__`` (a function
  or class from a script, ``python -c`` or a notebook, which a worker must not look up by
  name because the main module is never re-executed there), it pickles again with
  cloudpickle, which sends such objects by value.
* ``FunctionCache`` keeps a function's pickled bytes while the function is unchanged, so
  per-item ``apply_async``/``submit`` do not pay ~15 us for cloudpickle each time.
* ``loads`` is ``pickle.loads``: cloudpickle's output only needs cloudpickle importable.

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
from typing import Any, Callable

import cloudpickle

from ._errors import ArgumentPicklingError

__all__ = ["FunctionCache", "WorkerFunctionCache", "dumps", "dumps_args", "loads"]

PROTOCOL = 5
loads = pickle.loads
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


def dumps_args(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a call's ``(args, kwargs)`` on the caller's thread, naming the culprit on failure.

    Raises:
        ArgumentPicklingError: an argument cannot be pickled; nothing was sent.
    """
    try:
        return dumps((args, kwargs) if kwargs else args)
    except Exception as exc:
        raise _argument_error(fn, args, kwargs, exc) from exc


def _argument_error(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
) -> ArgumentPicklingError:
    """Find which argument fails to pickle, for a message that names it."""
    name = getattr(fn, "__qualname__", None) or repr(fn)
    candidates: list[tuple[str, Any]] = [(f"argument {i}", a) for i, a in enumerate(args)]
    candidates += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for where, value in candidates:
        try:
            dumps(value)
        except Exception as inner:
            return ArgumentPicklingError(
                f"cannot send {where} of {name}() to a worker: a {type(value).__name__} "
                f"object cannot be pickled ({inner}). Pass something picklable (plain data, "
                f"or a path/name the task can use to open or build the object itself).",
                argument=where,
            )
    return ArgumentPicklingError(
        f"cannot send the arguments of {name}() to a worker: {exc}", argument=None
    )


class _Entry:
    """A function's pickled bytes and, for a by-value pickle, what they captured."""

    __slots__ = ("blob", "captured", "fn_ref", "names")

    def __init__(self, fn: types.FunctionType, blob: bytes, by_value: bool) -> None:
        self.fn_ref = weakref.ref(fn)
        self.blob = blob
        self.names = _global_names(fn.__code__) if by_value else None
        self.captured = _captured(fn, self.names) if self.names is not None else None

    def still_valid(self, fn: Any) -> bool:
        if self.names is None:  # by reference: the worker looks the name up itself
            return True
        captured = self.captured
        assert captured is not None
        now = _captured(fn, self.names)
        return len(now) == len(captured) and all(a is b for a, b in zip(now, captured))


class FunctionCache:
    """Pickled bytes per function object, reused while the function is unchanged.

    A function pickled by reference (importable from a module) is stable: its bytes are a
    name. A function pickled by value (``__main__``, lambda, closure) captures its code,
    defaults, closure cells and the globals it names; the entry is reused only while every
    one of those is still the *same object* (the entry holds them, so ids are not reused).
    Rebinding a global the function reads, as a notebook cell does, pickles it afresh.

    Only plain functions are cached: a ``partial`` or a callable object can change in ways
    no snapshot sees, so those are pickled at every call.
    """

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.Lock()

    def dumps(self, fn: Callable[..., Any]) -> bytes:
        """The pickled bytes of ``fn``.

        Raises:
            ArgumentPicklingError: ``fn`` cannot be pickled.
        """
        entry = self._entries.get(id(fn))
        if entry is not None and entry.fn_ref() is fn and entry.still_valid(fn):
            return entry.blob
        try:
            blob = dumps(fn)
        except Exception as exc:
            raise ArgumentPicklingError(
                f"cannot send the function {fn!r} to a worker: {exc}. Define it at module "
                "level or make the objects it captures picklable.",
                argument="function",
            ) from exc
        if type(fn) is types.FunctionType:
            key = id(fn)
            entry = _Entry(fn, blob, by_value=not _by_reference(blob))
            entry.fn_ref = weakref.ref(fn, functools.partial(self._forget, key, entry))
            with self._lock:
                self._entries[key] = entry
        return blob

    def _forget(self, key: int, entry: _Entry, _ref: object = None) -> None:
        with self._lock:
            if self._entries.get(key) is entry:
                del self._entries[key]


def _by_reference(blob: bytes) -> bool:
    # A by-reference function pickles to a few dozen bytes naming module and qualname;
    # cloudpickle's by-value form always names its own reconstructors.
    return b"cloudpickle" not in blob


_code_names: weakref.WeakKeyDictionary[types.CodeType, tuple[str, ...]] = (
    weakref.WeakKeyDictionary()
)


def _global_names(code: types.CodeType) -> tuple[str, ...]:
    names = _code_names.get(code)
    if names is None:
        found = set(code.co_names)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                found.update(_global_names(const))
        names = tuple(sorted(found))
        _code_names[code] = names
    return names


_MISSING = object()


def _captured(fn: Any, names: tuple[str, ...]) -> list[Any]:
    """Everything a by-value pickle of ``fn`` captured, to be compared by identity."""
    glb = fn.__globals__
    out = [fn.__code__, fn.__defaults__, fn.__kwdefaults__]
    if fn.__closure__:
        out.extend(_cell(c) for c in fn.__closure__)
    out.extend(glb.get(name, _MISSING) for name in names)
    return out


def _cell(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return _MISSING


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
