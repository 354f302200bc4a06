"""``manycore bench``, and the measuring tools the ``benchmarks/`` suite shares with it.

One module per idea, each importing only the ones listed below it (and, inside functions,
the public ``manycore`` API it measures)::

    command    manycore bench: chooses the workloads, runs them, prints, exit status
    report     the tables, the notes, the --json file and the --plot image of a run
    measure    every system through every workload under deadlines; what a run found
    systems    serial, the stdlib pools, the peers and manycore behind one Runner
    capacity   how many CPUs' worth of work the machine delivers (a probe of processes)
    machine    facts about the machine and Python (also shown by ``manycore info``)
    peers      joblib, mpire, pebble, faster-fifo: installed? importable?
    render     units, markdown tables, progress lines, the matplotlib comparison
    optional   importing a package that may be missing, and the error naming its install
    guards     deadlines that turn a hang into an error; the fork warning silenced
    stats      repeats summarized as median and spread
    workloads  the functions workers run, imported by reference under spawn/forkserver

This ``__init__`` imports nothing, and ``import manycore`` never imports this package: a
worker that unpickles ``manycore._bench.workloads.spin`` loads that one module, and
``manycore._cli`` (the ``manycore`` command) loads the rest when it starts.
"""
