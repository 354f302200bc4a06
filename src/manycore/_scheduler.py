"""The scheduler: one thread per pool that owns the workers and every task in flight.

Who runs where::

    user threads                         scheduler thread ("manycore-scheduler")
    ------------                         ---------------------------------------
    submit(Task) / add_source(job)  ──►  inbox ─► FIFO of sources (tasks and jobs)
    wake() (a pipe byte, only when       dispatch: CallBatch to each worker with room
      the scheduler sleeps)              poll(): worker sockets, the wake-up pipe
                                         ResultBatch ─► sink._resolve / sink._reject
    close() / terminate()                worker EOF ─► settle its tasks, start another

Guarantees (see docs/design.md for the reasoning):

* Every task handed to ``submit`` ends in exactly one ``_resolve`` or one ``_reject``. A task
  is in exactly one place: the inbox, the FIFO, one worker's in-flight table, or done.
* When a worker dies, the task on its board fails with ``WorkerLostError``; its other
  in-flight tasks go back to the front of the FIFO (never started, or finished with their
  results lost); a new worker takes its slot.
* Workers that keep dying before they are ready break the pool (``PoolBrokenError``) rather
  than being respawned forever; an initializer that raises breaks it with
  ``InitializerError``. A broken pool rejects everything pending and everything submitted
  later.
* Only this thread touches worker sockets, and it never blocks on one.
"""

from __future__ import annotations

import atexit
import itertools
import mmap
import multiprocessing
import os
import pickle
import secrets
import select
import signal
import socket
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from typing import Any, Callable, Optional, Protocol, Union

from . import _messages as m
from . import _serialize, _shm
from ._chunking import ChunkSizer
from ._errors import (
    InitializerError,
    ManycoreError,
    PoolBrokenError,
    PoolClosedError,
    ResultUnpicklingError,
    WorkerLostError,
    describe_call,
    with_remote_cause,
)
from ._launch import (
    Launcher,
    WorkerProcess,
    describe_status,
    forget_internal_fd,
    internal_fd,
    start_helper_thread,
)
from ._serialize import dumps, loads, shm_threshold
from ._transport import OwnerChannel
from ._worker import BOARD_SLOT

__all__ = ["Scheduler", "Sink", "Source", "Task"]

IN_FLIGHT_BATCHES = 2  # per worker: one running, one waiting, so a worker never idles on IPC
STARTUP_FAILURES = 3  # consecutive deaths before "ready" that break the pool
STATUS_WAIT = 2.0  # seconds to wait for a dead worker's exit status before killing it
TERMINATE_GRACE = 0.5  # seconds between SIGTERM and SIGKILL when terminating


class Sink(Protocol):
    """Where a task's outcome goes: an AsyncResult, a Future, or a map job."""

    @property
    def sizer(self) -> Optional[ChunkSizer]:
        """The sizer fed this sink's run times; None for single tasks (the pool's own)."""

    def _claim(self) -> bool:
        """Called once, just before the task is first sent; False drops it (cancelled)."""

    def _resolve(self, task: Task, value: Any) -> None: ...

    def _reject(self, task: Task, exc: BaseException, partial: Optional[list[Any]]) -> None: ...


class Source(Protocol):
    """A map job as the scheduler sees it: a supply of chunk tasks."""

    def _take(self, scheduler: Scheduler) -> Optional[Task]:
        """The next chunk to run, or None if none is ready now."""

    def _drained(self) -> bool:
        """True once no more chunks will come."""

    def _abort(self, exc: BaseException) -> None:
        """Fail everything not yet run (the pool was terminated or broke)."""


_task_ids = itertools.count()


