"""The worker process: its entry points and its loop.

Who runs where, inside one worker::

    main thread                              watchdog thread
    -----------                              ---------------
    read WorkerConfig, run initializer       blocks reading the lifeline pipe;
    loop: read CallBatch                     EOF means the owner is gone (exit,
          for each call: board <- task id,   crash or SIGKILL): flush stdio and
          rebuild fn and args, run, pickle   os._exit at once, even mid-task
          send ResultBatch every 2 ms of
          work and at the end of the batch

Guarantees:

* Every call in a batch produces exactly one outcome unless the process dies; the
  board (a shared page the owner reads) names the call that was running if it does.
* A call's failure never ends the worker: exceptions (``SystemExit`` included), arguments
  that cannot be rebuilt and results that cannot be pickled all become outcomes.
* The worker ignores SIGINT: Ctrl-C in a terminal reaches the whole process group, and the
  caller alone decides what it means. No worker prints a KeyboardInterrupt traceback.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any, Callable, NoReturn

from . import _messages as m
from . import _serialize
from ._errors import (
    ArgumentUnpicklingError,
    InitializerError,
    ResultPicklingError,
    describe_call,
    format_remote,
)
from ._serialize import WorkerFunctionCache, dumps, dumps_payload, first_unpicklable, loads

__all__ = ["BOARD_SLOT", "EXIT_INIT_FAILED", "EXIT_ORPHANED", "run_worker", "spawn_main"]

BOARD_SLOT = struct.Struct("<q")  # the running task's id, -1 when idle
EXIT_INIT_FAILED = 3
EXIT_ORPHANED = 4
FLUSH_AFTER = 0.002  # seconds of finished work before results are sent mid-batch


def spawn_main(chan_fd: int, lifeline_fd: int, board_fd: int) -> NoReturn:
    """Entry point of a worker started as a fresh interpreter (``python -c``)."""
    os._exit(run_worker(chan_fd, lifeline_fd, board_fd))


_shm_prefix: list[str] = []  # this worker's result-segment prefix, once configured


def run_worker(chan_fd: int, lifeline_fd: int, board_fd: int) -> int:
    """Run the worker loop on the given descriptors; return the process exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _start_watchdog(lifeline_fd)
    chan = _Channel(socket.socket(fileno=chan_fd))
    try:
        board = mmap.mmap(board_fd, 0)
    finally:
        os.close(board_fd)
    try:
        return _Worker(chan, board).run()
    except EOFError:  # the owner closed our socket: it is terminating us
        return 0
    finally:
        _serialize._spares.clear()  # the owner's views of our results stay valid
        _serialize._drop_attached()
        _flush_stdio()


def _start_watchdog(lifeline_fd: int) -> None:
    def watch() -> None:
        while True:
            try:
                data = os.read(lifeline_fd, 1)
            except InterruptedError:
                continue
            except OSError:
                data = b""
            if not data:
                _flush_stdio()
                # Nobody will read the results we handed over: free them.
                for prefix in _shm_prefix:
                    try:
                        from ._shm import unlink_prefix

                        unlink_prefix(prefix)
                    except Exception:
                        pass
                os._exit(EXIT_ORPHANED)

    from ._launch import start_helper_thread

    start_helper_thread(threading.Thread(target=watch, name="manycore-watchdog", daemon=True))


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


class _Channel:
    """Blocking framed I/O, imported lazily-free so a fork child needs nothing else."""

    def __init__(self, sock: socket.socket) -> None:
        from ._transport import WorkerChannel

        self._chan = WorkerChannel(sock)

    def send(self, message: Any) -> None:
        self._chan.send(dumps(message))

    def recv(self) -> Any:
        return loads(self._chan.recv())


def run_initializer(blob: bytes) -> bytes | None:
    """Run a pool's pickled ``(initializer, initargs)``: None if it returned, else the pickled
    ``(exception, traceback text)`` to report (an ``InitializerError`` carrying the text when
    the exception itself cannot be pickled)."""
    try:
        fn, args = loads(blob)
        fn(*args)
    except BaseException as exc:
        tb = format_remote(exc)
        try:
            return dumps((exc, tb))
        except Exception:
            return dumps(
                (InitializerError(f"the pool's initializer raised {exc!r}", remote=tb), tb)
            )
    return None


