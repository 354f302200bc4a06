"""Contexts: every ``multiprocessing`` name, bound to one start method.

``manycore.get_context("spawn")`` returns a ``Context`` whose ``Process`` starts children by
spawn and whose ``Pool`` starts workers by spawn; the queues, pipes, locks and shared values
it makes are the same objects every context makes, because in manycore they work with every
start method (they pickle as handles to named shared memory and named semaphores instead of
relying on descriptors inherited through ``fork``).

The default context (``start_method`` None) follows ``set_start_method``; until that is
called it uses manycore's default fork server (see docs/design.md, "Start methods"). The
start methods themselves, and which one is the default, live in ``_launch``.

Nothing here imports the heavier modules (queues, shared memory, managers) until a method
that needs them is called, so ``import manycore`` stays cheap.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

from . import _launch
from ._cpu import cpu_count as _cpu_count
from ._process import Process as _Process

if TYPE_CHECKING:
    from ._pool import Pool as _Pool
    from ._queue import JoinableQueue as _JoinableQueue
    from ._queue import Queue as _Queue
    from ._queue import SimpleQueue as _SimpleQueue

__all__ = [
    "START_METHODS",
    "BaseContext",
    "Context",
    "DefaultContext",
    "ForkContext",
    "ForkProcess",
    "ForkServerContext",
    "ForkServerProcess",
    "SpawnContext",
    "SpawnProcess",
    "get_all_start_methods",
    "get_context",
    "get_start_method",
    "set_start_method",
]

# What get_start_method() reports for manycore's default: children come from a fork server,
# and like the stdlib's forkserver method they receive their target and arguments pickled.
DEFAULT_NAME = "forkserver"
START_METHODS = _launch.START_METHODS  # manycore's default first


class ForkProcess(_Process):
    """A ``Process`` started with ``os.fork()`` in the caller."""

    _start_method = "fork"


class SpawnProcess(_Process):
    """A ``Process`` started as a fresh interpreter (the main module is not re-run)."""

    _start_method = "spawn"


class ForkServerProcess(_Process):
    """A ``Process`` forked by a fork server started fresh for this purpose."""

    _start_method = "forkserver"


# The stdlib's names for a Process bound to each method; the methods come from _launch.
_PROCESS_CLASSES: dict[Optional[str], type[_Process]] = {
    cls._start_method: cls for cls in (_Process, ForkProcess, SpawnProcess, ForkServerProcess)
}
assert set(_PROCESS_CLASSES) == {None, *START_METHODS}


class Context:
    """The ``multiprocessing`` API with one start method (``None``: the current default)."""

    # Exceptions, as on the stdlib's contexts.
    from multiprocessing import AuthenticationError as AuthenticationError
    from multiprocessing import BufferTooShort as BufferTooShort
    from multiprocessing import ProcessError as ProcessError

    from ._errors import TimeoutError as TimeoutError

    def __init__(self, start_method: Optional[str] = None) -> None:
        if start_method not in _PROCESS_CLASSES:
            raise ValueError(_unknown(start_method))
        self._start_method = start_method
        self.Process = _PROCESS_CLASSES[start_method]

    def __repr__(self) -> str:
        return f"<manycore context {self.get_start_method()!r}>"

    # ---------------------------------------------------------------- start methods

    def get_context(self, method: Optional[str] = None) -> Context:
        """This context for ``None`` (as the stdlib's do), else the context for ``method``."""
        if method is None and self._start_method is not None:
            return self
        return get_context(method)

    def get_start_method(self, allow_none: bool = False) -> str:
        return self._start_method or get_start_method(allow_none)

    def set_start_method(self, method: Optional[str], force: bool = False) -> None:
        if self._start_method is not None:
            # ValueError, as the stdlib's concrete contexts raise: code catches that.
            raise ValueError(
                f"this context always uses {self._start_method!r}; call "
                "manycore.set_start_method() to change the default"
            )
        set_start_method(method, force=force)

    def get_all_start_methods(self) -> list[str]:
        return get_all_start_methods()

    # ---------------------------------------------------------------- processes and pools

    def Pool(
        self,
        processes: Optional[int] = None,
        initializer: Optional[Callable[..., object]] = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: Optional[int] = None,
        **options: Any,
    ) -> _Pool:
        from ._pool import Pool

        return Pool(
            processes,
            initializer,
            initargs,
            maxtasksperchild,
            context=self._start_method,
            **options,
        )

    def Manager(self) -> Any:
        from ._managers import Manager

        return Manager(ctx=self)

    @staticmethod
    def cpu_count() -> int:
        return _cpu_count()

    @staticmethod
    def current_process() -> Any:
        return multiprocessing.current_process()

    @staticmethod
    def parent_process() -> Any:
        return multiprocessing.parent_process()

    @staticmethod
    def active_children() -> list[Any]:
        return multiprocessing.active_children()

    @staticmethod
    def freeze_support() -> None:
        """Nothing to do: manycore never re-runs the main module in a child."""

    # ---------------------------------------------------------------- communication

    def Queue(self, maxsize: int = 0) -> _Queue[Any]:
        from ._queue import Queue

        return Queue(maxsize)

    def JoinableQueue(self, maxsize: int = 0) -> _JoinableQueue[Any]:
        from ._queue import JoinableQueue

        return JoinableQueue(maxsize)

    def SimpleQueue(self) -> _SimpleQueue[Any]:
        from ._queue import SimpleQueue

        return SimpleQueue()

    def Pipe(self, duplex: bool = True) -> tuple[Any, Any]:
        from ._connection import Pipe

        return Pipe(duplex)

    # ---------------------------------------------------------------- synchronization

    def Lock(self) -> Any:
        from ._synchronize import Lock

        return Lock()

    def RLock(self) -> Any:
        from ._synchronize import RLock

        return RLock()

    def Semaphore(self, value: int = 1) -> Any:
        from ._synchronize import Semaphore

        return Semaphore(value)

    def BoundedSemaphore(self, value: int = 1) -> Any:
        from ._synchronize import BoundedSemaphore

        return BoundedSemaphore(value)

    def Condition(self, lock: Any = None) -> Any:
        from ._synchronize import Condition

        return Condition(lock)

    def Event(self) -> Any:
        from ._synchronize import Event

        return Event()

    def Barrier(
        self, parties: int, action: Optional[Callable[[], object]] = None, timeout: Any = None
    ) -> Any:
        from ._synchronize import Barrier

        return Barrier(parties, action, timeout)

    # ---------------------------------------------------------------- shared memory

    def Value(self, typecode_or_type: Any, *args: Any, lock: Any = True) -> Any:
        from ._sharedctypes import Value

        return Value(typecode_or_type, *args, lock=lock)

    def Array(self, typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True) -> Any:
        from ._sharedctypes import Array

        return Array(typecode_or_type, size_or_initializer, lock=lock)

    def RawValue(self, typecode_or_type: Any, *args: Any) -> Any:
        from ._sharedctypes import RawValue

        return RawValue(typecode_or_type, *args)

    def RawArray(self, typecode_or_type: Any, size_or_initializer: Any) -> Any:
        from ._sharedctypes import RawArray

        return RawArray(typecode_or_type, size_or_initializer)

    # ---------------------------------------------------------------- stdlib plumbing

    @staticmethod
    def get_logger() -> Any:
        return multiprocessing.util.get_logger()

    @staticmethod
    def log_to_stderr(level: Optional[int] = None) -> Any:
        return multiprocessing.util.log_to_stderr(level)

    @staticmethod
    def allow_connection_pickling() -> None:
        """Nothing to do: manycore's connections always pickle."""

    @staticmethod
    def set_executable(executable: str) -> None:
        multiprocessing.set_executable(executable)

    @staticmethod
    def set_forkserver_preload(module_names: list[str]) -> None:
        multiprocessing.set_forkserver_preload(module_names)

    @property
    def reducer(self) -> Any:
        return multiprocessing.reducer


BaseContext = Context  # the stdlib's name for the class of every context


class DefaultContext(Context):
    """The context of ``manycore``'s own functions: the start method of the moment."""

    def __init__(self) -> None:
        super().__init__(None)


class ForkContext(Context):
    """Every ``multiprocessing`` name, with processes and pool workers started by fork."""

    def __init__(self) -> None:
        super().__init__("fork")


class SpawnContext(Context):
    """Every ``multiprocessing`` name, with processes and pool workers started by spawn."""

    def __init__(self) -> None:
        super().__init__("spawn")


class ForkServerContext(Context):
    """Every ``multiprocessing`` name, with processes started by a fresh fork server."""

    def __init__(self) -> None:
        super().__init__("forkserver")


def _unknown(method: object) -> str:
    return (
        f"unknown start method {method!r}: use one of {', '.join(START_METHODS)}, "
        "or None for manycore's default"
    )


_contexts: dict[Optional[str], Context] = {
    ctx._start_method: ctx
    for ctx in (DefaultContext(), ForkContext(), SpawnContext(), ForkServerContext())
}
assert set(_contexts) == set(_PROCESS_CLASSES)


def get_context(method: Optional[str] = None) -> Context:
    """The context for ``method``; ``None`` gives the default context: the one of the method
    ``set_start_method`` chose (as the stdlib's does), else manycore's default.

    Raises:
        ValueError: an unknown method.
    """
    if method is None:
        method = _launch.default_start_method()
    try:
        return _contexts[method]
    except (KeyError, TypeError):
        raise ValueError(_unknown(method)) from None


def get_start_method(allow_none: bool = False) -> str:
    """The default start method's name. manycore's own default reports ``"forkserver"``."""
    chosen = _launch.default_start_method()
    if chosen is None and allow_none:
        return None  # type: ignore[return-value]  # the stdlib's signature, kept
    return chosen or DEFAULT_NAME


def set_start_method(method: Optional[str], force: bool = False) -> None:
    """Make ``method`` the start method of ``Process`` and ``Pool`` when none is given.

    Raises:
        RuntimeError: it was already set and ``force`` is false (as in the stdlib).
        ValueError: an unknown method.
    """
    if method is not None and method not in START_METHODS:
        raise ValueError(_unknown(method))
    chosen = _launch.default_start_method()
    if chosen is not None and not force:
        raise RuntimeError(
            f"the start method was already set to {chosen!r}: pass force=True to change it"
        )
    _launch.set_default_start_method(method)


def get_all_start_methods() -> list[str]:
    """The start methods manycore offers here, the default first."""
    return list(START_METHODS)
