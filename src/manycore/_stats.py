"""What ``Pool.statistics()`` and ``Pool.stacks()`` return: frozen records, made on demand.

The scheduler keeps plain counters as it works (a few additions per batch of outcomes);
these records are built from them only when asked, on the scheduler thread, so they are
consistent with one another: every task counted is in exactly one of queued, running,
done, failed or cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["PoolStatistics", "WorkerStack", "WorkerStatistics"]


@dataclass(frozen=True)
class WorkerStatistics:
    """One worker seat, over every process that has sat in it.

    Attributes:
        index: the seat's number, 0 to ``processes - 1``.
        pid: the process in the seat now (None while it is being replaced).
        tasks_done: tasks finished in this seat (a map chunk counts as one task).
        items_done: items finished (a map chunk counts as its items).
        busy_time: seconds spent running tasks.
        idle_time: seconds alive and not running tasks.
        memory: resident memory of the current process in bytes, last sampled (0: unknown).
        restarts: times the seat's process was replaced.
        restart_reasons: why, most recent last (at most the last 20).
    """

    index: int
    pid: Optional[int]
    tasks_done: int
    items_done: int
    busy_time: float
    idle_time: float
    memory: int
    restarts: int
    restart_reasons: tuple[str, ...]


@dataclass(frozen=True)
class PoolStatistics:
    """The pool as a whole, at one moment.

    Attributes:
        workers: one record per seat.
        tasks_queued: tasks not yet sent to a worker (map chunks not yet cut are not
            counted; ``jobs_pending`` counts the maps still cutting).
        tasks_running: tasks sent to a worker and not yet settled.
        tasks_done: tasks that returned a value.
        tasks_failed: tasks that ended in an error (after any retries).
        tasks_retried: re-runs made by ``retries``.
        tasks_timed_out: tasks stopped by ``task_timeout`` (retried or not).
        tasks_cancelled: running tasks stopped by ``cancel()``.
        jobs_pending: map calls with chunks still to cut.
        ipc_time: seconds the scheduler spent pickling, sending, receiving and unpickling.
        uptime: seconds since the pool started.
    """

    workers: tuple[WorkerStatistics, ...]
    tasks_queued: int
    tasks_running: int
    tasks_done: int
    tasks_failed: int
    tasks_retried: int
    tasks_timed_out: int
    tasks_cancelled: int
    jobs_pending: int
    ipc_time: float
    uptime: float


@dataclass(frozen=True)
class WorkerStack:
    """A busy worker's current task and every thread's stack, from ``Pool.stacks()``.

    Attributes:
        index: the worker's seat.
        pid: its process id.
        task: the task it is running (function and a preview of its arguments).
        running_for: seconds since that task started.
        stack: faulthandler's dump of every thread, most recent call first ("" if the
            worker did not answer in time).
    """

    index: int
    pid: int
    task: str
    running_for: float
    stack: str

    def __str__(self) -> str:
        head = (
            f"worker {self.index} (pid {self.pid}) has been running {self.task} "
            f"for {self.running_for:.1f} s"
        )
        return f"{head}:\n{self.stack}" if self.stack else f"{head} (no stack dump came back)"
