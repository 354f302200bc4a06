"""The engine core: what every backend's scheduler shares, whatever runs the tasks.

A backend is a subclass of ``Engine`` that calls ``Engine.__init__`` and adds a transport:
how batches reach its workers and how their outcomes come back (``_scheduler.Scheduler``:
worker processes on this machine; ``_dask.scheduler.DaskScheduler``: a Dask cluster).

Who runs where::

    user threads                             engine thread (one per pool)
    ------------                             ----------------------------
    submit(Task) / submit(MapJob)  ──►  inbox ─► _drain_inbox ─► FIFO of tasks and jobs
    cancel_queued()                ──►  inbox     _dispatch: _next_batch() picks from the
    statistics() / stop_running()  ──►  inbox       FIFO; the transport sends the batch
    close() / terminate()          ──►  flags     _wait: the transport's events (outcomes,
    wake()   (the transport's signal)               deaths, timers) ─► sink._resolve/_reject
                                                  _fail: retry, or reject with the error

What the core owns: the inbox, the FIFO and picking a batch from it, retries, rejection,
the open/closing/broken state, close/terminate/join, requests run on the engine thread,
the counters of ``statistics()``, the per-function memory of item times, and the chunking
policy below. What a transport adds: ``wake`` (rouse its thread from ``_wait``), ``_wait``
(block until something happens, then act on it), ``_dispatch`` (send batches while workers
have room), ``_busy`` (whether its workers hold tasks), ``_take_in_flight`` (hand back what
its workers hold when everything must be rejected), ``_statistics``, ``_stop`` and
``_release``.

Guarantees:

* Every task handed to ``submit`` ends in exactly one ``_resolve`` or one ``_reject``, also
  when the pool is closed, terminated or broken meanwhile: the engine thread drains the
  inbox once more after it has finished, and a submit that sees it finished drains it too.
* A task is in exactly one place: the inbox, the FIFO, the transport (in flight), or done.
* A broken pool rejects everything pending, and everything submitted later, with a fresh
  copy of the error that broke it (``fresh_error``: each caller gets its own traceback).
* A user callback that raises (in ``_resolve``/``_reject``) is printed and the pool goes on.

Chunking policy (one rule for every backend):

* A single task (``apply_async``, ``submit``) is one call. Single tasks queued together are
  sent as one batch, as many as the engine's own ``single_sizer`` says (aiming at
  ``_chunking.TARGET_SECONDS`` of work per batch), capped by what the worker may still take.
* A map job is cut into chunks of several items, sized by its ``ChunkSizer``
  (``job_sizer``): an explicit ``chunksize`` exactly, else from measured run times, starting
  from the last measurement of the same function. One chunk is one task; a sized chunk is
  one batch. Chunks of an explicit ``chunksize`` are the user's unit of work, not of
  transport: as many go in one batch as the sizer's ``batch_chunks`` says (about
  ``_chunking.TARGET_SECONDS`` of measured work, at most ``MAX_BATCH_CHUNKS``), each still
  with its own outcome, retries, timeout and progress.
* With a ``task_timeout`` the timeout is per item, so a timed job is cut into **one-item
  chunks** (``chunk_items``), and what would have been the chunk size (``chunksize``, or the
  sizer's size) becomes **the number of one-item tasks sent per batch**, at most
  ``MAX_TIMED_BATCH`` (``timed_batch_size``): a task stopped at its deadline takes no other
  item with it, and the batch still amortises the round trip.
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
import time
import traceback
import weakref
from collections import deque
from typing import Any, Callable, Optional, Protocol, Union

# Loaded with the pool's modules, as before workers stopped importing them, not in a pool's
# first start or call: _byvalue, the pickler for what goes by value (most pools' functions
# come from __main__); _logforward, which workers forked from this process (or from a fork
# server forked from it) then have without importing it each.
from . import _byvalue, _logforward  # noqa: F401
from . import _messages as m
from ._chunking import FLOOR_SECONDS, ChunkSizer
from ._errors import (
    ManycoreError,
    PoolBrokenError,
    PoolClosedError,
    PoolTerminatedError,
    describe_call,
)
from ._options import TaskOptions
from ._outcome import outcome_error, unpickling_error
from ._payload import peek
from ._serialize import dumps_callable, new_snapshots
from ._stats import PoolStatistics, WorkerStack, WorkerStatistics

__all__ = [
    "IN_FLIGHT_BATCHES",
    "MAX_BATCH_CHUNKS",
    "MAX_TIMED_BATCH",
    "Engine",
    "Request",
    "Sink",
    "Source",
    "SourceOrTask",
    "Task",
    "call_sink",
    "chunk_items",
    "fresh_error",
    "timed_batch_size",
]

IN_FLIGHT_BATCHES = 2  # per worker: one running, one waiting, so a worker never idles on IPC
MAX_TIMED_BATCH = 256  # one-item chunks of a timed map per batch, at most
# Chunks of an explicit chunksize per batch, at most: the same bound, for the same reason
# (a batch's outcomes are settled together, so its size bounds a burst of work on the
# scheduler thread).
MAX_BATCH_CHUNKS = MAX_TIMED_BATCH
PER_ITEM_MEMORY = 256  # functions whose item times are remembered; then the memory restarts


# ---------------------------------------------------------------- tasks, sinks, sources


class Sink(Protocol):
    """Where a task's outcome goes: an AsyncResult, a Future, or a map job."""

    @property
    def sizer(self) -> Optional[ChunkSizer]:
        """The sizer fed this sink's run times; None for single tasks (the pool's own)."""

    @property
    def reads_later(self) -> bool:
        """True if ``_resolve`` may be given an ``_outcome.Unread`` that the sink's reader
        unpickles (``read``), instead of the value: the engine thread then never runs a
        result's unpickling code."""

    def _claim(self) -> bool:
        """Called once, just before the task is first sent; False drops it (cancelled)."""

    def _resolve(self, task: Task, value: Any) -> None:
        """The task's value (a list of values for a map chunk), or an ``Unread`` of it."""

    def _reject(self, task: Task, exc: BaseException, partial: Optional[list[Any]]) -> None:
        """The task's error, with the values a map chunk produced before it."""

    def _cancel(self) -> None:
        """Cancel it if it has not started (``shutdown(cancel_futures=True)``)."""