class _Worker:
    def __init__(self, chan: _Channel, board: mmap.mmap) -> None:
        self.chan = chan
        self.board = board
        self.fns = WorkerFunctionCache()
        self.offset = 0
        self.tasks_done = 0
        self.max_tasks: int | None = None

    def run(self) -> int:
        config: m.WorkerConfig = self.chan.recv()
        self.offset = config.slot * BOARD_SLOT.size
        self.max_tasks = config.max_tasks
        if config.shm_prefix is not None:
            _shm_prefix.append(config.shm_prefix)
        if config.shm_dir is not None:
            from ._shm import DIR_VAR

            os.environ[DIR_VAR] = config.shm_dir
        _serialize._configure_worker(config.shm_threshold, config.shm_prefix)
        _adopt_paths(config)
        if config.authkey is not None:
            multiprocessing.current_process().authkey = config.authkey
        if config.initializer is not None and not self._initialize(config.initializer):
            return EXIT_INIT_FAILED
        self.chan.send(m.WorkerReady(os.getpid()))
        while True:
            message = self.chan.recv()
            if message is m.SHUTDOWN:
                return 0
            self._run_batch(message)
            if self.max_tasks is not None and self.tasks_done >= self.max_tasks:
                self.chan.send(m.Retiring(self.tasks_done))
                return 0

    def _initialize(self, blob: bytes) -> bool:
        error = run_initializer(blob)
        if error is not None:
            self.chan.send(m.InitFailed(error))
            return False
        return True

    def _run_batch(self, batch: m.CallBatch) -> None:
        outcomes: list[m.Outcome] = []
        clock = time.perf_counter
        last_flush = clock()
        board, offset, pack = self.board, self.offset, BOARD_SLOT.pack_into
        for task_id, kind, fn_blob, call_payload in batch.calls:
            pack(board, offset, task_id)
            start = clock()
            status, payload = self._run_call(kind, fn_blob, call_payload)
            now = clock()
            outcomes.append((task_id, status, payload, now - start))
            self.tasks_done += 1
            if now - last_flush >= FLUSH_AFTER:
                self.chan.send(m.ResultBatch(outcomes))
                outcomes = []
                last_flush = clock()
        pack(board, offset, -1)
        if outcomes:
            self.chan.send(m.ResultBatch(outcomes))

    def _run_call(self, kind: int, fn_blob: bytes, call_payload: bytes) -> tuple[int, bytes]:
        try:
            fn = self.fns.get(fn_blob)
            payload = loads(call_payload)
        except BaseException as exc:
            error = ArgumentUnpicklingError(
                f"the worker could not rebuild the task's function or arguments: {exc!r}. "
                "Their class or module must be importable in the worker (check sys.path "
                "and that the module does not fail on import).",
                remote=format_remote(exc),
            )
            return m.FAILED, _dump_error(error)
        if kind == m.CALL or kind == m.CALL_KW:
            try:
                if kind == m.CALL:
                    value = fn(*payload)
                else:
                    args, kwargs = payload
                    value = fn(*args, **kwargs)
            except BaseException as exc:
                return m.RAISED, _dump_raised(exc, None, fn, payload)
            return _dump_value(value, fn)
        values: list[Any] = []
        try:
            if kind == m.MAP:
                values.extend(map(fn, payload))
            else:
                values.extend(_starmap(fn, payload))
        except BaseException as exc:
            return m.RAISED, _dump_raised(exc, values, fn, payload[len(values)])
        return _dump_value(values, fn)


def _starmap(fn: Callable[..., Any], items: list[Any]) -> Any:
    for args in items:
        yield fn(*args)


def _dump_value(value: Any, fn: Callable[..., Any]) -> tuple[int, bytes]:
    try:
        return m.OK, dumps_payload(value, handoff=True, reuse=True)
    except Exception as exc:
        detail = _first_unpicklable(value) if isinstance(value, list) else ""
        error = ResultPicklingError(
            f"the result of {describe_call(fn)} cannot be pickled to send it back{detail}: "
            f"{exc!r}. Return plain data (convert the object, or save it to a file and "
            "return the path).",
        )
        return m.FAILED, _dump_error(error)


def _first_unpicklable(values: list[Any]) -> str:
    culprit = first_unpicklable((f"item {i}", v) for i, v in enumerate(values))
    return "" if culprit is None else f" ({culprit[0]}, a {type(culprit[1]).__name__})"


def _dump_raised(exc: BaseException, partial: list[Any] | None, fn: Any, args: Any) -> bytes:
    """A RAISED payload: (exception bytes, its text, traceback text, values before it).

    The exception is pickled on its own, so that if the caller cannot rebuild it, the
    caller still has its type, text and traceback to report.
    """
    tb = format_remote(exc)
    summary = _summary(exc)
    try:
        exc_blob = dumps(exc)
    except Exception:
        error = ResultPicklingError(
            f"{describe_call(fn)} raised {summary}, and that exception cannot be pickled to "
            "send it back; the worker's traceback is attached.",
            remote=tb,
        )
        exc_blob = dumps(error)
    if partial is not None:
        try:
            return dumps((exc_blob, summary, tb, partial))
        except Exception:  # the values are the problem, not the exception
            pass
    return dumps((exc_blob, summary, tb, None))


def _summary(exc: BaseException) -> str:
    try:
        return f"{type(exc).__qualname__}: {exc}"
    except Exception:  # a broken __str__
        return type(exc).__qualname__


def _dump_error(error: Exception) -> bytes:
    return dumps(error)


def _adopt_paths(config: m.WorkerConfig) -> None:
    """Make the caller's modules importable: its sys.path first, and its working directory."""
    wanted = list(config.sys_path)
    seen = set(wanted)
    sys.path[:] = wanted + [p for p in sys.path if p not in seen]
    if config.cwd:
        try:
            if os.getcwd() != config.cwd:
                os.chdir(config.cwd)
        except OSError:
            pass
