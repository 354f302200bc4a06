"""Map jobs: one ``map``/``imap``/``starmap``/``Executor.map`` call, cut into chunks.

Who runs where::

    caller / consuming thread              scheduler thread
    -------------------------              ----------------
    MapJob(...)   eager: list(input)       _take(): eager -> cut the next chunk now,
                  lazy: _feed() a window            at the size the sizer says
    iterate: wait for chunk k, _feed()              lazy  -> pop a chunk _feed() cut
             more while waiting            _resolve/_reject(chunk k) -> results[k]
    eager get(): read_while_running,       _abort(exc) when the pool ends
             unpickling chunk k as it settles
    cancel() on Ctrl-C or close()

*Eager* jobs (``map``, ``map_async``, ``starmap``) read their whole input up front, as the
stdlib does (a list, tuple or range needs no reading: it is cut as it is), and the
scheduler cuts chunks when a worker has room, so each chunk is sized with everything
measured so far. *Lazy* jobs (``imap``, ``imap_unordered``,
``Executor.map``) read the user's iterator on the consuming thread only, never on the
scheduler thread (a slow generator must not stall other jobs), and keep at most ``window``
chunks cut but not yet consumed: memory stays bounded on endless input. Once the pool is
closing nobody may be left to consume, so the scheduler then reads lazy input itself.

Guarantees: every chunk cut is settled exactly once (value, error, or abort); an error in
the input iterator or an unpicklable item becomes the error of the chunk at its position,
and no later chunk is cut.

``each_item`` jobs (``Pool.imap``/``imap_unordered``) fail an item alone, as the stdlib's
one-item chunks do (#2): when an item of a chunk raises, the job keeps the values before
it and the error, and submits the items after it as a new task of the same chunk index;
the chunk settles once its last piece does, as values with ``_Raised`` markers in place.
The consumer yields the values and raises each error at its position, and iterating on
goes past it. A chunk that fails as a whole (its worker died, its result could not be
pickled) still fails with one error.

How big a chunk is, and what ``chunksize`` means with a ``task_timeout`` (one-item chunks,
``chunksize`` of them per batch), is the engine's chunking policy (``_engine``): a job asks
the engine for its sizer (``job_sizer``) and for each chunk's size (``chunk_items``). A
job's progress (``_progress``) advances as chunks settle.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence, Sized
from typing import Any, Callable, Generic, Optional, TypeVar

from ._engine import IN_FLIGHT_BATCHES, Engine, Task, chunk_items
from ._errors import TimeoutError
from ._messages import CORO
from ._options import TaskOptions
from ._outcome import Unread, is_coroutine_function, read
from ._payload import dumps_payload
from ._progress import Progress, make_progress
from ._serialize import argument_error

__all__ = ["PENDING", "MapJob", "ResultIterator", "waker_of"]

_Outcome = tuple[Any, Optional[BaseException]]  # (values: a list or an Unread, error)


# read_while_running: what one wake-up of the reading thread costs, and the most chunks it
# lets settle between two (a run of tiny chunks must still be read before the job ends).
_WAKE_COST = 50e-6
_MAX_STRIDE = 64
# A range's chunk shorter than this travels as a list: pickling a range costs as much as
# pickling a list of 16 small ints (about 2.5 us), and a chunksize=1 map cuts thousands.
_RANGE_AS_LIST = 16


class MapJob:
    """One map call's chunks and results."""

    def __init__(
        self,
        *,
        scheduler: Engine,
        fn: Callable[..., Any],
        fn_blob: bytes,
        iterable: Iterable[Any],
        kind: int,
        chunksize: int | None,
        lazy: bool,
        on_done: Callable[[MapJob], None] | None = None,
        options: TaskOptions | None = None,
        progress: Any = None,
        each_item: bool = False,
        buffersize: int | None = None,
    ) -> None:
        self.sizer = scheduler.job_sizer(fn_blob, chunksize)
        self._scheduler = scheduler
        self._fn = fn
        self._fn_blob = fn_blob
        self._kind = kind
        self._lazy = lazy
        self._on_done = on_done
        # Reentrant: a ResultIterator collected by the cyclic GC cancels its job from
        # whatever thread the collection runs on, possibly one that holds this lock. Taken
        # with ``with self._lock``, never ``with self._cond``: the C lock's ``__enter__``
        # leaves a KeyboardInterrupt no point between its acquire and the block, where the
        # condition's (Python code) does, and a lock left held would stop the scheduler's
        # thread for good (3.10 and later; 3.9 checks for signals at a block's end too).
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._input_lock = threading.Lock()  # the input iterator is read by one thread at a time
        self._options = options
        # One item per chunk, so that a timeout stops one item (the engine's chunking policy).
        self.timed = options is not None and options.timeout is not None
        # A coroutine function's items run at once in a worker, up to the pool's
        # concurrency: one item per chunk too, so each counts towards it on its own.
        self.coroutine = is_coroutine_function(fn)
        if self.coroutine:
            self._kind = kind | CORO
            self.timed = True
        total: int | None
        if lazy:
            total = len(iterable) if isinstance(iterable, Sized) else None
            self._input: Iterator[Any] = iter(iterable)
            self._sequence: list[Any] | tuple[Any, ...] | range | None = None
            self._remaining: int | None = None
        else:
            # A list, tuple or range is cut as it is, slice by slice on the scheduler
            # thread, as the stdlib's task thread reads any sized input: copying 200k ints
            # first cost more than a tenth of mapping x*x over them, and a range's chunk
            # travels as a range. Other input (a subclass too: its __iter__ may be its
            # own) is read up front.
            if type(iterable) in (list, tuple, range):
                items: Any = iterable
                self._sequence = items
            else:
                items = list(iterable)
                self._sequence = items
            self._input = iter(())
            self._remaining = total = len(items)
        self.sizer.total = total
        self._window = IN_FLIGHT_BATCHES * scheduler.workers + 2
        if self.timed or (chunksize is not None and chunksize < TIMED_WINDOW):
            # Small chunks travel many to a batch: keep enough of them cut to fill batches.
            self._window *= TIMED_WINDOW
        if self.coroutine:  # enough to keep every worker's coroutines going
            self._window = max(self._window, 2 * scheduler.concurrency * scheduler.workers)
        if buffersize is not None:  # Executor.map(buffersize=): the caller's own bound
            self._window = buffersize
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "")
        self.progress: Progress | None = make_progress(progress, total, str(name))
        self._ready: deque[Task] = deque()  # lazy: cut, waiting for the scheduler
        self._cut = 0  # chunks cut so far
        self._items_cut = 0  # input items read so far
        self._exhausted = False  # no more chunks will be cut
        self._results: dict[int, _Outcome] = {}
        self._each_item = each_item
        self._kept: dict[int, Sequence[Any]] = {}  # each_item: the items of chunks in flight
        self._pieces: dict[int, list[Any]] = {}  # each_item: what a split chunk gave so far
        self._settled = 0
        self._consumed = 0  # lazy: chunks the consumer has taken
        self._completed: deque[int] = deque()  # settled chunk indexes, in settling order
        self.error: BaseException | None = None  # the first error, in chunk order
        self._error_index: int | None = None
        self._cancelled = False
        self._aborted: BaseException | None = None  # the pool ended under this job
        self._done = False
        # Set while an asyncio consumer waits (``ResultIterator.__anext__``): called, under
        # the condition, whenever the consumer may have something new to look at.
        self.waker: Callable[[], None] | None = None
        self._awaited: int | None = None  # the chunk ``read_while_running`` waits for

    # ------------------------------------------------------------ cutting chunks

    def _cut_chunk(self) -> Task | None:
        """Read the next chunk from the input and pickle it; None when input is done."""
        with self._input_lock:
            if self._exhausted or self._cancelled:
                return None
            size = chunk_items(self.sizer, self._remaining, self.timed)
            index = self._cut
            try:
                if self._sequence is not None:
                    items = self._sequence[self._items_cut : self._items_cut + size]
                    if size < _RANGE_AS_LIST and type(items) is range:
                        items = list(items)  # a short list pickles faster than a range
                else:
                    items = list(itertools.islice(self._input, size))
            except BaseException as exc:  # the user's iterator raised: the error of this chunk
                self._fail_input(index, exc)
                return None
            if not items:
                with self._lock:
                    self._exhausted = True
                    self._sequence = None
                    self._check_done()
                return None
            if self._remaining is not None:
                self._remaining -= len(items)
            offset = self._items_cut
            self._items_cut += len(items)
            try:
                payload = dumps_payload(items)
            except Exception as exc:
                labelled = [(f"input item {i}", x) for i, x in enumerate(items, offset)]
                self._fail_input(index, argument_error(self._fn, labelled, exc))
                return None
            except BaseException as exc:  # SystemExit from an item's __reduce__, say: this
                # chunk's error, raised to the caller as is, never the engine thread's end
                self._fail_input(index, exc)
                return None
            self._cut += 1
            if self._each_item:
                self._kept[index] = items
            if self._remaining == 0:
                # Known input, last chunk cut: completion needs no extra pass, and the
                # input may go (as an exhausted iterator lets its list go).
                self._exhausted = True
                self._sequence = None
            return Task(
                self._kind, self._fn, self._fn_blob, payload, self, index, len(items), self._options
            )

    def _fail_input(self, index: int, exc: BaseException) -> None:
        with self._lock:
            self._exhausted = True
            self._cut = index + 1
            self._store(index, [], exc)

    def _feed(self) -> None:
        """Consumer thread: cut chunks until the window is full (lazy jobs)."""
        added = False
        while not self._exhausted and not self._cancelled:
            if self._cut - self._consumed >= self._window:
                break  # bounded look-ahead: wait for the consumer
            task = self._cut_chunk()
            if task is None:
                break
            self._ready.append(task)
            added = True
        if added or self._exhausted:
            self._scheduler.wake()

    # ------------------------------------------------------------ Source, for the scheduler

    def _take(self, engine: Engine) -> Task | None:
        if self._ready:
            return self._ready.popleft()
        if not self._lazy or engine.closing:
            return self._cut_chunk()
        return None

    @property
    def remaining(self) -> int | None:
        return self._remaining

    def _drained(self) -> bool:
        return (self._exhausted or self._cancelled) and not self._ready

    def _abort(self, exc: BaseException) -> None:
        with self._lock:
            if self._done and not self._lazy:
                return
            self._exhausted = True
            self._aborted = exc
            if self.error is None:
                self.error = exc
            self._ready.clear()
            self._done = True
            self._cond.notify_all()
            if self.waker is not None:
                self.waker()
        self._finish_progress()
        self._call_on_done()

    def _cancel(self) -> None:
        self.cancel()

    # ------------------------------------------------------------ Sink, for the scheduler

    reads_later = True  # a chunk's values may come as an Unread, read by the consumer

    def _claim(self) -> bool:
        return not self._cancelled

    def _resolve(self, task: Task, values: Any) -> None:
        if self.progress is not None:  # before _store, which may finish the bar
            self.progress.advance(task.items)
        with self._lock:
            before = self._settle_pieces(task.index)
            if before:  # the end of a chunk split after a failed item: join its pieces
                try:
                    values = before + read(values)
                except BaseException as exc:  # its values could not be unpickled
                    self._store(task.index, before, exc)
                    return
            self._store(task.index, values, None)

    def _reject(self, task: Task, exc: BaseException, partial: list[Any] | None) -> None:
        rest = self._kept.get(task.index) if self._each_item and partial is not None else None
        if rest is not None and partial is not None and len(partial) + 1 < len(rest):
            self._continue_after(task, exc, partial, rest[len(partial) + 1 :])
            return
        if self.progress is not None:
            self.progress.advance(task.items)
        with self._lock:
            before = self._settle_pieces(task.index)
            self._store(task.index, before + (partial or []), exc)

    def _continue_after(
        self, task: Task, exc: BaseException, partial: list[Any], rest: Sequence[Any]
    ) -> None:
        """Keep a failed item's error in its place and run the items after it anew."""
        if self.progress is not None:
            self.progress.advance(len(partial) + 1)
        with self._lock:
            if self._cancelled or self._done:
                return
            self._pieces.setdefault(task.index, []).extend([*partial, _Raised(exc)])
            self._kept[task.index] = rest
        try:
            payload = dumps_payload(rest)  # these items pickled once already
        except Exception as error:  # pragma: no cover - a pickle that is not repeatable
            self._reject(task, error, [])
            return
        self._scheduler.submit(
            Task(
                self._kind,
                self._fn,
                self._fn_blob,
                payload,
                self,
                task.index,
                len(rest),
                self._options,
            )
        )

    def _settle_pieces(self, index: int) -> list[Any]:
        # Called with self._lock held: the chunk's earlier pieces, its items forgotten.
        if not self._each_item:  # only each_item jobs keep items or split chunks
            return []
        self._kept.pop(index, None)
        return self._pieces.pop(index, [])

    def _store(self, index: int, values: list[Any], exc: BaseException | None) -> None:
        # Called with self._lock held.
        if self._done or index in self._results:
            return
        self._results[index] = (values, exc)
        self._completed.append(index)
        self._settled += 1
        if exc is not None and (self._error_index is None or index < self._error_index):
            self.error, self._error_index = exc, index
        if self._lazy or index == self._awaited:  # an eager job's reader waits for one
            self._cond.notify_all()
        if self.waker is not None:
            self.waker()
        self._check_done()

    def _check_done(self) -> None:
        finished = self._exhausted and self._settled >= self._cut
        failed_fast = self.error is not None and not self._lazy
        if not self._done and (finished or failed_fast):
            self._done = True
            if failed_fast:
                self._cancelled = True  # an eager map fails as a whole: stop cutting
            self._cond.notify_all()
            if self.waker is not None:
                self.waker()
            self._finish_progress()
            self._call_on_done()  # under the lock: callbacks only read our state

    def _call_on_done(self) -> None:
        # Once: dropping the callback also breaks the cycle job -> callback -> result ->
        # job, which would keep every chunk's values alive until the next garbage
        # collection, and make each collection meanwhile walk them all (issue 16: a 200k
        # map's gen-0 collections took 30-50 ms).
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(self)

    def _finish_progress(self) -> None:
        if self.progress is not None:
            self.progress.finish()

    # ------------------------------------------------------------ for the caller

    def cancel(self, stop_running: bool = False) -> None:
        """Stop cutting chunks. Chunks already in workers finish and are discarded, or with
        ``stop_running`` are stopped (their workers are replaced)."""
        with self._lock:
            self._cancelled = True
            self._ready.clear()
            self._cond.notify_all()
        self._finish_progress()
        if stop_running:
            self._scheduler.stop_running(self)

    def values(self) -> list[Any]:
        """Eager jobs, once done: all values in input order, or raise the first error."""
        if self.error is not None:
            raise self.error
        out: list[Any] = []
        for index in range(self._cut):
            out.extend(read(self._results[index][0]))
        return out

    def read_while_running(self, deadline: float | None) -> None:
        """Eager jobs, on the thread that waits for the values: unpickle the chunks' values
        as they settle, in input order, until the job is done or ``deadline`` passes, so
        that reading them overlaps the work still running and ``values()`` finds little
        left to do. What a chunk's unpickling raises is kept in its ``Unread``, for
        ``values()`` to raise in its turn.

        Each wake-up costs this thread and the scheduler's a hand-off of the GIL (tens of
        microseconds), more than reading a small chunk: the reader sleeps until a run of
        chunks has settled whose reading is worth a wake-up (``_WAKE_COST``), measured as
        it goes. A ``chunksize=1`` map of small values then wakes it every few dozen
        chunks, and a map of big chunks at each one."""
        index = 0
        stride = 1  # the chunks to let settle before the next wake-up
        while True:
            with self._lock:
                while True:
                    outcome = self._results.get(index)
                    if outcome is not None or self._done or self._cancelled:
                        break
                    timeout = None if deadline is None else deadline - time.monotonic()
                    if timeout is not None and timeout <= 0:
                        return
                    # Woken when that chunk settles (not for every other one: a
                    # chunksize=1 map settles thousands), or when the job ends.
                    self._awaited = index + stride - 1
                    self._cond.wait(timeout)
                self._awaited = None
                if outcome is None or self.error is not None:
                    return  # done: values() reads the rest, or raises the error
            started = time.perf_counter()
            first = index
            while outcome is not None:  # every chunk settled in order from ``index``
                if type(outcome[0]) is Unread:
                    try:
                        outcome[0].read()
                    except BaseException:  # kept in the Unread: values() raises it in order
                        pass
                index += 1
                outcome = self._results.get(index)  # a dict read: safe without the lock
            each = (time.perf_counter() - started) / (index - first)
            stride = max(1, min(_MAX_STRIDE, int(_WAKE_COST / max(each, 1e-7))))

    def iterate(self, ordered: bool) -> ResultIterator[Any]:
        return ResultIterator(self, ordered)

    def poll(self, ordered: bool) -> _Outcome | _Pending | None:
        """The next chunk for the consumer if one is there (feeding input first), None at
        the end, else ``PENDING``; never waits."""
        if self._lazy:
            self._feed()
        with self._lock:
            return self._poll(ordered)

    def _poll(self, ordered: bool) -> _Outcome | _Pending | None:
        # Called with self._lock held.
        outcome = self._pop_settled(ordered)
        if outcome is not None:
            return outcome
        if self._aborted is not None:
            exc, self._aborted = self._aborted, _REPORTED
            return None if exc is _REPORTED else ([], exc)
        if self._exhausted and self._consumed >= self._cut:
            return None
        return PENDING

    def _next_chunk(self, ordered: bool, deadline: float | None) -> _Outcome | None:
        """The next chunk for the consumer, feeding input while it waits; None at the end."""
        while True:
            if self._lazy:
                self._feed()
            with self._lock:
                polled = self._poll(ordered)
                if polled is not PENDING:
                    return polled  # type: ignore[return-value]
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    raise TimeoutError("the next result did not arrive within the timeout")
                # A lazy job wakes now and then to top up its window even when nothing
                # settled, in case the window was full when the consumer last fed it.
                wait = 0.05 if self._lazy else timeout
                if timeout is not None and wait is not None:
                    wait = min(wait, timeout)
                self._cond.wait(wait)

    def _pop_settled(self, ordered: bool) -> _Outcome | None:
        # Called with self._lock held.
        if ordered:
            outcome = self._results.pop(self._consumed, None)
            if outcome is not None:
                self._consumed += 1
            return outcome
        while self._completed:
            outcome = self._results.pop(self._completed.popleft(), None)
            if outcome is not None:
                self._consumed += 1
                return outcome
        return None


