"""Functions the benchmarks run in workers.

They live in an importable module, not in the benchmark scripts, because the stdlib pools
send functions by reference: a worker started by spawn or forkserver must be able to import
them. They are the same functions ``manycore bench`` runs, so both measure the same work.
"""

from __future__ import annotations

from manycore._bench.workloads import array_sum, identity, sleep_ms, spin, square, squares

__all__ = ["array_sum", "identity", "sleep_ms", "spin", "square", "squares"]
