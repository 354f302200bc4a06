"""``manycore.dummy``: the ``multiprocessing`` API on threads, for code that imports it.

The stdlib's ``multiprocessing.dummy`` is re-exported: its objects are threads,
thread locks and ``queue.Queue`` in one process, so nothing in them depends on how
processes are started, and they work beside manycore's processes unchanged. ``Pool`` makes
the stdlib's ``ThreadPool`` whose timed-out waits raise ``manycore.TimeoutError`` (see
``manycore._threadpool``).
"""

from __future__ import annotations

from multiprocessing.dummy import Array as Array
from multiprocessing.dummy import Barrier as Barrier
from multiprocessing.dummy import BoundedSemaphore as BoundedSemaphore
from multiprocessing.dummy import Condition as Condition
from multiprocessing.dummy import DummyProcess as DummyProcess
from multiprocessing.dummy import Event as Event
from multiprocessing.dummy import JoinableQueue as JoinableQueue
from multiprocessing.dummy import Lock as Lock
from multiprocessing.dummy import Manager as Manager
from multiprocessing.dummy import Namespace as Namespace
from multiprocessing.dummy import Pipe as Pipe
from multiprocessing.dummy import Process as Process
from multiprocessing.dummy import Queue as Queue
from multiprocessing.dummy import RLock as RLock
from multiprocessing.dummy import Semaphore as Semaphore
from multiprocessing.dummy import Value as Value
from multiprocessing.dummy import active_children as active_children
from multiprocessing.dummy import current_process as current_process
from multiprocessing.dummy import freeze_support as freeze_support
from multiprocessing.dummy import shutdown as shutdown
from typing import Any, Callable, Iterable, Optional

from .._threadpool import ThreadPool as _ThreadPool
from . import connection as connection  # an attribute of the package, as the stdlib's

__all__ = [
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "JoinableQueue",
    "Lock",
    "Manager",
    "Pipe",
    "Pool",
    "Process",
    "Queue",
    "RLock",
    "Semaphore",
    "active_children",
    "current_process",
    "freeze_support",
]


def Pool(
    processes: Optional[int] = None,
    initializer: Optional[Callable[..., object]] = None,
    initargs: Iterable[Any] = (),
) -> _ThreadPool:
    """A pool of ``processes`` threads (``multiprocessing.pool.ThreadPool``)."""
    return _ThreadPool(processes, initializer, initargs)
