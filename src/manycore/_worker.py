"""The worker process: its entry point (``ENTRY``) and its loop.

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

import faulthandler
import functools
import itertools
import multiprocessing
import multiprocessing.process
import os
import pickle
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable

from . import _messages as m
from . import _output, _payload
from ._board import Board
from ._fds import flush_stdio, start_helper_thread
from ._outcome import CallRunner, run_initializer, was_cancelled
from ._payload import dumps_result, loads
from ._serialize import PROTOCOL, WorkerFunctionCache, dumps

__all__ = [
    "ENTRY",
    "EXIT_INIT_FAILED",
    "EXIT_ORPHANED",
    "STACK_SIGNAL",
    "resident_memory",
    "run_worker",
    "worker_identity",
]

STACK_SIGNAL = signal.SIGRTMIN + 6  # faulthandler dumps the stacks on this one
EXIT_INIT_FAILED = 3
EXIT_ORPHANED = 4
FLUSH_AFTER = 0.002  # seconds of finished work before results are sent mid-batch


# What a launcher runs in a pool worker's process (``Launcher.start_child``): by name, so a
# spawned interpreter or the fork server can import it.
ENTRY = "manycore._worker:run_worker"

_shm_prefix: list[str] = []  # this worker's result-segment prefix, once configured

# How the stdlib's workers are named, by start method: "ForkPoolWorker-3" in a Pool,
# "ForkProcess-3" in an executor. Programs log and shard by the name (#3). The default
# method is named as the stdlib's default is on this Python (fork up to 3.13), so a
# program's output does not change with the import.
_METHOD_PREFIX = {
    "fork": "Fork",
    "spawn": "Spawn",
    "forkserver": "ForkServer",
    "default": "Fork" if sys.version_info < (3, 14) else "ForkServer",
}


def worker_identity(start_method: str, title: str) -> tuple[str, tuple[int, ...]]:
    """In the owner: the next worker's ``(name, _identity)``, numbered from the same counter
    as the owner's ``Process`` objects, as the stdlib's are, so a replacement gets a new
    number."""
    number = next(multiprocessing.process._process_counter)  # type: ignore[attr-defined]
    identity = (*multiprocessing.current_process()._identity, number)
    name = f"{_METHOD_PREFIX.get(start_method, '')}{title}-{':'.join(map(str, identity))}"
    return name, identity


def _adopt_identity(identity: tuple[str, tuple[int, ...]] | None) -> None:
    if identity is not None:
        me: Any = multiprocessing.current_process()
        me.name, me._identity = identity
        # As a stdlib child starts: its own processes are numbered from 1 ("Process-3:1"),
        # and what a fork copied from the caller's list of children is not ours.
        process: Any = multiprocessing.process
        process._process_counter = itertools.count(1)
        process._children = set()


def run_worker(chan_fd: int, lifeline_fd: int, board_fd: int) -> int:
    """Run the worker loop on the given descriptors; return the process exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _start_watchdog(lifeline_fd)
    chan = _Channel(socket.socket(fileno=chan_fd))
    board = Board.attach(board_fd)
    try:
        return _Worker(chan, board).run()
    except EOFError:  # the owner closed our socket: it is terminating us
        return 0
    finally:
        _payload.drop_segments()  # the owner's views of our results stay valid
        flush_stdio()


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
                flush_stdio()
                # Nobody will read the results we handed over: free them.
                for prefix in _shm_prefix:
                    try:
                        from ._shm import unlink_prefix

                        unlink_prefix(prefix)
                    except Exception:
                        pass
                os._exit(EXIT_ORPHANED)

    # A bare thread: ``threading.Thread.start`` waits until the new thread runs, which on a
    # busy machine held up a forked worker's first task by a millisecond or more.
    start_helper_thread(watch)


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

    def send_outcomes(self, outcomes: list[m.Outcome]) -> None:
        """A ``ResultBatch`` in its wire form, the bare list (``_messages``): plain pickle
        always takes ints, bytes and floats, so no scan for ``__main__`` either."""
        if self.before_send is not None:
            self.before_send()
        data = pickle.dumps(outcomes, PROTOCOL)
        with self._send_lock:
            self._chan.send(data)

    def recv(self) -> Any:
        message = loads(self._chan.recv())
        if type(message) is tuple:  # a CallBatch in its wire form (``_messages``)
            return m.CallBatch(*message)
        return message


class _Worker:
    def __init__(self, chan: _Channel, board: Board) -> None:
        self.chan = chan
        self.board = board
        self.runner = CallRunner(
            WorkerFunctionCache().get,
            dumps_result,
            "the worker",
            "Their class or module must be importable in the worker (check sys.path and "
            "that the module does not fail on import).",
        )
        self.slot = 0
        self.tasks_done = 0
        self.max_tasks: int | None = None
        self.max_memory: int | None = None
        self.over_memory = 0  # the resident memory that crossed max_memory, once it has

    def run(self) -> int:
        config: m.WorkerConfig = self.chan.recv()
        _adopt_identity(config.identity)
        self.slot = config.slot
        self.runner.on_call = functools.partial(self.board.mark_called, config.slot)
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
            if type(message) is m.CancelCalls:  # for coroutines that ended meanwhile
                continue
            if message.coroutines is not None:
                from ._coroutine_worker import CoroutineServer  # asyncio loads only now

                return CoroutineServer(self).serve(message)
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

    def check_memory(self) -> None:
        """With a memory limit, note the resident memory once it is over it (to retire)."""
        if self.max_memory is not None:
            rss = resident_memory()
            if rss > self.max_memory:
                self.over_memory = rss

    def retire_due(self) -> bool:
        return bool(self.over_memory) or (
            self.max_tasks is not None and self.tasks_done >= self.max_tasks
        )

    def retiring(self) -> m.Retiring:
        if self.over_memory:
            return m.Retiring(self.tasks_done, "memory", self.over_memory)
        return m.Retiring(self.tasks_done)

    def _run_batch(self, batch: m.CallBatch) -> None:
        outcomes: list[m.Outcome] = []
        clock = time.perf_counter
        last_flush = clock()
        board, slot = self.board, self.slot
        max_memory = self.max_memory
        run = self.runner.run
        for task_id, kind, fn_blob, call_payload in batch.calls:
            if board.skipped(slot, task_id):  # cancelled before it started
                outcomes.append((task_id, m.FAILED, was_cancelled(), 0.0))
                continue
            start = clock()
            board.mark_running(slot, task_id, start)
            status, payload = run(kind, fn_blob, call_payload)
            board.mark_finished(slot, task_id)  # ran: never to be run again unasked
            now = clock()
            outcomes.append((task_id, status, payload, now - start))
            self.tasks_done += 1
            if max_memory is not None:
                rss = resident_memory()
                if rss > max_memory:
                    self.over_memory = rss  # retire; the owner re-sends the calls not run
                    break
            if now - last_flush >= FLUSH_AFTER or batch.timed:
                self.chan.send_outcomes(outcomes)
                outcomes = []
                last_flush = clock()
        board.mark_idle(slot)
        if outcomes:
            self.chan.send_outcomes(outcomes)


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
