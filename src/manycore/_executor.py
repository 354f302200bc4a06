"""``manycore.ProcessPoolExecutor``: the ``concurrent.futures`` API on manycore's scheduler.

Futures are real ``concurrent.futures.Future`` objects, so ``wait``, ``as_completed``,
``asyncio.wrap_future`` and ``loop.run_in_executor`` work with them. A future is marked
running when its task is sent to a worker; until then ``cancel()`` succeeds and the task
never runs.

Differences from the stdlib executor that users can see (all of them fixes): a dead
worker fails only the task it was running (``WorkerLostError``, a ``BrokenProcessPool``)
and is replaced, instead of breaking the whole executor; ``map`` reads its input lazily
with bounded look-ahead and chunks adaptively when ``chunksize`` is not given; leaving a
``with`` block because of ``KeyboardInterrupt`` stops the workers at once.

At interpreter exit, as with the stdlib, every executor finishes the work submitted to it
(also one that was dropped without ``shutdown()``): ``_finish_at_exit`` runs from
``threading``'s exit hooks, before ``atexit`` hooks and before the engine's own exit hook
terminates what is left (``Pool``s, which the stdlib terminates at exit too). A submit
after that raises ``RuntimeError``, as the stdlib's does.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sized
from concurrent.futures import _base
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from . import _messages as m
from ._backend import call_task, function_cache, make_scheduler
from ._chunking import ChunkSizer
from ._engine import Engine, Task, call_sink
from ._errors import PoolClosedError
from ._fds import start_helper_thread
from ._jobs import MapJob, ResultIterator
from ._launch import Child
from ._options import DEFAULT, PoolConfig, TaskOptions, check_chunksize, merge_options
from ._outcome import Unread
from ._payload import dumps_args
from ._stats import PoolStatistics, WorkerStack

__all__ = ["ProcessPoolExecutor"]

# Typed as the stdlib's stubs type the executor: ``submit`` checks the arguments against the
# function's parameters (``_P``), and the future carries what it returns (``_T``).
_T = TypeVar("_T")
if TYPE_CHECKING:  # Python 3.9 has no typing.ParamSpec; only the type checker needs it
    from typing_extensions import ParamSpec

    _P = ParamSpec("_P")


# The schedulers of executors that have not finished, whose work is finished at exit. An
# executor dropped without shutdown() closes its scheduler, whose thread keeps it alive.
_unfinished: weakref.WeakSet[Engine] = weakref.WeakSet()
_exiting = False  # the interpreter is shutting down: no new work
# A forked child has copies of its parent's executors, not their threads or workers.
os.register_at_fork(after_in_child=_unfinished.clear)


def _finish_at_exit() -> None:
    """Let every executor finish its work, then refuse more (the stdlib's exit rule)."""
    global _exiting
    _exiting = True
    engines = list(_unfinished)
    for engine in engines:
        engine.close()
    for engine in engines:
        engine.join()


try:
    # Runs before atexit hooks (and so before the engine's, which terminates pools): the
    # hook the stdlib executor uses. A private function, present on every supported Python.
    threading._register_atexit(_finish_at_exit)  # type: ignore[attr-defined]
except RuntimeError:  # imported while the interpreter is already shutting down
    _exiting = True


# Guards the lazy creation of a future's condition, and its queue of late changes (see
# _Future).
_condition_lock = threading.Lock()

# Seconds the pool's thread waits for a future's lock before it hands its change to a thread
# of its own. A caller's thread holds that lock for microseconds; a KeyboardInterrupt can
# leave it held for good: CPython checks for signals between a lock's acquire and the start
# of a ``with`` block when ``__enter__`` is Python code (``Condition.__enter__``, which the
# stdlib future's methods use), at the end of any ``with`` block on 3.9, and in
# ``concurrent.futures.wait``'s loop that takes every future's lock. The pool's thread must
# not wait for such a lock: ``terminate_workers()`` on Ctrl-C would never return.
_LOCK_PATIENCE = 0.1


class _Future(concurrent.futures.Future):  # type: ignore[type-arg]
    """A stdlib future that the scheduler can complete, with its condition made lazily.

    The stdlib future builds a ``threading.Condition`` in ``__init__``: about eight objects
    the garbage collector must track, which for per-item ``submit`` cost more than the rest
    of the submit path. Most futures are finished before anyone waits on them, so this one
    creates its condition only when something needs it (a wait on an unfinished future,
    ``cancel``, ``add_done_callback``, ``concurrent.futures.wait``). Until then, state
    changes happen under one module-wide lock, which the creation takes too: either the
    scheduler changes the state first and the creator sees it, or the condition exists and
    the scheduler goes through the stdlib's methods, which notify it.

    Ctrl-C: ``result()`` and ``exception()`` take the condition's lock with a ``with`` on
    the C lock itself, whose acquire a KeyboardInterrupt cannot split from the block (on
    3.10 and later), so an interrupted wait never leaves it held. Where it is left held all
    the same (3.9, ``concurrent.futures.wait``), the scheduler's changes wait on a thread
    of their own (``_LOCK_PATIENCE``), in order, and the pool goes on.
    """

    sizer: Optional[ChunkSizer] = None  # single tasks are sized by the pool's own sizer
    reads_later = True  # the value may come as an Unread, which result() unpickles

    def __init__(self, scheduler: Engine | None = None) -> None:
        # The stdlib's __init__, minus the eager condition.
        self._scheduler = scheduler  # to stop the task if it is cancelled while running
        self._lazy_condition: threading.Condition | None = None
        self._lock: Any = None  # the condition's lock, a C RLock
        self._late: deque[Callable[[], Any]] | None = None  # changes that wait for it
        self._state = _base.PENDING
        self._result = None
        self._exception: BaseException | None = None
        self._lazy_waiters: list[Any] | None = None
        self._lazy_callbacks: list[Any] | None = None

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        condition = self._lazy_condition
        if condition is None:
            with _condition_lock:
                condition = self._lazy_condition
                if condition is None:
                    self._lock = threading.RLock()
                    condition = self._lazy_condition = threading.Condition(self._lock)
        return condition

    # The stdlib's lists of waiters (``concurrent.futures.wait``, ``as_completed``) and of
    # done-callbacks, made when first used, as the condition is: two objects fewer for the
    # garbage collector per future that nobody waits on. Every use is under the condition.
    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        waiters = self._lazy_waiters
        if waiters is None:
            waiters = self._lazy_waiters = []
        return waiters

    @property
    def _done_callbacks(self) -> list[Any]:
        callbacks = self._lazy_callbacks
        if callbacks is None:
            callbacks = self._lazy_callbacks = []
        return callbacks

    def _condition_and_lock(self) -> tuple[threading.Condition, Any]:
        condition = self._condition
        return condition, self._lock

    def done(self) -> bool:
        return self._state in _DONE

    def result(self, timeout: float | None = None) -> Any:
        if self._state != _base.FINISHED:
            self._wait_finished(timeout)
        if self._exception is not None:
            raise self._exception
        value = self._result
        return value.read() if type(value) is Unread else value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state != _base.FINISHED:
            self._wait_finished(timeout)
        if self._exception is not None:
            return self._exception
        value = self._result
        if type(value) is Unread:
            try:
                value.read()
            except BaseException as exc:  # its value could not be unpickled here
                return exc
        return None

    def _wait_finished(self, timeout: float | None) -> None:
        """Wait until the future is done or ``timeout`` seconds pass (see the class
        docstring for why the ``with`` is on the lock, not on the condition); raise
        ``CancelledError`` or ``TimeoutError`` unless it finished."""
        condition, lock = self._condition_and_lock()
        with lock:
            if self._state not in _DONE:
                condition.wait(timeout)
        if self._state in (_base.CANCELLED, _base.CANCELLED_AND_NOTIFIED):
            raise concurrent.futures.CancelledError()
        if self._state != _base.FINISHED:
            raise concurrent.futures.TimeoutError()

    # Called by the scheduler thread.
    def _quietly(self, state: str, field: str = "", value: Any = None) -> bool:
        """Move to ``state`` (setting ``field`` first) without a condition, if none exists
        yet: then nobody can be waiting, cancelling or holding callbacks. True if done."""
        if self._lazy_condition is None:
            with _condition_lock:
                if self._lazy_condition is None:
                    if field:
                        setattr(self, field, value)
                    self._state = state
                    return True
        return False

    def _locked(self, change: Callable[[], Any]) -> bool:
        """Run ``change`` with the condition's lock held; True if it ran here, False if it
        waits on a thread of its own for a lock that stays held (``_LOCK_PATIENCE``)."""
        _, lock = self._condition_and_lock()
        if self._late is not None:  # (read without the lock: only its thread clears it)
            with _condition_lock:
                queued = self._late
                if queued is not None:  # behind the changes that wait already, in order
                    queued.append(change)
                    return False
        if lock.acquire(timeout=_LOCK_PATIENCE):
            try:
                change()
            finally:
                lock.release()
            return True
        with _condition_lock:
            late = self._late
            if late is not None:
                late.append(change)
                return False
            self._late = deque([change])
        thread = threading.Thread(target=self._change_late, name="manycore-future", daemon=True)
        start_helper_thread(thread)  # a daemon: the lock may never come back
        return False

    def _change_late(self) -> None:
        with self._lock:  # as long as the thread that holds it keeps it
            while True:
                with _condition_lock:
                    late = self._late
                    if not late:
                        self._late = None
                        return
                    change = late.popleft()
                call_sink(change)

    def _claim(self) -> bool:
        if self._quietly(_base.RUNNING):
            return True
        claimed: list[bool] = []
        if self._locked(lambda: claimed.append(self.set_running_or_notify_cancel())):
            return claimed[0]
        # The change waits for the lock, which a cancel() needs too: nothing can cancel
        # the future before it runs, and one cancelled already is not sent.
        return self._state == _base.PENDING

    def _resolve(self, task: Task, value: Any) -> None:
        if not self._quietly(_base.FINISHED, "_result", value):
            self._locked(lambda: self._settle(self.set_result, value))

    def _reject(self, task: Task, exc: BaseException, partial: Any) -> None:
        if not self._quietly(_base.FINISHED, "_exception", exc):
            self._locked(lambda: self._settle(self.set_exception, exc))

    def _settle(self, setter: Callable[[Any], None], outcome: Any) -> None:
        if self._state not in _DONE:  # else cancelled while it ran
            setter(outcome)

    def _cancel(self) -> None:
        # Pending ones only, as the stdlib does.
        self._locked(lambda: concurrent.futures.Future.cancel(self))

    def cancel(self) -> bool:
        """Cancel the call. Unlike the stdlib's, this also works once the call is running:
        its worker is stopped and replaced. False only if the call has finished."""
        _, lock = self._condition_and_lock()
        with lock:
            running = self._state == _base.RUNNING and self._scheduler is not None
            if running:
                self._state = _base.PENDING  # so that the stdlib's cancel() takes it
        cancelled = super().cancel()
        if running and cancelled:
            self.set_running_or_notify_cancel()  # wake wait() / as_completed()
            if self._scheduler is not None:
                self._scheduler.stop_running(self)
        return cancelled


_DONE = frozenset({_base.CANCELLED, _base.CANCELLED_AND_NOTIFIED, _base.FINISHED})


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is a Ctrl-C, or was raised while one propagated: an interrupt that
    lands inside ``threading.Condition.wait`` after it let go of its lock becomes the
    context of the ``RuntimeError`` the enclosing ``with`` then raises on leaving."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__context__
    return False


class ProcessPoolExecutor(concurrent.futures.Executor):
    """An executor that runs calls in worker processes.

    Args:
        max_workers: number of workers; ``None`` means ``manycore.cpu_count()``.
        mp_context: start method, as ``Pool``'s ``context``: ``"fork"``, ``"spawn"``,
            ``"forkserver"``, a ``multiprocessing`` context, or ``None`` (manycore's default).
        initializer: called as ``initializer(*initargs)`` in each worker at start; if it
            raises, every future fails with ``InitializerError``.
        initargs: arguments for ``initializer``.
        max_tasks_per_child: replace a worker after this many tasks.
        backend: ``"local"`` or ``"dask"``, as for ``Pool``.
        address: with ``backend="dask"``, where the cluster is, as for ``Pool``.
        task_timeout, retries, retry_on, max_memory_per_child: as for ``Pool``. ``map``
            takes the first three per call; for ``submit``, whose keyword arguments belong
            to the function, use ``executor.options(task_timeout=...).submit(...)``.

    Raises:
        ValueError: ``max_workers`` < 1, a bad ``max_tasks_per_child``, an unknown start
            method, or an unknown backend.
        ImportError: ``backend="dask"`` without Dask installed.
        TypeError: ``initializer`` is not callable.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        *,
        max_tasks_per_child: int | None = None,
        backend: str = "local",
        address: Any = None,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_on: Any = None,
        max_memory_per_child: int | str | None = None,
    ) -> None:
        config = PoolConfig.for_executor(
            max_workers=max_workers,
            mp_context=mp_context,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_child=max_tasks_per_child,
            backend=backend,
            address=address,
            task_timeout=task_timeout,
            retries=retries,
            retry_on=retry_on,
            max_memory_per_child=max_memory_per_child,
        )
        self._options = config.options  # read by every submit: one attribute, not two
        self._scheduler = make_scheduler(config, worker_title="Process", on_demand=True)
        _unfinished.add(self._scheduler)
        self._max_workers = self._scheduler.workers
        self._shutdown = False
        self._finalizer = weakref.finalize(self, self._scheduler.close)

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> concurrent.futures.Future[_T]:
        """Schedule ``fn(*args, **kwargs)``; return its ``Future``.

        Raises:
            ArgumentPicklingError: an argument cannot be pickled (nothing was sent).
            PoolClosedError: the executor was shut down (also a ``RuntimeError``).
            PoolBrokenError: the executor cannot start workers (initializer failure).
        """
        return self._submit(self._options, fn, args, kwargs)

    def _submit(
        self, options: TaskOptions | None, fn: Callable[..., Any], args: Any, kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        self._check_open()
        fn_blob = function_cache.dumps(fn)
        kw = kwargs or None
        payload = dumps_args(fn, args, kw)
        future = _Future(self._scheduler)
        task = call_task(
            kind=m.CALL_KW if kw else m.CALL,
            fn=fn,
            fn_blob=fn_blob,
            payload=payload,
            sink=future,
            options=options,
        )
        self._scheduler.submit(task)
        return future

    def options(
        self,
        *,
        task_timeout: Any = DEFAULT,
        retries: Any = DEFAULT,
        retry_on: Any = DEFAULT,
    ) -> ExecutorOptions:
        """This executor with other ``task_timeout``/``retries``/``retry_on`` for the calls
        made through the object returned: ``ex.options(task_timeout=5).submit(fn, x)``."""
        options = merge_options(self._options, task_timeout, retries, retry_on)
        return ExecutorOptions(self, self._scheduler.check_options(options))

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot of the executor's counters; see ``Pool.statistics``."""
        return self._scheduler.statistics()

    def stacks(self, timeout: float = 2.0) -> tuple[WorkerStack, ...]:
        """What each busy worker runs, with its stacks; see ``Pool.stacks``."""
        return self._scheduler.stacks(timeout)

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        task_timeout: Any = DEFAULT,
        retries: Any = DEFAULT,
        retry_on: Any = DEFAULT,
        progress: Any = None,
        buffersize: int | None = None,
    ) -> Iterator[_T]:
        """Results of ``fn`` over the zipped ``iterables``, in order.

        Input is read lazily with bounded look-ahead; ``chunksize=None`` sizes chunks
        from measured run times. ``timeout`` bounds the whole iteration, from this call
        (the stdlib's meaning); ``task_timeout`` bounds each item's run in a worker.
        ``progress``: True for a bar, a tqdm bar, or a callable ``(done, total)``.
        ``buffersize`` (Python 3.14's): at most this many chunks are sent ahead of the
        result the caller is waiting for (a chunk is one item with ``chunksize=1``).

        Raises:
            TypeError: ``buffersize`` is not an integer.
            ValueError: ``buffersize`` or ``chunksize`` is below 1.
            TimeoutError: (when iterating) a result is not ready by the deadline.
            Exception: (when iterating) what ``fn`` raised for that item.
        """
        options = merge_options(self._options, task_timeout, retries, retry_on)
        return self._map(
            fn,
            iterables,
            options=self._scheduler.check_options(options),
            timeout=timeout,
            chunksize=chunksize,
            progress=progress,
            buffersize=buffersize,
        )

    def _map(
        self,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        *,
        options: TaskOptions | None,
        timeout: float | None,
        chunksize: int | None,
        progress: Any,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        self._check_open()
        check_chunksize(chunksize)
        _check_buffersize(buffersize)
        deadline = None if timeout is None else time.monotonic() + timeout
        fn_blob = function_cache.dumps(fn)
        if len(iterables) == 1:
            source: Iterable[Any] = iterables[0]
            kind = m.MAP
        else:
            source = (
                _Zipped(iterables)
                if all(isinstance(i, Sized) for i in iterables)
                else zip(*iterables)
            )
            kind = m.STARMAP
        job = MapJob(
            scheduler=self._scheduler,
            fn=fn,
            fn_blob=fn_blob,
            iterable=source,
            kind=kind,
            chunksize=chunksize,
            lazy=True,
            options=options,
            progress=progress,
            buffersize=buffersize,
        )
        iterator: ResultIterator[Any] = ResultIterator(job, ordered=True, deadline=deadline)
        job._feed()
        self._scheduler.submit(job)
        return _owned(iterator, self)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more work; finish (or with ``cancel_futures``, cancel) what is queued."""
        self._shutdown = True
        if cancel_futures:
            self._scheduler.cancel_queued()
        self._scheduler.close()
        if wait:
            self._scheduler.join()

    def terminate_workers(self) -> None:
        """Stop every worker now with SIGTERM (SIGKILL if one is still there half a second
        later), as Python 3.14's executor does: queued futures are cancelled, running ones
        fail with ``PoolTerminatedError`` (a ``BrokenProcessPool``), and the executor is shut
        down. Returns once the workers are gone."""
        self._stop_workers(kill=False)

    def kill_workers(self) -> None:
        """As ``terminate_workers``, with SIGKILL at once: a worker cannot delay it."""
        self._stop_workers(kill=True)

    def _stop_workers(self, kill: bool) -> None:
        self._shutdown = True
        self._scheduler.cancel_queued()
        self._scheduler.terminate(kill=kill)
        self._scheduler.join()

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        """Leaving the block: ``shutdown(wait=True)``, as the stdlib does; but on Ctrl-C
        (``KeyboardInterrupt``) stop the workers at once, as leaving ``with Pool()`` does,
        rather than wait for what runs. Other exceptions, ``SystemExit`` included, wait:
        an exit finishes submitted work anyway (see the module docstring), unless they
        were raised while a ``KeyboardInterrupt`` propagated (``_interrupted``)."""
        if exc_val is not None and _interrupted(exc_val):
            self.terminate_workers()
        else:
            self.shutdown(wait=True)

    @property
    def _processes(self) -> Mapping[int, WorkerProcess]:
        """The workers running now, ``{pid: process}``, as the stdlib executor's attribute of
        that name (code reads it to count the workers, or to stop one). A snapshot taken
        when read, and read-only: a worker that dies is replaced by the executor itself.
        Empty once the executor has shut down, and with ``backend="dask"``."""
        return MappingProxyType(
            {child.pid: WorkerProcess(child) for child in self._scheduler.processes()}
        )

    def _check_open(self) -> None:
        if _exiting:
            raise PoolClosedError("cannot schedule new futures after interpreter shutdown")
        if self._shutdown:
            raise PoolClosedError("cannot schedule new futures after shutdown")
        self._scheduler.check_open()

    def __repr__(self) -> str:
        return (
            f"<manycore.ProcessPoolExecutor max_workers={self._max_workers} "
            f"start_method={self._scheduler.start_method}>"
        )


class WorkerProcess:
    """One of an executor's worker processes, as ``executor._processes`` lists them: the
    part of ``multiprocessing.Process`` that code outside the executor uses on a worker.

    The executor owns the process: it reaps it and starts its replacement. Stopping it from
    here (``terminate``, ``kill``) fails only the task it was running, with
    ``WorkerLostError``, as any other death of a worker does.
    """

    def __init__(self, child: Child) -> None:
        self._child = child
        self.pid = child.pid

    @property
    def exitcode(self) -> int | None:
        """None while it runs; ``-N`` if signal N ended it; else its exit status."""
        return self._child.returncode if self._child.poll() is not None else None

    def is_alive(self) -> bool:
        return self._child.poll() is None and _exists(self.pid)

    def join(self, timeout: float | None = None) -> None:
        """Wait until it has exited (at most ``timeout`` seconds, if given)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while self.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(delay)
            delay = min(2 * delay, 0.02)

    def terminate(self) -> None:
        """Send it SIGTERM (nothing if it has exited)."""
        self._child.kill(signal.SIGTERM)

    def kill(self) -> None:
        """Send it SIGKILL (nothing if it has exited)."""
        self._child.kill(signal.SIGKILL)

    def __repr__(self) -> str:
        state = "alive" if self.is_alive() else f"exitcode={self.exitcode}"
        return f"<manycore executor worker pid={self.pid} {state}>"


def _exists(pid: int) -> bool:
    """Whether ``pid`` names a process: the fork server, not we, reaps the workers it
    forked, and one whose status never reached us is gone once no process has its pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the pid was reused by another user's process
        return False
    return True


class ExecutorOptions:
    """An executor seen with other per-task options; made by ``executor.options(...)``."""

    def __init__(self, executor: ProcessPoolExecutor, options: TaskOptions | None) -> None:
        self._executor = executor
        self._options = options

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> concurrent.futures.Future[_T]:
        """``executor.submit`` with these options."""
        return self._executor._submit(self._options, fn, args, kwargs)

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: Any = None,
        buffersize: int | None = None,
    ) -> Iterator[_T]:
        """``executor.map`` with these options."""
        return self._executor._map(
            fn,
            iterables,
            options=self._options,
            timeout=timeout,
            chunksize=chunksize,
            progress=progress,
            buffersize=buffersize,
        )


def _check_buffersize(buffersize: Any) -> None:
    if buffersize is None:
        return
    if not isinstance(buffersize, int) or isinstance(buffersize, bool):
        raise TypeError(
            f"buffersize must be an integer or None, not {type(buffersize).__name__}; it is "
            "how many chunks may be sent ahead of the result being waited for"
        )
    if buffersize < 1:
        raise ValueError(f"buffersize must be None or at least 1, not {buffersize}")


def _owned(iterator: ResultIterator[Any], owner: object) -> Iterator[Any]:
    """Iterate while holding ``owner``, so the executor lives as long as its map."""
    try:
        yield from iterator
    finally:
        iterator.close()
        del owner


class _Zipped:
    """zip() of inputs that all have a length, with that length (a progress total)."""

    def __init__(self, iterables: Any) -> None:
        self._iterables = iterables

    def __len__(self) -> int:
        return min(len(i) for i in self._iterables)

    def __iter__(self) -> Iterator[Any]:
        return zip(*self._iterables)
