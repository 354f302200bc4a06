"""The namespace that functions from ``__main__`` share in a process, and what rebuilds
by-value pickles into it.

The rules are ``_serialize``'s (see its docstring); ``_byvalue`` makes the pickles, and
they name the functions below to rebuild themselves. This module imports neither
cloudpickle nor the pickler, so a worker that only unpickles loads little (issue 16).
"""

from __future__ import annotations

import pickle
import sys
import types
from typing import Any, Optional

__all__ = [
    "MAIN_NAMESPACE",
    "by_name",
    "is_main",
    "main_namespace",
    "main_object",
    "make_main_function",
    "rebuild_code",
    "set_main_function_state",
    "use_fresh_main",
]


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


def is_main(fn: types.FunctionType) -> bool:
    namespace = fn.__globals__
    return namespace is main_namespace() or namespace.get("__name__") == "__main__"


class _MainNamespace:
    """Stands for the receiver's ``main_namespace()`` in a pickle."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (main_namespace, ())


MAIN_NAMESPACE = _MainNamespace()


def make_main_function(
    code: types.CodeType, namespace: dict[str, Any], name: Any, defaults: Any, closure: Any
) -> types.FunctionType:
    return types.FunctionType(code, namespace, name, defaults, closure)


def set_main_function_state(fn: types.FunctionType, state: Any) -> None:
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


def rebuild_code(args: tuple[Any, ...], filename: str, lines: Optional[list[str]]) -> Any:
    """What ``_byvalue._code_reduce`` sent: a code object, its source lines in ``linecache``."""
    if lines is not None:
        import linecache  # here: a worker that rebuilds no notebook code never needs it

        if filename not in linecache.cache:
            # No mtime: linecache.checkcache keeps the entry (there is no file to compare with).
            linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    return types.CodeType(*args)


# ---------------------------------------------------------------- by name, when by value fails


def main_object(qualname: str) -> Any:
    """``qualname`` looked up in this process's main module, if it is the caller's (or a
    forked copy of it); None otherwise."""
    if _fresh_main is not None:
        return None
    obj: Any = sys.modules.get("__main__")
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def by_name(qualname: str, why: str) -> Any:
    """What ``_byvalue._ByNamePickler`` sent: ``qualname`` of the caller's ``__main__``."""
    obj = main_object(qualname)
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
