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
* A task with a ``task_timeout`` is failed with ``TaskTimeoutError`` at its deadline (the
  board says when it started); its worker gets SIGTERM, then SIGKILL after ``KILL_GRACE``,
  and is replaced. Cancelling a running task stops its worker the same way.
* A task whose failure matches its ``retry_on`` goes back to the front of the FIFO until its
  ``retries`` are spent, then fails with the last cause. A task that kills every worker it
  touches fails after its retries like any other; it never breaks the pool, because only
  deaths before a worker is ready count towards ``STARTUP_FAILURES`` (a SIGKILL then
  counts a third: it is more often the OOM killer or a user than the worker's fault).
* With every option off, the only added work is a few additions per batch of outcomes
  (statistics) and a memory sample of busy workers every ``SAMPLE_EVERY`` seconds.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import itertools
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
from . import _output, _serialize, _shm
from ._board import BOARD_SKIPS, BOARD_SLOT, BOARD_STRIDE, make_board
from ._chunking import ChunkSizer
from ._errors import (
    InitializerError,
    ManycoreError,
    PoolBrokenError,
    PoolClosedError,
    TaskTimeoutError,
    WorkerLostError,
    describe_call,
)
from ._launch import (
    Launcher,
    WorkerProcess,
    describe_status,
    forget_internal_fd,
    internal_fd,
    start_helper_thread,
)
from ._options import TaskOptions
from ._outcome import initializer_error, outcome_error, unpickling_error
from ._serialize import dumps, loads, shm_threshold
from ._stats import PoolStatistics, WorkerStack, WorkerStatistics
from ._transport import OwnerChannel
from ._worker import STACK_SIGNAL, resident_memory

__all__ = ["Scheduler", "Sink", "Source", "Task"]

IN_FLIGHT_BATCHES = 2  # per worker: one running, one waiting, so a worker never idles on IPC
STARTUP_FAILURES = 3  # consecutive deaths before "ready" that break the pool
KILLED_AT_START_WEIGHT = 3  # SIGKILLed before ready: that many count as one such death
STATUS_WAIT = 2.0  # seconds to wait for a dead worker's exit status before killing it
TERMINATE_GRACE = 0.5  # seconds between SIGTERM and SIGKILL when terminating
KILL_GRACE = 0.5  # seconds a worker stopped for a timeout or a cancel gets after SIGTERM
WATCH_TICK = 0.01  # seconds between board checks while a timed or cancelled task waits
SAMPLE_EVERY = 0.5  # seconds between memory samples of busy workers
MAX_TIMED_BATCH = 256  # one-item chunks of a timed map per batch, at most


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

    __slots__ = (
        "attempts",
        "claimed",
        "fn",
        "fn_blob",
        "id",
        "index",
        "items",
        "kind",
        "options",
        "payload",
        "sink",
    )

    def __init__(
        self,
        kind: int,
        fn: Callable[..., Any],
        fn_blob: bytes,
        payload: bytes,
        sink: Sink,
        index: int = 0,
        items: int = 1,
        options: TaskOptions | None = None,
    ) -> None:
        self.options = options  # timeout and retries; None when both are off
        self.attempts = 0  # runs that failed and were retried
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
                if self.items == 1:
                    return f"task {self.id}: chunk {self.index} of a map (1 item), {first}"
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
        self.timed = 0  # tasks in ``tasks`` with a timeout
        # Ids of cancelled tasks waiting in its batches: on the board's skip list, and
        # stopped if one starts anyway.
        self.cancels: set[int] = set()
        self.stopping = ""  # why we are stopping it (a timeout, a cancel), once we are
        self.kill_at: float | None = None  # when SIGTERM turns into SIGKILL
        self.retire_reason = ""  # what the worker said when it retired
        self.stack_fd = -1  # its faulthandler file, as numbered in the worker
        self.rss = 0  # resident memory, last sampled

    def has_room(self) -> bool:
        return (
            len(self.batches) < IN_FLIGHT_BATCHES
            and not self.retiring
            and (self.quota is None or self.quota > 0)
        )

    def watched(self) -> bool:
        """Whether the board must be checked for this worker's timeouts or cancels."""
        return bool(self.timed or self.cancels) and not self.stopping


class _Seat:
    """Statistics of one worker seat, across the processes that sit in it."""

    def __init__(self) -> None:
        self.tasks = 0
        self.items = 0
        self.busy = 0.0
        self.lived = 0.0  # seconds alive of the seat's earlier processes
        self.since: float | None = None  # when the current process started
        self.restarts = 0
        self.reasons: deque[str] = deque(maxlen=20)


class _Request:
    """A function a user thread asks the scheduler thread to run (statistics, cancels)."""

    __slots__ = ("done", "error", "fn", "value")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


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
        max_memory_per_child: int | None = None,
    ) -> None:
        self.launcher = launcher
        self.workers = workers
        self.max_tasks = max_tasks_per_child
        self.max_memory = max_memory_per_child
        self._output = _output.worker_settings()
        self._started = time.perf_counter()
        self._seats = [_Seat() for _ in range(workers)]
        self._done = self._failed = self._retried = self._timed_out = self._cancelled = 0
        self._ipc_time = 0.0
        self._watching = False  # some worker has a timed or cancelled task
        self._next_sample = 0.0
        self._shm_threshold = shm_threshold()  # workers use the value of pool creation time
        self._shm_dir = _shm.shm_dir()
        self._init_blob = dumps((initializer, tuple(initargs))) if initializer else None
        self.single_sizer = ChunkSizer(workers)
        # Seconds per item last measured for each mapped function (by its pickled bytes), so
        # a repeated map of the same function starts at a good chunk size, not at 1.
        self.per_item: dict[bytes, float] = {}
        self._inbox: deque[Any] = deque()  # tasks, jobs, _Requests, _CANCEL_QUEUED
        self._fifo: deque[SourceOrTask] = deque()
        self._slots: dict[int, _Slot] = {}  # by socket fd
        self._free_indexes = list(range(workers))
        self._startup_failures: float = 0
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
        # Closed when the scheduler is collected, never before: user threads may call wake()
        # until then, and a closed number could meanwhile name someone else's descriptor.
        weakref.finalize(self, _close_quietly, self._wake_w)
        self._lifeline_r, self._lifeline_w = os.pipe()
        internal_fd(self._lifeline_w)
        self._board_fd, self._board = make_board(workers)
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
            if type(item) is _Request:
                item.run()
            elif item is not _CANCEL_QUEUED:
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

    def check_options(self, options: TaskOptions | None) -> TaskOptions | None:
        """``options`` if this scheduler can honour them (the Dask one cannot time out)."""
        return options

    def stop_running(self, sink: Sink) -> None:
        """Stop the tasks of ``sink`` that are in workers: a running one at once (its worker
        is stopped and replaced); one waiting in a worker's batch goes on the worker's skip
        list, or (past four) is stopped as soon as it starts. The sink has already settled
        itself as cancelled; what they produce is dropped."""
        self._ask(_Request(lambda: self._stop_sink(sink)))

    def statistics(self) -> PoolStatistics:
        """A consistent snapshot of the counters (see ``_stats.PoolStatistics``)."""
        return self._ask(_Request(self._statistics), wait=True)  # type: ignore[no-any-return]

    def stacks(self, timeout: float = 2.0) -> tuple[WorkerStack, ...]:
        """The running task and the stack dump of each busy worker."""
        busy: list[tuple[int, int, int, Task, float]] = self._ask(
            _Request(self._busy_workers), wait=True
        )
        return _dump_stacks(busy, timeout)

    def _ask(self, request: _Request, wait: bool = False) -> Any:
        if threading.current_thread() is getattr(self, "_thread", None) or self._finished.is_set():
            request.run()
        else:
            self._inbox.append(request)
            if self._finished.is_set():
                self._reject_leftovers()  # it runs requests too
            else:
                self.wake()
            if not wait:
                return None
            if not request.done.wait(30.0):
                raise RuntimeError("the pool's scheduler did not answer within 30 seconds")
        if request.error is not None:
            raise request.error
        return request.value

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
            if type(item) is _Request:
                item.run()
            elif item is _CANCEL_QUEUED:
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
        timeout = self._check_timers()
        self._asleep = True
        if self._inbox:
            self._asleep = False
            return
        try:
            events = poller.poll(None if timeout is None else max(1, int(timeout * 1000) + 1))
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
        start = time.perf_counter()
        frames, closed = slot.chan.receive()
        for frame in frames:
            self._handle(slot, loads(frame))
        self._ipc_time += time.perf_counter() - start  # with the settling of outcomes
        if closed:
            self._worker_died(slot, poller)

    # timeouts, cancels, memory samples ---------------------------------------

    def _check_timers(self) -> float | None:
        """Act on the deadlines that are due; return seconds until the next one (or None).

        Called before every poll, so the common case (no timed or cancelled task, no memory
        sample due) is one clock read and a comparison.
        """
        now = time.perf_counter()
        wait: float | None = None
        if now >= self._next_sample:
            busy = False
            for slot in self._slots.values():
                if slot.tasks:
                    busy = True
                    slot.rss = resident_memory(slot.proc.pid) or slot.rss
            self._next_sample = now + SAMPLE_EVERY
            if busy:
                wait = SAMPLE_EVERY
            # Idle: sleep until woken; the first wake after work arrives samples again.
        else:
            wait = self._next_sample - now  # at worst one wake-up after the pool goes idle
        if not self._watching:
            return wait
        watching = False
        for slot in list(self._slots.values()):
            if slot.kill_at is not None:
                if now >= slot.kill_at:
                    slot.proc.kill(signal.SIGKILL)
                    slot.kill_at = None
                else:
                    wait = _sooner(wait, slot.kill_at - now)
                    watching = True  # keep checking until the SIGKILL is sent
            if not slot.watched():
                continue
            watching = True
            running, started = BOARD_SLOT.unpack_from(self._board, slot.index * BOARD_STRIDE)
            task = slot.tasks.get(running)
            if task is None:  # between tasks: look again soon
                wait = _sooner(wait, WATCH_TICK)
            elif running in slot.cancels:
                self._stop_task(slot, task, None)
            elif task.options is not None and task.options.timeout is not None:
                deadline = started + task.options.timeout
                if now >= deadline:
                    self._stop_task(slot, task, now - started)
                else:
                    wait = _sooner(wait, deadline - now)
                if slot.timed > 1 or slot.cancels:
                    wait = _sooner(wait, WATCH_TICK)  # others wait behind it
            else:
                wait = _sooner(wait, WATCH_TICK)
        self._watching = watching
        return wait

    def _stop_task(self, slot: _Slot, task: Task, ran: float | None) -> None:
        """Stop ``slot``'s worker, which runs ``task``: past its timeout (``ran`` seconds)
        or cancelled (``ran`` None). The task settles now; the rest of the worker's tasks go
        back to the queue when its socket closes, and a new worker takes its seat."""
        del slot.tasks[task.id]
        slot.cancels.discard(task.id)
        if task.options is not None and task.options.timeout is not None:
            slot.timed -= 1
        slot.retiring = True  # nothing more is sent to it
        slot.stopping = "cancelled" if ran is None else "timeout"
        slot.proc.kill(signal.SIGTERM)
        slot.kill_at = time.perf_counter() + KILL_GRACE
        if ran is None:
            self._cancelled += 1
            slot.stopping = f"stopped: it ran {task.describe()}, which was cancelled"
            call_sink(task.sink._reject, task, concurrent.futures.CancelledError(), None)
            return
        self._timed_out += 1
        assert task.options is not None and task.options.timeout is not None
        described = task.describe()
        slot.stopping = f"stopped: {described} ran past its task_timeout"
        error = TaskTimeoutError(
            f"{described} ran longer than its task_timeout of {task.options.timeout:g} s "
            f"(stopped after {ran:.3f} s); its worker (pid {slot.proc.pid}) was stopped and "
            "is being replaced. Other tasks are unaffected.",
            task=described,
            timeout=task.options.timeout,
            pid=slot.proc.pid,
        )
        self._fail(task, error, None)

    def _stop_sink(self, sink: Sink) -> None:
        for slot in list(self._slots.values()):
            if slot.stopping:
                continue
            running = BOARD_SLOT.unpack_from(self._board, slot.index * BOARD_STRIDE)[0]
            for task in list(slot.tasks.values()):
                if task.sink is sink:
                    if task.id == running:
                        self._stop_task(slot, task, None)
                        continue
                    slot.cancels.add(task.id)
                    self._watching = True
            if slot.cancels:  # the worker skips these when it comes to them
                first = sorted(slot.cancels)[: BOARD_SKIPS.size // 8]
                first += [-1] * (BOARD_SKIPS.size // 8 - len(first))
                BOARD_SKIPS.pack_into(
                    self._board, slot.index * BOARD_STRIDE + BOARD_SLOT.size, *first
                )

    def _fail(self, task: Task, error: BaseException, partial: Any) -> None:
        """Settle ``task`` with ``error``, or run it again if its retries allow."""
        options = task.options
        if (
            options is not None
            and task.attempts < options.retries
            and isinstance(error, options.retry_on)
            and self._broken is None
            and not self._terminating
        ):
            task.attempts += 1
            self._retried += 1
            self._fifo.appendleft(task)
            return
        if task.attempts:
            try:
                error.attempts = task.attempts + 1  # type: ignore[attr-defined]
                if hasattr(error, "add_note"):
                    error.add_note(f"(the last of {task.attempts + 1} attempts)")
            except Exception:
                pass
        self._failed += 1
        call_sink(task.sink._reject, task, error, partial)

    # statistics and stacks ---------------------------------------------------

    def _statistics(self) -> PoolStatistics:
        now = time.perf_counter()
        by_index = {slot.index: slot for slot in self._slots.values()}
        workers = []
        for index, seat in enumerate(self._seats):
            slot = by_index.get(index)
            alive = seat.lived + (now - seat.since if seat.since is not None else 0.0)
            workers.append(
                WorkerStatistics(
                    index=index,
                    pid=slot.proc.pid if slot is not None else None,
                    tasks_done=seat.tasks,
                    items_done=seat.items,
                    busy_time=seat.busy,
                    idle_time=max(0.0, alive - seat.busy),
                    memory=slot.rss if slot is not None else 0,
                    restarts=seat.restarts,
                    restart_reasons=tuple(seat.reasons),
                )
            )
        queued = sum(1 for item in self._fifo if isinstance(item, Task))
        queued += sum(1 for item in self._inbox if isinstance(item, Task))
        return PoolStatistics(
            workers=tuple(workers),
            tasks_queued=queued,
            tasks_running=sum(len(slot.tasks) for slot in self._slots.values()),
            tasks_done=self._done,
            tasks_failed=self._failed,
            tasks_retried=self._retried,
            tasks_timed_out=self._timed_out,
            tasks_cancelled=self._cancelled,
            jobs_pending=sum(1 for item in self._fifo if not isinstance(item, Task)),
            ipc_time=self._ipc_time,
            uptime=now - self._started,
        )

    def _busy_workers(self) -> list[tuple[int, int, int, Task, float]]:
        now = time.perf_counter()
        busy = []
        for slot in self._slots.values():
            running, started = BOARD_SLOT.unpack_from(self._board, slot.index * BOARD_STRIDE)
            task = slot.tasks.get(running)
            if task is not None:
                busy.append((slot.index, slot.proc.pid, slot.stack_fd, task, now - started))
        return sorted(busy, key=lambda entry: entry[0])

    def _flush(self, slot: _Slot, poller: select.poll) -> None:
        try:
            slot.chan.flush()
        except EOFError:
            self._worker_died(slot, poller)

    def _handle(self, slot: _Slot, message: Any) -> None:
        if type(message) is m.ResultBatch:
            self._settle_batch(slot, message.outcomes)
        elif type(message) in _output.MESSAGES:
            _output.deliver(message, slot.index, slot.proc.pid)
        elif type(message) is m.WorkerReady:
            slot.ready = True
            slot.stack_fd = message.stack_fd
            self._startup_failures = 0
        elif type(message) is m.Retiring:
            slot.retiring = True
            if message.reason == "memory":
                slot.retire_reason = (
                    f"retired: its resident memory, {_size(message.rss)}, went over "
                    f"max_memory_per_child ({_size(self.max_memory or 0)})"
                )
            else:
                slot.retire_reason = f"retired after {message.tasks_done} tasks (its quota)"
        elif type(message) is m.InitFailed:
            self._break(initializer_error(message.error))

    def _settle_batch(self, slot: _Slot, outcomes: list[m.Outcome]) -> None:
        # The hot path of every task: kept flat, with single tasks' timings summed.
        tasks, batches = slot.tasks, slot.batches
        single_items, single_time = 0, 0.0
        settled, items, busy = 0, 0, 0.0
        for task_id, status, payload, elapsed in outcomes:
            task = tasks.pop(task_id, None)
            if batches:
                batches[0] -= 1
                if not batches[0]:
                    batches.popleft()
            if task is None:  # stopped (a timeout, a cancel) and settled already
                continue
            if slot.cancels and task_id in slot.cancels:  # skipped, or finished first
                slot.cancels.discard(task_id)
                self._cancelled += 1
                if task.options is not None and task.options.timeout is not None:
                    slot.timed -= 1
                continue
            settled += 1
            items += task.items
            busy += elapsed
            if task.options is not None and task.options.timeout is not None:
                slot.timed -= 1
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
        seat = self._seats[slot.index]
        seat.tasks += settled
        seat.items += items
        seat.busy += busy
        self._done += settled  # failures are taken back out in _settle_failure

    def _remember(self, fn_blob: bytes, sizer: ChunkSizer) -> None:
        if sizer.per_item is not None:
            if len(self.per_item) >= 256 and fn_blob not in self.per_item:
                self.per_item.clear()  # a crude bound: estimates are cheap to relearn
            self.per_item[fn_blob] = sizer.per_item

    def _settle_failure(
        self, task: Task, status: int, payload: bytes, unpickling: Exception | None
    ) -> None:
        self._done -= 1  # counted as done by _settle_batch; it is a failure (or a retry)
        if unpickling is not None:
            self._fail(task, unpickling_error(task, unpickling), None)
            return
        error, partial = outcome_error(task, status, payload)
        self._fail(task, error, partial)

    # dispatch ---------------------------------------------------------------

    def _dispatch(self) -> None:
        if self._fifo and self._broken is None:
            self._fill_workers()
        self._room = any(slot.has_room() for slot in self._slots.values())

    def _fill_workers(self) -> None:
        slots = self._slots.values()
        for slot in slots:  # an idle worker gets work before a busy one gets more
            if not slot.batches and slot.has_room():
                calls = self._next_batch(slot)
                if not calls:
                    return
                self._send(slot, calls)
        for slot in slots:
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
                    if getattr(head, "timed", False):
                        return self._take_timed(head, task)
                    return [task]
                continue
            if head._drained():
                fifo.popleft()
            else:
                fifo.rotate(-1)  # a lazy job waiting for its consumer: let others go first
        return []

    def _take_timed(self, job: Source, first: Task) -> list[Task]:
        """One-item chunks of a job with a timeout: as many per batch as a chunk would hold."""
        sizer = first.sink.sizer
        want = min(MAX_TIMED_BATCH, sizer.next_size(None) if sizer is not None else 1)
        batch = [first]
        while len(batch) < want:
            task = job._take(self)
            if task is None or not (task.claimed or task.sink._claim()):
                break
            task.claimed = True
            batch.append(task)
        return batch

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
        start = time.perf_counter()
        frame = pickle.dumps(m.CallBatch([(t.id, t.kind, t.fn_blob, t.payload) for t in calls]), 5)
        for task in calls:
            slot.tasks[task.id] = task
            if task.options is not None and task.options.timeout is not None:
                slot.timed += 1
                self._watching = True
        slot.batches.append(len(calls))
        if slot.quota is not None:
            slot.quota -= len(calls)
        slot.chan.queue(frame)
        try:
            slot.chan.flush()
        except EOFError:
            pass  # the poll loop sees the EOF and settles the tasks
        self._ipc_time += time.perf_counter() - start

    # workers ------------------------------------------------------------------

    def _start_worker(self) -> None:
        index = self._free_indexes.pop(0)
        ours, theirs = socket.socketpair()
        BOARD_SLOT.pack_into(self._board, index * BOARD_STRIDE, -1, 0.0)
        BOARD_SKIPS.pack_into(self._board, index * BOARD_STRIDE + BOARD_SLOT.size, -1, -1, -1, -1)
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
            output=self._output,
            max_memory=self.max_memory,
        )
        chan.queue(pickle.dumps(config, 5))
        chan.flush()
        self._slots[chan.fileno()] = _Slot(index, proc, chan, self.max_tasks, prefix or "")
        self._seats[index].since = time.perf_counter()

    def _worker_died(self, slot: _Slot, poller: select.poll) -> None:
        fd = slot.chan.fileno()
        poller.unregister(fd)
        del self._slots[fd]
        forget_internal_fd(fd)
        slot.chan.close()
        running = BOARD_SLOT.unpack_from(self._board, slot.index * BOARD_STRIDE)[0]
        self._free_indexes.append(slot.index)
        status = slot.proc.wait(STATUS_WAIT)
        if status is None:  # its socket closed but it lives on: make sure it is gone
            slot.proc.kill(signal.SIGKILL)
            status = slot.proc.wait(STATUS_WAIT)
        slot.proc.close()
        seat = self._seats[slot.index]
        if seat.since is not None:
            seat.lived += time.perf_counter() - seat.since
            seat.since = None
        # Its results were read (and their segments claimed) before its EOF: whatever is left
        # under its prefix was being written or never reached us.
        _free_worker_segments(slot)
        planned = slot.retiring or (self._closing and not slot.tasks)
        # A worker we stopped was running the task we stopped it for, which is settled; if
        # it had moved on to another one by the time the signal landed, that one is not to
        # blame and runs again elsewhere.
        blamed = None if slot.stopping else slot.tasks.pop(running, None)
        for task_id in slot.cancels:  # cancelled while waiting in its batch: settled already
            slot.tasks.pop(task_id, None)
        if slot.tasks:  # not started, or finished with their results lost: run them again
            self._fifo.extendleft(reversed(list(slot.tasks.values())))
        reason = slot.stopping or slot.retire_reason
        if blamed is not None:
            error = _lost_error(slot, status, blamed)
            reason = f"lost: {error.args[0].split(' while running ')[0]}"
            self._fail(blamed, error, None)
        elif not reason:
            reason = f"lost: it {describe_status(status)[2]} between tasks"
        if not self._closing_idle() and not self._terminating:
            seat.restarts += 1
            seat.reasons.append(reason)
        if not planned and not slot.ready:
            # A SIGKILL from outside (the OOM killer, a user, a chaos test) while a worker
            # starts says little about the worker itself: it counts a third as much.
            killed = describe_status(status)[1] == signal.SIGKILL
            self._startup_failures += 1 if not killed else 1 / KILLED_AT_START_WEIGHT
            if self._startup_failures >= STARTUP_FAILURES - 1e-9 and self._broken is None:
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
            if slot.stopping:  # stopped for a timeout or a cancel: no grace left to give
                slot.proc.kill(signal.SIGKILL)
                continue
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
        self._board.close()  # its mapping holds a copy of the memfd
        # The write end of the wake-up pipe stays open until the scheduler is collected:
        # user threads may still call wake(), and a write nobody reads is harmless.


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


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return ""


def _lost_error(slot: _Slot, status: int | None, task: Task) -> WorkerLostError:
    exitcode, sig, words = describe_status(status)
    described = task.describe()  # unpickles the task's arguments: once
    cause = ""
    memory = ""
    if slot.rss:
        share = slot.rss / _TOTAL_MEMORY if _TOTAL_MEMORY else 0.0
        memory = f" Its last known resident memory was {_size(slot.rss)}"
        if share:
            shown = f"{share:.0%}" if share >= 0.01 else "under 1%"
            memory += f" ({shown} of this machine's {_size(_TOTAL_MEMORY)})"
        memory += "."
    if sig == signal.SIGKILL:
        likely = "most likely" if share_of(slot.rss) >= 0.1 else "possibly"
        cause = (
            f"{memory} manycore did not send that SIGKILL: it was {likely} the kernel's OOM "
            "killer, which does this when memory runs out (check `dmesg` or the container's "
            "memory limit). Lower the number of workers or the memory each task uses, or set "
            "max_memory_per_child."
        )
    elif sig == signal.SIGSEGV:
        cause = (
            " A segmentation fault is a crash in C code (an extension module, ctypes): the "
            f"Python code did not cause it directly.{memory}"
        )
    elif memory:
        cause = memory
    return WorkerLostError(
        f"worker {slot.index} (pid {slot.proc.pid}) {words} while running {described}."
        f"{cause} The pool replaced the worker; other tasks are unaffected.",
        pid=slot.proc.pid,
        exitcode=exitcode,
        signal=sig,
        task=described,
    )


def _machine_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


_TOTAL_MEMORY = _machine_memory()


def share_of(rss: int) -> float:
    """``rss`` as a share of this machine's memory (0.0 when unknown)."""
    return rss / _TOTAL_MEMORY if _TOTAL_MEMORY else 0.0


def _size(count: int) -> str:
    """``1.5 GiB``: a byte count for people."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _close_quietly(fd: int) -> None:
    forget_internal_fd(fd)
    try:
        os.close(fd)
    except OSError:
        pass


def _sooner(wait: float | None, other: float) -> float:
    return other if wait is None or other < wait else wait


def _dump_stacks(
    busy: list[tuple[int, int, int, Task, float]], timeout: float
) -> tuple[WorkerStack, ...]:
    """Ask each busy worker's faulthandler for its stacks; read what each wrote."""
    asked = []
    for index, pid, fd, task, running_for in busy:
        path = f"/proc/{pid}/fd/{fd}"
        try:
            before = os.stat(path).st_size if fd >= 0 else -1
            if before >= 0:
                os.kill(pid, STACK_SIGNAL)
        except OSError:
            before = -1
        asked.append((index, pid, path, before, task, running_for))
    deadline = time.monotonic() + timeout
    stacks = []
    for index, pid, path, before, task, running_for in asked:
        text = ""
        if before >= 0:
            text = _read_dump(path, before, deadline)
        stacks.append(WorkerStack(index, pid, task.describe(), running_for, text))
    return tuple(stacks)


def _read_dump(path: str, offset: int, deadline: float) -> str:
    """What was appended to ``path`` after ``offset``, once it stops growing."""
    last = offset
    steady = 0
    while time.monotonic() < deadline:
        try:
            size = os.stat(path).st_size
        except OSError:
            return ""
        if size > offset and size == last:
            steady += 1
            if steady >= 2:
                break
        else:
            steady = 0
        last = size
        time.sleep(0.01)
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            return file.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return ""


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
