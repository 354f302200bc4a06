"""multiprocessing's registered reducers, honoured by what manycore sends through pipes and queues.

The stdlib pickles what its ``Connection.send``, ``Queue.put`` and process start send with
``multiprocessing.reduction.ForkingPickler``, whose dispatch table holds the reducers that
``multiprocessing.reduction.register`` collected: the stdlib's own (a stdlib ``Connection``
from ``Listener``/``Client`` or a socket travels as a descriptor the receiver fetches) and any
a program added. manycore pickles with plain ``pickle`` first, which is several times
cheaper; this module says when a plain pickle will not do and makes the one that does.

Plain pickle already handles what the stdlib registers for methods, method descriptors and
``functools.partial``, and refuses a socket (so the caller's fallback takes it). It pickles
a stdlib ``Connection`` (or heap ``Arena``) as its descriptor's number, which means nothing
in another process: a pickle that names one of multiprocessing's modules is therefore made
again, as is every pickle once a program or library has registered a reducer of its own.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import sys
from collections import ChainMap
from functools import cache
from typing import Any, Callable, Optional

from ._serialize import MAIN, PROTOCOL

__all__ = ["cloud_pickler", "needs_reducers", "reducing_dumps", "reducing_pickler"]

# A pickle that names one of multiprocessing's modules may hold an object that the stdlib
# registers a reducer for (a stdlib Connection, a heap Arena) and that plain pickle would
# send as a descriptor's number: such a pickle is made again with the reducers.
_STDLIB_NAMES = b"multiprocessing."
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
        # multiprocessing's own reducers (methods, partials, sockets, its connections, heap
        # arenas, and what its managers add) are for objects that the name check above
        # catches or that plain pickle handles as well; any other library's or program's
        # reducer applies to every pickle.
        found = any(
            not str(getattr(reducer, "__module__", "")).startswith("multiprocessing.")
            for reducer in list(reducers.values())
        )
        _program_registered[count] = found
    return found


def needs_reducers(data: bytes) -> bool:
    """Whether ``data``, a plain pickle of some object, must be made again by
    ``reducing_dumps``: it holds a stdlib Connection, or the program registered reducers."""
    # ``find``, not ``in``: ``in`` tries the needle as an int first (60-230 ns a call).
    return data.find(_STDLIB_NAMES) >= 0 or _registered_by_program()


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


def reducing_dumps(obj: Any, before_each: Optional[Callable[[], None]] = None) -> bytes:
    """``obj`` pickled as the stdlib pickles what it sends (``ForkingPickler``), or by
    cloudpickle with the same reducers when that names ``__main__`` or fails.
    ``before_each`` runs before each attempt (a process start drops the descriptors that a
    failed attempt collected).

    Raises:
        Exception: what cloudpickle raises for an object that cannot be pickled.
    """
    from multiprocessing.reduction import ForkingPickler

    try:
        if before_each is not None:
            before_each()
        data = bytes(ForkingPickler.dumps(obj, PROTOCOL))
        if MAIN not in data:
            return data
    except Exception:
        pass
    if before_each is not None:
        before_each()
    out = io.BytesIO()
    cloud_pickler()(out, protocol=PROTOCOL).dump(obj)
    return out.getvalue()
