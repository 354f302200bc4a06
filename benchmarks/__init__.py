"""manycore's development benchmarks: every figure beside the stdlib, measured in the same run.

Run them with ``make bench`` or ``python -m benchmarks [--quick] [--workers N] [--out DIR]``;
results go to ``DIR/results.json`` and ``DIR/results.md`` (default ``bench-results/``).

Suites (modules of this package, each a ``run(ctx) -> list[Figure]``):

* ``overhead``: map-style calls on trivial tasks with default chunking (``map``, ``imap``,
  ``Executor.map``);
* ``submit``: one ``apply_async`` / ``submit`` per item;
* ``startup``: pool construction to first result, cold and for a second pool.

How they measure, and why ratios rather than times, is in ``_harness``. Functions that run
in workers live in ``workloads``, so every start method can import them.
"""
