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

import asyncio
import faulthandler
import functools
import itertools
import multiprocessing
import multiprocessing.process
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable

from . import _messages as m
from . import _output, _payload
from ._board import Board
from ._errors import TaskTimeoutError, describe_call
from ._fds import flush_stdio, start_helper_thread
from ._outcome import CANCELLED, CallRunner, run_initializer
from ._payload import dumps_result, loads
from ._serialize import WorkerFunctionCache, dumps

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

    start_helper_thread(threading.Thread(target=watch, name="manycore-watchdog", daemon=True))


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
                return _CoroutineServer(self).serve(message)
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
                outcomes.append((task_id, m.FAILED, CANCELLED, 0.0))
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
                self.chan.send(m.ResultBatch(outcomes))
                outcomes = []
                last_flush = clock()
        board.mark_idle(slot)
        if outcomes:
            self.chan.send(m.ResultBatch(outcomes))


class _CoroutineServer:
    """The worker once a batch brings coroutine calls: an event loop in the main thread.

    Who runs where::

        reader thread                       main thread: the event loop
        -------------                       -------------------------------------------
        chan.recv() ─► call_soon_threadsafe  CallBatch: coroutine calls become tasks at
          (blocks on the socket; ends at     once (the owner keeps their number under the
          EOF or SHUTDOWN)                   pool's ``concurrency``); plain calls run in
                                             order, on this thread, as before
                                           CancelCalls: cancel those tasks
                                           outcomes: sent once per loop pass

    Guarantees: every call received produces one outcome (a coroutine cancelled by the owner
    answers "cancelled", one past its ``task_timeout`` a ``TaskTimeoutError``) unless the
    worker retires or dies; once it must retire (task quota, memory limit), it starts
    nothing more, lets what runs finish, then sends ``Retiring``: the calls it did not
    start go back to the owner's queue.
    """

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        # Made in ``_main``: before Python 3.10 a queue binds to the loop current at its
        # creation, and that is ``self.loop`` only once it runs.
        self.inbox: asyncio.Queue[Any]
        self.running: dict[int, asyncio.Task[None]] = {}
        self.cancelled: set[int] = set()  # by the owner, while running
        self.outcomes: list[m.Outcome] = []
        self.flush_due = False
        # The pool's concurrency: the owner sends up to twice as many coroutine calls, so
        # the next is here when one ends; the rest wait for a turn.
        self.slots: asyncio.Semaphore | None = None

    def serve(self, first: m.CallBatch) -> int:
        asyncio.set_event_loop(self.loop)
        try:
            return self.loop.run_until_complete(self._main(first))
        finally:
            for task in self.running.values():
                task.cancel()
            self.loop.close()

    def _read(self) -> None:
        loop, put = self.loop, self.inbox.put_nowait
        while True:
            try:
                message: Any = self.worker.chan.recv()
            except EOFError:
                message = _EOF
            try:
                loop.call_soon_threadsafe(put, message)
            except RuntimeError:  # the loop is closed: the worker is exiting
                return
            if message is _EOF or message is m.SHUTDOWN:
                return

    async def _main(self, first: m.CallBatch) -> int:
        self.inbox = asyncio.Queue()
        reader = threading.Thread(target=self._read, name="manycore-reader", daemon=True)
        start_helper_thread(reader)
        self._start(first)
        worker = self.worker
        while True:
            if worker.retire_due() and not self.running:
                self._flush()
                worker.chan.send(worker.retiring())
                return 0
            message = await self.inbox.get()
            if message is m.SHUTDOWN:
                return 0
            if message is _EOF:
                raise EOFError("the owner closed the socket")
            if message is _WAKE:
                continue
            if type(message) is m.CancelCalls:
                for task_id in message.ids:
                    task = self.running.get(task_id)
                    if task is not None:
                        self.cancelled.add(task_id)
                        task.cancel()
            elif not worker.retire_due():  # retiring: the owner re-sends what we drop
                self._start(message)

    def _start(self, batch: m.CallBatch) -> None:
        worker = self.worker
        coroutines = batch.coroutines or {}
        if batch.concurrency is not None and self.slots is None:
            self.slots = asyncio.Semaphore(batch.concurrency)
        board, slot, runner = worker.board, worker.slot, worker.runner
        clock = time.perf_counter
        for task_id, kind, fn_blob, call_payload in batch.calls:
            if worker.retire_due():
                break
            if board.skipped(slot, task_id):
                self._add((task_id, m.FAILED, CANCELLED, 0.0))
                continue
            if task_id not in coroutines:
                start = clock()
                board.mark_running(slot, task_id, start)
                status, payload = runner.run(kind, fn_blob, call_payload)
                board.mark_idle(slot)
                self._finished(task_id, status, payload, clock() - start)
                continue
            try:
                fn = runner.get_fn(fn_blob)
                args = loads(call_payload)
            except BaseException as exc:
                self._add((task_id, m.FAILED, runner.unbuildable(exc), 0.0))
                continue
            call = self._run(task_id, kind, fn, args, coroutines[task_id])
            task = self.loop.create_task(call)
            task.add_done_callback(functools.partial(self._ended, task_id))
            self.running[task_id] = task

    def _ended(self, task_id: int, task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never ran ``_run``'s handlers: answer here.
        if task.cancelled():
            self.running.pop(task_id, None)
            self.cancelled.discard(task_id)
            self._finished(task_id, m.FAILED, CANCELLED, 0.0)

    async def _run(
        self, task_id: int, kind: int, fn: Callable[..., Any], args: Any, timeout: float | None
    ) -> None:
        start = time.perf_counter()
        timer = None
        expired: list[bool] = []
        slots = self.slots
        acquired = False
        try:
            if slots is not None:  # a call sent ahead waits here for its turn
                await slots.acquire()
                acquired = True
                start = time.perf_counter()
            if timeout is not None:
                timer = self.loop.call_later(timeout, _expire, asyncio.current_task(), expired)
            status, payload = await self.worker.runner.run_coroutine(kind, fn, args)
        except asyncio.CancelledError as exc:
            if task_id in self.cancelled:
                status, payload = m.FAILED, CANCELLED
            elif expired:
                status, payload = m.FAILED, _timeout_error(fn, args, kind, timeout)
            else:  # the coroutine cancelled itself: its own error
                status, payload = m.RAISED, self.worker.runner.raised(exc, fn)
        finally:
            if acquired:
                slots.release()  # type: ignore[union-attr]
            if timer is not None:
                timer.cancel()
            self.running.pop(task_id, None)
            self.cancelled.discard(task_id)
        self._finished(task_id, status, payload, time.perf_counter() - start)

    def _finished(self, task_id: int, status: int, payload: bytes, elapsed: float) -> None:
        worker = self.worker
        worker.tasks_done += 1
        if worker.max_memory is not None:
            rss = resident_memory()
            if rss > worker.max_memory:
                worker.over_memory = rss
        self._add((task_id, status, payload, elapsed))
        if worker.retire_due() and not self.running:
            self.inbox.put_nowait(_WAKE)  # the main coroutine retires now

    def _add(self, outcome: m.Outcome) -> None:
        self.outcomes.append(outcome)
        if not self.flush_due:
            self.flush_due = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_due = False
        if self.outcomes:
            outcomes, self.outcomes = self.outcomes, []
            self.worker.chan.send(m.ResultBatch(outcomes))


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_EOF = _Marker("EOF")  # the reader thread saw the owner close the socket
_WAKE = _Marker("WAKE")  # look at the retiring state again


def _expire(task: asyncio.Task[Any] | None, expired: list[bool]) -> None:
    expired.append(True)
    if task is not None:
        task.cancel()


def _timeout_error(fn: Callable[..., Any], args: Any, kind: int, timeout: float | None) -> bytes:
    shown = args if kind & m.KIND == m.CALL else ("...",)
    described = describe_call(fn, shown)
    error = TaskTimeoutError(
        f"{described} ran longer than its task_timeout of {timeout:g} s and was cancelled in "
        "its worker (a coroutine is cancelled, not its worker stopped). Other tasks are "
        "unaffected.",
        task=described,
        timeout=timeout,
        pid=os.getpid(),
    )
    return dumps(error)


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
