"""Map jobs: one ``map``/``imap``/``starmap``/``Executor.map`` call, cut into chunks.

Who runs where::

    caller / consuming thread              scheduler thread
    -------------------------              ----------------
    MapJob(...)   eager: list(input)       _take(): eager -> cut the next chunk now,
                  lazy: _feed() a window            at the size the sizer says
    iterate: wait for chunk k, _feed()              lazy  -> pop a chunk _feed() cut
             more while waiting            _resolve/_reject(chunk k) -> results[k]
    cancel() on Ctrl-C or close()          _abort(exc) when the pool ends

*Eager* jobs (``map``, ``map_async``, ``starmap``) read their whole input up front, as the
stdlib does, and the scheduler cuts chunks when a worker has room, so each chunk is sized
with everything measured so far. *Lazy* jobs (``imap``, ``imap_unordered``,
``Executor.map``) read the user's iterator on the consuming thread only, never on the
scheduler thread (a slow generator must not stall other jobs), and keep at most ``window``
chunks cut but not yet consumed: memory stays bounded on endless input. Once the pool is
closing nobody may be left to consume, so the scheduler then reads lazy input itself.

Guarantees: every chunk cut is settled exactly once (value, error, or abort); an error in
the input iterator or an unpicklable item becomes the error of the chunk at its position,
and no later chunk is cut.

How big a chunk is, and what ``chunksize`` means with a ``task_timeout`` (one-item chunks,
``chunksize`` of them per batch), is the engine's chunking policy (``_engine``): a job asks
the engine for its sizer (``job_sizer``) and for each chunk's size (``chunk_items``). A
job's progress (``_progress``) advances as chunks settle.
"""

from __future__ import annotations

import itertools
import operator
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sized
from typing import Any, Callable, Optional

from ._engine import IN_FLIGHT_BATCHES, Engine, Task, chunk_items
from ._errors import TimeoutError
from ._options import TaskOptions
from ._payload import dumps_payload
from ._progress import Progress, make_progress
from ._serialize import argument_error

__all__ = ["MapJob"]