class Task:
    """One unit sent to a worker: a call, or a chunk of a map."""

    __slots__ = ("claimed", "fn", "fn_blob", "id", "index", "items", "kind", "payload", "sink")

    def __init__(
        self,
        kind: int,
        fn: Callable[..., Any],
        fn_blob: bytes,
        payload: bytes,
        sink: Sink,
        index: int = 0,
        items: int = 1,
    ) -> None:
        self.id = next(_task_ids)
        self.kind = kind
        self.fn = fn
        self.fn_blob = fn_blob
        self.payload = payload
        self.sink = sink
        self.index = index  # chunk number within its job
        self.items = items
        self.claimed = False

    def describe(self) -> str:
        """``task 17: square(3)``, unpickling the arguments only for this message."""
        try:
            args = loads(self.payload)
            if self.kind == m.CALL:
                shown = args
            elif self.kind == m.CALL_KW:
                shown = args[0]
            else:
                first = describe_call(self.fn, args[0] if self.kind == m.STARMAP else (args[0],))
                return (
                    f"task {self.id}: chunk {self.index} of a map ({self.items} item"
                    f"{'s' if self.items != 1 else ''}, the first {first})"
                )
        except Exception:
            shown = ("...",)
        return f"task {self.id}: {describe_call(self.fn, shown)}"


class _Slot:
    """One worker seat: the process in it, its socket, and what it holds."""

    def __init__(
        self,
        index: int,
        proc: WorkerProcess,
        chan: OwnerChannel,
        quota: int | None,
        shm_prefix: str = "",
    ):
        self.index = index
        self.shm_prefix = shm_prefix  # names of the segments it hands results over in
        self.proc = proc
        self.chan = chan
        self.tasks: dict[int, Task] = {}  # in flight, in dispatch order
        self.batches: deque[int] = deque()  # outcomes still due per batch in flight
        self.quota = quota  # tasks it may still be sent, None = unlimited
        self.ready = False
        self.retiring = False
        self.prefix_tracked = False  # our tracker removes its segments if we both die

    def has_room(self) -> bool:
        return (
            len(self.batches) < IN_FLIGHT_BATCHES
            and not self.retiring
            and (self.quota is None or self.quota > 0)
        )


SourceOrTask = Union[Task, Source]
_CANCEL_QUEUED: Any = object()  # an inbox marker: cancel every queued task and job

_live: weakref.WeakSet[Scheduler] = weakref.WeakSet()
# A forked child has copies of its parent's pools but none of their threads: they are not its
# own to stop at exit (and waiting for their threads would only delay its exit).
os.register_at_fork(after_in_child=_live.clear)


