"""The outcome codec: run a call, encode how it ended, and decode that in the caller.

Every place that runs user code for a caller in another process uses this module, so an
exception, an argument that cannot be rebuilt and a result that cannot be pickled become the
same error whichever backend ran the call::

    where the call runs                              where its outcome is read
    -------------------                              -------------------------
    pool worker (_worker), Dask worker (_dask)       local scheduler, Dask scheduler
      CallRunner.run(kind, fn, payload)  ──(status, payload)──►  loads / outcome_error
      run_initializer(blob)              ──failure or None─────►  initializer_error
    a Process child (_process)
      exception_parts(exc, ...)          ──(exc, text, tb)─────►  rebuild_exception

Wire format of an outcome's payload, by status (``_messages``: ``OK``, ``RAISED``,
``FAILED``)::

    OK      the value, pickled by the runner's ``encode`` (a list for MAP/STARMAP calls)
    RAISED  pickle of (exception bytes, "Type: text", traceback text, values before it|None)
    FAILED  pickle of a manycore error: the call could not be run, or its result not sent

An initializer's failure is a pickle of (exception, traceback text).

Guarantees:

* ``CallRunner.run`` never raises for the call's own failure (``SystemExit`` included): every
  way a call can end is an outcome.
* The exception is pickled on its own, inside the RAISED payload: if the caller cannot rebuild
  it, the caller still has its type, text and traceback to report. An exception that cannot be
  pickled at all is replaced by a ``ResultPicklingError`` carrying its traceback text.
* Decoding never raises either: what cannot be unpickled becomes a ``ResultUnpicklingError``
  naming the task.
"""

from __future__ import annotations

import pickle
import threading
from types import BuiltinFunctionType, FunctionType
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from . import _messages as m
from ._payload import loads
from ._serialize import dumps, first_unpicklable

# A worker imports this module before its first call, so what only failures, coroutines or
# the caller need is imported where it is used: ``_errors`` (its stdlib bases load
# ``concurrent.futures`` and ``multiprocessing.pool``), ``asyncio`` and ``inspect`` would
# more than double a spawned worker's start (issue 16).
if TYPE_CHECKING:
    from ._errors import InitializerError, ResultUnpicklingError

__all__ = [
    "CallRunner",
    "Described",
    "Unread",
    "exception_parts",
    "initializer_error",
    "is_coroutine_function",
    "outcome_error",
    "read",
    "rebuild_exception",
    "run_initializer",
    "summary",
    "unpickling_error",
    "was_cancelled",
]


class Described(Protocol):
    """What a decoded outcome is about: anything that can say ``task 17: square(3)``."""

    def describe(self) -> str: ...


# ---------------------------------------------------------------- running, encoding


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, a flag of the code object


def is_coroutine_function(fn: Any) -> bool:
    """Whether calling ``fn`` gives a coroutine to await (an ``async def`` function).

    This runs once per submitted task: a plain function is told by one flag of its code
    and a builtin at once; anything else (a partial, a method, a callable object, a
    function marked by ``inspect.markcoroutinefunction``) goes through ``inspect``.
    """
    kind = type(fn)
    if kind is FunctionType and "_is_coroutine_marker" not in fn.__dict__:
        return bool(fn.__code__.co_flags & _CO_COROUTINE)
    if kind is BuiltinFunctionType:
        return False
    import inspect

    return inspect.iscoroutinefunction(fn)


