"""The Dask backend: ``Pool``/``ProcessPoolExecutor(..., backend="dask", address=...)``.

The pool's public face, its results, futures and map jobs are the local backend's own; only
the scheduler is replaced. ``DaskScheduler`` takes the same tasks and map jobs as
``_scheduler.Scheduler`` and runs them on a Dask ``distributed`` cluster. Both are the
engine core (``_engine.Engine``: inbox, FIFO, picking, retries, rejection, chunking policy);
this module adds only the transport: batches become Dask tasks, and their ends come back
as events (``_BatchDone``, ``_Fetched``, ``_WAKE``) on a queue the dispatcher blocks on::

    user threads                     dispatcher thread ("manycore-dask")       Dask workers
    ------------                     -----------------------------------       ------------
    submit(Task) / map job  ──►  inbox ─► FIFO ─► batch: client.submit(    ─► run_batch():
    wake() ─► _WAKE event            run_batch, token, calls, *blobs)           rebuild, run,
                                     ◄── _BatchDone (Dask's done callback)      pickle each
                                     fetch outcomes on the client's event       outcome
                                     loop; ◄── _Fetched ─► sink._resolve/_reject

The dispatcher never blocks on a worker: results are fetched on Dask's event loop, so while
one batch's outcomes travel, the next batches are already being handed out.

What this module guarantees:

* **Dask is imported only when a Dask pool is made**; without it, ``backend="dask"`` raises
  ``ImportError`` naming ``pip install 'manycore[dask]'``.
* **Same semantics as the local backend.** Functions, arguments and results travel as
  manycore's own pickles (Dask only moves bytes), so unpicklable arguments raise in the
  caller, a task's exception is re-raised as its own type with the worker's traceback as
  ``__cause__``, and unpicklable results become ``ResultPicklingError``. ``map``-style calls
  are cut by the same adaptive ``MapJob``/``ChunkSizer`` (never one Dask task per item;
  chunks aim at ``CHUNK_SCALE`` times the local work per chunk and the balance rule counts
  ``BALANCE_DIVISOR`` times fewer workers, as a Dask task costs more), and
  at most ``IN_FLIGHT_BATCHES`` batches per worker thread are handed to Dask at a time, so
  chunk sizes follow measured run times and ``cancel``/``shutdown(cancel_futures=True)`` work.
* **Only portable bytes travel**: an argument the local rules put in this machine's shared
  memory is re-pickled in-band first, since a Dask worker may run on another machine.
* **Large blobs are scattered once**: a function (with what it captures) or an argument
  blob over ``SCATTER_BYTES`` goes to the cluster with ``client.scatter`` and tasks refer to
  it, so a map does not resend its function with every chunk. Every task is submitted with
  its own key (``pure=False`` semantics): identical calls really run again.
* **Lost workers**: Dask blames every task a dead worker held (``KilledWorker``); manycore
  re-runs each such task alone (nothing else of the pool in flight, one at a time) and fails
  with ``WorkerLostError`` only a task whose worker died while it ran alone. Dask's own
  re-runs (``allowed-failures``, 0 on a cluster we start) come first. docs/cluster.md states
  this policy for users.
* **Ownership**: a ``LocalCluster`` the pool started is closed with it (``terminate()`` kills
  its workers); an address, scheduler file, ``Cluster`` or ``Client`` is never shut down:
  ``terminate()`` cancels the pool's own Dask tasks only.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import time
import traceback
import uuid
from collections import OrderedDict, deque
from typing import Any, Callable, NamedTuple, Optional, Union

from .. import _engine
from .. import _messages as m
from .._engine import IN_FLIGHT_BATCHES, Engine, Task, call_sink
from .._errors import PoolBrokenError, WorkerLostError
from .._options import TaskOptions
from .._outcome import Unread, initializer_error
from .._payload import loads, loads_later
from .._serialize import dumps
from .._stats import PoolStatistics, WorkerStack
from .cluster import allowed_failures, connect, import_distributed, kill_children
from .worker import run_batch

__all__ = ["DaskScheduler"]

# A blob at least this large is scattered to the cluster once instead of riding in each
# task: below it, a scatter's extra round trip costs more than resending the bytes.
SCATTER_BYTES = 100_000
SCATTER_CACHE = 16  # scattered function blobs kept per pool (a few maps at a time)
# A Dask task costs the cluster about a millisecond or more (scheduler bookkeeping, two
# network hops, a result fetch): some 100x a local batch. Run times are fed to the sizers
# divided by this, so chunks aim at 10x the local target of work (about 100 ms) and the
# balance rule stops cutting below about 10 ms: overhead stays near 1% as it does locally.
CHUNK_SCALE = 10.0
# A map's tail is cut in chunks of 1/4 of a worker's share of what remains (the local
# balance rule). A Dask task costs a few milliseconds of CPU, so map jobs are sized as if the
# cluster had half as many workers: half as many tail chunks, still balanced to 1/2 a share.
BALANCE_DIVISOR = 2
# ... and the balance rule never cuts a map's chunk below this much work (real seconds): each
# Dask task costs the caller's event loop several milliseconds of CPU (6.5 ms measured on a
# 2-core machine, where that CPU is taken from the workers), so a tail cut into one-item
# chunks of ~15 ms work cost more than the imbalance it saves.
DASK_FLOOR_SECONDS = 0.05
KILL_AFTER = 0.3  # seconds into terminating a cluster we own before its workers are killed
# Batches handed to Dask per worker thread: one running, one queued (Dask keeps the queued
# one at its scheduler), so a worker never waits for the round trip that refills it.
WINDOW_PER_THREAD = IN_FLIGHT_BATCHES
REFRESH_SECONDS = 2.0  # how often a connected cluster's thread count is re-read
RESTART_WAIT = 10.0  # seconds a close waits for workers that replace dead ones to start
CLOSE_TIMEOUT = 20.0  # seconds to close a client or a cluster manycore started


_Blob = Any  # bytes, or a distributed.Future of bytes (scattered)


def _import_distributed() -> Any:
    global _exit_hook
    distributed = import_distributed()
    if not _exit_hook:
        # Registered after Dask's own exit hooks, so it runs before them (atexit is LIFO):
        # our pools stop while their clients and clusters still work.
        # Only Dask pools: local ones stop at the core's own hook, after every atexit hook
        # registered before them, as they always have.
        atexit.register(_engine.terminate_all, DaskScheduler)
        _exit_hook = True
    return distributed


_exit_hook = False


class _Batch:
    """One Dask task: some calls, the tasks they settle, and how often it has run."""

    __slots__ = ("alone", "future", "runs", "tasks")

    def __init__(self, tasks: list[Task]) -> None:
        self.tasks = tasks
        self.future: Any = None
        self.alone = False  # run with nothing else of this pool's in flight
        self.runs = 0


class _BatchDone(NamedTuple):
    """A Dask task of ours ended (from Dask's done callback): settle its batch."""

    key: str


class _Fetched(NamedTuple):
    """Finished batches' outcomes arrived (``outcomes`` in ``keys`` order), or the fetch
    failed as a whole (``error``)."""

    keys: list[str]
    outcomes: Optional[list[Any]]
    error: Optional[BaseException]


class _Wake:
    """The event of ``wake()``: look at the inbox and the flags."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "WAKE"


_WAKE = _Wake()
_Event = Union[_BatchDone, _Fetched, _Wake]


class DaskScheduler(Engine):
    """The pool's scheduler on a Dask cluster; see the module docstring."""

    name = "manycore-dask"
    role = "Dask dispatcher"
    start_method = "dask"  # Dask, not manycore, starts the workers
    join_grace = CLOSE_TIMEOUT
    # A Dask task costs far more than a local batch (see the constants above).
    balance_divisor = BALANCE_DIVISOR
    chunk_floor = DASK_FLOOR_SECONDS / CHUNK_SCALE  # sizers see scaled run times

    def __init__(
        self,
        address: Any,
        processes: int | None,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
    ) -> None:
        distributed = _import_distributed()
        # Scattered function blobs, by id, with the blob (so the id stays its own).
        self._scattered: OrderedDict[int, tuple[bytes, Any]] = OrderedDict()
        self._cap = processes  # with an address: the most worker threads this pool uses
        # The client, and the cluster if we started one (closed with the pool).
        self._client, self._cluster, self._own_client = connect(distributed, address, processes)
        try:
            # Runs Dask itself makes of a task whose worker dies, before it reports it.
            self._dask_runs = 1 + allowed_failures(self._client, self._cluster)
            # Inside the try: an initializer that cannot be pickled raises here, and the
            # client (or the cluster we started) must not outlive the failed constructor.
            super().__init__(self._count_workers(), initializer, initargs)
        except BaseException:
            self._disconnect()
            raise
        self._token = f"{os.getpid()}-{uuid.uuid4().hex}"
        self._init_part: _Blob = None
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._in_flight: dict[str, _Batch] = {}  # by Dask key
        self._fetching: dict[str, _Batch] = {}  # finished; results on their way, by key
        # Tasks lost with a worker beside others: each runs again alone, one at a time.
        self._suspects: deque[_Batch] = deque()
        self._probe: _Batch | None = None  # the suspect running now
        self._refreshed = time.monotonic()
        self._start(threading.Thread.start)

    # ------------------------------------------------------------ connecting

    def check_options(self, options: TaskOptions | None) -> TaskOptions | None:
        if options is not None and options.timeout is not None:
            raise ValueError(
                "task_timeout is not supported with backend='dask': Dask cannot stop a "
                "running task. Use the local backend, or time out inside the task"
            )
        return options

    def statistics(self) -> PoolStatistics:
        """The pool-wide counters, read from the caller's thread: the dispatcher may be
        waiting on the cluster for seconds (a fetch, a close), and counters a batch old are
        worth more than a call that blocks that long."""
        return self._statistics()

    def _statistics(self) -> PoolStatistics:
        """The pool-wide counters; Dask keeps its own per-worker figures (its dashboard)."""
        # tuple() copies the values in one step under the GIL: the dispatcher may change
        # the dict meanwhile.
        running = sum(len(batch.tasks) for batch in tuple(self._in_flight.values()))
        return self._pool_statistics((), running, 0.0)

    def stacks(self, timeout: float = 2.0) -> tuple[WorkerStack, ...]:
        raise NotImplementedError(
            "stacks() is not available with backend='dask': use the Dask dashboard's "
            "worker profile, or `client.call_stack()`"
        )

    # stop_running() is the core's: Dask cannot stop a running task, and its outcome is
    # dropped by the cancelled sink.

    def _count_workers(self) -> int:
        threads: int = sum(self._client.nthreads().values())
        if self._cap is not None:
            threads = min(threads, self._cap)
        return max(1, threads)

    def _disconnect(self, now: bool = False) -> None:
        """Let go of the cluster: close our client, and the cluster if we started it.
        ``now``: its workers are killed instead of being given seconds to finish a task."""
        for _blob, future in self._scattered.values():
            future.release()
        self._scattered.clear()
        if self._cluster is not None:
            self._let_restarts_finish()  # before reading the pids: a new worker's counts
        pids = self._worker_pids() if now and self._cluster is not None else []
        if self._own_client:
            try:
                self._client.close(timeout=CLOSE_TIMEOUT)
            except Exception:
                traceback.print_exc()
        if self._cluster is not None:
            # A nanny asked to close waits 4 s for a busy worker before it kills it. Once the
            # close has begun (nannies no longer restart dead workers), kill them ourselves.
            killer = threading.Timer(KILL_AFTER, kill_children, (pids,))
            killer.name = "manycore-dask-kill"
            if pids:
                killer.start()
            try:
                self._cluster.close(timeout=CLOSE_TIMEOUT)
            except Exception:
                traceback.print_exc()
            finally:
                if pids:
                    killer.join()

    def _let_restarts_finish(self) -> None:
        """Wait, up to ``RESTART_WAIT``, for nannies that are starting a new worker.

        Releases of distributed before 2024.12 (the last for Python 3.9) hang closing a
        nanny whose worker is still starting (one that replaces a dead worker), until the
        close times out and leaves its event loop thread behind.
        """
        deadline = time.monotonic() + RESTART_WAIT
        while time.monotonic() < deadline:
            try:
                nannies = list(self._cluster.workers.values())
            except Exception:
                return
            starting = [n for n in nannies if _status(getattr(n, "process", None)) == "starting"]
            if not starting:
                return
            time.sleep(0.02)

    def _worker_pids(self) -> list[int]:
        """The worker processes of the cluster we started (its nannies know them)."""
        try:
            nannies = list(self._cluster.workers.values())
        except Exception:
            return []
        pids = [getattr(nanny, "pid", None) for nanny in nannies]
        return [pid for pid in pids if isinstance(pid, int)]

    # ------------------------------------------------------------ any thread

    def wake(self) -> None:
        """An event on the queue the dispatcher blocks on."""
        self._events.put(_WAKE)

    def __repr__(self) -> str:
        owner = "own LocalCluster" if self._cluster is not None else "connected"
        return f"<DaskScheduler {owner} workers={self.workers}>"

    # ------------------------------------------------------------ dispatcher thread

    def _wait(self) -> None:
        """Wait for at least one event, then act on every one queued."""
        try:
            events = [self._events.get(timeout=REFRESH_SECONDS)]
        except queue.Empty:
            events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        done: list[str] = []
        for event in events:
            if type(event) is _BatchDone:
                done.append(event.key)
            elif type(event) is _Fetched:
                self._fetched(event.keys, event.outcomes, event.error)
            # _WAKE: the inbox and the flags are looked at next
        if done:
            self._settle(done)
        if self._cluster is None and time.monotonic() - self._refreshed > REFRESH_SECONDS:
            self._refreshed = time.monotonic()
            try:
                self.workers = self._count_workers()
            except Exception:
                pass  # the scheduler is briefly unreachable: keep the last count

    # dispatch ---------------------------------------------------------------

    def _dispatch(self) -> None:
        if self._probe is not None:
            return  # a suspect runs alone
        if self._suspects:
            if not self._in_flight and self._broken is None:
                self._probe = self._suspects.popleft()
                self._probe.alone = True
                self._submit_batch(self._probe)
            return  # first let what is in flight finish
        limit = WINDOW_PER_THREAD * self.workers
        while self._fifo and self._broken is None and len(self._in_flight) < limit:
            tasks = self._next_batch()
            if not tasks:
                return
            self._submit_batch(_Batch(tasks))

    def _submit_batch(self, batch: _Batch) -> None:
        parts: list[_Blob] = []
        index: dict[int, int] = {}

        def part(blob: bytes, cache: bool) -> int:
            found = index.get(id(blob))
            if found is None:
                found = index[id(blob)] = len(parts)
                parts.append(self._scatter(blob, cache) if len(blob) >= SCATTER_BYTES else blob)
            return found

        init = -1
        if self._init_blob is not None:
            if self._init_part is None:
                blob = self._init_blob
                self._init_part = self._scatter(blob, False) if len(blob) >= SCATTER_BYTES else blob
            init = len(parts)
            parts.append(self._init_part)
        calls = [
            (t.kind, part(t.fn_blob, True), part(_portable(t.payload), False)) for t in batch.tasks
        ]
        first = batch.tasks[0]
        name = getattr(first.fn, "__name__", "call")
        batch.runs += 1
        key = f"manycore-{name}-{uuid.uuid4().hex}"
        batch.future = self._client.submit(
            run_batch,
            self._token,
            init,
            calls,
            *parts,
            key=key,
            pure=False,
            retries=0,
        )
        self._in_flight[key] = batch
        events = self._events
        # The callback names the batch by key only: a reference to the batch would make a
        # cycle (batch -> future -> callback -> batch) that keeps the arguments alive.
        batch.future.add_done_callback(lambda future: events.put(_BatchDone(future.key)))

    def _scatter(self, blob: bytes, cache: bool) -> Any:
        if cache:
            found = self._scattered.get(id(blob))
            if found is not None and found[0] is blob:
                self._scattered.move_to_end(id(blob))
                return found[1]
        future = self._client.scatter(blob, hash=False)
        if cache:
            self._scattered[id(blob)] = (blob, future)
            if len(self._scattered) > SCATTER_CACHE:
                self._scattered.popitem(last=False)[1][1].release()
        return future

    # results ----------------------------------------------------------------

    def _settle(self, done: list[str]) -> None:
        finished = []
        for key in done:
            batch = self._in_flight.pop(key, None)
            if batch is None:
                continue  # already settled (terminated meanwhile)
            if batch is self._probe:
                self._probe = None
            if batch.future.status == "finished":
                finished.append(batch)
            else:
                self._settle_error(batch)
        if finished:
            self._fetch(finished)

    def _fetch(self, batches: list[_Batch]) -> None:
        """Fetch finished batches' outcomes without blocking this thread.

        A fetch is a round trip to the workers (milliseconds); waiting for it here would
        leave the workers without their next batch meanwhile. So it runs on the client's
        event loop, and its outcome comes back as a ``_Fetched`` event.
        """
        keys = []
        for batch in batches:
            keys.append(batch.future.key)
            self._fetching[batch.future.key] = batch
        futures = [batch.future for batch in batches]
        client, events = self._client, self._events

        async def fetch() -> None:
            try:
                outcomes = await client.gather(futures, asynchronous=True)
            except BaseException as exc:  # reported to the dispatcher; cancellation re-raised
                events.put(_Fetched(keys, None, exc))
                if not isinstance(exc, Exception):
                    raise
            else:
                events.put(_Fetched(keys, outcomes, None))

        client.loop.add_callback(fetch)

    def _fetched(
        self, keys: list[str], outcomes: Optional[list[Any]], error: Optional[BaseException]
    ) -> None:
        batches = [self._fetching.pop(key, None) for key in keys]
        for i, batch in enumerate(batches):
            if batch is None:
                continue  # rejected meanwhile (terminated)
            if outcomes is not None:
                self._settle_outcomes(batch, outcomes[i])
                continue
            try:  # the fetch failed as a whole: give each batch its own outcome or error
                value = batch.future.result(timeout=CLOSE_TIMEOUT)
            except Exception:
                self._settle_error(batch)
            else:
                self._settle_outcomes(batch, value)

    def _settle_outcomes(self, batch: _Batch, outcomes: list[tuple[int, bytes, float]]) -> None:
        batch.future.release()
        if outcomes and outcomes[0][0] == m.INIT_FAILED:
            failure = initializer_error(outcomes[0][1])
            self._break(failure)
            for task in batch.tasks:
                self._reject_item(task, failure)
            return
        single_items, single_time = 0, 0.0
        for task, (status, payload, elapsed) in zip(batch.tasks, outcomes):
            sizer = task.sink.sizer
            if sizer is None:
                single_items += task.items
                single_time += elapsed
            else:
                sizer.record(task.items, elapsed / CHUNK_SCALE)
                self._remember(task.fn_blob, sizer)
            if status == m.OK:
                sink = task.sink
                try:
                    # Unpickled by the sink's reader, not here, if the sink can (Unread).
                    if getattr(sink, "reads_later", False):
                        value = Unread(loads_later(payload), task.id, task.fn)
                    else:
                        value = loads(payload)
                except BaseException as exc:  # SystemExit too: it fails this task alone
                    self._fail_outcome(task, status, payload, exc)
                    continue
                self._done += 1
                call_sink(task.sink._resolve, task, value)
            else:
                self._fail_outcome(task, status, payload, None)
        if single_items:
            self.single_sizer.record(single_items, single_time / CHUNK_SCALE)

    def _settle_error(self, batch: _Batch) -> None:
        future = batch.future
        status = future.status
        try:
            exc = future.exception(timeout=CLOSE_TIMEOUT) if status == "error" else None
        except Exception as inner:
            exc = inner
        future.release()
        killed = type(exc).__name__ == "KilledWorker"
        # "lost": the batch ran, but its result died with the worker that held it before it
        # was fetched (Dask would compute it again): that worker's death is not its fault.
        if (killed and not batch.alone) or status == "lost":
            # Dask blames every task a dead worker held, and cannot say which one killed it:
            # each runs again alone; only one whose worker dies then is to blame.
            for task in batch.tasks:
                again = _Batch([task])
                again.runs = batch.runs
                self._suspects.append(again)
            return
        for task in batch.tasks:
            if killed:
                error: BaseException = WorkerLostError(
                    f"a Dask worker died while running {task.describe()} (it ran "
                    f"{batch.runs * self._dask_runs} time(s), the last alone, each on a "
                    f"worker that died; Dask: {exc}). If it was killed by the OOM killer, give "
                    "workers more memory or make tasks smaller. The pool is still usable; other "
                    "tasks are unaffected.",
                    pid=None,
                    exitcode=None,
                    signal=None,
                    task=task.describe(),
                )
            elif status == "cancelled" or exc is None:
                error = PoolBrokenError(
                    f"Dask cancelled {task.describe()} (status {status!r}): the connection to "
                    "the Dask scheduler was lost or someone cancelled the task on the cluster."
                )
            else:
                error = PoolBrokenError(
                    f"Dask could not run {task.describe()}: {exc!r}. manycore must be "
                    "installed, at the same version, on every Dask worker."
                )
                error.__cause__ = exc
            self._fail(task, error, None)

    # the engine's hooks ------------------------------------------------------

    def _busy(self) -> bool:
        return bool(self._in_flight or self._fetching or self._suspects)

    def _take_in_flight(self) -> list[Task]:
        pending: list[Task] = []
        batches = list(self._in_flight.values())
        self._in_flight.clear()
        pending.extend(task for batch in self._fetching.values() for task in batch.tasks)
        self._fetching.clear()
        pending.extend(task for suspect in self._suspects for task in suspect.tasks)
        self._suspects.clear()
        self._probe = None
        futures = [b.future for b in batches if b.future is not None]
        if futures:
            try:
                self._client.cancel(futures)
            except Exception:
                pass
        for batch in batches:
            pending.extend(batch.tasks)
        return pending

    def _stop(self, graceful: bool) -> None:
        """Let go of the cluster; if we are terminating, its workers are killed."""
        self._disconnect(now=not graceful)


# ---------------------------------------------------------------- helpers, caller side


def _portable(blob: bytes) -> bytes:
    """A payload any machine can read. The local backend may lay big arguments out in this
    machine's shared memory (``_payload.dumps_payload``: a ``bytes`` subclass whose bytes
    are a header naming the segment); a Dask worker may be elsewhere, so those are pickled
    again in-band (one more copy; large ones are then scattered)."""
    if type(blob) is bytes:
        return blob
    return dumps(loads(blob))


def _status(process: Any) -> str | None:
    """The name of a nanny's worker-process status (``"running"``, ``"starting"``...)."""
    status = getattr(process, "status", None)
    return getattr(status, "name", None)
