"""cloudpickle's pickler with manycore's rules: what ``_serialize`` pickles by value.

Only the side that pickles by value imports this module (and cloudpickle with it): the
caller, for functions and classes of ``__main__``, lambdas and closures, and a worker
whose result or exception needs it. A worker that only unpickles never does: a by-value
pickle names the functions that rebuild it (``_namespace``'s, and cloudpickle's own where
it made the pieces), and ``pickle.loads`` imports their modules when it meets them (issue
16: cloudpickle took a spawned worker several milliseconds).

The rules themselves (the shared main namespace, code that keeps its file name, ``__main__``
objects by name when by value fails) are described in ``_serialize``'s docstring.
"""

from __future__ import annotations

import io
import linecache
import os
import types
from collections import ChainMap
from typing import Any, Callable, Optional

import cloudpickle

from ._namespace import (
    MAIN_NAMESPACE,
    by_name,
    is_main,
    main_object,
    make_main_function,
    rebuild_code,
    set_main_function_state,
)

PROTOCOL = 5  # as ``_serialize.PROTOCOL``

__all__ = ["Pickler", "dumps", "dumps_by_name"]


def dumps(obj: Any, buffer_callback: Optional[Callable[[Any], Any]] = None) -> bytes:
    """``obj`` pickled by ``Pickler``.

    Raises:
        Exception: whatever cloudpickle raises for an object that cannot be pickled.
    """
    out = io.BytesIO()
    Pickler(out, protocol=PROTOCOL, buffer_callback=buffer_callback).dump(obj)
    return out.getvalue()


def dumps_by_name(obj: Any, why: str) -> bytes:
    """``obj`` pickled by ``_ByNamePickler`` (see ``_serialize.dumps_callable``).

    Raises:
        Exception: whatever cloudpickle raises for an object that cannot be pickled.
    """
    out = io.BytesIO()
    _ByNamePickler(out, why).dump(obj)
    return out.getvalue()


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
    return (rebuild_code, (args, filename, lines))


class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle's pickler, with functions from ``__main__`` bound to the receiver's main
    namespace and code that keeps its file name (see the module docstring)."""

    # the C pickler reads ``dispatch_table`` when it is built: a class attribute
    dispatch_table = ChainMap({types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table)

    def _function_getnewargs(self, func: types.FunctionType) -> tuple[Any, ...]:
        newargs = super()._function_getnewargs(func)
        if not is_main(func):
            return newargs  # type: ignore[no-any-return]
        code, _, name, defaults, closure = newargs
        return code, MAIN_NAMESPACE, name, defaults, closure

    def _dynamic_function_reduce(self, func: types.FunctionType) -> tuple[Any, ...]:
        reduced = super()._dynamic_function_reduce(func)
        if not is_main(func) or len(reduced) != 6:
            return reduced  # type: ignore[no-any-return]
        _, newargs, state, items, pairs, _ = reduced
        return (make_main_function, newargs, state, items, pairs, set_main_function_state)


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
            if "<" not in qualname and main_object(qualname) is obj:
                return (by_name, (qualname, self.why))
        return super().reducer_override(obj)