class CallRunner:
    """Runs calls for one worker and encodes each outcome.

    ``get_fn`` rebuilds a function from its pickled bytes (a worker's function cache);
    ``encode`` pickles a value for the trip back (the pool worker may hand big buffers over
    in shared memory, the Dask worker must not); ``where`` and ``fix`` finish the message of
    an argument that cannot be rebuilt ("the worker could not rebuild ...: <fix>").
    """

    __slots__ = ("encode", "fix", "get_fn", "on_call", "where")

    def __init__(
        self,
        get_fn: Callable[[bytes], Callable[..., Any]],
        encode: Callable[[Any], bytes],
        where: str,
        fix: str,
    ) -> None:
        self.get_fn = get_fn
        self.encode = encode
        self.where = where
        self.fix = fix
        # Called once a call's function and arguments are rebuilt, just before the call
        # (the pool worker marks its board: a death before that is not the code's doing).
        self.on_call: Optional[Callable[[], None]] = None

    def run(self, kind: int, fn_blob: bytes, call_payload: bytes) -> tuple[int, bytes]:
        """Run one call of ``kind`` (``_messages``: CALL, CALL_KW, MAP, STARMAP); return
        ``(status, payload)`` as the module docstring lays out."""
        try:
            fn = self.get_fn(fn_blob)
            payload = loads(call_payload)
        except BaseException as exc:
            return m.FAILED, self.unbuildable(exc)
        if self.on_call is not None:
            self.on_call()
        if kind & m.CORO:  # run here to its end, on a loop of its own (see run_coroutine)
            return self._run_sync(kind, fn, payload)
        if kind == m.CALL or kind == m.CALL_KW:
            try:
                if kind == m.CALL:
                    value = fn(*payload)
                else:
                    args, kwargs = payload
                    value = fn(*args, **kwargs)
            except BaseException as exc:
                return m.RAISED, _encode_raised(exc, None, fn)
            return self._encode_value(value, fn)
        values: list[Any] = []
        try:
            # list.extend keeps the items it took before an exception: the partial values.
            if kind == m.MAP:
                values.extend(map(fn, payload))
            else:
                values.extend(_starmap(fn, payload))
        except BaseException as exc:
            return m.RAISED, _encode_raised(exc, values, fn)
        return self._encode_value(values, fn)

    def unbuildable(self, exc: BaseException) -> bytes:
        """The FAILED payload of a call whose function or arguments could not be rebuilt."""
        from ._errors import ArgumentUnpicklingError, format_remote

        error = ArgumentUnpicklingError(
            f"{self.where} could not rebuild the task's function or arguments: {exc!r}. {self.fix}",
            remote=format_remote(exc),
        )
        return dumps(error)

    async def run_coroutine(
        self, kind: int, fn: Callable[..., Any], payload: Any
    ) -> tuple[int, bytes]:
        """Await one call of the coroutine function ``fn`` (``kind`` with ``CORO``) on the
        running loop; the outcome as ``run`` gives it. A map chunk's items run one after
        the other. ``asyncio.CancelledError`` is left to the caller, who knows who
        cancelled it."""
        import asyncio  # loaded already: a loop runs this

        kind &= m.KIND
        values: list[Any] = []
        try:
            if kind == m.CALL:
                return self._encode_value(await fn(*payload), fn)
            if kind == m.CALL_KW:
                args, kwargs = payload
                return self._encode_value(await fn(*args, **kwargs), fn)
            for item in payload:
                values.append(await (fn(item) if kind == m.MAP else fn(*item)))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            partial = values if kind in (m.MAP, m.STARMAP) else None
            return m.RAISED, _encode_raised(exc, partial, fn)
        return self._encode_value(values, fn)

    def raised(self, exc: BaseException, fn: Callable[..., Any]) -> bytes:
        """The RAISED payload of ``exc``, raised by a call of ``fn``."""
        return _encode_raised(exc, None, fn)

    def _run_sync(self, kind: int, fn: Callable[..., Any], payload: Any) -> tuple[int, bytes]:
        import asyncio

        try:
            return asyncio.run(self.run_coroutine(kind, fn, payload))
        except BaseException as exc:  # cancelled from inside: an error of the call
            return m.RAISED, _encode_raised(exc, None, fn)

    def _encode_value(self, value: Any, fn: Callable[..., Any]) -> tuple[int, bytes]:
        try:
            return m.OK, self.encode(value)
        except Exception as exc:
            from ._errors import ResultPicklingError, describe_call

            detail = _first_unpicklable(value) if isinstance(value, list) else ""
            error = ResultPicklingError(
                f"the result of {describe_call(fn)} cannot be pickled to send it back{detail}: "
                f"{exc!r}. Return plain data (convert the object, or save it to a file and "
                "return the path).",
            )
            return m.FAILED, dumps(error)
        except BaseException as exc:  # SystemExit raised by a __reduce__, say: as if the
            return m.RAISED, _encode_raised(exc, None, fn)  # call raised it, not a death


def run_initializer(blob: bytes) -> Optional[bytes]:
    """Run a pool's pickled ``(initializer, initargs)``: None if it returned, else the pickled
    ``(exception, traceback text)`` to report (an ``InitializerError`` carrying the text when
    the exception itself cannot be pickled)."""
    try:
        fn, args = loads(blob)
        fn(*args)
    except BaseException as exc:
        from ._errors import InitializerError, format_remote

        tb = format_remote(exc)
        try:
            return dumps((exc, tb))
        except Exception:
            return dumps(
                (InitializerError(f"the pool's initializer raised {exc!r}", remote=tb), tb)
            )
    return None


_cancelled: list[bytes] = []


