"""manycore's development benchmarks: every figure beside the stdlib and the installed peers,
measured in the same run.

Run them with ``make bench`` or ``python -m benchmarks [--quick] [--workers N] [--out DIR]``;
results go to ``DIR/results.json`` and ``DIR/results.md`` (default ``bench-results/``).

Suites (modules of this package, each a ``run(ctx) -> list[Figure]``):

* ``overhead``: map-style calls on trivial tasks with default chunking (``map``, ``imap``,
  ``Executor.map``);
* ``submit``: one ``apply_async`` / ``submit`` per item;
* ``per_item``: the paths where each item travels alone (``apply_async`` per item,
  ``map(chunksize=1)``), with the function defined in the script's ``__main__``
  (``main_script.py``, run as a script);
* ``startup``: pool construction to first result, cold and for a second pool, under each
  start method;
* ``queues``: queues and pipes between processes, every item read and checked.

The peers (joblib with loky, mpire, pebble) join the ``overhead`` map and the ``submit``
figures when they are installed (``pip install 'manycore[bench]'``; ``peers`` says how each
one is driven); missing ones are listed in the notes. Before the suites, a probe measures
the machine's parallel capacity, and a note says when it gives fewer CPUs than it claims.

How they measure, and why ratios rather than times, is in ``_harness``. Functions that run
in workers live in ``workloads``, so every start method can import them.
"""