class Source(Protocol):
    """A map job as the engine sees it: a supply of chunk tasks."""

    @property
    def timed(self) -> bool:
        """Its tasks have a timeout, or run a coroutine function: one-item chunks, several
        per batch (module docstring)."""

    @property
    def coroutine(self) -> bool:
        """Its function is a coroutine function (its tasks' kind has ``CORO``)."""

    def _take(self, engine: Engine) -> Optional[Task]:
        """The next chunk to run, or None if none is ready now."""

    @property
    def remaining(self) -> Optional[int]:
        """Input items not yet cut into chunks, when known."""

    def _drained(self) -> bool:
        """True once no more chunks will come."""

    def _abort(self, exc: BaseException) -> None:
        """Fail everything not yet run (the pool was terminated or broke)."""

    def _cancel(self) -> None:
        """Stop cutting chunks (``shutdown(cancel_futures=True)``)."""


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
        """``task 17: square(3)``, for messages: the function's name and a preview of the
        arguments when they are plain data (``_payload.peek``: no code that came with them
        runs here, so an argument whose unpickling crashes cannot crash the caller);
        ``square(...)`` otherwise."""
        try:
            args = peek(self.payload)
            kind = self.kind & m.KIND
            if kind == m.CALL:
                shown = args
            elif kind == m.CALL_KW:
                shown = args[0]
            else:
                first = describe_call(self.fn, args[0] if kind == m.STARMAP else (args[0],))
                if self.items == 1:
                    return f"task {self.id}: chunk {self.index} of a map (1 item), {first}"
                return (
                    f"task {self.id}: chunk {self.index} of a map ({self.items} items, "
                    f"the first {first})"
                )
        except Exception:
            if self.kind in (m.MAP, m.STARMAP):
                items = f"{self.items} item{'s' if self.items != 1 else ''}"
                return f"task {self.id}: chunk {self.index} of a map ({items}) of " + (
                    describe_call(self.fn, (_UNSHOWN,))
                )
            shown = (_UNSHOWN,)
        return f"task {self.id}: {describe_call(self.fn, shown)}"


