"""The worker once a batch brings coroutine calls: an event loop in its main thread.

``_worker`` hands over to ``CoroutineServer`` when the first batch with coroutine calls
arrives, and imports this module (and ``asyncio``) only then: a worker that runs plain
functions never loads them (issue 16).
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from . import _messages as m
from ._errors import TaskTimeoutError, describe_call
from ._fds import start_helper_thread
from ._outcome import was_cancelled
from ._payload import loads
from ._serialize import dumps

if TYPE_CHECKING:
    from ._worker import _Worker

__all__ = ["CoroutineServer"]


class CoroutineServer:
    """The worker once a batch brings coroutine calls: an event loop in the main thread.

    Who runs where::

        reader thread                       main thread: the event loop
        -------------                       -------------------------------------------
        chan.recv() ─► call_soon_threadsafe  CallBatch: coroutine calls become tasks at
          (blocks on the socket; ends at     once (the owner keeps their number under the
          EOF or SHUTDOWN)                   pool's ``concurrency``); plain calls run in
                                             order, on this thread, as before
                                           CancelCalls: cancel those tasks
                                           outcomes: sent once per loop pass

    Guarantees: every call received produces one outcome (a coroutine cancelled by the owner
    answers "cancelled", one past its ``task_timeout`` a ``TaskTimeoutError``) unless the
    worker retires or dies; once it must retire (task quota, memory limit), it starts
    nothing more, lets what runs finish, then sends ``Retiring``: the calls it did not
    start go back to the owner's queue.
    """

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        # Made in ``_main``: before Python 3.10 a queue binds to the loop current at its
        # creation, and that is ``self.loop`` only once it runs.
        self.inbox: asyncio.Queue[Any]
        self.running: dict[int, asyncio.Task[None]] = {}
        self.cancelled: set[int] = set()  # by the owner, while running
        self.outcomes: list[m.Outcome] = []
        self.flush_due = False
        # The pool's concurrency: the owner sends up to twice as many coroutine calls, so
        # the next is here when one ends; the rest wait for a turn.
        self.slots: asyncio.Semaphore | None = None

    def serve(self, first: m.CallBatch) -> int:
        asyncio.set_event_loop(self.loop)
        try:
            return self.loop.run_until_complete(self._main(first))
        finally:
            for task in self.running.values():
                task.cancel()
            self.loop.close()

    def _read(self) -> None:
        loop, put = self.loop, self.inbox.put_nowait
        while True:
            try:
                message: Any = self.worker.chan.recv()
            except EOFError:
                message = _EOF
            try:
                loop.call_soon_threadsafe(put, message)
            except RuntimeError:  # the loop is closed: the worker is exiting
                return
            if message is _EOF or message is m.SHUTDOWN:
                return

    async def _main(self, first: m.CallBatch) -> int:
        self.inbox = asyncio.Queue()
        reader = threading.Thread(target=self._read, name="manycore-reader", daemon=True)
        start_helper_thread(reader)
        self._start(first)
        worker = self.worker
        while True:
            if worker.retire_due() and not self.running:
                self._flush()
                worker.chan.send(worker.retiring())
                return 0
            message = await self.inbox.get()
            if message is m.SHUTDOWN:
                return 0
            if message is _EOF:
                raise EOFError("the owner closed the socket")
            if message is _WAKE:
                continue
            if type(message) is m.CancelCalls:
                for task_id in message.ids:
                    task = self.running.get(task_id)
                    if task is not None:
                        self.cancelled.add(task_id)
                        task.cancel()
            elif not worker.retire_due():  # retiring: the owner re-sends what we drop
                self._start(message)

    def _start(self, batch: m.CallBatch) -> None:
        worker = self.worker
        coroutines = batch.coroutines or {}
        if batch.concurrency is not None and self.slots is None:
            self.slots = asyncio.Semaphore(batch.concurrency)
        board, slot, runner = worker.board, worker.slot, worker.runner
        clock = time.perf_counter
        for task_id, kind, fn_blob, call_payload in batch.calls:
            if worker.retire_due():
                break
            if board.skipped(slot, task_id):
                self._add((task_id, m.FAILED, was_cancelled(), 0.0))
                continue
            if task_id not in coroutines:
                start = clock()
                board.mark_running(slot, task_id, start)
                status, payload = runner.run(kind, fn_blob, call_payload)
                board.mark_idle(slot)
                self._finished(task_id, status, payload, clock() - start)
                continue
            try:
                fn = runner.get_fn(fn_blob)
                args = loads(call_payload)
            except BaseException as exc:
                self._add((task_id, m.FAILED, runner.unbuildable(exc), 0.0))
                continue
            call = self._run(task_id, kind, fn, args, coroutines[task_id])
            task = self.loop.create_task(call)
            task.add_done_callback(functools.partial(self._ended, task_id))
            self.running[task_id] = task

    def _ended(self, task_id: int, task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never ran ``_run``'s handlers: answer here.
        if task.cancelled():
            self.running.pop(task_id, None)
            self.cancelled.discard(task_id)
            self._finished(task_id, m.FAILED, was_cancelled(), 0.0)

    async def _run(
        self, task_id: int, kind: int, fn: Callable[..., Any], args: Any, timeout: float | None
    ) -> None:
        start = time.perf_counter()
        timer = None
        expired: list[bool] = []
        slots = self.slots
        acquired = False
        try:
            if slots is not None:  # a call sent ahead waits here for its turn
                await slots.acquire()
                acquired = True
                start = time.perf_counter()
            if timeout is not None:
                timer = self.loop.call_later(timeout, _expire, asyncio.current_task(), expired)
            status, payload = await self.worker.runner.run_coroutine(kind, fn, args)
        except asyncio.CancelledError as exc:
            if task_id in self.cancelled:
                status, payload = m.FAILED, was_cancelled()
            elif expired:
                status, payload = m.FAILED, _timeout_error(fn, args, kind, timeout)
            else:  # the coroutine cancelled itself: its own error
                status, payload = m.RAISED, self.worker.runner.raised(exc, fn)
        finally:
            if acquired:
                slots.release()  # type: ignore[union-attr]
            if timer is not None:
                timer.cancel()
            self.running.pop(task_id, None)
            self.cancelled.discard(task_id)
        self._finished(task_id, status, payload, time.perf_counter() - start)

    def _finished(self, task_id: int, status: int, payload: bytes, elapsed: float) -> None:
        worker = self.worker
        worker.tasks_done += 1
        worker.check_memory()
        self._add((task_id, status, payload, elapsed))
        if worker.retire_due() and not self.running:
            self.inbox.put_nowait(_WAKE)  # the main coroutine retires now

    def _add(self, outcome: m.Outcome) -> None:
        self.outcomes.append(outcome)
        if not self.flush_due:
            self.flush_due = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_due = False
        if self.outcomes:
            outcomes, self.outcomes = self.outcomes, []
            self.worker.chan.send(m.ResultBatch(outcomes))


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_EOF = _Marker("EOF")  # the reader thread saw the owner close the socket
_WAKE = _Marker("WAKE")  # look at the retiring state again


def _expire(task: asyncio.Task[Any] | None, expired: list[bool]) -> None:
    expired.append(True)
    if task is not None:
        task.cancel()


def _timeout_error(fn: Callable[..., Any], args: Any, kind: int, timeout: float | None) -> bytes:
    shown = args if kind & m.KIND == m.CALL else ("...",)
    described = describe_call(fn, shown)
    error = TaskTimeoutError(
        f"{described} ran longer than its task_timeout of {timeout:g} s and was cancelled in "
        "its worker (a coroutine is cancelled, not its worker stopped). Other tasks are "
        "unaffected.",
        task=described,
        timeout=timeout,
        pid=os.getpid(),
    )
    return dumps(error)
