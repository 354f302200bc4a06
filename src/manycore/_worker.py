"""The worker process: its entry points and its loop.

Who runs where, inside one worker::

    main thread                              watchdog thread
    -----------                              ---------------
    read WorkerConfig, run initializer       blocks reading the lifeline pipe;
    loop: read CallBatch                     EOF means the owner is gone (exit,
          for each call: board <- task id,   crash or SIGKILL): flush stdio and
          rebuild fn and args, run, pickle   os._exit at once, even mid-task
          send ResultBatch every 2 ms of
          work and at the end of the batch   (threads of the user's code may print
                                             or log: _output sends those frames,
                                             under the channel's send lock)

Guarantees:

* Every call in a batch produces exactly one outcome unless the process dies; the
  board (a shared page the owner reads) names the call that was running if it does.
* A call's failure never ends the worker: exceptions (``SystemExit`` included), arguments
  that cannot be rebuilt and results that cannot be pickled all become outcomes.
* The worker ignores SIGINT: Ctrl-C in a terminal reaches the whole process group, and the
  caller alone decides what it means. No worker prints a KeyboardInterrupt traceback.
* With a memory limit, the worker retires after the call that took its resident memory over
  it: it sends the outcomes it has, then ``Retiring``; the calls of its batch that it did
  not run are the owner's to send elsewhere.
* ``STACK_SIGNAL`` makes faulthandler write every thread's stack into a memory file that the
  owner reads through ``/proc`` (``Scheduler.stacks``): a stuck task can be diagnosed.
"""

from __future__ import annotations

import concurrent.futures
import faulthandler
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
from . import _output, _payload
from ._errors import (
    ArgumentUnpicklingError,
    InitializerError,
    ResultPicklingError,
    describe_call,
    format_remote,
)
from ._fds import start_helper_thread
from ._payload import dumps_payload, loads
from ._serialize import WorkerFunctionCache, dumps, first_unpicklable

__all__ = [
    "BOARD_SKIPS",
    "BOARD_SLOT",
    "BOARD_STRIDE",
    "EXIT_INIT_FAILED",
    "EXIT_ORPHANED",
    "STACK_SIGNAL",
    "resident_memory",
    "run_worker",
    "spawn_main",
]

# The running task's id (-1 when idle) and when it started, on the clock that
# time.perf_counter and time.monotonic share on Linux (CLOCK_MONOTONIC, machine-wide), so
# the owner can tell how long it has run.
BOARD_SLOT = struct.Struct("<qd")
# After it, the ids of up to four tasks of this worker's batches that were cancelled before
# they started: the owner writes them, the worker skips them (-1: none).
BOARD_SKIPS = struct.Struct("<4q")
BOARD_STRIDE = BOARD_SLOT.size + BOARD_SKIPS.size  # bytes per worker on the board
STACK_SIGNAL = signal.SIGRTMIN + 6  # faulthandler dumps the stacks on this one
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
        _payload.drop_segments()  # the owner's views of our results stay valid
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

    start_helper_thread(threading.Thread(target=watch, name="manycore-watchdog", daemon=True))


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


class _Channel:
    """Blocking framed I/O. ``send`` may be called from any thread: user code that prints or
    logs from threads of its own sends frames too."""

    def __init__(self, sock: socket.socket) -> None:
        from ._transport import WorkerChannel

        self._chan = WorkerChannel(sock)
        self._send_lock = threading.Lock()
        self.before_send: Callable[[], None] | None = None  # flushes forwarded output

    def send(self, message: Any) -> None:
        if self.before_send is not None:
            self.before_send()
        data = dumps(message)
        with self._send_lock:
            self._chan.send(data)

    def send_quietly(self, message: Any) -> None:
        """``send`` without flushing output first (what output itself sends)."""
        data = dumps(message)
        with self._send_lock:
            self._chan.send(data)

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
        self.max_memory: int | None = None
        self.over_memory = 0  # the resident memory that crossed max_memory, once it has

    def run(self) -> int:
        config: m.WorkerConfig = self.chan.recv()
        self.offset = config.slot * BOARD_STRIDE
        self.max_tasks = config.max_tasks
        self.max_memory = config.max_memory
        self.chan.before_send = _output.install_worker(self.chan.send_quietly, config.output)
        if config.shm_prefix is not None:
            _shm_prefix.append(config.shm_prefix)
        if config.shm_dir is not None:
            from ._shm import DIR_VAR

            os.environ[DIR_VAR] = config.shm_dir
        _payload.configure_worker(config.shm_threshold, config.shm_prefix)
        _adopt_paths(config)
        if config.authkey is not None:
            multiprocessing.current_process().authkey = config.authkey
        if config.initializer is not None and not self._initialize(config.initializer):
            return EXIT_INIT_FAILED
        self.chan.send(m.WorkerReady(os.getpid(), _stack_file()))
        while True:
            message = self.chan.recv()
            if message is m.SHUTDOWN:
                return 0
            self._run_batch(message)
            if self.over_memory:
                self.chan.send(m.Retiring(self.tasks_done, "memory", self.over_memory))
                return 0
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
        skips, skips_at = BOARD_SKIPS.unpack_from, offset + BOARD_SLOT.size
        max_memory = self.max_memory
        for task_id, kind, fn_blob, call_payload in batch.calls:
            if task_id in skips(board, skips_at):  # cancelled before it started
                outcomes.append((task_id, m.FAILED, _CANCELLED, 0.0))
                continue
            start = clock()
            pack(board, offset, task_id, start)
            status, payload = self._run_call(kind, fn_blob, call_payload)
            now = clock()
            outcomes.append((task_id, status, payload, now - start))
            self.tasks_done += 1
            if max_memory is not None:
                rss = resident_memory()
                if rss > max_memory:
                    self.over_memory = rss  # retire; the owner re-sends the calls not run
                    break
            if now - last_flush >= FLUSH_AFTER:
                self.chan.send(m.ResultBatch(outcomes))
                outcomes = []
                last_flush = clock()
        pack(board, offset, -1, 0.0)
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


_statm: list[int] = []  # an open /proc/self/statm, once needed
_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_memory(pid: int | None = None) -> int:
    """Resident memory in bytes, of this process or of ``pid``; 0 when it cannot be read."""
    try:
        if pid is not None:
            with open(f"/proc/{pid}/statm", "rb") as file:
                return int(file.read().split()[1]) * _PAGE
        if not _statm:
            _statm.append(os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC))
        return int(os.pread(_statm[0], 128, 0).split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _stack_file() -> int:
    """A memory file that faulthandler writes every thread's stack into on STACK_SIGNAL.

    The owner reads it through ``/proc/<pid>/fd/<fd>`` (same user). A worker stuck in a
    task, even in C code that holds the GIL, still answers: faulthandler's handler is C code
    that needs no GIL. Returns the descriptor, or -1 when that is unavailable.
    """
    try:
        fd = os.memfd_create("manycore-stacks", os.MFD_CLOEXEC)
        faulthandler.register(STACK_SIGNAL, file=fd, all_threads=True, chain=False)
    except (AttributeError, OSError, RuntimeError, ValueError):
        return -1
    return fd


_CANCELLED = dumps(concurrent.futures.CancelledError())


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
