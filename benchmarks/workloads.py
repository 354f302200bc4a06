"""Functions the benchmarks run in workers.

They live in an importable module, not in the benchmark scripts, because the stdlib pools
send functions by reference: a worker started by spawn or forkserver must be able to import
them. Keep them trivial and deterministic; the benchmarks compare results against serial.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["array_sum", "identity", "sleep_ms", "spin", "square"]


def square(x: int) -> int:
    """The trivial task: everything it costs in a pool is overhead."""
    return x * x


def identity(x: Any) -> Any:
    """Returns its argument: the cost of moving data there and back."""
    return x


def spin(n: int) -> int:
    """CPU-bound pure Python: ``n`` loop iterations that hold the GIL."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def sleep_ms(ms: float) -> float:
    """I/O-bound stand-in: sleeps with the GIL released."""
    time.sleep(ms / 1000.0)
    return ms


def array_sum(array: Any) -> float:
    """Sums a NumPy array: the work is trivial, the cost is moving the array there."""
    return float(array.sum())
