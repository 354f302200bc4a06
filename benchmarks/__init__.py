"""manycore's development benchmarks: every figure beside the stdlib and the installed peers,
measured in the same run.

Run them with ``make bench`` or ``python -m benchmarks [--quick] [--workers N] [--out DIR]``;
results go to ``DIR/results.json`` and ``DIR/results.md`` (default ``bench-results/``).

Suites (modules of this package, each a ``run(ctx) -> list[Figure]``):

* ``overhead``: map-style calls on trivial tasks with default chunking (``map``, ``imap``,
  ``Executor.map``);
* ``submit``: one ``apply_async`` / ``submit`` per item;
* ``startup``: pool construction to first result, cold and for a second pool.

The peers (joblib with loky, mpire, pebble) join the ``overhead`` map and the ``submit``
figures when they are installed (``pip install 'manycore[bench]'``; ``peers`` says how each
one is driven); missing ones are listed in the notes. Before the suites, a probe measures
the machine's parallel capacity, and a note says when it gives fewer CPUs than it claims.

How they measure, and why ratios rather than times, is in ``_harness``. Functions that run
in workers live in ``workloads``, so every start method can import them.
"""
