"""``manycore.futures``: the ``concurrent.futures`` names, with manycore's process executor."""

from __future__ import annotations

from concurrent.futures import ALL_COMPLETED as ALL_COMPLETED
from concurrent.futures import FIRST_COMPLETED as FIRST_COMPLETED
from concurrent.futures import FIRST_EXCEPTION as FIRST_EXCEPTION
from concurrent.futures import Future as Future
from concurrent.futures import as_completed as as_completed
from concurrent.futures import wait as wait

from ._executor import ProcessPoolExecutor as ProcessPoolExecutor

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Future",
    "ProcessPoolExecutor",
    "as_completed",
    "wait",
]
