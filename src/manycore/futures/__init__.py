"""``manycore.futures``: the ``concurrent.futures`` namespace, with manycore's process executor.

Every name but ``ProcessPoolExecutor`` is the stdlib's own object (manycore's futures are
real ``concurrent.futures.Future`` objects, so ``wait`` and ``as_completed`` work on them).
``manycore.futures.process`` stands in for ``concurrent.futures.process``.
"""

from __future__ import annotations

from concurrent.futures import ALL_COMPLETED as ALL_COMPLETED
from concurrent.futures import FIRST_COMPLETED as FIRST_COMPLETED
from concurrent.futures import FIRST_EXCEPTION as FIRST_EXCEPTION
from concurrent.futures import BrokenExecutor as BrokenExecutor
from concurrent.futures import CancelledError as CancelledError
from concurrent.futures import Executor as Executor
from concurrent.futures import Future as Future
from concurrent.futures import InvalidStateError as InvalidStateError
from concurrent.futures import ThreadPoolExecutor as ThreadPoolExecutor
from concurrent.futures import TimeoutError as TimeoutError
from concurrent.futures import as_completed as as_completed
from concurrent.futures import wait as wait

from . import process as process
from .process import ProcessPoolExecutor as ProcessPoolExecutor

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "BrokenExecutor",
    "CancelledError",
    "Executor",
    "Future",
    "InvalidStateError",
    "ProcessPoolExecutor",
    "ThreadPoolExecutor",
    "TimeoutError",
    "as_completed",
    "wait",
]
