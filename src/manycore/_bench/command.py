"""``manycore bench``, the main job: manycore beside the alternatives, on the user's machine.

It answers, on the user's own machine and in about a minute, "what would
switching buy me?": it runs the same workloads through serial code, the stdlib's thread and
process pools, the peers that are installed (joblib, mpire, pebble) and manycore, and prints
times, speedups over serial and ratios against ``multiprocessing.Pool``, all measured in the
same run. A last workload crashes a worker and shows which systems tell the caller and which
leave it hanging.

The command chooses the workloads, has ``measure`` run them (after the parallel-capacity
probe) and ``report`` print them; its exit status says whether manycore got every answer
right and survived the crash.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from typing import Any

from .guards import ignore_fork_warnings
from .machine import load_average
from .measure import Run, Skipped, Workload, crash_items_for, measure_capacity, run_workloads
from .optional import MissingExtra, import_optional
from .peers import find_peers
from .render import Progress
from .report import bench_notes, bench_table, crash_table, plot, report_json
from .systems import systems
from .workloads import array_sum, calibrate_spin, sleep_ms, spin, square

__all__ = ["bench_command"]

# The crash workload: how long a pool may take to tell the caller that a worker died. Its
# tasks take 10 ms each, so a pool that has said nothing after seconds never will (the
# stdlib's Pool waits forever); a shorter wait under --quick keeps that run under a minute.
CRASH_DEADLINE_S = 10.0
CRASH_DEADLINE_QUICK_S = 5.0


# The NumPy payload: arrays of 16 MiB, the size of a batch of images or a column of a
# table, where the cost is moving the data and the work itself (a sum) is trivial.
ARRAY_ITEMS = 16 * 1024 * 1024 // 8


def _workloads(quick: bool, workers: int) -> tuple[list[Workload], list[Skipped]]:
    tasks = 20 if quick else 40
    task_ms = 15
    spin_n = calibrate_spin(task_ms / 1000)
    trivial = 5_000 if quick else 10_000
    workloads = [
        Workload(
            "cpu",
            "CPU-bound",
            f"{tasks} pure-Python tasks of ~{task_ms} ms",
            spin,
            [spin_n] * tasks,
        ),
        Workload(
            "io",
            "I/O-bound",
            f"{tasks} tasks sleeping 20 ms",
            sleep_ms,
            [20.0] * tasks,
        ),
        Workload(
            "trivial",
            "trivial tasks",
            f"map(x*x) over {trivial:,} ints, default chunking",
            square,
            list(range(trivial)),
        ),
    ]
    skipped: list[Skipped] = []
    numpy: Any = import_optional("numpy")
    arrays = 4 if quick else 8
    title = "NumPy payload"
    if numpy is None:
        reason = "numpy is not installed (pip install numpy)"
        skipped.append(Skipped("numpy", title, reason))
    else:
        workloads.append(
            Workload(
                "numpy",
                title,
                f"{arrays} float64 arrays of 16 MiB, each sent to a task that returns its sum",
                array_sum,
                [numpy.arange(ARRAY_ITEMS, dtype=numpy.float64) * (i + 1) for i in range(arrays)],
                # small arrays: the warm-up is for starting workers and importing numpy
                warm_items=[numpy.ones(1024) for _ in range(2 * workers)],
            )
        )
    return workloads, skipped


def bench_command(args: argparse.Namespace) -> int:
    """Run ``manycore bench`` with the parsed ``args``; returns the exit status."""
    import manycore

    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print(
            "manycore bench: --plot needs matplotlib, which is not installed: "
            "pip install matplotlib (or pip install 'manycore[bench]')",
            file=sys.stderr,
        )
        return 2
    quick = bool(args.quick)
    usable = manycore.cpu_count()
    workers: int = args.workers or usable
    repeats: int = args.repeats or (3 if quick else 5)
    progress = Progress()
    progress(
        f"manycore bench: {workers} workers per pool, median of {repeats} repeats "
        f"({usable} usable CPUs, os.cpu_count() = {os.cpu_count()})"
    )
    load_before = load_average()
    peers = find_peers()
    progress("peers: " + ", ".join(status.describe() for status in peers.values()))
    workloads, skipped = _workloads(quick, workers)
    run = Run(
        workers=workers,
        repeats=repeats,
        usable_cpus=usable,
        systems=systems(peers),
        peers=peers,
        workloads=workloads,
        skipped=skipped,
        crash_deadline=CRASH_DEADLINE_QUICK_S if quick else CRASH_DEADLINE_S,
        crash_items=len(crash_items_for(workers)),
    )
    for skip in skipped:
        progress(f"{skip.title}: skipped, {skip.reason}")

    with ignore_fork_warnings():
        # Before any pool exists: the probe has the machine to itself, and this process
        # has one thread, so the probe's processes can be forked.
        measure_capacity(run, quick, progress)
        run_workloads(run, progress)

    table = bench_table(run)
    crashes = crash_table(run)
    notes = bench_notes(run)
    progress(f"done in {progress.elapsed:.1f} s")
    print()
    print("\n".join(table))
    print()
    print(f"{run.crash_title}: {run.crash_detail}")
    print()
    print("\n".join(crashes))
    print()
    print("\n".join(notes), flush=True)

    if args.json:
        report = report_json(run, quick, progress.elapsed, load_before, notes)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        progress(f"wrote {args.json}")
    if args.plot:
        try:
            plot(run, args.plot, notes)
        except MissingExtra as exc:
            print(f"manycore bench: {exc}", file=sys.stderr)
            return 2
        progress(f"drew {args.plot}")
    return 1 if run.manycore_failed() else 0
