"""``manycore.Pool``: the ``multiprocessing.Pool`` API on manycore's scheduler.

Everything here runs on the caller's threads, except the ``_resolve``/``_reject`` methods
of results (and the user's callbacks they call), which the scheduler thread runs, as the
stdlib's result-handler thread does. Callbacks should therefore return quickly. A result
is unpickled by the thread that calls ``get()`` (an ``_outcome.Unread`` until then), so a
result that is slow to rebuild delays no other task; a result with a callback is unpickled
for the callback, on the scheduler thread.

Differences from the stdlib that users can see (all of them fixes):

* a worker that dies fails its task with ``WorkerLostError`` instead of hanging ``get()``;
* ``terminate()`` (and leaving a ``with`` block) fails unfinished results with
  ``PoolClosedError`` instead of leaving them pending forever;
* ``chunksize=None`` means adaptive chunking for ``imap``/``imap_unordered`` too (the
  stdlib uses 1 there), and their input is read lazily with bounded look-ahead;
* functions and arguments travel with cloudpickle where plain pickle cannot take them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import weakref
from collections.abc import Generator, Iterable, Mapping
from typing import Any, Callable, Generic, Optional, TypeVar

from . import _messages as m
from ._backend import call_task, function_cache, make_scheduler
from ._chunking import ChunkSizer
from ._engine import Task
from ._errors import PoolClosedError, TimeoutError
from ._jobs import MapJob, ResultIterator, waker_of
from ._options import DEFAULT, PoolConfig, TaskOptions, check_chunksize, merge_options
from ._outcome import Unread
from ._payload import dumps_args
from ._stats import PoolStatistics, WorkerStack

__all__ = ["AsyncResult", "MapResult", "Pool"]

# Typed as the stdlib's stubs type ``multiprocessing.pool``: a result, and what a map
# returns, carry the type of what the function returns (``_T``) over what it takes (``_S``).
_T = TypeVar("_T")
_S = TypeVar("_S")


# Orders an AsyncResult's arrival with the making of its latch by a get() that must wait:
# held for a few bytecodes at a time.
_latch_guard = threading.Lock()


class AsyncResult(Generic[_T]):
    """The result of ``apply_async``: ``get``, ``wait``, ``ready``, ``successful``."""

    __slots__ = (
        "__weakref__",
        "_callback",
        "_error",
        "_error_callback",
        "_latch",
        "_pool",
        "_ready",
        "_scheduler",
        "_value",
        "_wakers",
    )
    sizer: Optional[ChunkSizer] = None  # single tasks are sized by the pool's own sizer
    reads_later = True  # the value may come as an Unread, which get() unpickles

    def __init__(
        self,
        pool: Pool | None,
        callback: Callable[[_T], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        self._pool = pool  # keeps the pool alive while its result is awaited
        self._scheduler = pool._scheduler if pool is not None else None
        # A lock held until the result is set serves as a light event: waiters acquire
        # and release it in turn. The first get() that must wait makes it (most results
        # are ready when read, and a lock per result is one more object for the garbage
        # collector); the module's guard orders that with the result's arrival.
        self._latch: threading.Lock | None = None
        self._ready = False
        self._callback = callback
        self._error_callback = error_callback
        self._value: Any = None
        self._error: BaseException | None = None
        self._wakers: list[Callable[[], None]] | None = None  # awaiting event loops

    def ready(self) -> bool:
        """Whether the call has completed."""
        return self._ready

    def successful(self) -> bool:
        """Whether the call completed without raising.

        Raises:
            ValueError: the result is not ready yet.
        """
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        value = self._value
        return self._error is None and not (type(value) is Unread and value.failed())

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is available or ``timeout`` seconds pass."""
        self._wait(timeout)

    def _wait(self, timeout: float | None) -> bool:
        if self._ready:
            return True
        with _latch_guard:
            if self._ready:
                return True
            latch = self._latch
            if latch is None:
                latch = self._latch = threading.Lock()
                latch.acquire()
        if latch.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            latch.release()
        return self._ready

    def get(self, timeout: float | None = None) -> _T:
        """The call's return value, or its exception raised here.

        Raises:
            TimeoutError: not ready within ``timeout`` (also ``multiprocessing.TimeoutError``).
            WorkerLostError: the worker running the call died.
            Exception: whatever the call raised, with the worker's traceback as ``__cause__``.
        """
        if not self._wait(timeout):
            raise TimeoutError(f"the result was not ready within {timeout} seconds")
        if self._error is not None:
            raise self._error
        value = self._value
        if type(value) is Unread:
            return value.read()  # type: ignore[no-any-return]
        return value  # type: ignore[no-any-return]

    def cancel(self) -> bool:
        """Cancel the call: if it has not started it never will, and if it is running its
        worker is stopped and replaced. ``get()`` then raises
        ``concurrent.futures.CancelledError``. False if the result was already set."""
        scheduler = self._scheduler
        if self._ready:
            return False
        self._reject(None, concurrent.futures.CancelledError(), None)
        if scheduler is not None:
            scheduler.stop_running(self)
        return True

    # Sink, called by the scheduler thread.
    def _claim(self) -> bool:
        return not self._ready

    def _cancel(self) -> None:
        # The engine cancels what waits in its queue: nothing of it runs, so there is no
        # worker to stop (``cancel()`` does that for a running call).
        if not self._ready:
            self._reject(None, concurrent.futures.CancelledError(), None)

    def _resolve(self, task: Task | None, value: Any) -> None:
        if self._ready:  # cancelled before it finished
            return
        if self._callback is not None and type(value) is Unread:
            # The callback wants the value now, on this (the engine's) thread.
            try:
                value = value.read()
            except BaseException as exc:
                self._reject(task, exc, None)
                return
        self._value = value
        try:
            if self._callback is not None:
                self._callback(value)
        finally:
            self._done()

    def _reject(self, task: Task | None, exc: BaseException, partial: Any) -> None:
        if self._ready:
            return
        self._error = exc
        try:
            if self._error_callback is not None:
                self._error_callback(exc)
        finally:
            self._done()

    def _done(self) -> None:
        with _latch_guard:  # once, even if the engine and a cancel() both get here
            first = not self._ready
            self._ready = True
            latch = self._latch
        if first:
            if latch is not None:
                latch.release()
            wakers = self._wakers
            if wakers is not None:
                for wake in wakers:
                    wake()
        self._pool = None
        self._scheduler = None

    def __await__(self) -> Generator[Any, None, Any]:
        """``await result``: its value, or its exception raised, without blocking the loop.

        Cancelling the awaiting task cancels the call, as ``cancel()`` does.
        """
        if not self._ready:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            wake = waker_of(loop, future)
            if self._wakers is None:
                self._wakers = []
            self._wakers.append(wake)
            if self._ready:  # settled meanwhile: it may not have seen our waker
                wake()
            try:
                yield from future
            except BaseException:
                self.cancel()
                raise
        return self.get(0)

    def __repr__(self) -> str:
        state = "pending"
        if self.ready():
            state = "ok" if self._error is None else f"error {type(self._error).__name__}"
        return f"<{type(self).__name__} {state}>"