TIMED_WINDOW = 32  # one-item chunks: a window this many times longer, in chunks


class _Pending:
    __slots__ = ()

    def __repr__(self) -> str:
        return "PENDING"


PENDING = _Pending()  # what ``MapJob.poll`` returns while the next chunk is not settled
YIELD_EVERY = 0.005  # seconds an ``async for`` may run on ready results before it yields

_REPORTED: BaseException = Exception("abort already reported")


_T = TypeVar("_T")  # what the mapped function returns


class ResultIterator(Generic[_T]):
    """What ``imap``/``imap_unordered``/``Executor.map`` return."""

    def __init__(self, job: MapJob, ordered: bool, deadline: float | None = None) -> None:
        self._job = job
        self._ordered = ordered
        self._deadline = deadline
        # The current chunk's values not yet returned, with a _Raised marker at a failed
        # item. Each is popped as it is returned: the iterator keeps no result alive once
        # the caller has dropped it (a list iterator would hold the whole chunk).
        self._buffer: deque[Any] = deque()
        self._finished = False
        self._stop_when_dropped = False  # iterated by ``async for``: see __aiter__
        self._turn = time.monotonic()  # when an ``async for`` last let the loop run

    def __iter__(self) -> ResultIterator[_T]:
        return self

    def __next__(self) -> _T:
        return self.next()

    def next(self, timeout: float | None = None) -> _T:
        """The next result; ``timeout`` as in ``multiprocessing``'s ``IMapIterator.next``.

        Raises:
            TimeoutError: no result within ``timeout`` seconds.
            StopIteration: all results were returned.
        """
        if self._buffer:
            value = self._buffer.popleft()
            if type(value) is _Raised:
                raise value.exc
            return value  # type: ignore[no-any-return]
        if self._finished:
            raise StopIteration
        deadline = self._deadline
        if timeout is not None:
            own = time.monotonic() + timeout
            deadline = own if deadline is None else min(deadline, own)
        try:
            outcome = self._job._next_chunk(self._ordered, deadline)
        except TimeoutError:
            # next(timeout) may be retried; Executor.map's overall deadline may not.
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self.close()
            raise
        except BaseException:  # Ctrl-C while waiting: the caller gives up on this iteration
            self.cancel()
            raise
        if outcome is None:
            self._finished = True
            raise StopIteration
        self._fill(*outcome)
        del outcome
        return self.next(timeout)

    def _fill(self, values: Any, exc: BaseException | None) -> None:
        """Buffer a chunk's values, read here on the consumer's thread if they came as an
        ``Unread``, and its error, if any, at its place (raised when iterated to)."""
        if type(values) is Unread:
            try:
                values = values.read()
            except BaseException as error:  # this chunk's values could not be unpickled
                values, exc = [], error
        self._buffer.extend(values)
        if exc is not None:
            self._buffer.append(_Raised(exc))

    # ------------------------------------------------------------ asyncio
    #
    # ``async for value in pool.imap(...)`` on the event loop's thread: the input is read
    # and chunks are cut there (bounded by the window, as for ``for``), and a wait for the
    # next result is an await on a loop future that the scheduler thread completes with
    # ``call_soon_threadsafe``. Results already there are handed out without waiting, but
    # the loop gets a turn every ``YIELD_EVERY`` seconds. Leaving the loop early (``break``,
    # an exception, a cancelled task) stops the work as ``cancel()`` does.

    def __aiter__(self) -> AsyncIterator[Any]:
        self._stop_when_dropped = True
        return self

    async def __anext__(self) -> Any:
        now = time.monotonic()
        if now - self._turn > YIELD_EVERY:
            self._turn = now
            await asyncio.sleep(0)
        if self._buffer:
            value = self._buffer.popleft()
            if type(value) is _Raised:
                raise value.exc
            return value
        if self._finished:
            raise StopAsyncIteration
        try:
            outcome = await self._wait_chunk()
        except BaseException:  # cancelled, or the consumer's loop is going away
            self.cancel()
            raise
        if outcome is None:
            self._finished = True
            raise StopAsyncIteration
        self._fill(*outcome)
        return await self.__anext__()

    async def _wait_chunk(self) -> _Outcome | None:
        job = self._job
        while True:
            polled = job.poll(self._ordered)
            if polled is not PENDING:
                return polled  # type: ignore[return-value]
            loop = asyncio.get_running_loop()
            woken = loop.create_future()
            wake = waker_of(loop, woken)
            with job._lock:
                polled = job._poll(self._ordered)
                if polled is not PENDING:
                    return polled  # type: ignore[return-value]
                job.waker = wake
            try:
                # A lazy job is topped up only here; wake now and then in case its window
                # was full when it was last fed (as the blocking wait does).
                await asyncio.wait_for(asyncio.shield(woken), 0.05 if job._lazy else None)
            except asyncio.TimeoutError:
                pass
            finally:
                job.waker = None
            self._turn = time.monotonic()

    async def aclose(self) -> None:
        """Stop now, as ``cancel()``: what has not run is dropped, running chunks stopped."""
        if not self._finished:
            self.cancel()

    def close(self) -> None:
        """Stop: no more input is read and chunks not yet running are dropped."""
        self._finished = True
        self._buffer.clear()
        self._raise_next = None
        self._job.cancel()

    def cancel(self) -> None:
        """Stop now: as ``close``, and chunks running in workers are stopped too (their
        workers are replaced)."""
        self._finished = True
        self._buffer.clear()
        self._raise_next = None
        self._job.cancel(stop_running=True)

    def __del__(self) -> None:
        try:
            if not self._finished:
                self._job.cancel(stop_running=self._stop_when_dropped)
        except Exception:
            pass

    def __length_hint__(self) -> int:
        return len(self._buffer)


def waker_of(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> Callable[[], None]:
    """What another thread calls to complete ``future`` on its loop."""

    def wake() -> None:
        try:
            loop.call_soon_threadsafe(_set_result, future)
        except RuntimeError:  # the loop was closed
            pass

    return wake


def _set_result(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Raised:
    """In a chunk's values: the error of the item at this place."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
