"""Data movement: a large NumPy array to a worker, beside the stdlib.

No target yet: the zero-copy issue sets them (at least 20x the stdlib Pool for a 64 MiB
array). Until then these reference figures record what moving an array costs: a worker
sums each array (one way), and a worker echoes each array back (the round trip), both as
MB/s of array data; the caller sums the echoed arrays inside the timed region, so the
figure includes reading every page of the result. Skipped, with a note, when NumPy is not installed.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
from typing import Any

import manycore

from . import workloads
from ._harness import Call, Context, Figure, Measurement, measure, opened

__all__ = ["run"]

SUITE = "payload"
MIB = 1 << 20


def run(ctx: Context) -> list[Figure]:
    try:
        import numpy as np
    except ImportError:
        ctx.note("payload: skipped, NumPy is not installed (pip install 'manycore[bench]')")
        return []
    size_mib = ctx.size(64, 16)
    count = ctx.size(4, 2)
    arrays = [np.full(size_mib * MIB // 8, float(i)) for i in range(count)]
    sums = [float(a.sum()) for a in arrays]
    megabytes = count * size_mib * MIB // 1_000_000  # items = MB, so items/s reads as MB/s

    def summed(result: Any) -> bool:
        return bool(list(result) == sums)

    def echoed(result: Any) -> bool:
        # The sums were taken inside the timed region (``read_back``).
        return bool(list(result) == sums)

    def read_back(pool: Any) -> Any:
        """Echo the arrays, then read each one back (its sum) while the clock runs."""
        return lambda: [float(a.sum()) for a in pool.map(workloads.identity, arrays, 1)]

    w = ctx.workers
    with contextlib.ExitStack() as stack:
        mc = stack.enter_context(opened(ctx, "manycore.Pool", manycore.Pool(w)))
        mp = stack.enter_context(opened(ctx, "multiprocessing.Pool", multiprocessing.Pool(w)))
        one_way = [
            Call(
                Measurement(f"{name}.map(sum)", megabytes),
                functools.partial(pool.map, workloads.array_sum, arrays, 1),
                summed,
            )
            for name, pool in (("manycore.Pool", mc), ("multiprocessing.Pool", mp))
        ]
        round_trip = [
            Call(
                Measurement(f"{name}.map(echo)", 2 * megabytes),
                read_back(pool),
                echoed,
            )
            for name, pool in (("manycore.Pool", mc), ("multiprocessing.Pool", mp))
        ]
        title = f"{count} arrays of {size_mib} MiB"
        measure(ctx, f"{title}, summed in a worker", one_way)
        measure(ctx, f"{title}, echoed back", round_trip)
    return [
        Figure(
            SUITE,
            f"{size_mib} MiB float64 arrays to a worker that sums them (MB/s)",
            one_way[0].measurement,
            one_way[1].measurement,
            compare="speed",
            show="rate",
        ),
        Figure(
            SUITE,
            f"{size_mib} MiB float64 arrays echoed back (MB/s, both ways)",
            round_trip[0].measurement,
            round_trip[1].measurement,
            compare="speed",
            show="rate",
        ),
    ]
