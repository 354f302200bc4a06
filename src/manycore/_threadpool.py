"""The stdlib's thread pool and manager pool, whose waits raise manycore's ``TimeoutError``.

``manycore.dummy.Pool()``, ``manycore.pool.ThreadPool`` and the ``Pool()`` of a manycore
manager are the stdlib's own pools: their workers are threads (or, for the manager, run in
the manager's server), so they need nothing of manycore. One thing about them differs from
what a program written against manycore expects: a ``get(timeout)`` or ``next(timeout)``
that runs out of time raises the stdlib's ``multiprocessing.TimeoutError``, which
``except manycore.TimeoutError`` does not catch (manycore's class is a subclass of it).

The pools here hand out the stdlib's result objects with their class changed to a subclass
whose waits raise ``manycore.TimeoutError`` instead (still a ``multiprocessing.TimeoutError``,
and a builtin ``TimeoutError`` too), so the same ``except`` clause catches a timed-out wait
on any pool. Everything else about the results is the stdlib's.
"""

from __future__ import annotations

from multiprocessing import pool as _std
from typing import TYPE_CHECKING, Any, Optional

from ._errors import TimeoutError

__all__ = ["ManagerPool", "ThreadPool"]

if TYPE_CHECKING:  # generic in the stubs; not all of them are subscriptable at run time
    _ApplyBase = _std.ApplyResult[Any]
    _MapBase = _std.MapResult[Any]
    _IMapBase = _std.IMapIterator[Any]
    _IMapUnorderedBase = _std.IMapUnorderedIterator[Any]
else:
    _ApplyBase = _std.ApplyResult
    _MapBase = _std.MapResult
    _IMapBase = _std.IMapIterator
    _IMapUnorderedBase = _std.IMapUnorderedIterator


def _timed_out(timeout: Optional[float]) -> TimeoutError:
    return TimeoutError(f"the result was not ready within {timeout} seconds")


class _ApplyResult(_ApplyBase):
    def get(self, timeout: Optional[float] = None) -> Any:
        self.wait(timeout)
        if not self.ready():
            raise _timed_out(timeout)
        return super().get()  # ready: returns the value or raises the task's error


class _MapResult(_MapBase, _ApplyResult):
    pass


class _IMapIterator(_IMapBase):
    # The stdlib's next(), with manycore's error when the wait runs out (its items, the
    # condition that guards them and the count of results are the stdlib's attributes).
    def next(self, timeout: Optional[float] = None) -> Any:
        state: Any = self
        with state._cond:
            if not state._items and state._index != state._length:
                state._cond.wait(timeout)
            if not state._items:
                if state._index == state._length:
                    state._pool = None
                    raise StopIteration
                raise _timed_out(timeout)
            success, value = state._items.popleft()
        if success:
            return value
        raise value

    __next__ = next


class _IMapUnorderedIterator(_IMapUnorderedBase, _IMapIterator):
    pass


# Each result class of the stdlib, mapped to the subclass it becomes. A subclass adds no
# state, so changing an object's class is safe whatever the object holds.
_RETIMED: dict[type, type] = {
    _std.ApplyResult: _ApplyResult,
    _std.MapResult: _MapResult,
    _std.IMapIterator: _IMapIterator,
    _std.IMapUnorderedIterator: _IMapUnorderedIterator,
}


def _retimed(result: Any) -> Any:
    """``result`` with its class changed to the subclass above (a generator: unchanged)."""
    cls = _RETIMED.get(type(result))
    if cls is not None:
        result.__class__ = cls
    return result


class _RetimedResults:
    """Mixin for a stdlib pool: the results of its asynchronous calls time out with
    ``manycore.TimeoutError``. (``apply``, ``map`` and ``starmap`` wait without a timeout.)"""

    def apply_async(self, *args: Any, **kwargs: Any) -> Any:
        return _retimed(super().apply_async(*args, **kwargs))  # type: ignore[misc]

    def map_async(self, *args: Any, **kwargs: Any) -> Any:
        return _retimed(super().map_async(*args, **kwargs))  # type: ignore[misc]

    def starmap_async(self, *args: Any, **kwargs: Any) -> Any:
        return _retimed(super().starmap_async(*args, **kwargs))  # type: ignore[misc]

    def imap(self, *args: Any, **kwargs: Any) -> Any:
        return _retimed(super().imap(*args, **kwargs))  # type: ignore[misc]

    def imap_unordered(self, *args: Any, **kwargs: Any) -> Any:
        return _retimed(super().imap_unordered(*args, **kwargs))  # type: ignore[misc]


class ThreadPool(_RetimedResults, _std.ThreadPool):
    """``multiprocessing.pool.ThreadPool``, whose timed-out waits raise
    ``manycore.TimeoutError``."""


class ManagerPool(_RetimedResults, _std.Pool):
    """The pool a manager's ``Pool()`` makes in the manager's server: the stdlib's process
    pool, whose timed-out waits raise ``manycore.TimeoutError``."""