ApplyResult = AsyncResult

# What imap and imap_unordered return, by the stdlib's names (one class serves both).
IMapIterator = ResultIterator
IMapUnorderedIterator = ResultIterator


class MapResult(AsyncResult[list[_T]]):
    """The result of ``map_async``/``starmap_async``: a list in input order."""

    __slots__ = ("job",)

    def __init__(
        self,
        pool: Pool,
        callback: Callable[[list[_T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> None:
        super().__init__(pool, callback, error_callback)
        self.job: MapJob | None = None

    def _job_done(self, job: MapJob) -> None:
        if job.error is not None:
            self._reject(None, job.error, None)
        else:  # the values are unpickled by get(), or here for a callback
            self._resolve(None, Unread(job.values))

    def get(self, timeout: float | None = None) -> list[_T]:
        try:
            job = self.job
            if job is not None and not self._ready and self._callback is None:
                # Unpickle the chunks that have come back while the rest still run (the
                # stdlib's result thread does the same), rather than all of them at the end.
                deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
                job.read_while_running(deadline)
                if deadline is not None:
                    timeout = max(0.0, deadline - time.monotonic())
            return super().get(timeout)
        except KeyboardInterrupt:
            self.cancel()
            raise

    def cancel(self) -> bool:
        """Cancel the map: no more chunks start, and chunks running are stopped (their
        workers are replaced). ``get()`` then raises ``concurrent.futures.CancelledError``."""
        if self._ready:
            return False
        self._reject(None, concurrent.futures.CancelledError(), None)
        if self.job is not None:
            self.job.cancel(stop_running=True)
        return True


class Pool:
    """A pool of worker processes with the API of ``multiprocessing.Pool``.

    Args:
        processes: number of workers; ``None`` means ``manycore.cpu_count()`` (affinity and
            container CPU limits honoured).
        initializer: called as ``initializer(*initargs)`` in each worker when it starts. If
            it raises, the pool breaks and every call fails with ``InitializerError``.
        initargs: arguments for ``initializer``.
        maxtasksperchild: replace a worker after it has run this many tasks (a map chunk
            counts as one task, as in the stdlib).
        context: start method: ``"fork"``, ``"spawn"``, ``"forkserver"``, a
            ``multiprocessing`` context, or ``None`` for manycore's default (see
            docs/design.md).
        backend: ``"local"`` (worker processes on this machine) or ``"dask"`` (a Dask
            cluster; needs ``pip install 'manycore[dask]'``, see docs/cluster.md).
        address: with ``backend="dask"``: a scheduler address (``"tcp://host:8786"``), a
            scheduler file, a ``distributed.Client`` or a ``Cluster``; ``None`` starts a
            ``LocalCluster`` of ``processes`` workers that the pool owns and closes.
        task_timeout: seconds a task may run (from its start in a worker); past it, the
            task fails with ``TaskTimeoutError`` and its worker is stopped and replaced. In
            a map, it applies to each item. ``None``: no limit. Each call may override it.
        retries: times a failed task is run again when its error is one of ``retry_on``
            (its side effects may then happen more than once). Each call may override it.
        retry_on: the errors that are retried: an exception class or a tuple; default
            ``WorkerLostError`` (the worker died: a crash, an OOM kill). Add
            ``TaskTimeoutError`` to retry timeouts, or your own exception types.
        max_memory_per_child: resident memory (bytes, or a size such as ``"2GiB"``) above
            which a worker is replaced after its current task. Nothing is lost: tasks it
            had not started run elsewhere.
        maxtasksperchild: also accepted as ``max_tasks_per_child``.

    Raises:
        ValueError: ``processes`` < 1, a bad ``maxtasksperchild``, an unknown start method,
            an unknown backend, or a bad option value.
        ImportError: ``backend="dask"`` without Dask installed.
        TypeError: ``initializer`` is not callable.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        backend: str = "local",
        address: Any = None,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_on: Any = None,
        max_memory_per_child: int | str | None = None,
        max_tasks_per_child: int | None = None,
    ) -> None:
        config = PoolConfig.for_pool(
            processes=processes,
            initializer=initializer,
            initargs=initargs,
            maxtasksperchild=maxtasksperchild,
            max_tasks_per_child=max_tasks_per_child,
            context=context,
            backend=backend,
            address=address,
            task_timeout=task_timeout,
            retries=retries,
            retry_on=retry_on,
            max_memory_per_child=max_memory_per_child,
        )
        self._options = config.options  # read by every call: one attribute, not two
        self._state = "RUN"
        self._scheduler = make_scheduler(config)
        self._processes = self._scheduler.workers
        # Dropped without close(): finish what was submitted, then let the workers go.
        self._finalizer = weakref.finalize(self, self._scheduler.close)

    # -------------------------------------------------------------- single calls

    def apply(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        *,
        task_timeout: Any = DEFAULT,
        retries: Any = DEFAULT,
        retry_on: Any = DEFAULT,
    ) -> _T:
        """Call ``func(*args, **kwds)`` in a worker and return its result.

        ``task_timeout``, ``retries`` and ``retry_on`` override the pool's for this call.
        """
        result = self.apply_async(
            func, args, kwds, task_timeout=task_timeout, retries=retries, retry_on=retry_on
        )
        return result.get()

    def apply_async(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        callback: Callable[[_T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: Any = DEFAULT,
        retries: Any = DEFAULT,
        retry_on: Any = DEFAULT,
    ) -> AsyncResult[_T]:
        """Start ``func(*args, **kwds)`` in a worker; return its ``AsyncResult``.

        ``task_timeout``, ``retries`` and ``retry_on`` override the pool's for this call.

        Raises:
            ArgumentPicklingError: an argument cannot be pickled (nothing was sent).
            PoolClosedError: the pool was closed or terminated.
        """
        self._check_running()
        options = self._call_options(task_timeout, retries, retry_on)
        fn_blob = function_cache.dumps(func)
        args = tuple(args)
        kw = dict(kwds) if kwds else None
        payload = dumps_args(func, args, kw)
        result: AsyncResult[_T] = AsyncResult(self, callback, error_callback)
        task = call_task(
            kind=m.CALL_KW if kw else m.CALL,
            fn=func,
            fn_blob=fn_blob,
            payload=payload,
            sink=result,
            options=options,
        )
        self._scheduler.submit(task)
        return result

    # -------------------------------------------------------------- maps
    #
    # Every map method also takes, by keyword: ``task_timeout``, ``retries`` and
    # ``retry_on`` (the pool's defaults for this call; a timeout applies to each item) and
    # ``progress`` (True for a bar, a tqdm bar, or a callable ``(done, total)``).

    def map(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        *,
        task_timeout: Any = DEFAULT,
        retries: Any = DEFAULT,
        retry_on: Any = DEFAULT,
        progress: Any = None,
    ) -> list[_T]:
        """``list(map(func, iterable))``, computed by the workers."""
        values: list[_T] = self._map_async(
            func,
            iterable,
            kind=m.MAP,
            chunksize=chunksize,
            options=self._call_options(task_timeout, retries, retry_on),
            progress=progress,
        ).get()
        return values

    def map_async(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: Any = DEFAULT,
        retries: Any = DEFAULT,
        retry_on: Any = DEFAULT,
        progress: Any = None,
    ) -> MapResult[_T]:
        """Start ``map``; return a ``MapResult`` whose ``get()`` is the list of results."""
        return self._map_async(
            func,
            iterable,
            kind=m.MAP,
            chunksize=chunksize,
            options=self._call_options(task_timeout, retries, retry_on),
            progress=progress,
            callback=callback,
            error_callback=error_callback,
        )

    def starmap(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        task_timeout: Any = DEFAULT,
        retries: Any = DEFAULT,
        retry_on: Any = DEFAULT,
        progress: Any = None,
    ) -> list[_T]:
        """``[func(*args) for args in iterable]``, computed by the workers."""
        values: list[_T] = self._map_async(
            func,
            iterable,
            kind=m.STARMAP,
            chunksize=chunksize,
            options=self._call_options(task_timeout, retries, retry_on),
            progress=progress,
        ).get()
        return values

    def starmap_async(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: Any = DEFAULT,
        retries: Any = DEFAULT,
        retry_on: Any = DEFAULT,
        progress: Any = None,
    ) -> MapResult[_T]:
        """Start ``starmap``; return a ``MapResult``."""
        return self._map_async(
            func,
            iterable,
            kind=m.STARMAP,
            chunksize=chunksize,
            options=self._call_options(task_timeout, retries, retry_on),
            progress=progress,
            callback=callback,
            error_callback=error_callback,
        )

    def imap(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        *,
        task_timeout: Any = DEFAULT,
        retries: Any = DEFAULT,
        retry_on: Any = DEFAULT,
        progress: Any = None,
    ) -> ResultIterator[_T]:
        """Results of ``func`` over ``iterable``, in order, as soon as each is ready.

        The input is read lazily, a bounded window ahead of the consumer, so endless
        iterables work. ``chunksize=None`` sizes chunks from measured run times.
        """
        return self._imap(
            func,
            iterable,
            chunksize=chunksize,
            ordered=True,
            options=self._call_options(task_timeout, retries, retry_on),
            progress=progress,
        )

    def imap_unordered(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        *,
        task_timeout: Any = DEFAULT,
        retries: Any = DEFAULT,
        retry_on: Any = DEFAULT,
        progress: Any = None,
    ) -> ResultIterator[_T]:
        """Like ``imap``, but results come in the order they finish."""
        return self._imap(
            func,
            iterable,
            chunksize=chunksize,
            ordered=False,
            options=self._call_options(task_timeout, retries, retry_on),
            progress=progress,
        )

    def _call_options(
        self, task_timeout: Any = DEFAULT, retries: Any = DEFAULT, retry_on: Any = DEFAULT
    ) -> TaskOptions | None:
        if task_timeout is DEFAULT and retries is DEFAULT and retry_on is DEFAULT:
            return self._options  # the pool's own, which its scheduler accepted at the start
        return self._scheduler.check_options(
            merge_options(self._options, task_timeout, retries, retry_on)
        )

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        *,
        kind: int,
        chunksize: int | None,
        options: TaskOptions | None,
        progress: Any,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> MapResult[Any]:
        self._check_running()
        check_chunksize(chunksize)
        fn_blob = function_cache.dumps(func)
        result: MapResult[Any] = MapResult(self, callback, error_callback)
        job = MapJob(
            scheduler=self._scheduler,
            fn=func,
            fn_blob=fn_blob,
            iterable=iterable,
            kind=kind,
            chunksize=chunksize,
            lazy=False,
            on_done=result._job_done,
            options=options,
            progress=progress,
        )
        result.job = job
        self._scheduler.submit(job)
        return result

    def _imap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        *,
        chunksize: int | None,
        ordered: bool,
        options: TaskOptions | None,
        progress: Any,
    ) -> ResultIterator[Any]:
        self._check_running()
        check_chunksize(chunksize)
        fn_blob = function_cache.dumps(func)
        job = MapJob(
            scheduler=self._scheduler,
            fn=func,
            fn_blob=fn_blob,
            iterable=iterable,
            kind=m.MAP,
            chunksize=chunksize,
            lazy=True,
            options=options,
            progress=progress,
            each_item=True,
        )
        iterator = job.iterate(ordered)
        iterator._pool = self  # type: ignore[attr-defined]  # keep the pool while iterating
        job._feed()
        self._scheduler.submit(job)
        return iterator

    # -------------------------------------------------------------- insight

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot: per worker, tasks done, busy and idle time, memory, restarts
        and why; for the pool, tasks queued, running, done, failed, retried, timed out and
        cancelled, and the time spent on IPC."""
        return self._scheduler.statistics()

    def stacks(self, timeout: float = 2.0) -> tuple[WorkerStack, ...]:
        """For each busy worker: the task it runs, for how long, and every thread's stack
        (from faulthandler, which answers even from C code). ``print(*pool.stacks(),
        sep="\\n\\n")`` shows what a stuck pool is doing."""
        return self._scheduler.stacks(timeout)

    # -------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Accept no more work; workers exit once everything submitted has finished."""
        if self._state == "RUN":
            self._state = "CLOSE"
            self._scheduler.close()

    def terminate(self) -> None:
        """Stop the workers now; unfinished results fail with ``PoolClosedError``."""
        self._state = "TERMINATE"
        self._scheduler.terminate()
        self._scheduler.join()

    def join(self) -> None:
        """Wait for the workers to exit; call ``close()`` or ``terminate()`` first.

        Raises:
            ValueError: the pool is still running.
        """
        if self._state == "RUN":
            raise ValueError("Pool is still running: call close() or terminate() before join()")
        self._scheduler.join()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def __reduce__(self) -> Any:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled; create a pool in "
            "the process that uses it"
        )

    def __repr__(self) -> str:
        return (
            f"<manycore.Pool state={self._state} processes={self._processes} "
            f"start_method={self._scheduler.start_method}>"
        )

    def _check_running(self) -> None:
        if self._state != "RUN":
            how = "terminated" if self._state == "TERMINATE" else "closed"
            raise PoolClosedError(
                f"Pool not running (it was {how}): it accepts no new work; create a new pool"
            )
        # A broken pool still takes work: each call then fails through its result, where
        # Pool users handle errors (the executor raises at submit, as the stdlib's does).
        self._scheduler.check_open(broken_raises=False)
