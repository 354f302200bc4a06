"""``manycore.aio.Pool``: the pool's API for asyncio code, on the same engine as ``Pool``.

One engine, not a second pool: an ``aio.Pool`` is a ``manycore.Pool`` (its scheduler
thread, workers, options and errors) whose results are awaited instead of waited for.

Who runs where::

    event loop thread                           scheduler thread (the pool's)
    -----------------                           -----------------------------
    await pool.apply(f, x)
      apply_async: pickle, submit  ───────────► FIFO ─► worker ─► outcome
      await the AsyncResult  ◄── call_soon_threadsafe ── AsyncResult._done (a waker)
    async for r in pool.imap(f, xs)
      read xs, cut chunks (bounded window)  ──► chunks ─► workers
      await the next chunk   ◄── call_soon_threadsafe ── MapJob._store (a waker)
    pool creation, join and terminate: on a short-lived thread of their own, awaited

Guarantees:

* **The loop never blocks on the pool.** Submitting pickles on the loop's thread (as the
  sync API does on the caller's); every wait is an await on a loop future that the
  scheduler thread completes; starting and stopping the pool, which wait for processes,
  run on a helper thread that ends with them.
* **Cancelling the awaiting task cancels the work.** A queued call is dropped; a running
  coroutine is cancelled inside its worker, which goes on; a running plain function is
  stopped as ``task_timeout`` stops one (its worker is replaced). Leaving an ``async for``
  early does the same for what the iteration had started.
* **Leaving ``async with``** normally waits for the work submitted (``close`` and
  ``join``); leaving it with an exception stops everything at once (``terminate``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Generator, Iterable
from typing import Any, Callable, TypeVar

from ._options import DEFAULT, PoolConfig
from ._pool import Pool as SyncPool
from ._stats import PoolStatistics, WorkerStack

__all__ = ["Pool", "PoolOptions"]

T = TypeVar("T")

DEFAULT_CONCURRENCY = 16  # coroutines per worker, as aiomultiprocess's childconcurrency
# Pool's keyword options and their defaults, to check a pool's options when it is made.
_POOL_DEFAULTS: dict[str, Any] = {
    "max_tasks_per_child": None,
    "backend": "local",
    "address": None,
    "task_timeout": None,
    "retries": 0,
    "retry_on": None,
    "max_memory_per_child": None,
}


class Pool:
    """A process pool for asyncio code: ``async with manycore.aio.Pool() as pool``.

    Takes every option of ``manycore.Pool`` (``processes``, ``initializer``, ``initargs``,
    ``maxtasksperchild``, ``context``, ``backend``, ``address``, ``task_timeout``,
    ``retries``, ``retry_on``, ``max_memory_per_child``), and:

    Args:
        concurrency: how many coroutine tasks (``async def`` functions) each worker runs at
            once on its event loop; more wait in the pool's queue. Plain functions run one
            at a time per worker, as in ``Pool``.

    Raises:
        ValueError: ``concurrency`` < 1, or any error ``manycore.Pool`` raises for its
            options.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        **options: Any,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(
                f"concurrency must be a positive int (coroutines per worker), not "
                f"{concurrency!r}; for example concurrency=16"
            )
        initargs = tuple(initargs)
        # Checked here, so that a bad option raises where the pool is made; the workers
        # start in start() (``async with``), off the loop: a fresh fork server or spawned
        # workers take tens of milliseconds.
        PoolConfig.for_pool(
            processes=processes,
            initializer=initializer,
            initargs=initargs,
            maxtasksperchild=maxtasksperchild,
            context=context,
            **{**_POOL_DEFAULTS, **options},
        )
        self._args = (processes, initializer, initargs, maxtasksperchild, context)
        self._options = options
        self._sync_pool: SyncPool | None = None
        self.concurrency = concurrency

    async def start(self) -> Pool:
        """Start the workers (``async with`` and ``await pool`` do it); return the pool."""
        if self._sync_pool is None:
            pool = await _in_thread(lambda: SyncPool(*self._args, **self._options))
            if self._sync_pool is None:
                # Set before any task is submitted; the scheduler reads it at each dispatch.
                pool._scheduler.concurrency = self.concurrency
                self._sync_pool = pool
            else:  # started twice at once: keep the first
                await _in_thread(pool.terminate)
        return self

    def __await__(self) -> Generator[Any, None, Pool]:
        return self.start().__await__()

    @property
    def sync(self) -> SyncPool:
        """The ``manycore.Pool`` underneath, for code that waits instead of awaiting.

        Raises:
            RuntimeError: the pool has not started.
        """
        if self._sync_pool is None:
            raise RuntimeError(
                "the pool has not started: use it in 'async with manycore.aio.Pool() as "
                "pool:', or start it first with 'pool = await manycore.aio.Pool()'"
            )
        return self._sync_pool

    @property
    def _sync(self) -> SyncPool:
        return self.sync

    # -------------------------------------------------------------- single calls

    async def apply(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``func(*args, **kwargs)`` in a worker; a coroutine function runs on the
        worker's event loop, alongside others.

        Raises:
            Exception: whatever the call raised, with the worker's traceback as its cause.
            WorkerLostError: the worker died while running it.
            TaskTimeoutError: it ran past the pool's ``task_timeout``.
            ArgumentPicklingError: an argument cannot be pickled (nothing was sent).
            PoolClosedError: the pool was closed.
        """
        if self._sync_pool is None:
            await self.start()
        return await self._sync.apply_async(func, args, kwargs)

    def options(
        self,
        *,
        task_timeout: Any = DEFAULT,
        retries: Any = DEFAULT,
        retry_on: Any = DEFAULT,
    ) -> PoolOptions:
        """The pool with other ``task_timeout``/``retries``/``retry_on`` for the calls made
        through what this returns: ``await pool.options(task_timeout=5).apply(f, x)``."""
        return PoolOptions(
            self, {"task_timeout": task_timeout, "retries": retries, "retry_on": retry_on}
        )

    # -------------------------------------------------------------- maps

    async def map(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: Any = None,
        **options: Any,
    ) -> list[Any]:
        """``[func(x) for x in iterable]`` computed by the workers, in input order."""
        await self.start()
        return await self._sync.map_async(func, iterable, chunksize, progress=progress, **options)  # type: ignore[no-any-return]

    async def starmap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        progress: Any = None,
        **options: Any,
    ) -> list[Any]:
        """``[func(*args) for args in iterable]`` computed by the workers."""
        await self.start()
        result = self._sync.starmap_async(func, iterable, chunksize, progress=progress, **options)
        return await result  # type: ignore[no-any-return]

    def imap(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: Any = None,
        **options: Any,
    ) -> AsyncIterator[Any]:
        """``async for r in pool.imap(f, xs)``: results in input order as they come.

        The input is read lazily, a bounded window ahead of the consumer, on the loop's
        thread. Leaving the loop early stops what was started for it.
        """
        return self._sync.imap(func, iterable, chunksize, progress=progress, **options)

    def imap_unordered(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: Any = None,
        **options: Any,
    ) -> AsyncIterator[Any]:
        """Like ``imap``, with results in the order they finish."""
        return self._sync.imap_unordered(func, iterable, chunksize, progress=progress, **options)

    # -------------------------------------------------------------- insight

    def statistics(self) -> PoolStatistics:
        """As ``Pool.statistics`` (answered by the scheduler thread at once)."""
        return self._sync.statistics()

    async def stacks(self, timeout: float = 2.0) -> tuple[WorkerStack, ...]:
        """As ``Pool.stacks``, without blocking the loop."""
        return await _in_thread(lambda: self._sync.stacks(timeout))

    # -------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Accept no more work; workers exit once everything submitted has finished."""
        if self._sync_pool is not None:
            self._sync_pool.close()

    async def join(self) -> None:
        """Wait for the workers to exit (after ``close()`` or ``terminate()``)."""
        if self._sync_pool is not None:
            await _in_thread(self._sync_pool.join)

    async def terminate(self) -> None:
        """Stop the workers now; unfinished calls fail with ``PoolClosedError``."""
        if self._sync_pool is not None:
            await _in_thread(self._sync_pool.terminate)

    async def __aenter__(self) -> Pool:
        return await self.start()

    async def __aexit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.close()
            await self.join()
        else:
            await self.terminate()

    def __reduce__(self) -> Any:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled; create a pool in "
            "the process that uses it"
        )

    def __repr__(self) -> str:
        inner = "not started" if self._sync_pool is None else repr(self._sync_pool)
        return f"<manycore.aio.Pool concurrency={self.concurrency}, {inner}>"


