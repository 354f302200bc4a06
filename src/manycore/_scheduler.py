"""The local scheduler: the engine core (``_engine``) with worker processes on this machine.

One thread per pool owns the workers and every task in flight. What this module adds to the
core is the transport: worker seats and their sockets, the board (``_board``) that says
what each worker runs, timers (task timeouts, cancels of running tasks, memory samples),
worker deaths and replacements, and stack dumps. Its messages about lost workers are
built in ``_diagnosis``.

Who runs where::

    user threads                         scheduler thread ("manycore-scheduler")
    ------------                         ---------------------------------------
    submit(Task) / submit(job)      ──►  inbox ─► FIFO of sources (tasks and jobs)
    wake() (a pipe byte, only when       dispatch: CallBatch to each worker with room
      the scheduler sleeps)              poll(): worker sockets, the wake-up pipe
                                         ResultBatch ─► sink._resolve / sink._reject
    close() / terminate()                worker EOF ─► settle its tasks, start another

Guarantees (see docs/design.md for the reasoning):

* Every task handed to ``submit`` ends in exactly one ``_resolve`` or one ``_reject``. A task
  is in exactly one place: the inbox, the FIFO, one worker's in-flight table, or done.
* When a worker dies, the task on its board fails with ``WorkerLostError``, and so does
  every task of its that ran, or may have, and whose outcome died with it (``_sort_lost``):
  a task with ``retries=0`` runs at most once. Only tasks known never to have started go
  back to the front of the FIFO. Either kind of failure is retried if the task's
  ``retries``/``retry_on`` allow. A new worker takes the dead one's seat.
* Workers that keep dying before they are ready break the pool (``PoolBrokenError``) rather
  than being respawned forever; an initializer that raises breaks it with
  ``InitializerError``. A broken pool rejects everything pending and everything submitted
  later.
* Only this thread touches worker sockets, and it never blocks on one. It runs no code that
  came with a result or an argument: a value is handed to its sink still pickled
  (``_outcome.Unread``, unpickled by the thread that reads it) when the sink takes that,
  and a lost task is described without unpickling its arguments (``_payload.peek``).
  Exceptions a task raised are rebuilt here, as its retries must see their type; whatever
  that raises (``SystemExit`` included) fails that task alone.
* A worker's death is seen when its process exits (``Child.exit_fd``: a pidfd, or the
  fork server's status pipe), even while a process it forked holds its socket open.
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

import concurrent.futures
import contextlib
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
from typing import Any, Callable

from . import _messages as m
from . import _output, _payload, _shm
from ._board import Board
from ._buffers import shm_threshold
from ._diagnosis import dump_stacks, lost_error, lost_outcome_error, size, startup_error
from ._engine import IN_FLIGHT_BATCHES, Engine, Request, Sink, Task, call_sink
from ._errors import PoolBrokenError, TaskTimeoutError
from ._fds import (
    children_unblock_async_signals,
    close_internal,
    forget_internal_fd,
    internal_fd,
    start_helper_thread,
)
from ._launch import Child, Launcher, describe_status
from ._outcome import Unread, initializer_error
from ._payload import loads, loads_later
from ._stats import PoolStatistics, WorkerStack, WorkerStatistics
from ._transport import OwnerChannel
from ._worker import ENTRY as WORKER_ENTRY
from ._worker import resident_memory, worker_identity

__all__ = ["Scheduler"]

CORO = m.CORO  # a coroutine task's kind flag, read per task on the hot path

STARTUP_FAILURES = 3  # consecutive deaths before "ready" that break the pool
KILLED_AT_START_WEIGHT = 3  # SIGKILLed before ready: that many count as one such death
STATUS_WAIT = 2.0  # seconds to wait for a dead worker's exit status before killing it
TERMINATE_GRACE = 0.5  # seconds between SIGTERM and SIGKILL when terminating
KILL_GRACE = 0.5  # seconds a worker stopped for a timeout or a cancel gets after SIGTERM
WATCH_TICK = 0.01  # seconds between board checks while a timed or cancelled task waits
SAMPLE_EVERY = 0.5  # seconds between memory samples of busy workers
# Coroutine tasks in a worker, per unit of the pool's concurrency: the worker runs
# ``concurrency`` of them and holds the rest, so a finished one is replaced without waiting
# for a round trip to the owner. (A task waiting there is cancelled like a running one.)
COROUTINES_AHEAD = 2


class _Slot:
    """One worker seat: the process in it, its socket, and what it holds."""

    def __init__(
        self,
        index: int,
        proc: Child,
        chan: OwnerChannel,
        quota: int | None,
        shm_prefix: str = "",
        early: bool = True,
    ):
        self.index = index
        self.shm_prefix = shm_prefix  # names of the segments it hands results over in
        self.proc = proc
        self.chan = chan
        self.tasks: dict[int, Task] = {}  # in flight, in dispatch order
        self.batches: deque[int] = deque()  # outcomes of plain calls due per batch in flight
        # Coroutine tasks in flight: they run at once, whatever their batch, and end in any
        # order; at most the engine's ``concurrency``. Those cancelled, awaiting the answer:
        self.coroutines = 0
        self.coroutine_cancels: set[int] = set()
        self.quota = quota  # tasks it may still be sent, None = unlimited
        self.ready = False
        # Whether it may be sent work before it is ready (WorkerReady). A forked worker is
        # ready within a millisecond: sending at once saves a round trip. A spawned one
        # boots a whole interpreter, and two boots can differ by tens of milliseconds: work
        # goes to whichever is ready first, one batch at a time while another still boots,
        # as the stdlib's shared task queue gives it to the first worker that asks (issue
        # 16).
        self.takes_work = early
        self.retiring = False
        self.prefix_tracked = False  # our tracker removes its segments if we both die
        self.timed = 0  # tasks in ``tasks`` with a timeout
        # Ids of cancelled tasks waiting in its batches: on the board's skip list, and
        # stopped if one starts anyway.
        self.cancels: set[int] = set()
        self.stopping = ""  # why we are stopping it (a timeout, a cancel), once we are
        self.ran_before_stop: set[int] = set()  # ids of tasks it ran before that one
        self.kill_at: float | None = None  # when SIGTERM turns into SIGKILL
        self.retire_reason = ""  # what the worker said when it retired
        self.stack_fd = -1  # its faulthandler file, as numbered in the worker
        self.rss = 0  # resident memory, last sampled
        # Readable once the process has exited (``Child.exit_fd``): its socket's EOF is not
        # enough, as a process it forked may hold the socket open. -1: polled instead.
        self.exit_fd = proc.exit_fd()

    def has_room(self) -> bool:
        return (
            self.takes_work
            and len(self.batches) < IN_FLIGHT_BATCHES
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


class Scheduler(Engine):
    """Runs tasks on a set of worker processes; see the module docstring."""

    name = "manycore-scheduler"
    role = "scheduler"
    join_grace = TERMINATE_GRACE + STATUS_WAIT

    def __init__(
        self,
        launcher: Launcher,
        workers: int,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        worker_title: str = "PoolWorker",
        on_demand: bool = False,
    ) -> None:
        super().__init__(workers, initializer, initargs)
        self.launcher = launcher
        self.start_method = launcher.name
        self.worker_title = worker_title
        self.max_tasks = max_tasks_per_child
        self.max_memory = max_memory_per_child
        # Start a worker only when work waits and no worker is idle, up to ``workers`` (the
        # stdlib executor's rule), rather than all of them now (its Pool's). Not under fork,
        # where the stdlib executor starts them all too: a later fork copies more threads.
        self._on_demand = on_demand and launcher.name != "fork"
        self._output = _output.worker_settings()
        self._seats = [_Seat() for _ in range(workers)]
        self._ipc_time = 0.0
        self._watching = False  # some worker has a timed or cancelled task
        self._next_sample = 0.0
        self._shm_threshold = shm_threshold()  # workers use the value of pool creation time
        self._shm_dir = _shm.shm_dir()
        self._slots: dict[int, _Slot] = {}  # by socket fd
        self._exits: dict[int, _Slot] = {}  # by exit fd (``_Slot.exit_fd``)
        self._free_indexes = list(range(workers))
        self._startup_failures: float = 0
        self._asleep = False  # true only while blocked in poll(): a submit must wake it then
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        internal_fd(self._wake_r)
        internal_fd(self._wake_w)
        # Closed when the scheduler is collected, never before: user threads may call wake()
        # until then, and a closed number could meanwhile name someone else's descriptor.
        weakref.finalize(self, close_internal, self._wake_w)
        self._lifeline_r, self._lifeline_w = os.pipe()
        internal_fd(self._lifeline_w)
        self._board = Board.create(workers)
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        _payload.pool_opened()
        try:
            started = [self._start_worker() for _ in range(0 if self._on_demand else workers)]
        except BaseException:
            self._kill_all()
            self._release()
            raise
        self._start(start_helper_thread)
        # A fork server forks the workers while this thread goes on (``start_child_later``):
        # whether it could is known now, so that the pool's constructor raises as before.
        try:
            for slot in started:
                slot.proc.confirm_started()
        except OSError:
            self.terminate(kill=True)
            self.join()
            raise

    # ------------------------------------------------------------ any thread

    def wake(self) -> None:
        """A byte on the wake-up pipe, which the scheduler's poll() watches."""
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already pending, or the scheduler is gone

    def stop_running(self, sink: Sink) -> None:
        """Stop the tasks of ``sink`` that are in workers: a running one at once (its worker
        is stopped and replaced); one waiting in a worker's batch goes on the worker's skip
        list, or (past four) is stopped as soon as it starts. The sink has already settled
        itself as cancelled; what they produce is dropped."""
        self._ask(Request(lambda: self._stop_sink(sink)))

    def stacks(self, timeout: float = 2.0) -> tuple[WorkerStack, ...]:
        """The running task and the stack dump of each busy worker."""
        busy: list[tuple[int, int, int, Task, float]] = self._ask(
            Request(self._busy_workers), wait=True
        )
        return dump_stacks(busy, timeout)

    def processes(self) -> list[Child]:
        """The handles of the worker processes that run now, by seat (none once stopped)."""
        return self._ask(Request(self._processes), wait=True)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ scheduler thread

    def _wait(self) -> None:
        poller = self._poller
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
                # One read empties it (a few bytes at most: a submit writes only while we
                # sleep); a second would cost a system call to hear EAGAIN.
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
                continue
            found = self._slots.get(fd)
            if found is None:
                gone = self._exits.get(fd)
                if gone is not None:
                    self._exited(gone)
                continue
            slot = found
            if event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                self._read(slot)
            elif event & select.POLLOUT:
                self._flush(slot)

    def _read(self, slot: _Slot) -> None:
        start = time.perf_counter()
        frames, closed = slot.chan.receive()
        for frame in frames:
            self._handle(slot, loads(frame))
        self._ipc_time += time.perf_counter() - start  # with the settling of outcomes
        if closed:
            self._worker_died(slot)

    def _exited(self, slot: _Slot) -> None:
        """``slot``'s process has exited: read what it sent before, then settle its death,
        even though a process it forked may still hold its socket open."""
        if slot.chan.fileno() in self._slots:
            frames, _ = slot.chan.receive()
            for frame in frames:
                self._handle(slot, loads(frame))
        if slot.chan.fileno() in self._slots:  # handling a frame may have settled it
            self._worker_died(slot)

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
            exited = []
            for slot in self._slots.values():
                if slot.tasks:
                    busy = True
                    slot.rss = resident_memory(slot.proc.pid) or slot.rss
                    if slot.exit_fd < 0 and slot.proc.poll() is not None:
                        exited.append(slot)  # no exit fd (an old kernel): seen here
            for slot in exited:
                self._exited(slot)
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
            running, started = self._board.running(slot.index)
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
        held = list(slot.tasks)
        # Those before it in its batch have run, and their outcomes wait in the worker to
        # share a frame: the stop loses them (see _sort_lost).
        slot.ran_before_stop = set(held[: held.index(task.id)])
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
            running = self._board.running(slot.index)[0]
            coroutines: list[int] = []
            for task in list(slot.tasks.values()):
                if task.sink is sink:
                    if task.kind & m.CORO:  # cancelled in the worker, which goes on
                        if task.id not in slot.coroutine_cancels:
                            coroutines.append(task.id)
                        continue
                    if task.id == running:
                        self._stop_task(slot, task, None)
                        continue
                    slot.cancels.add(task.id)
                    self._watching = True
            if slot.cancels:  # the worker skips these when it comes to them
                self._board.write_skips(slot.index, slot.cancels)
            if coroutines:
                slot.coroutine_cancels.update(coroutines)
                slot.chan.queue(pickle.dumps(m.CancelCalls(coroutines), 5))
                self._flush(slot)

    # statistics and stacks ---------------------------------------------------

    def _processes(self) -> list[Child]:
        if not self._finished.is_set():
            self._dispatch()  # workers for what was submitted before: started by now
        return [slot.proc for slot in sorted(self._slots.values(), key=lambda s: s.index)]

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
        running = sum(len(slot.tasks) for slot in self._slots.values())
        return self._pool_statistics(tuple(workers), running, self._ipc_time)

    def _busy_workers(self) -> list[tuple[int, int, int, Task, float]]:
        now = time.perf_counter()
        busy = []
        for slot in self._slots.values():
            running, started = self._board.running(slot.index)
            task = slot.tasks.get(running)
            if task is not None:
                busy.append((slot.index, slot.proc.pid, slot.stack_fd, task, now - started))
        return sorted(busy, key=lambda entry: entry[0])

    def _flush(self, slot: _Slot) -> None:
        try:
            slot.chan.flush()
        except EOFError:
            self._worker_died(slot)

    def _handle(self, slot: _Slot, message: Any) -> None:
        if type(message) is list:  # a ResultBatch in its wire form (``_messages``)
            self._settle_batch(slot, message)
        elif type(message) is m.ResultBatch:
            self._settle_batch(slot, message.outcomes)
        elif type(message) in _output.MESSAGES:
            _output.deliver(message, slot.index, slot.proc.pid)
        elif type(message) is m.WorkerReady:
            slot.ready = slot.takes_work = True
            slot.stack_fd = message.stack_fd
            self._startup_failures = 0
        elif type(message) is m.Retiring:
            slot.retiring = True
            if message.reason == "memory":
                slot.retire_reason = (
                    f"retired: its resident memory, {size(message.rss)}, went over "
                    f"max_memory_per_child ({size(self.max_memory or 0)})"
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
            if task is not None and task.kind & CORO:
                slot.coroutines -= 1
                if task_id in slot.coroutine_cancels:  # cancelled: settled already
                    slot.coroutine_cancels.discard(task_id)
                    self._cancelled += 1
                    continue
            elif batches:
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
                sink = task.sink
                try:
                    # Unpickled by the sink's reader, not here, if the sink can (Unread).
                    if getattr(sink, "reads_later", False):
                        value = Unread(loads_later(payload), task.id, task.fn)
                    else:
                        value = loads(payload)
                except BaseException as exc:  # SystemExit too: it fails this task alone
                    self._settle_failure(task, status, payload, exc)
                    continue
                try:
                    sink._resolve(task, value)
                except BaseException:  # a user callback raised: report it, keep going
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

    def _settle_failure(
        self, task: Task, status: int, payload: bytes, unpickling: BaseException | None
    ) -> None:
        self._done -= 1  # counted as done by _settle_batch; it is a failure (or a retry)
        self._fail_outcome(task, status, payload, unpickling)

    # dispatch ---------------------------------------------------------------

    def _dispatch(self) -> None:
        if self._fifo and self._broken is None:
            self._fill_workers()
        self._room = any(slot.has_room() for slot in self._slots.values()) or (
            self._on_demand and bool(self._free_indexes)  # a worker can be started for it
        )

    def _fill_workers(self) -> None:
        slots = self._slots.values()
        # Coroutine tasks a worker may hold: its concurrency running, as many sent ahead.
        room = COROUTINES_AHEAD * self.concurrency
        # An idle worker gets work before a busy one gets more. Every idle worker's batch is
        # cut and queued before the first is written: a write wakes its worker, which may
        # take this thread's core at once (on a busy machine, until its batch is done), and
        # the other idle workers would wait for that instead of starting together.
        idle: list[_Slot] = []
        empty = False
        for slot in slots:
            if not slot.batches and slot.has_room():
                calls = self._next_batch(slot.quota, room - slot.coroutines)
                if not calls:
                    if not slot.coroutines:
                        empty = True
                        break
                    continue  # what waits may be coroutine tasks it has no room for
                self._send(slot, calls, flush=False)
                idle.append(slot)
        for slot in idle:
            try:
                slot.chan.flush()
            except EOFError:
                pass  # the poll loop sees the EOF and settles the tasks
        if empty:
            return
        if self._on_demand:
            self._start_for_waiting_work(room)
        if self.launcher.fresh_interpreter and not all(slot.takes_work for slot in slots):
            return  # a worker still boots: what waits goes to whoever is free first
        for slot in slots:
            while slot.has_room():
                calls = self._next_batch(slot.quota, room - slot.coroutines)
                if not calls:
                    break
                self._send(slot, calls)

    def _start_for_waiting_work(self, room: int) -> None:
        """Start a worker for each batch that no idle worker took, while seats are free."""
        while self._fifo and self._free_indexes and self._broken is None:
            try:
                slot = self._start_worker()
            except Exception as exc:
                if not self._slots:  # else the workers there are take the work in turn
                    self._break(PoolBrokenError(f"the pool could not start a worker: {exc!r}"))
                return
            calls = self._next_batch(slot.quota, room)
            if not calls:
                return
            self._send(slot, calls)

    def _send(self, slot: _Slot, calls: list[Task], flush: bool = True) -> None:
        start = time.perf_counter()
        coroutines: dict[int, float | None] | None = None
        plain = len(calls)
        timed = False
        for task in calls:
            slot.tasks[task.id] = task
            if task.kind & CORO:  # the worker times it out itself
                if coroutines is None:
                    coroutines = {}
                coroutines[task.id] = task.options.timeout if task.options else None
                plain -= 1
            elif task.options is not None and task.options.timeout is not None:
                slot.timed += 1
                timed = self._watching = True
        batch = [(t.id, t.kind, t.fn_blob, t.payload) for t in calls]
        limit = None if coroutines is None else self.concurrency
        # A CallBatch in its wire form, a plain tuple of its fields (``_messages``).
        frame = pickle.dumps((batch, timed, coroutines, limit), 5)
        if plain:
            slot.batches.append(plain)
        slot.coroutines += len(calls) - plain
        if slot.quota is not None:
            slot.quota -= len(calls)
        slot.chan.queue(frame)
        if flush:
            try:
                slot.chan.flush()
            except EOFError:
                pass  # the poll loop sees the EOF and settles the tasks
        self._ipc_time += time.perf_counter() - start

    # workers ------------------------------------------------------------------

    def _start_worker(self) -> _Slot:
        index = self._free_indexes.pop(0)
        ours, theirs = socket.socketpair()
        self._board.reset(index)
        # On this pool's thread (on demand, or a replacement) the signals it blocks must
        # not be blocked in the worker, nor in a fork server started for it.
        unblocked = (
            children_unblock_async_signals()
            if threading.current_thread() is self._thread
            else contextlib.nullcontext()
        )
        try:
            with unblocked:
                proc = self.launcher.start_child_later(
                    WORKER_ENTRY, [theirs.fileno(), self._lifeline_r, self._board.fd]
                )
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
            identity=worker_identity(self.start_method, self.worker_title),
        )
        chan.queue(pickle.dumps(config, 5))
        chan.flush()
        early = not self.launcher.fresh_interpreter
        slot = _Slot(index, proc, chan, self.max_tasks, prefix or "", early)
        self._slots[chan.fileno()] = slot
        if slot.exit_fd >= 0:
            self._exits[slot.exit_fd] = slot
            self._poller.register(slot.exit_fd, select.POLLIN)
        self._seats[index].since = time.perf_counter()
        return slot

    def _worker_died(self, slot: _Slot) -> None:
        fd = slot.chan.fileno()
        try:
            self._poller.unregister(fd)
        except KeyError:  # its exit was seen before its socket was first polled
            pass
        del self._slots[fd]
        self._forget_exit_fd(slot)
        forget_internal_fd(fd)
        slot.chan.close()
        running = self._board.running(slot.index)[0]
        finished = self._board.finished(slot.index)
        called = self._board.called(slot.index) == running
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
        for task_id in slot.cancels | slot.coroutine_cancels:  # cancelled: settled already
            slot.tasks.pop(task_id, None)
        # Coroutines run together, outside the board's order of plain calls: they are
        # sorted apart. A retired worker had started none of what it held; one we stopped
        # may have started them (they ran, as far as at-most-once is concerned); one that
        # crashed cannot tell which of them crashed it, so each fails (``retries`` run
        # them again).
        coroutines = [t for t in slot.tasks.values() if t.kind & m.CORO]
        for task in coroutines:
            del slot.tasks[task.id]
        blamed, ran, fresh = self._sort_lost(slot, running, finished)
        if coroutines:
            if slot.retire_reason:
                fresh = coroutines + fresh
            elif slot.stopping:
                ran += coroutines
            else:
                for task in coroutines:
                    error = lost_error(slot.index, slot.proc.pid, slot.rss, status, task)
                    self._fail(task, error, None)
        if fresh:  # never started: run them elsewhere
            self._fifo.extendleft(reversed(fresh))
        reason = slot.stopping or slot.retire_reason
        for task in ran:  # they ran, or may have, and their outcomes died with the worker
            error = lost_outcome_error(slot.index, slot.proc.pid, status, task, slot.stopping)
            self._fail(task, error, None)
        if blamed is not None:
            error = lost_error(slot.index, slot.proc.pid, slot.rss, status, blamed, called)
            reason = f"lost: {error.args[0].split(' while ')[0]}"
            self._fail(blamed, error, None)
        elif not reason:
            reason = f"lost: it {describe_status(status)[2]} between tasks"
        if not self._closing_idle() and not self._terminating:
            seat.restarts += 1
            seat.reasons.append(reason)
        try:
            slot.proc.confirm_started()
        except OSError as exc:  # the fork server could not fork it: a retry would fail too
            if self._broken is None:
                self._break(PoolBrokenError(f"the pool could not start a worker: {exc}"))
        if not planned and not slot.ready:
            # A SIGKILL from outside (the OOM killer, a user, a chaos test) while a worker
            # starts says little about the worker itself: it counts a third as much.
            killed = describe_status(status)[1] == signal.SIGKILL
            self._startup_failures += 1 if not killed else 1 / KILLED_AT_START_WEIGHT
            if self._startup_failures >= STARTUP_FAILURES - 1e-9 and self._broken is None:
                failure = startup_error(
                    STARTUP_FAILURES, slot.proc.pid, status, self._init_blob is not None
                )
                self._break(failure)
        if self._broken is None and not self._terminating and not self._closing_idle():
            try:
                self._start_worker()
            except Exception as exc:
                self._break(
                    PoolBrokenError(
                        f"the pool could not start a worker to replace pid {slot.proc.pid}: {exc!r}"
                    )
                )

    def _sort_lost(
        self, slot: _Slot, running: int, finished: int
    ) -> tuple[Task | None, list[Task], list[Task]]:
        """The tasks a dead worker held, as (the one it was running, those that ran, those
        that never started), for the re-queue rule (module docstring).

        The worker runs its tasks in dispatch order, and its board names the call it is in
        (``running``, -1 between batches) and the last call that returned (``finished``):
        in dispatch order, the tasks up to ``finished`` ran and their outcomes were lost,
        the one running is blamed, and the rest never started. A worker that retired said
        so after sending every outcome: what it holds never started. One we stopped is
        blamed for nothing (the task we stopped it for is settled); what it ran before
        that task in its batch, or started after it as the signal landed, ran.
        """
        held = list(slot.tasks.values())
        if slot.retire_reason or not held:
            return None, [], held
        ids = [task.id for task in held]
        if running in slot.tasks:
            at = ids.index(running)
            if slot.stopping or running == finished:  # its call had returned: not to blame
                return None, held[: at + 1], held[at + 1 :]
            return held[at], held[:at], held[at + 1 :]
        if slot.stopping:
            ran_ids = slot.ran_before_stop
            return (
                None,
                [task for task in held if task.id in ran_ids],
                [task for task in held if task.id not in ran_ids],
            )
        if finished in slot.tasks:
            at = ids.index(finished)
            return None, held[: at + 1], held[at + 1 :]
        return None, [], held

    def _busy(self) -> bool:
        return any(slot.tasks for slot in self._slots.values())

    def _take_in_flight(self) -> list[Task]:
        tasks: list[Task] = []
        for slot in self._slots.values():
            tasks.extend(slot.tasks.values())
            slot.tasks.clear()
            slot.batches.clear()
            slot.coroutines = 0
        return tasks

    def _stop(self, graceful: bool) -> None:
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
            slot.proc.kill(signal.SIGKILL if self._kill else signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE
        for slot in slots:
            if slot.proc.wait(max(0.0, deadline - time.monotonic())) is None:
                slot.proc.kill(signal.SIGKILL)
                slot.proc.wait(STATUS_WAIT)
            self._forget_exit_fd(slot)
            slot.proc.close()
            forget_internal_fd(slot.chan.fileno())
            slot.chan.close()
            _free_worker_segments(slot)
        self._slots.clear()

    def _forget_exit_fd(self, slot: _Slot) -> None:
        """Stop watching ``slot``'s exit fd, before its handle closes it."""
        if self._exits.pop(slot.exit_fd, None) is not None:
            self._poller.unregister(slot.exit_fd)

    def _release(self) -> None:
        _payload.pool_closed()
        for fd in (self._wake_r, self._lifeline_w, self._lifeline_r, self._board.fd):
            close_internal(fd)
        self._lifeline_w = self._lifeline_r = self._board.fd = -1
        self._board.close()  # its mapping holds a copy of the memfd
        # The write end of the wake-up pipe stays open until the scheduler is collected:
        # user threads may still call wake(), and a write nobody reads is harmless.


_SHM_PAYLOAD = _payload.MARK  # the first byte of a shared-memory payload


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


def _sooner(wait: float | None, other: float) -> float:
    return other if wait is None or other < wait else wait