class _Unshown:
    """Stands for arguments a description does not show: ``square(...)``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "..."


_UNSHOWN = _Unshown()

SourceOrTask = Union[Task, Source]


# ---------------------------------------------------------------- chunking policy


def chunk_items(sizer: ChunkSizer, remaining: Optional[int], timed: bool) -> int:
    """Items in a map job's next chunk: one when its tasks are timed, else the sizer's."""
    return 1 if timed else sizer.next_size(remaining)


def timed_batch_size(sizer: Optional[ChunkSizer]) -> int:
    """One-item tasks of a timed job sent per batch: what its chunk size would have been
    (``chunksize``, or the sizer's measured size), at most ``MAX_TIMED_BATCH``."""
    return min(MAX_TIMED_BATCH, sizer.next_size(None) if sizer is not None else 1)


# ---------------------------------------------------------------- the engine


class Request:
    """A function a user thread asks the engine thread to run (statistics, cancels)."""

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


class _CancelQueued:
    """The inbox marker of ``cancel_queued``: cancel every queued task and job."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "CANCEL_QUEUED"


_CANCEL_QUEUED = _CancelQueued()

_live: weakref.WeakSet[Engine] = weakref.WeakSet()
# A forked child has copies of its parent's pools but none of their threads: they are not its
# own to stop at exit (and waiting for their threads would only delay its exit).
os.register_at_fork(after_in_child=_live.clear)


class Engine:
    """The core of a pool's scheduler; see the module docstring.

    Subclasses call ``__init__``, set up their transport, then ``_start()`` the thread.
    """

    name = "manycore-engine"  # the thread's name
    role = "engine"  # what the thread is called in the error of a bug in manycore
    start_method = ""  # how workers are started, for reprs ("fork", "dask", ...)
    # Seconds a join may wait at interpreter exit, after terminate().
    join_grace = 5.0
    # How a backend's costs bend the chunking policy: job sizers count this many times fewer
    # workers, and never cut a chunk below ``chunk_floor`` seconds of work (as the sizers
    # see time: a backend may feed them scaled run times).
    balance_divisor = 1
    chunk_floor = FLOOR_SECONDS
    # Coroutine tasks (``kind & CORO``) a worker runs at once, at most; a face may set it
    # before the first task (``manycore.aio.Pool(concurrency=)``). A backend that runs
    # each coroutine to its end alone ignores it.
    concurrency = 16

    def __init__(
        self,
        workers: int,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        self.workers = workers
        new_snapshots()  # functions pickled by value are snapshots taken anew for this pool
        # The pool's initializer, pickled once for every worker (None: there is none).
        self._init_blob = dumps_callable((initializer, tuple(initargs))) if initializer else None
        self.single_sizer = ChunkSizer(workers, calls=True)
        # Seconds per item last measured for each mapped function (by its pickled bytes), so
        # a repeated map of the same function starts at a good chunk size, not at 1.
        self.per_item: dict[bytes, float] = {}
        self._inbox: deque[Any] = deque()  # tasks, jobs, _Requests, _CANCEL_QUEUED
        self._fifo: deque[SourceOrTask] = deque()
        # Counters of statistics(), kept by the engine thread.
        self._done = self._failed = self._retried = self._timed_out = self._cancelled = 0
        self._started = time.perf_counter()
        # Whether a submit must wake the engine thread: true while it may be blocked, and
        # some worker could take work (a transport that cannot tell leaves both true).
        self._asleep = True
        self._room = True
        self._closing = False
        self._terminating = False
        self._kill = False  # terminate(kill=True): SIGKILL the workers, no SIGTERM first
        self._broken: BaseException | None = None
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None

    def _start(self, start_thread: Callable[[threading.Thread], None]) -> None:
        """Start the engine thread (with ``start_thread``, which may mark it internal)."""
        thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread = thread
        start_thread(thread)
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

    def check_options(self, options: TaskOptions | None) -> TaskOptions | None:
        """``options`` if this engine can honour them (the Dask one cannot time out)."""
        return options

    def job_sizer(self, fn_blob: bytes, chunksize: int | None) -> ChunkSizer:
        """The sizer of a new map job of the function ``fn_blob`` (see the module docstring).

        Raises:
            ValueError: ``chunksize`` is not positive.
        """
        sizer = ChunkSizer(max(1, -(-self.workers // self.balance_divisor)), chunksize)
        sizer.floor = self.chunk_floor
        # A repeated map of the same function starts from the last measurement instead of
        # a one-item probe. A stale estimate does bounded harm: with a known length the
        # balance rule caps the chunk, without one the growth cap does.
        sizer.per_item = self.per_item.get(fn_blob)
        return sizer

    def submit(self, item: SourceOrTask) -> None:
        """Hand a task or a map job to the engine thread."""
        self._inbox.append(item)
        if self._finished.is_set():
            # The engine is gone (the pool broke or closed while we were submitting). It
            # drains the inbox once more after setting _finished, so between it and us
            # every item is settled; nothing waits forever.
            self._reject_leftovers()
        # Wake the engine only if it sleeps and some worker has room: when all are busy, it
        # drains the inbox anyway as results arrive, and a submit costs no system call.
        elif self._asleep and self._room:
            self.wake()

    def wake(self) -> None:
        """Make the engine thread look at its inbox and flags (the transport's signal)."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish all submitted work, then stop the workers."""
        self._closing = True
        self.wake()

    def terminate(self, kill: bool = False) -> None:
        """Stop now: reject everything pending, stop the workers (``kill``: with SIGKILL)."""
        self._kill = self._kill or kill
        self._closing = True
        self._terminating = True
        self.wake()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the engine thread to finish; True when it has."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("cannot join a pool from one of its own callbacks")
        return self._finished.wait(timeout)

    def cancel_queued(self) -> None:
        """Cancel what has not been sent to a worker yet (``shutdown(cancel_futures=True)``)."""
        self.submit(_CANCEL_QUEUED)  # type: ignore[arg-type]

    def stop_running(self, sink: Sink) -> None:
        """Stop the tasks of ``sink`` that are in workers, if the backend can; the sink has
        already settled itself as cancelled, and what they produce is dropped."""

    def statistics(self) -> PoolStatistics:
        """A consistent snapshot of the counters (see ``_stats.PoolStatistics``)."""
        return self._ask(Request(self._statistics), wait=True)  # type: ignore[no-any-return]

    def stacks(self, timeout: float = 2.0) -> tuple[WorkerStack, ...]:
        """The running task and the stack dump of each busy worker."""
        raise NotImplementedError

    def processes(self) -> list[Any]:
        """The handles (``_launch.Child``) of the worker processes that run now, by seat;
        none where the workers are not processes of this machine (Dask)."""
        return []

    def _ask(self, request: Request, wait: bool = False) -> Any:
        """Run ``request`` on the engine thread (here, once that has finished)."""
        if threading.current_thread() is self._thread or self._finished.is_set():
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
            if type(item) is Request:
                item.run()
            elif item is not _CANCEL_QUEUED:
                self._reject_item(item, exc)

    # ------------------------------------------------------------ engine thread

    def _run(self) -> None:
        graceful = False
        try:
            while True:
                self._drain_inbox()
                if self._terminating:
                    break
                self._dispatch()
                if self._closing and self._idle():
                    graceful = True
                    break
                self._wait()
        except BaseException as exc:  # a bug in manycore: fail loudly, never hang
            report = PoolBrokenError(
                f"manycore's {self.role} failed: {exc!r}; every pending task was failed. "
                "This is a bug; please report it with the traceback."
            )
            report.__cause__ = exc
            traceback.print_exc()
            self._break(report)
        finally:
            try:
                if not graceful:
                    self._reject_all(
                        self._broken
                        or PoolTerminatedError(
                            "the pool was terminated before this task could finish"
                        )
                    )
                self._stop(graceful)
            finally:
                self._release()
                _live.discard(self)
                self._finished.set()
                self._reject_leftovers()

    def _drain_inbox(self) -> None:
        inbox, fifo = self._inbox, self._fifo
        while inbox:
            item = inbox.popleft()
            if type(item) is Request:
                item.run()
            elif item is _CANCEL_QUEUED:
                # What a worker can take now starts first, as with the stdlib executor, whose
                # call queue holds work for every worker: the rest is cancelled.
                if self._broken is None and not self._terminating:
                    self._dispatch()
                for queued in fifo:
                    if isinstance(queued, Task):
                        queued.sink._cancel()
                    else:
                        queued._cancel()
            elif self._broken is not None:
                self._reject_item(item, self._broken)
            else:
                fifo.append(item)

    def _idle(self) -> bool:
        return not self._inbox and not self._fifo and not self._busy()

    def _closing_idle(self) -> bool:
        return self._closing and self._idle()

    # picking ------------------------------------------------------------------

    def _next_batch(self, limit: int | None = None, coroutines: int | None = None) -> list[Task]:
        """The next batch to send, or [] if nothing can go now.

        Single tasks at the head of the FIFO go together (at most ``limit`` of them, the
        worker's remaining quota); a job gives one chunk, or for a timed job several
        one-item chunks (see the module docstring). A lazy job waiting for its consumer
        goes to the back so that others go first; each job is looked at once or twice.
        ``coroutines`` is how many more coroutine tasks (``kind & CORO``) the worker may
        run (None: no limit); a coroutine task that does not fit waits at the head.
        """
        fifo = self._fifo
        for _ in range(2 * len(fifo)):
            if not fifo:
                break
            head = fifo[0]
            if isinstance(head, Task):
                if coroutines is not None and coroutines <= 0 and head.kind & m.CORO:
                    return []
                singles = self._take_singles(limit, coroutines)
                if singles:
                    return singles
                continue  # all of them were cancelled
            if coroutines is not None and coroutines <= 0 and head.coroutine:
                fifo.rotate(-1)  # no room for its chunks on this worker: let others go
                continue
            task = head._take(self)
            if task is not None:
                if task.claimed or task.sink._claim():
                    task.claimed = True
                    sizer = task.sink.sizer
                    if head.timed:
                        if head.coroutine and coroutines is not None:
                            want = coroutines  # as many as the worker may run
                        else:
                            want = timed_batch_size(sizer)
                    elif sizer is not None and sizer.fixed is not None:
                        want = min(MAX_BATCH_CHUNKS, sizer.batch_chunks(head.remaining))
                    else:
                        return [task]
                    return self._take_more(head, task, want if limit is None else min(want, limit))
                continue
            if head._drained():
                fifo.popleft()
            else:
                fifo.rotate(-1)  # a lazy job waiting for its consumer: let others go first
        return []

    def _take_singles(self, limit: int | None, coroutines: int | None = None) -> list[Task]:
        fifo = self._fifo
        size = self.single_sizer.next_size(remaining=len(fifo))
        if limit is not None:
            size = min(size, limit)
        batch: list[Task] = []
        while fifo and len(batch) < size:
            task = fifo[0]
            if not isinstance(task, Task):
                break
            if coroutines is not None and task.kind & m.CORO:
                if coroutines <= 0:
                    break
                coroutines -= 1
            fifo.popleft()
            if task.claimed or task.sink._claim():
                task.claimed = True
                batch.append(task)
        return batch

    def _take_more(self, job: Source, first: Task, want: int) -> list[Task]:
        """``first`` and up to ``want - 1`` more chunks of ``job``, for one batch: one-item
        chunks of a timed job, or chunks of an explicit chunksize (module docstring)."""
        batch = [first]
        while len(batch) < want:
            task = job._take(self)
            if task is None or not (task.claimed or task.sink._claim()):
                break
            task.claimed = True
            batch.append(task)
        return batch

    # settling -----------------------------------------------------------------

    def _remember(self, fn_blob: bytes, sizer: ChunkSizer) -> None:
        """Keep a job's latest per-item time for the next map of the same function."""
        if sizer.per_item is not None:
            if len(self.per_item) >= PER_ITEM_MEMORY and fn_blob not in self.per_item:
                self.per_item.clear()  # a crude bound: estimates are cheap to relearn
            self.per_item[fn_blob] = sizer.per_item

    def _fail_outcome(
        self, task: Task, status: int, payload: bytes, unpickling: BaseException | None
    ) -> None:
        """Fail ``task`` (or retry it) for an outcome that is not a value: the worker's
        RAISED/FAILED ``payload``, or an OK one whose value could not be unpickled here
        (``unpickling``, the exception that stopped it)."""
        if unpickling is not None:
            self._fail(task, unpickling_error(task, unpickling), None)
            return
        error, partial = outcome_error(task, status, payload)
        self._fail(task, error, partial)

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

    def _break(self, exc: BaseException) -> None:
        """Fail everything pending and in flight with ``exc``; later submits fail too."""
        if self._broken is None:
            self._broken = exc
        self._closing = True
        self._reject_all(self._broken)

    def _reject_all(self, exc: BaseException) -> None:
        self._drain_inbox()
        pending: list[SourceOrTask] = list(self._fifo)
        self._fifo.clear()
        pending.extend(self._take_in_flight())
        for item in pending:
            self._reject_item(item, exc)

    def _reject_item(self, item: SourceOrTask, exc: BaseException) -> None:
        if isinstance(item, Task):
            call_sink(item.sink._reject, item, fresh_error(exc), None)
        else:
            item._abort(fresh_error(exc))

    def _pool_statistics(
        self, workers: tuple[WorkerStatistics, ...], running: int, ipc_time: float
    ) -> PoolStatistics:
        """The pool-wide counters, with the transport's figures."""
        # Copies made in one step under the GIL: the Dask backend reads these from the
        # caller's thread while the dispatcher changes them.
        fifo, inbox = tuple(self._fifo), tuple(self._inbox)
        queued = sum(1 for item in fifo if isinstance(item, Task))
        queued += sum(1 for item in inbox if isinstance(item, Task))
        return PoolStatistics(
            workers=workers,
            tasks_queued=queued,
            tasks_running=running,
            tasks_done=self._done,
            tasks_failed=self._failed,
            tasks_retried=self._retried,
            tasks_timed_out=self._timed_out,
            tasks_cancelled=self._cancelled,
            jobs_pending=sum(1 for item in fifo if not isinstance(item, Task)),
            ipc_time=ipc_time,
            uptime=time.perf_counter() - self._started,
        )

    # the transport's part -----------------------------------------------------

    def _dispatch(self) -> None:
        """Send batches from the FIFO (``_next_batch``) while workers have room."""
        raise NotImplementedError

    def _wait(self) -> None:
        """Block until something happens (a wake-up, an outcome, a timer), and act on it."""
        raise NotImplementedError

    def _busy(self) -> bool:
        """Whether workers still hold tasks."""
        raise NotImplementedError

    def _take_in_flight(self) -> list[Task]:
        """Every task the workers hold, which the transport forgets (they are rejected)."""
        raise NotImplementedError

    def _statistics(self) -> PoolStatistics:
        raise NotImplementedError

    def _stop(self, graceful: bool) -> None:
        """Stop the workers: after their work (``graceful``), or now."""
        raise NotImplementedError

    def _release(self) -> None:
        """Let go of what the transport holds; the last thing the engine thread does."""


def fresh_error(exc: BaseException) -> BaseException:
    """A new instance of a shared error, so each caller gets its own traceback."""
    if isinstance(exc, ManycoreError):
        copy = type(exc)(str(exc), **exc.__dict__)
        copy.__cause__ = exc.__cause__
        return copy
    return exc


def call_sink(method: Callable[..., None], *args: Any) -> None:
    """Call a sink's ``_resolve``/``_reject``: a user callback that raises is printed, and
    the pool keeps running."""
    try:
        method(*args)
    except BaseException:  # SystemExit from a callback too: the pool keeps running
        traceback.print_exc()


def terminate_all(kind: type[Engine] | None = None) -> None:
    """At interpreter exit, stop every pool still running (as the stdlib does); with
    ``kind``, only the pools of that backend."""
    engines = [engine for engine in _live if kind is None or isinstance(engine, kind)]
    for engine in engines:
        engine.terminate()
    for engine in engines:
        engine.join(engine.join_grace)


atexit.register(terminate_all)