class PoolOptions:
    """What ``aio.Pool.options(...)`` returns: its calls with other task options."""

    def __init__(self, pool: Pool, options: dict[str, Any]) -> None:
        self._pool = pool
        self._options = options

    async def apply(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """As ``aio.Pool.apply``, with these options."""
        await self._pool.start()
        return await self._pool.sync.apply_async(func, args, kwargs, **self._options)

    async def map(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: Any = None,
    ) -> list[Any]:
        """As ``aio.Pool.map``, with these options."""
        return await self._pool.map(func, iterable, chunksize, progress=progress, **self._options)

    async def starmap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        progress: Any = None,
    ) -> list[Any]:
        """As ``aio.Pool.starmap``, with these options."""
        return await self._pool.starmap(
            func, iterable, chunksize, progress=progress, **self._options
        )

    def imap(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: Any = None,
    ) -> AsyncIterator[Any]:
        """As ``aio.Pool.imap``, with these options."""
        return self._pool.imap(func, iterable, chunksize, progress=progress, **self._options)

    def imap_unordered(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: Any = None,
    ) -> AsyncIterator[Any]:
        """As ``aio.Pool.imap_unordered``, with these options."""
        return self._pool.imap_unordered(
            func, iterable, chunksize, progress=progress, **self._options
        )


async def _in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` (which waits for processes) on a thread of its own that ends with it, so
    the loop goes on meanwhile and no executor thread is left behind."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def run() -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = fn()
        except BaseException as exc:
            error = exc
        try:
            loop.call_soon_threadsafe(settle, value, error)
        except RuntimeError:  # the loop was closed meanwhile
            pass

    thread = threading.Thread(target=run, name="manycore-aio", daemon=True)
    thread.start()
    # Shielded: a cancelled caller stops waiting, but what was started still finishes.
    value = await asyncio.shield(future)
    while thread.is_alive():  # it has handed over its result and is ending
        await asyncio.sleep(0.001)
    return value
