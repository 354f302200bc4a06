"""The functions that workers run in ``manycore bench`` and the ``benchmarks/`` suite.

Every pool being compared runs them, and the stdlib pools send a function by reference (its
module and name), so they live in an importable module rather than in a script's
``__main__``: a worker started by spawn or the fork server imports
``manycore._bench.workloads`` and finds them there. ``benchmarks.workloads`` re-exports
them, so the suite and the command measure the same work.

This module imports only the standard library, and the ``manycore._bench`` package's
``__init__`` imports nothing, so unpickling one of these functions in a worker loads no
more of manycore than the ``manycore`` package itself.
"""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = [
    "CRASH_ITEM",
    "array_sum",
    "calibrate_spin",
    "exit_on_crash_item",
    "identity",
    "sleep_ms",
    "spin",
    "square",
    "squares",
]


def spin(n: int) -> int:
    """CPU-bound pure Python: ``n`` loop iterations that hold the GIL throughout."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def sleep_ms(ms: float) -> float:
    """I/O-bound stand-in: sleeps (releasing the GIL) and returns the milliseconds asked."""
    time.sleep(ms / 1000.0)
    return ms


def square(x: int) -> int:
    """A trivial task: the cost of running it is all overhead."""
    return x * x


def squares(xs: list[int]) -> list[int]:
    """``square`` of each item of a partition: how a batching user drives a per-task system."""
    return [x * x for x in xs]


def identity(x: Any) -> Any:
    """Returns its argument: for measuring how fast data moves."""
    return x


def array_sum(array: Any) -> float:
    """Data movement: the sum of a NumPy array, trivial work next to sending the array."""
    return float(array.sum())


# The item on which ``exit_on_crash_item`` ends its worker.
CRASH_ITEM = -1


def exit_on_crash_item(x: int) -> int:
    """The crash workload: ends the worker with ``os._exit(1)`` on ``CRASH_ITEM``.

    That is how a segfault in an extension, a C library's ``exit()`` or the OOM killer looks
    to the pool: the worker is gone without a word. Other items return ``x * x`` after
    10 ms, so the crash happens while other tasks are in flight.
    """
    if x == CRASH_ITEM:
        os._exit(1)
    time.sleep(0.01)
    return x * x


def calibrate_spin(seconds: float) -> int:
    """The ``n`` for which ``spin(n)`` takes about ``seconds`` on this machine, in this process.

    Uses the fastest of a few timings, so a burst of noise from a neighbour does not make
    the tasks shorter than intended.
    """
    probe = 20_000
    spin(probe)  # warm up
    best = min(_time_call(spin, probe) for _ in range(5))
    return max(1000, int(probe * seconds / max(best, 1e-9)))


def _time_call(fn: Any, arg: Any) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start