_Outcome = tuple[list[Any], Optional[BaseException]]


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
    ) -> None:
        self.sizer = scheduler.job_sizer(fn_blob, chunksize)
        self._scheduler = scheduler
        self._fn = fn
        self._fn_blob = fn_blob
        self._kind = kind
        self._lazy = lazy
        self._on_done = on_done
        # Reentrant: a ResultIterator collected by the cyclic GC cancels its job from
        # whatever thread the collection runs on, possibly one that holds this lock.
        self._cond = threading.Condition(threading.RLock())
        self._input_lock = threading.Lock()  # the input iterator is read by one thread at a time
        self._options = options
        # One item per chunk, so that a timeout stops one item (the engine's chunking policy).
        self.timed = options is not None and options.timeout is not None
        total: int | None
        if lazy:
            total = len(iterable) if isinstance(iterable, Sized) else None
            self._input: Iterator[Any] = iter(iterable)
            self._remaining: int | None = None
        else:
            items = iterable if isinstance(iterable, list) else list(iterable)
            self._input = iter(items)
            self._remaining = total = len(items)
        self._window = IN_FLIGHT_BATCHES * scheduler.workers + 2
        if self.timed or (chunksize is not None and chunksize < TIMED_WINDOW):
            # Small chunks travel many to a batch: keep enough of them cut to fill batches.
            self._window *= TIMED_WINDOW
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "")
        self.progress: Progress | None = make_progress(progress, total, str(name))
        self._ready: deque[Task] = deque()  # lazy: cut, waiting for the scheduler
        self._cut = 0  # chunks cut so far
        self._items_cut = 0  # input items read so far
        self._exhausted = False  # no more chunks will be cut
        self._results: dict[int, _Outcome] = {}
        self._settled = 0
        self._consumed = 0  # lazy: chunks the consumer has taken
        self._completed: deque[int] = deque()  # settled chunk indexes, in settling order
        self.error: BaseException | None = None  # the first error, in chunk order
        self._error_index: int | None = None
        self._cancelled = False
        self._aborted: BaseException | None = None  # the pool ended under this job
        self._done = False

    # ------------------------------------------------------------ cutting chunks

    def _cut_chunk(self) -> Task | None:
        """Read the next chunk from the input and pickle it; None when input is done."""
        with self._input_lock:
            if self._exhausted or self._cancelled:
                return None
            size = chunk_items(self.sizer, self._remaining, self.timed)
            index = self._cut
            try:
                items = list(itertools.islice(self._input, size))
            except BaseException as exc:  # the user's iterator raised: the error of this chunk
                self._fail_input(index, exc)
                return None
            if not items:
                with self._cond:
                    self._exhausted = True
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
            self._cut += 1
            if self._remaining == 0:
                # Known input, last chunk cut: completion needs no extra pass.
                self._exhausted = True
            return Task(
                self._kind, self._fn, self._fn_blob, payload, self, index, len(items), self._options
            )

    def _fail_input(self, index: int, exc: BaseException) -> None:
        with self._cond:
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
        with self._cond:
            if self._done and not self._lazy:
                return
            self._exhausted = True
            self._aborted = exc
            if self.error is None:
                self.error = exc
            self._ready.clear()
            self._done = True
            self._cond.notify_all()
        self._finish_progress()
        if self._on_done is not None:
            self._on_done(self)

    def _cancel(self) -> None:
        self.cancel()

    # ------------------------------------------------------------ Sink, for the scheduler

    def _claim(self) -> bool:
        return not self._cancelled

    def _resolve(self, task: Task, values: Any) -> None:
        if self.progress is not None:  # before _store, which may finish the bar
            self.progress.advance(task.items)
        with self._cond:
            self._store(task.index, values, None)

    def _reject(self, task: Task, exc: BaseException, partial: list[Any] | None) -> None:
        if self.progress is not None:
            self.progress.advance(task.items)
        with self._cond:
            self._store(task.index, partial or [], exc)

    def _store(self, index: int, values: list[Any], exc: BaseException | None) -> None:
        # Called with self._cond held.
        if self._done or index in self._results:
            return
        self._results[index] = (values, exc)
        self._completed.append(index)
        self._settled += 1
        if exc is not None and (self._error_index is None or index < self._error_index):
            self.error, self._error_index = exc, index
        self._cond.notify_all()
        self._check_done()

    def _check_done(self) -> None:
        finished = self._exhausted and self._settled >= self._cut
        failed_fast = self.error is not None and not self._lazy
        if not self._done and (finished or failed_fast):
            self._done = True
            if failed_fast:
                self._cancelled = True  # an eager map fails as a whole: stop cutting
            self._cond.notify_all()
            self._finish_progress()
            if self._on_done is not None:
                # Run outside the lock would be nicer; callbacks only read our state.
                self._on_done(self)

    def _finish_progress(self) -> None:
        if self.progress is not None:
            self.progress.finish()

    # ------------------------------------------------------------ for the caller

    def cancel(self, stop_running: bool = False) -> None:
        """Stop cutting chunks. Chunks already in workers finish and are discarded, or with
        ``stop_running`` are stopped (their workers are replaced)."""
        with self._cond:
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
            out.extend(self._results[index][0])
        return out

    def iterate(self, ordered: bool) -> ResultIterator:
        return ResultIterator(self, ordered)

    def _next_chunk(self, ordered: bool, deadline: float | None) -> _Outcome | None:
        """The next chunk for the consumer, feeding input while it waits; None at the end."""
        while True:
            if self._lazy:
                self._feed()
            with self._cond:
                outcome = self._pop_settled(ordered)
                if outcome is not None:
                    return outcome
                if self._aborted is not None:
                    exc, self._aborted = self._aborted, _REPORTED
                    return None if exc is _REPORTED else ([], exc)
                if self._exhausted and self._consumed >= self._cut:
                    return None
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
        # Called with self._cond held.
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

_REPORTED: BaseException = Exception("abort already reported")


class ResultIterator:
    """What ``imap``/``imap_unordered``/``Executor.map`` return."""

    def __init__(self, job: MapJob, ordered: bool, deadline: float | None = None) -> None:
        self._job = job
        self._ordered = ordered
        self._deadline = deadline
        self._buffer: Iterator[Any] = iter(())
        self._finished = False

    def __iter__(self) -> ResultIterator:
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: float | None = None) -> Any:
        """The next result; ``timeout`` as in ``multiprocessing``'s ``IMapIterator.next``.

        Raises:
            TimeoutError: no result within ``timeout`` seconds.
            StopIteration: all results were returned.
        """
        for value in self._buffer:
            return value
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
        values, exc = outcome
        if exc is not None:
            # Yield what the chunk produced before it failed, then raise at its position.
            self._buffer = _then_raise(values, exc)
        else:
            self._buffer = iter(values)
        return self.next(timeout)

    def close(self) -> None:
        """Stop: no more input is read and chunks not yet running are dropped."""
        self._finished = True
        self._buffer = iter(())
        self._job.cancel()

    def cancel(self) -> None:
        """Stop now: as ``close``, and chunks running in workers are stopped too (their
        workers are replaced)."""
        self._finished = True
        self._buffer = iter(())
        self._job.cancel(stop_running=True)

    def __del__(self) -> None:
        try:
            if not self._finished:
                self._job.cancel()
        except Exception:
            pass

    def __length_hint__(self) -> int:
        return operator.length_hint(self._buffer)


def _then_raise(values: list[Any], exc: BaseException) -> Iterator[Any]:
    yield from values
    raise exc
