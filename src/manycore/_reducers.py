"""multiprocessing's registered reducers, honoured by what manycore sends through pipes and queues.

The stdlib pickles what its ``Connection.send``, ``Queue.put`` and process start send with
``multiprocessing.reduction.ForkingPickler``, whose dispatch table holds the reducers that
``multiprocessing.reduction.register`` collected: the stdlib's own (a stdlib ``Connection``
from ``Listener``/``Client`` or a socket travels as a descriptor the receiver fetches) and any
a program added. manycore pickles with plain ``pickle`` first, which is several times
cheaper; this module says when a plain pickle will not do and makes the one that does.

Plain pickle already handles what the stdlib registers for methods, method descriptors and
``functools.partial``, and refuses a socket (so the caller's fallback takes it). It pickles
a stdlib ``Connection`` as its descriptor's number, which means nothing in another process:
a pickle that names that class's module is therefore made again, as is every pickle once
the program has registered a reducer of its own.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import sys
from collections import ChainMap
from functools import cache
from typing import Any

from ._serialize import MAIN, PROTOCOL

__all__ = ["cloud_pickler", "needs_reducers", "reducing_dumps", "reducing_pickler"]

# What multiprocessing registers itself (on POSIX), by module and name.
_STDLIB_OWN = frozenset(
    {
        "builtins.method",
        "builtins.method_descriptor",
        "builtins.wrapper_descriptor",
        "functools.partial",
        "socket.socket",
        "multiprocessing.connection.Connection",
    }
)
_STDLIB_CONNECTION = b"multiprocessing.connection"
_program_registered: dict[int, bool] = {}  # by the number of registered types


_reducers: dict[type, Any] | None = None  # ForkingPickler's, once loaded (the same dict for good)


def _registered() -> dict[type, Any]:
    global _reducers
    if _reducers is None:
        # Imported here, not above: a pool worker that never meets a reducer does not load
        # multiprocessing.reduction (and socket) at start.
        from multiprocessing.reduction import ForkingPickler

        _reducers = ForkingPickler._extra_reducers  # type: ignore[attr-defined]
    return _reducers


def _registered_by_program() -> bool:
    # A program registers through multiprocessing.reduction: until it is imported, nothing is.
    reducers = _reducers
    if reducers is None:
        if "multiprocessing.reduction" not in sys.modules:
            return False
        reducers = _registered()
    count = len(reducers)
    found = _program_registered.get(count)
    if found is None:
        found = any(f"{t.__module__}.{t.__qualname__}" not in _STDLIB_OWN for t in list(reducers))
        _program_registered[count] = found
    return found


def needs_reducers(data: bytes) -> bool:
    """Whether ``data``, a plain pickle of some object, must be made again by
    ``reducing_dumps``: it holds a stdlib Connection, or the program registered reducers."""
    return _STDLIB_CONNECTION in data or _registered_by_program()


@cache
def reducing_pickler() -> type[pickle.Pickler]:
    """``pickle.Pickler`` with multiprocessing's registered reducers first."""

    class ReducingPickler(pickle.Pickler):
        # The C pickler reads ``dispatch_table`` when it is built: a class attribute.
        dispatch_table = ChainMap(_registered(), copyreg.dispatch_table)  # type: ignore[arg-type]

    return ReducingPickler


@cache
def cloud_pickler() -> type[pickle.Pickler]:
    """cloudpickle (``_byvalue.Pickler``) with multiprocessing's registered reducers first."""
    from ._byvalue import Pickler

    class ReducingCloudPickler(Pickler):
        dispatch_table = ChainMap(_registered(), Pickler.dispatch_table)

    return ReducingCloudPickler


def reducing_dumps(obj: Any) -> bytes:
    """``obj`` pickled as the stdlib pickles what it sends (``ForkingPickler``), or by
    cloudpickle with the same reducers when that names ``__main__`` or fails.

    Raises:
        Exception: what cloudpickle raises for an object that cannot be pickled.
    """
    from multiprocessing.reduction import ForkingPickler

    try:
        data = bytes(ForkingPickler.dumps(obj, PROTOCOL))
        if MAIN not in data:
            return data
    except Exception:
        pass
    out = io.BytesIO()
    cloud_pickler()(out, protocol=PROTOCOL).dump(obj)
    return out.getvalue()
