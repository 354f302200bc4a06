"""Every exception manycore raises, and the helpers that carry a worker's traceback home.

The tree, with the stdlib class each one also is (so existing ``except`` clauses keep working)::

    ManycoreError(Exception)
    ├── WorkerLostError            + concurrent.futures.process.BrokenProcessPool
    │       a worker died (exit, signal, OOM kill) while it held the task
    ├── PoolBrokenError            + BrokenProcessPool
    │   └── InitializerError           the pool's initializer raised or killed its worker
    ├── PoolClosedError            + ValueError, RuntimeError
    │   │   work was submitted after close()/shutdown(), or the pool was terminated under it
    │   └── PoolTerminatedError        + BrokenProcessPool
    │                                  a task was running or queued when the pool was terminated
    ├── TimeoutError               + multiprocessing.TimeoutError, builtins.TimeoutError
    │   │                            (+ concurrent.futures.TimeoutError before 3.11)
    │   │   AsyncResult.get(timeout) ran out
    │   └── TaskTimeoutError           a task ran past its task_timeout; its worker was
    │                                  stopped and replaced
    └── SerializationError
        ├── ArgumentPicklingError      + pickle.PicklingError    caller could not pickle an argument
        │                                + what the pickler raised (TypeError, RuntimeError, ...)
        ├── ArgumentUnpicklingError    + pickle.UnpicklingError  worker could not unpickle it
        │                                + BrokenProcessPool
        ├── ResultPicklingError        + pickle.PicklingError    worker could not pickle a result
        │                                + MaybeEncodingError    or an exception
        └── ResultUnpicklingError      + pickle.UnpicklingError  caller could not unpickle it
                                         + BrokenProcessPool

The unpickling errors are ``BrokenProcessPool`` because that is what the stdlib executor
raises for them (its worker or result reader dies on them); in manycore only the one task
fails and the pool goes on.

``RemoteTraceback`` is not an error users catch: it is attached as ``__cause__`` to an
exception re-raised from a worker, and its message is the worker's formatted traceback.

Every class here survives pickling: the message is the only positional argument and the
details are attributes, so ``BaseException.__reduce__`` (type, args, __dict__) rebuilds them.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import multiprocessing
import pickle
import sys
import traceback
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.pool import MaybeEncodingError  # type: ignore[attr-defined]  # no stub
from typing import Any

__all__ = [
    "ArgumentPicklingError",
    "ArgumentUnpicklingError",
    "InitializerError",
    "ManycoreError",
    "PoolBrokenError",
    "PoolClosedError",
    "PoolTerminatedError",
    "RemoteTraceback",
    "ResultPicklingError",
    "ResultUnpicklingError",
    "SerializationError",
    "TaskTimeoutError",
    "TimeoutError",
    "WorkerLostError",
]


class ManycoreError(Exception):
    """Base class of every error manycore raises on its own account.

    The message is the only positional argument; keyword details become attributes, so
    the exception pickles and compares the same on both sides of a pipe.
    """

    def __init__(self, message: str = "", **details: Any) -> None:
        # Not super(): a stdlib base further along the MRO may want other arguments
        # (MaybeEncodingError takes two); ours carry only the message.
        Exception.__init__(self, message)
        self.__dict__.update(details)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WorkerLostError(ManycoreError, BrokenProcessPool):
    """A worker process died while it held a task; that task cannot complete.

    Attributes:
        pid: the worker's process id.
        exitcode: its exit status when it exited normally, else ``None``.
        signal: the number of the signal that killed it, else ``None``.
        task: a short description of the task (function and argument preview).
    """

    pid: int | None
    exitcode: int | None
    signal: int | None
    task: str


class PoolBrokenError(ManycoreError, BrokenProcessPool):
    """The pool cannot run tasks any more; every pending and later task fails with this."""


class InitializerError(PoolBrokenError):
    """The pool's ``initializer`` raised (or killed its worker), so no worker can start.

    The initializer's own exception is attached as ``__cause__`` when it could be carried.
    """


class PoolClosedError(ManycoreError, ValueError, RuntimeError):
    """Work was submitted to a pool that was closed, shut down or terminated.

    It is a ``ValueError`` (what ``multiprocessing.Pool`` raises) and a ``RuntimeError``
    (what ``concurrent.futures`` raises), so code written for either keeps working.
    """


class PoolTerminatedError(PoolClosedError, BrokenProcessPool):
    """A task was still running or waiting when its pool was terminated (``terminate()``,
    ``terminate_workers()``, ``kill_workers()``, Ctrl-C out of a ``with`` block).

    Also ``BrokenProcessPool``: what the stdlib executor's futures fail with when its
    workers are terminated under them.
    """


if sys.version_info >= (3, 11):  # concurrent.futures.TimeoutError is the builtin

    class TimeoutError(ManycoreError, multiprocessing.TimeoutError, builtins.TimeoutError):
        """A wait ran out of time: both ``multiprocessing.TimeoutError`` and ``TimeoutError``."""

else:

    class TimeoutError(
        ManycoreError,
        multiprocessing.TimeoutError,
        builtins.TimeoutError,
        concurrent.futures.TimeoutError,
    ):
        """A wait ran out of time: ``multiprocessing.TimeoutError``, ``TimeoutError`` and
        ``concurrent.futures.TimeoutError`` (its own class before Python 3.11)."""


class TaskTimeoutError(TimeoutError):
    """A task ran longer than its ``task_timeout``; its worker was stopped and replaced.

    Attributes:
        task: a short description of the task (function and argument preview).
        timeout: the limit it ran past, in seconds.
        pid: the process id of the worker that was stopped.
    """

    task: str
    timeout: float
    pid: int


class SerializationError(ManycoreError):
    """Base of the errors that come from pickling on the way to or from a worker."""


class ArgumentPicklingError(SerializationError, pickle.PicklingError):
    """An argument could not be pickled in the caller; nothing was sent.

    Made by ``for_cause``, it is also an instance of the class of what the pickler raised
    (``TypeError`` for a lock, ``RuntimeError`` from a ``__reduce__``): the stdlib lets that
    exception through, and ``except`` clauses written for it must still catch this one.
    """

    @classmethod
    def for_cause(cls, cause: BaseException, message: str, **details: Any) -> ArgumentPicklingError:
        """The error for ``message``, also of ``cause``'s class where Python allows the mix
        (else of its nearest base class that mixes; never ``StopIteration``), with ``cause``
        as its ``__cause__``."""
        error: ArgumentPicklingError
        try:
            error = _also(cls, type(cause))(message, **details)
        except Exception:  # a class whose __new__ wants other arguments
            error = cls(message, **details)
        error.__cause__ = cause
        return error

    def __reduce__(self) -> Any:
        mixed = _MIXES.get(type(self))
        if mixed is None:
            return super().__reduce__()
        return (_rebuild_mixed, (*mixed, self.args, self.__dict__))


# A mixed class -> the two classes it was made of; and (base, extra) -> the class made.
_MIXES: dict[type, tuple[type, type]] = {}
_MIXED: dict[tuple[type, type], type] = {}


def _also(base: type, extra: type) -> type:
    """A subclass of ``base`` that is also ``extra`` (or its nearest base that can be mixed
    in), made once; ``base`` itself if ``extra`` adds nothing or nothing mixes."""
    found = _MIXED.get((base, extra))
    if found is not None:
        return found
    found = base
    for candidate in extra.__mro__:
        if issubclass(base, candidate) or not issubclass(candidate, Exception):
            break  # what is left, base already is (Exception, object)
        if issubclass(candidate, (StopIteration, StopAsyncIteration)):
            continue  # it would end the caller's loop silently
        try:
            found = type(
                base.__name__,
                (base, candidate),
                {"__module__": base.__module__, "__qualname__": base.__qualname__},
            )
        except Exception:  # a layout conflict (OSError), a final class, a metaclass
            continue
        _MIXES[found] = (base, candidate)
        break
    _MIXED[(base, extra)] = found
    return found


def _rebuild_mixed(base: type, extra: type, args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """Unpickle an error of a mixed class (see ``ArgumentPicklingError.for_cause``)."""
    error = _also(base, extra)(*args)
    error.__dict__.update(state)
    return error


class ArgumentUnpicklingError(SerializationError, pickle.UnpicklingError, BrokenProcessPool):
    """A worker could not rebuild a task's function or arguments; the task did not run.

    Also ``BrokenProcessPool``, what the stdlib executor raises here; only this task fails.
    """


class ResultPicklingError(
    SerializationError,
    pickle.PicklingError,
    MaybeEncodingError,  # type: ignore[misc]  # typeshed does not describe it
):
    """A worker could not pickle a task's result (or the exception it raised).

    Also ``multiprocessing.pool.MaybeEncodingError``, what the stdlib's pool raises here.
    """


class ResultUnpicklingError(SerializationError, pickle.UnpicklingError, BrokenProcessPool):
    """The caller could not rebuild a result (or exception) sent back by a worker.

    Also ``BrokenProcessPool``, what the stdlib executor raises here; only this task fails.
    """


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in a worker.

    Attached as ``__cause__`` of the re-raised exception, so the usual traceback printout
    shows where in the worker it happened.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f"\n\nTraceback from the worker process:\n{self.tb}"


def format_remote(exc: BaseException) -> str:
    """The traceback text for ``exc`` as the worker saw it, ready to ship home."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def with_remote_cause(exc: BaseException, tb: str) -> BaseException:
    """Attach a worker's traceback text to ``exc`` as its ``__cause__`` and return it."""
    exc.__cause__ = RemoteTraceback(tb)
    return exc


def describe_call(fn: Any, args: Any = (), *, limit: int = 80) -> str:
    """A short, safe description of a call, for error messages: ``square(3, 4)``."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    try:
        preview = ", ".join(_short_repr(a) for a in args)
    except Exception:  # a broken __repr__ must not hide the real error
        preview = "..."
    if len(preview) > limit:
        preview = preview[: limit - 3] + "..."
    return f"{name}({preview})"


def _short_repr(obj: Any, limit: int = 40) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."
