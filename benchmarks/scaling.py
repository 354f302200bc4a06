"""CPU scaling: one CPU-bound map on 1, 2, 4 ... N workers, beside serial and the stdlib.

No issue sets a target here yet (the mission asks for scaling close to linear in cores), so
every figure is a reference: manycore's speedup over a serial loop at each worker count,
and manycore beside ``multiprocessing.Pool`` with the same number of workers. Run it on a
many-core machine with ``--workers N``; on a shared 2-core machine, read it beside the
parallel-capacity note, which says how many CPUs the machine really gave.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing

import manycore

from . import workloads
from ._harness import Call, Context, Figure, Measurement, measure, opened

__all__ = ["run"]

SUITE = "scaling"
SPIN = 60_000  # loop iterations per task: a few milliseconds of pure Python


def worker_counts(workers: int) -> list[int]:
    """1, 2, 4, ... below ``workers``, and ``workers`` itself."""
    counts = {workers}
    n = 1
    while n < workers:
        counts.add(n)
        n *= 2
    return sorted(counts)


def run(ctx: Context) -> list[Figure]:
    tasks = ctx.size(12, 6) * ctx.workers
    inputs = [SPIN] * tasks
    expected = [workloads.spin(SPIN)] * tasks

    def right(result: object) -> bool:
        return result == expected

    serial = Call(
        Measurement("serial (for loop)", tasks),
        lambda: [workloads.spin(n) for n in inputs],
        right,
    )
    figures: list[Figure] = []
    with contextlib.ExitStack() as stack:
        calls = [serial]
        pairs = []
        for w in worker_counts(ctx.workers):
            mc = stack.enter_context(opened(ctx, f"manycore.Pool({w})", manycore.Pool(w)))
            mp = stack.enter_context(
                opened(ctx, f"multiprocessing.Pool({w})", multiprocessing.Pool(w))
            )
            mc_call = Call(
                Measurement(f"manycore.Pool({w}).map", tasks),
                functools.partial(mc.map, workloads.spin, inputs),
                right,
            )
            mp_call = Call(
                Measurement(f"multiprocessing.Pool({w}).map", tasks),
                functools.partial(mp.map, workloads.spin, inputs),
                right,
            )
            calls += [mc_call, mp_call]
            pairs.append((w, mc_call, mp_call))
        measure(ctx, f"CPU-bound map of {tasks} tasks on 1..{ctx.workers} workers", calls)
    for w, mc_call, mp_call in pairs:
        figures.append(
            Figure(
                SUITE,
                f"CPU-bound map, {w} worker{'s' if w > 1 else ''}: speedup over serial",
                mc_call.measurement,
                serial.measurement,
                compare="speed",
                show="rate",
            )
        )
        figures.append(
            Figure(
                SUITE,
                f"CPU-bound map, {w} worker{'s' if w > 1 else ''}: vs multiprocessing.Pool",
                mc_call.measurement,
                mp_call.measurement,
                compare="speed",
                show="rate",
            )
        )
    return figures