class Scheduler:
    """Runs tasks on a set of worker processes; see the module docstring."""

    def __init__(
        self,
        launcher: Launcher,
        workers: int,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
    ) -> None:
        self.launcher = launcher
        self.workers = workers
        self.max_tasks = max_tasks_per_child
        self._shm_threshold = shm_threshold()  # workers use the value of pool creation time
        self._shm_dir = _shm.shm_dir()
        self._init_blob = dumps((initializer, tuple(initargs))) if initializer else None
        self.single_sizer = ChunkSizer(workers)
        # Seconds per item last measured for each mapped function (by its pickled bytes), so
        # a repeated map of the same function starts at a good chunk size, not at 1.
        self.per_item: dict[bytes, float] = {}
        self._inbox: deque[SourceOrTask] = deque()
        self._fifo: deque[SourceOrTask] = deque()
        self._slots: dict[int, _Slot] = {}  # by socket fd
        self._free_indexes = list(range(workers))
        self._startup_failures = 0
        self._asleep = False
        self._room = True  # some worker could take a batch now (kept by the scheduler)
        self._closing = False
        self._terminating = False
        self._broken: BaseException | None = None
        self._finished = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        internal_fd(self._wake_r)
        internal_fd(self._wake_w)
        self._lifeline_r, self._lifeline_w = os.pipe()
        internal_fd(self._lifeline_w)
        self._board_fd, self._board = _make_board(workers)
        _serialize._pool_opened()
        try:
            for _ in range(workers):
                self._start_worker()
        except BaseException:
            self._kill_all()
            self._release()
            raise
        self._thread = threading.Thread(target=self._run, name="manycore-scheduler", daemon=True)
        start_helper_thread(self._thread)
        _live.add(self)

    # ------------------------------------------------------------ any thread

    @property
    def broken(self) -> BaseException | None:
        return self._broken

    @property
    def closing(self) -> bool:
        return self._closing

    def check_open(self, broken_raises: bool = True) -> None:
        """Raise PoolClosedError if no new work is accepted.

        A broken pool raises its breakage too unless ``broken_raises`` is false: then work
        is accepted and rejected with the breakage (a Pool reports errors through results).
        """
        if self._broken is not None:
            if broken_raises:
                raise fresh_error(self._broken)
            return
        if self._closing or self._terminating:
            raise PoolClosedError(
                "the pool is closed: it accepts no new work after close(), shutdown() or "
                "terminate(); create a new pool"
            )

    def submit(self, item: SourceOrTask) -> None:
        """Hand a task or a map job to the scheduler thread."""
        self._inbox.append(item)
        if self._finished.is_set():
            # The scheduler is gone (the pool broke or closed while we were submitting).
            # It drains the inbox once more after setting _finished, so between it and us
            # every item is settled; nothing waits forever.
            self._reject_leftovers()
        # Wake the scheduler only if it sleeps and some worker has room: when all are busy,
        # it drains the inbox anyway as results arrive, and a submit costs no system call.
        elif self._asleep and self._room:
            self.wake()

    def _reject_leftovers(self) -> None:
        exc = self._broken or PoolClosedError(
            "the pool was closed before this work could start; create a new pool"
        )
        inbox = self._inbox
        while True:
            try:
                item = inbox.popleft()
            except IndexError:
                return
            if item is not _CANCEL_QUEUED:
                self._reject_item(item, exc)

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already pending, or the scheduler is gone

    def close(self) -> None:
        """Finish all submitted work, then stop the workers."""
        self._closing = True
        self.wake()

    def terminate(self) -> None:
        """Stop now: reject everything pending, kill the workers."""
        self._closing = True
        self._terminating = True
        self.wake()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the scheduler thread to finish; True when it has."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("cannot join a pool from one of its own callbacks")
        return self._finished.wait(timeout)

    def cancel_queued(self) -> None:
        """Cancel what has not been sent to a worker yet (``shutdown(cancel_futures=True)``)."""
        self.submit(_CANCEL_QUEUED)

    # ------------------------------------------------------------ scheduler thread

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        try:
            while True:
                self._drain_inbox()
                if self._terminating:
                    self._shutdown(graceful=False)
                    return
                self._dispatch()
                if self._closing and self._idle():
                    self._shutdown(graceful=True)
                    return
                self._wait(poller)
        except BaseException as exc:  # a bug in manycore: fail loudly, never hang
            report = PoolBrokenError(
                f"manycore's scheduler failed: {exc!r}; every pending task was failed. "
                "This is a bug; please report it with the traceback."
            )
            report.__cause__ = exc
            traceback.print_exc()
            self._break(report)
            self._shutdown(graceful=False)
        finally:
            self._release()
            self._finished.set()
            self._reject_leftovers()

    def _drain_inbox(self) -> None:
        inbox, fifo = self._inbox, self._fifo
        while inbox:
            item = inbox.popleft()
            if item is _CANCEL_QUEUED:
                for queued in fifo:
                    cancel = getattr(
                        queued.sink if isinstance(queued, Task) else queued, "_cancel", None
                    )
                    if cancel is not None:
                        cancel()
            elif self._broken is not None:
                self._reject_item(item, self._broken)
            else:
                fifo.append(item)

    def _closing_idle(self) -> bool:
        return self._closing and self._idle()

    def _idle(self) -> bool:
        if self._inbox or self._fifo:
            return False
        return all(not slot.tasks for slot in self._slots.values())

    def _wait(self, poller: select.poll) -> None:
        for fd, slot in self._slots.items():
            flags = select.POLLIN
            if slot.chan.wants_write:
                flags |= select.POLLOUT
            poller.register(fd, flags)
        self._asleep = True
        if self._inbox:
            self._asleep = False
            return
        try:
            events = poller.poll()
        finally:
            self._asleep = False
        for fd, event in events:
            if fd == self._wake_r:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                continue
            found = self._slots.get(fd)
            if found is None:
                continue
            slot = found
            if event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                self._read(slot, poller)
            elif event & select.POLLOUT:
                self._flush(slot, poller)

    def _read(self, slot: _Slot, poller: select.poll) -> None:
        frames, closed = slot.chan.receive()
        for frame in frames:
            self._handle(slot, loads(frame))
        if closed:
            self._worker_died(slot, poller)

    def _flush(self, slot: _Slot, poller: select.poll) -> None:
        try:
            slot.chan.flush()
        except EOFError:
            self._worker_died(slot, poller)

    def _handle(self, slot: _Slot, message: Any) -> None:
        if type(message) is m.ResultBatch:
            self._settle_batch(slot, message.outcomes)
        elif type(message) is m.WorkerReady:
            slot.ready = True
            self._startup_failures = 0
        elif type(message) is m.Retiring:
            slot.retiring = True
        elif type(message) is m.InitFailed:
            self._break(initializer_error(message.error))

    def _settle_batch(self, slot: _Slot, outcomes: list[m.Outcome]) -> None:
        # The hot path of every task: kept flat, with single tasks' timings summed.
        tasks, batches = slot.tasks, slot.batches
        single_items, single_time = 0, 0.0
        for task_id, status, payload, elapsed in outcomes:
            task = tasks.pop(task_id)
            batches[0] -= 1
            if not batches[0]:
                batches.popleft()
            sizer = task.sink.sizer
            if sizer is None:
                single_items += task.items
                single_time += elapsed
            else:
                sizer.record(task.items, elapsed)
                self._remember(task.fn_blob, sizer)
            if status == m.OK:
                if payload and payload[0] == _SHM_PAYLOAD and not slot.prefix_tracked:
                    _track_worker_segments(slot)
                try:
                    value = loads(payload)
                except Exception as exc:
                    self._settle_failure(task, status, payload, exc)
                    continue
                try:
                    task.sink._resolve(task, value)
                except Exception:  # a user callback raised: report it, keep going
                    traceback.print_exc()
            else:
                self._settle_failure(task, status, payload, None)
        if single_items:
            self.single_sizer.record(single_items, single_time)

    def _remember(self, fn_blob: bytes, sizer: ChunkSizer) -> None:
        if sizer.per_item is not None:
            if len(self.per_item) >= 256 and fn_blob not in self.per_item:
                self.per_item.clear()  # a crude bound: estimates are cheap to relearn
            self.per_item[fn_blob] = sizer.per_item

    def _settle_failure(
        self, task: Task, status: int, payload: bytes, unpickling: Exception | None
    ) -> None:
        if unpickling is not None:
            call_sink(task.sink._reject, task, unpickling_error(task, unpickling), None)
            return
        error, partial = outcome_error(task, status, payload)
        call_sink(task.sink._reject, task, error, partial)

    # dispatch ---------------------------------------------------------------

    def _dispatch(self) -> None:
        if self._fifo and self._broken is None:
            self._fill_workers()
        self._room = any(slot.has_room() for slot in self._slots.values())

    def _fill_workers(self) -> None:
        for slot in list(self._slots.values()):
            while slot.has_room():
                calls = self._next_batch(slot)
                if not calls:
                    return
                self._send(slot, calls)

    def _next_batch(self, slot: _Slot) -> list[Task]:
        fifo = self._fifo
        for _ in range(len(fifo)):
            head = fifo[0]
            if isinstance(head, Task):
                return self._take_singles(slot)
            task = head._take(self)
            if task is not None:
                if task.claimed or task.sink._claim():
                    task.claimed = True
                    return [task]
                continue
            if head._drained():
                fifo.popleft()
            else:
                fifo.rotate(-1)  # a lazy job waiting for its consumer: let others go first
        return []

    def _take_singles(self, slot: _Slot) -> list[Task]:
        fifo = self._fifo
        size = self.single_sizer.next_size(remaining=len(fifo))
        if slot.quota is not None:
            size = min(size, slot.quota)
        batch: list[Task] = []
        while fifo and len(batch) < size:
            task = fifo[0]
            if not isinstance(task, Task):
                break
            fifo.popleft()
            if task.claimed or task.sink._claim():
                task.claimed = True
                batch.append(task)
        return batch

    def _send(self, slot: _Slot, calls: list[Task]) -> None:
        frame = pickle.dumps(m.CallBatch([(t.id, t.kind, t.fn_blob, t.payload) for t in calls]), 5)
        for task in calls:
            slot.tasks[task.id] = task
        slot.batches.append(len(calls))
        if slot.quota is not None:
            slot.quota -= len(calls)
        slot.chan.queue(frame)
        try:
            slot.chan.flush()
        except EOFError:
            pass  # the poll loop sees the EOF and settles the tasks

    # workers ------------------------------------------------------------------

    def _start_worker(self) -> None:
        index = self._free_indexes.pop(0)
        ours, theirs = socket.socketpair()
        BOARD_SLOT.pack_into(self._board, index * BOARD_SLOT.size, -1)
        try:
            proc = self.launcher.start(theirs.fileno(), self._lifeline_r, self._board_fd)
        except BaseException:
            ours.close()
            self._free_indexes.insert(0, index)
            raise
        finally:
            theirs.close()
        chan = OwnerChannel(ours)
        internal_fd(chan.fileno())
        prefix = f"{_shm.PREFIX}_w{secrets.token_hex(6)}" if self._shm_threshold else None
        config = m.WorkerConfig(
            slot=index,
            sys_path=list(sys.path),
            cwd=_cwd(),
            initializer=self._init_blob,
            max_tasks=self.max_tasks,
            shm_threshold=self._shm_threshold,
            shm_prefix=prefix,
            shm_dir=self._shm_dir,
            authkey=bytes(multiprocessing.current_process().authkey),
        )
        chan.queue(pickle.dumps(config, 5))
        chan.flush()
        self._slots[chan.fileno()] = _Slot(index, proc, chan, self.max_tasks, prefix or "")

    def _worker_died(self, slot: _Slot, poller: select.poll) -> None:
        fd = slot.chan.fileno()
        poller.unregister(fd)
        del self._slots[fd]
        forget_internal_fd(fd)
        slot.chan.close()
        running = BOARD_SLOT.unpack_from(self._board, slot.index * BOARD_SLOT.size)[0]
        self._free_indexes.append(slot.index)
        status = slot.proc.wait(STATUS_WAIT)
        if status is None:  # its socket closed but it lives on: make sure it is gone
            slot.proc.kill(signal.SIGKILL)
            status = slot.proc.wait(STATUS_WAIT)
        slot.proc.close()
        # Its results were read (and their segments claimed) before its EOF: whatever is left
        # under its prefix was being written or never reached us.
        _free_worker_segments(slot)
        planned = slot.retiring or (self._closing and not slot.tasks)
        blamed = slot.tasks.pop(running, None)
        if slot.tasks:  # not started, or finished with their results lost: run them again
            self._fifo.extendleft(reversed(list(slot.tasks.values())))
        if blamed is not None:
            call_sink(blamed.sink._reject, blamed, _lost_error(slot, status, blamed), None)
        if not planned and not slot.ready:
            self._startup_failures += 1
            if self._startup_failures >= STARTUP_FAILURES and self._broken is None:
                self._break(self._startup_error(slot, status))
        if self._broken is None and not self._terminating and not self._closing_idle():
            try:
                self._start_worker()
            except Exception as exc:
                self._break(
                    PoolBrokenError(
                        f"the pool could not start a worker to replace pid {slot.proc.pid}: {exc!r}"
                    )
                )

    def _startup_error(self, slot: _Slot, status: int | None) -> PoolBrokenError:
        _, _, words = describe_status(status)
        what = f"{STARTUP_FAILURES} workers in a row died before they were ready"
        last = f"the last one, pid {slot.proc.pid}, {words}"
        if self._init_blob is not None:
            return InitializerError(
                f"{what}, while running the pool's initializer ({last}); no worker can start, "
                "so every task fails. Fix the initializer."
            )
        return PoolBrokenError(
            f"{what} ({last}); the pool cannot start workers. Check what the worker imports "
            "and the machine's limits (memory, processes)."
        )

    def _break(self, exc: BaseException) -> None:
        """Fail everything pending and in flight with ``exc``; later submits fail too."""
        if self._broken is None:
            self._broken = exc
        self._closing = True
        self._reject_all(self._broken)

    def _reject_all(self, exc: BaseException) -> None:
        self._drain_inbox()
        pending = list(self._fifo)
        self._fifo.clear()
        for slot in self._slots.values():
            pending.extend(slot.tasks.values())
            slot.tasks.clear()
            slot.batches.clear()
        for item in pending:
            self._reject_item(item, exc)

    def _reject_item(self, item: SourceOrTask, exc: BaseException) -> None:
        if isinstance(item, Task):
            call_sink(item.sink._reject, item, fresh_error(exc), None)
        else:
            item._abort(fresh_error(exc))

    def _shutdown(self, graceful: bool) -> None:
        if not graceful:
            self._reject_all(
                PoolClosedError("the pool was terminated before this task could finish")
            )
        for slot in self._slots.values():
            try:
                if graceful:
                    slot.chan.queue(pickle.dumps(m.SHUTDOWN, 5))
                    slot.chan.flush()
            except EOFError:
                pass
        if graceful:
            deadline = time.monotonic() + 5.0
            for slot in self._slots.values():
                slot.proc.wait(max(0.0, deadline - time.monotonic()))
        self._kill_all()

    def _kill_all(self) -> None:
        slots = list(self._slots.values())
        for slot in slots:
            slot.proc.kill(signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE
        for slot in slots:
            if slot.proc.wait(max(0.0, deadline - time.monotonic())) is None:
                slot.proc.kill(signal.SIGKILL)
                slot.proc.wait(STATUS_WAIT)
            slot.proc.close()
            forget_internal_fd(slot.chan.fileno())
            slot.chan.close()
            _free_worker_segments(slot)
        self._slots.clear()

    def _release(self) -> None:
        _live.discard(self)
        _serialize._pool_closed()
        for fd in (self._wake_r, self._lifeline_w, self._lifeline_r, self._board_fd):
            forget_internal_fd(fd)
            try:
                os.close(fd)
            except OSError:
                pass
        self._lifeline_w = self._lifeline_r = self._board_fd = -1
        # The write end of the wake-up pipe stays open: user threads may still call
        # wake(), and a write into a pipe nobody reads is harmless until it fills.


_SHM_PAYLOAD = ord("M")  # the first byte of a shared-memory payload (_serialize)


def _track_worker_segments(slot: _Slot) -> None:
    """Once a worker hands results over in shared memory, have this process's tracker remove
    its leftovers should this process and the worker both be killed (the worker's watchdog
    covers the owner's death alone, and ``_free_worker_segments`` the worker's)."""
    slot.prefix_tracked = True
    try:
        _shm.track_prefix(slot.shm_prefix + "_")
    except OSError:
        pass


def _free_worker_segments(slot: _Slot) -> None:
    if slot.prefix_tracked:
        _shm.untrack_prefix(slot.shm_prefix + "_")
    if slot.shm_prefix:
        try:
            _shm.unlink_prefix(slot.shm_prefix + "_")
        except OSError:
            pass


def _make_board(workers: int) -> tuple[int, mmap.mmap]:
    """A shared page where each worker writes the id of the task it is running."""
    size = max(mmap.PAGESIZE, workers * BOARD_SLOT.size)
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("manycore-board", os.MFD_CLOEXEC)
    else:  # pragma: no cover - non-Linux
        import tempfile

        handle, path = tempfile.mkstemp(prefix="manycore-board-")
        os.unlink(path)
        fd = handle
    os.ftruncate(fd, size)
    return fd, mmap.mmap(fd, size)


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return ""


def _lost_error(slot: _Slot, status: int | None, task: Task) -> WorkerLostError:
    exitcode, sig, words = describe_status(status)
    described = task.describe()  # unpickles the task's arguments: once
    cause = ""
    if sig == signal.SIGKILL:
        cause = (
            " This is what the kernel's OOM killer does when memory runs out: lower the "
            "number of workers or the memory each task uses."
        )
    elif sig == signal.SIGSEGV:
        cause = " A segmentation fault is a crash in C code (an extension module, ctypes)."
    return WorkerLostError(
        f"worker {slot.index} (pid {slot.proc.pid}) {words} while running {described}."
        f"{cause} The pool replaced the worker; other tasks are unaffected.",
        pid=slot.proc.pid,
        exitcode=exitcode,
        signal=sig,
        task=described,
    )


def unpickling_error(task: Task, exc: Exception) -> ResultUnpicklingError:
    """The error for a task whose result could not be unpickled in the caller."""
    error = ResultUnpicklingError(
        f"the result of {task.describe()} could not be unpickled in the caller: "
        f"{exc!r}. Its class must be importable here with the same definition.",
    )
    error.__cause__ = exc
    return error


def outcome_error(task: Task, status: int, payload: bytes) -> tuple[BaseException, Any]:
    """(error, values computed before it) for a RAISED or FAILED outcome's payload."""
    partial = None
    try:
        if status == m.RAISED:
            exc_blob, summary, tb, partial = loads(payload)
            try:
                error: BaseException = loads(exc_blob)
            except Exception as inner:
                error = ResultUnpicklingError(
                    f"{task.describe()} raised {summary}, and that exception could not "
                    f"be unpickled in the caller: {inner!r}. Give the exception class an "
                    "__init__ that accepts its args, or a __reduce__."
                )
            with_remote_cause(error, tb)
        else:
            error = loads(payload)
    except Exception as inner:
        error = ResultUnpicklingError(
            f"the outcome of {task.describe()} could not be unpickled in the caller: {inner!r}."
        )
    return error, partial


def initializer_error(blob: bytes) -> InitializerError:
    try:
        exc, tb = loads(blob)
    except Exception as inner:
        return InitializerError(f"the pool's initializer failed (details lost: {inner!r})")
    if isinstance(exc, InitializerError):
        return exc
    error = InitializerError(
        f"the pool's initializer raised {type(exc).__name__}: {exc}; every task fails. "
        "Fix the initializer (its traceback is the cause below)."
    )
    error.__cause__ = with_remote_cause(exc, tb)
    return error


def fresh_error(exc: BaseException) -> BaseException:
    """A new instance of a shared error, so each caller gets its own traceback."""
    if isinstance(exc, ManycoreError):
        copy = type(exc)(str(exc), **exc.__dict__)
        copy.__cause__ = exc.__cause__
        return copy
    return exc


def call_sink(method: Callable[..., None], *args: Any) -> None:
    try:
        method(*args)
    except Exception:  # a user callback raised: report it, keep the pool running
        traceback.print_exc()


@atexit.register
def _terminate_all() -> None:
    """At interpreter exit, stop every pool still running (as the stdlib does)."""
    schedulers = list(_live)
    for scheduler in schedulers:
        scheduler.terminate()
    for scheduler in schedulers:
        scheduler.join(TERMINATE_GRACE + STATUS_WAIT)