def was_cancelled() -> bytes:
    """The FAILED payload of a call cancelled before it started (the worker skipped it)."""
    if not _cancelled:
        import concurrent.futures

        _cancelled.append(dumps(concurrent.futures.CancelledError()))
    return _cancelled[0]


def summary(exc: BaseException) -> str:
    """``ValueError: bad input``, even for an exception whose ``__str__`` is broken."""
    try:
        return f"{type(exc).__qualname__}: {exc}"
    except Exception:
        return type(exc).__qualname__


def exception_parts(
    exc: BaseException, raiser: str, limit: Optional[int] = None
) -> tuple[bytes, str, str]:
    """``(exception bytes, its summary, traceback text)`` of an exception to send back.

    An exception that cannot be pickled, or whose parts come to more than ``limit`` bytes
    (a pipe's capacity, say), is replaced by a ``ResultPicklingError`` that says ``raiser``
    ("square(3)", "the process") raised it, with the traceback text attached (with a limit,
    its first frames and its end).
    """
    from ._errors import ResultPicklingError, format_remote

    tb = format_remote(exc)
    text = summary(exc)
    try:
        exc_blob = dumps(exc)
    except Exception:
        problem = "that exception cannot be pickled"
    else:
        total = len(exc_blob) + len(text) + len(tb)
        if limit is None or total <= limit:
            return exc_blob, text, tb
        problem = f"its report is too large ({total} bytes)"
    if limit is not None:
        part = limit // 4
        if len(text) > part:
            text = text[:part] + "..."
        if len(tb) > part:  # keep the first frames and the end, where it was raised
            tb = tb[: part // 2] + "\n...\n" + tb[-part // 2 :]
    error = ResultPicklingError(
        f"{raiser} raised {text}, and {problem} to send it back; its traceback is attached.",
        remote=tb,
    )
    return dumps(error), text, tb


def _encode_raised(exc: BaseException, partial: Optional[list[Any]], fn: Any) -> bytes:
    from ._errors import describe_call

    exc_blob, text, tb = exception_parts(exc, describe_call(fn))
    if partial is not None:
        try:
            return dumps((exc_blob, text, tb, partial))
        except Exception:  # the values are the problem, not the exception
            pass
    return dumps((exc_blob, text, tb, None))


def _starmap(fn: Callable[..., Any], items: list[Any]) -> Any:
    for args in items:
        yield fn(*args)


def _first_unpicklable(values: list[Any]) -> str:
    culprit = first_unpicklable((f"item {i}", v) for i, v in enumerate(values))
    return "" if culprit is None else f" ({culprit[0]}, a {type(culprit[1]).__name__})"


# ---------------------------------------------------------------- decoding, in the caller


def rebuild_exception(exc_blob: bytes, text: str, tb: str, raiser: str) -> BaseException:
    """The exception of ``exception_parts``, rebuilt here with the remote traceback as its
    cause; a ``ResultUnpicklingError`` saying ``raiser`` raised ``text`` when it cannot be."""
    from ._errors import ResultUnpicklingError, with_remote_cause

    try:
        error: BaseException = loads(exc_blob)
    except BaseException as inner:  # SystemExit while rebuilding it too
        error = ResultUnpicklingError(
            f"{raiser} raised {text}, and that exception could not be unpickled in the "
            f"caller: {inner!r}. Give the exception class an __init__ that accepts its args, "
            "or a __reduce__."
        )
    return with_remote_cause(error, tb)


def outcome_error(task: Described, status: int, payload: bytes) -> tuple[BaseException, Any]:
    """(error, values computed before it) for a RAISED or FAILED outcome's payload."""
    from ._errors import ResultUnpicklingError

    partial = None
    try:
        if status == m.RAISED:
            exc_blob, text, tb, partial = loads(payload)
            error = rebuild_exception(exc_blob, text, tb, task.describe())
        else:
            error = loads(payload)
    except BaseException as inner:  # SystemExit while rebuilding it too
        error = ResultUnpicklingError(
            f"the outcome of {task.describe()} could not be unpickled in the caller: {inner!r}."
        )
    return error, partial


def unpickling_error(task: Described, exc: BaseException) -> ResultUnpicklingError:
    """The error for a task whose result could not be unpickled in the caller."""
    from ._errors import ResultUnpicklingError

    error = ResultUnpicklingError(
        f"the result of {task.describe()} could not be unpickled in the caller: "
        f"{exc!r}. Its class must be importable here with the same definition.",
    )
    error.__cause__ = exc
    return error


def initializer_error(blob: bytes) -> InitializerError:
    """The pool-breaking error for an initializer failure of ``run_initializer``."""
    from ._errors import InitializerError, with_remote_cause

    try:
        exc, tb = loads(blob)
    except BaseException as inner:
        return InitializerError(f"the pool's initializer failed (details lost: {inner!r})")
    if isinstance(exc, InitializerError):
        return exc
    error = InitializerError(
        f"the pool's initializer raised {type(exc).__name__}: {exc}; every task fails. "
        "Fix the initializer (its traceback is the cause below)."
    )
    error.__cause__ = with_remote_cause(exc, tb)
    return error


class _Named:
    """Describes a task by its id and function alone (what an ``Unread`` keeps of it)."""

    __slots__ = ("fn", "task_id")

    def __init__(self, task_id: int, fn: Any) -> None:
        self.task_id = task_id
        self.fn = fn

    def describe(self) -> str:
        name = getattr(self.fn, "__qualname__", None) or getattr(self.fn, "__name__", "?")
        return f"task {self.task_id}: {name}(...)"


# Guards the hand-over of an Unread's rebuilding, and the making of a latch for a thread
# that must wait for another's (see Unread): held for a few bytecodes at a time.
_unread_guard = threading.Lock()


class _Busy:
    """``Unread._rebuild`` while a thread rebuilds the value."""

    __slots__ = ()


_BUSY = _Busy()


class Unread:
    """A task's value as it came back, unpickled once, by the first thread that asks for it
    (``AsyncResult.get``, ``Future.result``, the map's iterator), never by the engine thread:
    a result that is slow to rebuild delays only its own reader.

    ``rebuild`` is ``_payload.loads_later``'s second step: a function, or the bytes of an
    ordinary pickle. What unpickling raises, SystemExit included, becomes a
    ``ResultUnpicklingError`` naming the task (``task_id`` and ``fn``), raised by every
    ``read``; with ``fn`` None it is raised as it is (a map's values, read through their
    chunks).

    Every reader gets the same object: the first claims the rebuilding under a module-wide
    guard, and a reader that comes while it runs waits on a latch it makes then. A value
    read by one thread, the common case, costs no lock of its own (one object fewer for the
    garbage collector per result that waits to be read).
    """

    __slots__ = ("_error", "_fn", "_latch", "_rebuild", "_task_id", "_value")

    def __init__(
        self, rebuild: bytes | Callable[[], Any], task_id: int = -1, fn: Any = None
    ) -> None:
        self._rebuild: bytes | Callable[[], Any] | _Busy | None = rebuild  # None: read
        self._task_id = task_id
        self._fn = fn
        self._latch: threading.Lock | None = None  # made by a reader that must wait
        self._value: Any = None
        self._error: Optional[BaseException] = None

    def read(self) -> Any:
        """The value.

        Raises:
            ResultUnpicklingError: it could not be unpickled here.
        """
        while self._rebuild is not None:
            latch = claimed = None
            with _unread_guard:
                rebuild = self._rebuild
                if rebuild is _BUSY:  # another thread rebuilds it: wait for that one
                    latch = self._latch
                    if latch is None:
                        latch = self._latch = threading.Lock()
                        latch.acquire()
                elif rebuild is not None:
                    self._rebuild, claimed = _BUSY, rebuild
            if latch is not None:
                latch.acquire()  # released when that thread is done; then look again
                latch.release()
            elif claimed is not None:
                self._rebuild_now(claimed)
        if self._error is not None:
            raise self._error
        return self._value

    def _rebuild_now(self, rebuild: bytes | Callable[[], Any] | _Busy) -> None:
        done = False
        try:
            try:
                if type(rebuild) is bytes:
                    self._value = pickle.loads(rebuild)
                else:
                    self._value = rebuild()  # type: ignore[operator]
            except BaseException as exc:
                if self._fn is None:
                    self._error = exc
                else:
                    self._error = unpickling_error(_Named(self._task_id, self._fn), exc)
            self._fn = None
            done = True
        finally:
            # Whatever happened, nobody waits for good: the value is there (set before
            # ``_rebuild``, so a reader that sees None finds it), or, if something escaped
            # before it was, the next reader tries again.
            with _unread_guard:
                self._rebuild = None if done else rebuild
                latch, self._latch = self._latch, None
            if latch is not None:
                latch.release()

    def failed(self) -> bool:
        """Whether reading it raises (it is read to find out)."""
        try:
            self.read()
        except BaseException:
            return True
        return False


def read(value: Any) -> Any:
    """``value``, or what it holds if it is an ``Unread``."""
    return value.read() if type(value) is Unread else value
