"""Scaling with workers: 1, 2, 4 ... N of them, beside the stdlib and the peers.

Two parts, each at every worker count:

* A CPU-bound map (``workloads.spin``, a few milliseconds of pure Python per task, 12 tasks
  per worker of the largest pool), timed beside a serial loop, ``multiprocessing.Pool`` and
  the installed peers (joblib's loky first; issue 16 names it), all four interleaved within
  each worker count. The efficiency row is the speedup over the serial loop divided by the
  workers: manycore's items/s over a "linear" baseline, the serial loop's time for ``w``
  times the tasks. Issue 16 asks for at least 0.95 at 16 workers; below 16 it is a
  reference. The notes give the stdlib's and the peers' efficiency from the same run,
  which tell how much of a shortfall the machine itself causes (a shared or hyper-threaded
  machine gives less than one CPU per worker; see the parallel-capacity note).
* The per-item rows of ``per_item`` (``apply_async`` per item, ``map(chunksize=1)``, the
  function in ``__main__``), run by ``main_script.py`` once per worker count. Issue 16
  asks that their throughput grow with workers at least as fast as the stdlib's; the
  notes give each side's growth over one worker.

Run it on a many-core machine: ``python -m benchmarks --only scaling --workers 16``.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing

import manycore
from manycore._bench.render import format_ratio

from . import per_item, workloads
from ._harness import Call, Context, Figure, Measurement, measure, opened
from .peers import open_peers

__all__ = ["run"]

SUITE = "scaling"
SPIN = 60_000  # loop iterations per task: a few milliseconds of pure Python
EFFICIENCY_TARGET = 0.95  # speedup / workers, at 16 workers and more (issue 16)
TARGET_FROM = 16  # fewer workers: the efficiency row is a reference
PER_ITEM_ROWS = ("apply_async", "map_chunksize_1")


def worker_counts(workers: int) -> list[int]:
    """1, 2, 4, ... below ``workers``, and ``workers`` itself."""
    counts = {workers}
    n = 1
    while n < workers:
        counts.add(n)
        n *= 2
    return sorted(counts)


def run(ctx: Context) -> list[Figure]:
    figures = _cpu_bound(ctx)
    figures += _per_item(ctx)
    return figures


def _cpu_bound(ctx: Context) -> list[Figure]:
    """One CPU-bound map at each worker count, beside a serial loop, the stdlib and the
    peers (joblib's loky first among them), interleaved within each worker count."""
    tasks = ctx.size(12, 6) * ctx.workers
    inputs = [SPIN] * tasks
    expected = [workloads.spin(SPIN)] * tasks

    def right(result: object) -> bool:
        return result == expected

    figures: list[Figure] = []
    for w in worker_counts(ctx.workers):
        serial = Call(
            Measurement("serial (for loop)", tasks),
            lambda: [workloads.spin(n) for n in inputs],
            right,
        )
        with contextlib.ExitStack() as stack:
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
            peers = stack.enter_context(open_peers(ctx, w))
            peer_calls = [
                Call(
                    Measurement(f"{peer.map_label}, {w} worker{_s(w)}", tasks),
                    functools.partial(peer.map, workloads.spin, inputs),
                    right,
                )
                for peer in peers
            ]
            measure(
                ctx,
                f"CPU-bound map of {tasks} tasks on {w} worker{_s(w)}",
                [serial, mc_call, mp_call, *peer_calls],
            )
        # Linear speedup: the serial loop's time for ``w`` times the tasks. A pool's items/s
        # over this one's is its efficiency, speedup / workers.
        linear = Measurement(f"serial x {w} (linear speedup)", tasks * w, serial.measurement.stats)
        target = EFFICIENCY_TARGET if w >= TARGET_FROM else None
        figures.append(
            Figure(
                SUITE,
                f"CPU-bound map, {w} worker{_s(w)}: efficiency (speedup / workers)",
                mc_call.measurement,
                linear,
                compare="speed",
                target=target,
                show="rate",
            )
        )
        figures.append(
            Figure(
                SUITE,
                f"CPU-bound map, {w} worker{_s(w)}: vs multiprocessing.Pool",
                mc_call.measurement,
                mp_call.measurement,
                compare="speed",
                show="rate",
            )
        )
        for call in peer_calls:
            figures.append(
                Figure(
                    SUITE,
                    f"CPU-bound map, {w} worker{_s(w)}: vs {call.measurement.label}",
                    mc_call.measurement,
                    call.measurement,
                    compare="speed",
                    show="rate",
                    baseline_kind="peer",
                )
            )
        others = [mp_call, *peer_calls]
        ctx.note(
            f"CPU-bound map on {w} worker{_s(w)}, efficiency (speedup / workers): manycore "
            + _efficiency(mc_call, linear)
            + "".join(f", {c.measurement.label} {_efficiency(c, linear)}" for c in others)
            + "."
        )
    return figures


def _per_item(ctx: Context) -> list[Figure]:
    """Per-item ``apply_async`` and ``map(chunksize=1)`` (the function in ``__main__``) at
    each worker count: does manycore's throughput grow with workers as the stdlib's does?"""
    figures: list[Figure] = []
    first: dict[str, tuple[Measurement, Measurement]] = {}
    names = {key: name for key, name, _ in per_item.ROWS}
    for w in worker_counts(ctx.workers):
        pairs = per_item.run_script(ctx, w, list(PER_ITEM_ROWS))
        for key in PER_ITEM_ROWS:
            ours, theirs = pairs[key]
            figures.append(
                Figure(
                    SUITE,
                    f"{names[key]}, {w} worker{_s(w)}",
                    ours,
                    theirs,
                    compare="speed",
                    show="rate",
                )
            )
            first.setdefault(key, (ours, theirs))
            if w > 1:
                ours_1, theirs_1 = first[key]
                ctx.note(
                    f"{names[key]}: throughput on {w} workers over 1 worker: manycore "
                    f"{_growth(ours, ours_1)}, multiprocessing {_growth(theirs, theirs_1)}."
                )
    return figures


def _growth(at_w: Measurement, at_1: Measurement) -> str:
    return format_ratio(at_w.rate / at_1.rate)


def _efficiency(call: Call, linear: Measurement) -> str:
    return f"{call.measurement.rate / linear.rate:.2f}"


def _s(n: int) -> str:
    return "s" if n > 1 else ""
