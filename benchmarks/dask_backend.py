"""The Dask backend (issue 6): manycore's pool on a Dask cluster, beside Dask itself.

Two figures, both on one 2-worker ``LocalCluster`` (1 thread per worker process, 127.0.0.1)
started here, measured in the same run:

* ``map`` of 10k trivial items: ``Pool(backend="dask", address=client).map`` against Dask's
  own per-item ``client.map(..., pure=False)`` + ``client.gather`` on the same cluster
  (target: at least 10x the items/s). manycore chunks adaptively; Dask makes one task per
  item, each costing the scheduler a few hundred microseconds. That baseline is what a
  careful Dask user would not write, so a reference figure sets the pool beside
  ``client.map`` over a few partitions per worker (one task per partition), on the same
  cluster.
* 40 CPU-bound tasks of about 15 ms: the Dask-backed pool's speedup over a serial loop
  against the local ``manycore.Pool(2)``'s (target: within 20%, a ratio of at least 0.8).
  The serial loop is timed too, so both speedups are shown as reference figures.

Without Dask installed the suite adds a note and no figures.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import time
from typing import Any

import manycore
from manycore._dask.cluster import start_local_cluster

from . import workloads
from ._harness import Call, Context, Figure, Measurement, measure, opened

__all__ = ["run"]

SUITE = "dask"
WORKERS = 2  # the figures are for a 2-worker cluster
TRIVIAL_ITEMS = 10_000
WARMUP_ITEMS = 200
CPU_TASKS = 40
TASK_SECONDS = 0.015
PARTITIONS_PER_WORKER = 4


def _spin_for(seconds: float) -> int:
    """Loop iterations of ``workloads.spin`` that take about ``seconds`` here (the fastest
    of a few timings, so a busy moment does not shrink the tasks)."""
    n = 20_000
    while True:
        start = time.perf_counter()
        workloads.spin(n)
        if time.perf_counter() - start >= 0.005:
            break
        n *= 2
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        workloads.spin(n)
        best = min(best, time.perf_counter() - start)
    return max(1, int(n * seconds / best))


def run(ctx: Context) -> list[Figure]:
    try:
        # Imported as an untyped module: Dask ships no type information for these calls.
        distributed: Any = importlib.import_module("distributed")
    except ImportError as exc:
        ctx.note(f"dask suite: not run ({exc}); install it with pip install 'manycore[dask]'")
        return []

    with contextlib.ExitStack() as stack:
        # The cluster a Pool(backend="dask") with no address would start, shared here by
        # both sides of the comparison.
        cluster = stack.enter_context(start_local_cluster(WORKERS))
        client = stack.enter_context(distributed.Client(cluster, set_as_default=False))
        client.wait_for_workers(WORKERS, timeout=60)
        on_dask = stack.enter_context(
            opened(ctx, "Pool(backend='dask')", manycore.Pool(backend="dask", address=client))
        )
        local = stack.enter_context(opened(ctx, "manycore.Pool(2)", manycore.Pool(WORKERS)))
        return _trivial_map(ctx, client, on_dask) + _cpu_bound(ctx, on_dask, local)


def _trivial_map(ctx: Context, client: Any, pool: manycore.Pool) -> list[Figure]:
    items = list(range(ctx.size(TRIVIAL_ITEMS, TRIVIAL_ITEMS // 4)))
    expected = [x * x for x in items]

    def right(result: object) -> bool:
        return result == expected

    def dask_map() -> list[Any]:
        futures = client.map(workloads.square, items, pure=False)
        values: list[Any] = client.gather(futures)
        return values

    # What a careful Dask user writes: a few partitions per worker, one task each.
    step = -(-len(items) // (WORKERS * PARTITIONS_PER_WORKER))
    parts = [items[i : i + step] for i in range(0, len(items), step)]

    def dask_batched() -> list[Any]:
        futures = client.map(workloads.squares, parts, pure=False)
        return [value for part in client.gather(futures) for value in part]

    # Warm-ups on a few items: Dask's per-item map of 10k items takes 20-30 s here, and a
    # warm-up only needs to start the workers' imports and caches.
    ours = Call(
        Measurement(f"Pool(backend='dask').map, {len(items)} items", len(items)),
        functools.partial(pool.map, workloads.square, items),
        right,
        warmup=functools.partial(pool.map, workloads.square, items[:WARMUP_ITEMS]),
    )
    theirs = Call(
        Measurement(f"client.map + gather, {len(items)} items", len(items)),
        dask_map,
        right,
        warmup=lambda: client.gather(
            client.map(workloads.square, items[:WARMUP_ITEMS], pure=False)
        ),
    )
    batched = Call(
        Measurement(f"client.map over {len(parts)} partitions + gather", len(items)),
        dask_batched,
        right,
    )
    measure(
        ctx,
        f"map of {len(items)} trivial items on a {WORKERS}-worker LocalCluster",
        [ours, theirs, batched],
    )
    return [
        Figure(
            SUITE,
            f"dask: map of {len(items)} trivial items vs Dask's per-item client.map",
            ours.measurement,
            theirs.measurement,
            compare="speed",
            target=10.0,
            show="rate",
            baseline_kind="peer",
        ),
        Figure(
            SUITE,
            f"dask: map of {len(items)} trivial items vs Dask's client.map over "
            f"{len(parts)} partitions",
            ours.measurement,
            batched.measurement,
            compare="speed",
            show="rate",
            baseline_kind="peer",
        ),
    ]


def _cpu_bound(ctx: Context, on_dask: manycore.Pool, local: manycore.Pool) -> list[Figure]:
    n = _spin_for(TASK_SECONDS)
    inputs = [n] * CPU_TASKS
    expected = [workloads.spin(n)] * CPU_TASKS

    def right(result: object) -> bool:
        return result == expected

    serial = Call(
        Measurement(f"serial, {CPU_TASKS} x ~15 ms", CPU_TASKS),
        lambda: [workloads.spin(x) for x in inputs],
        right,
    )
    dask_call = Call(
        Measurement(f"Pool(backend='dask').map, {CPU_TASKS} x ~15 ms", CPU_TASKS),
        functools.partial(on_dask.map, workloads.spin, inputs),
        right,
    )
    local_call = Call(
        Measurement(f"manycore.Pool({WORKERS}).map, {CPU_TASKS} x ~15 ms", CPU_TASKS),
        functools.partial(local.map, workloads.spin, inputs),
        right,
    )
    measure(ctx, f"{CPU_TASKS} CPU-bound tasks of ~15 ms", [serial, dask_call, local_call])
    return [
        Figure(
            SUITE,
            f"dask: {CPU_TASKS} CPU-bound ~15 ms tasks, speedup vs the local Pool's",
            dask_call.measurement,
            local_call.measurement,
            compare="speed",
            target=0.8,
            show="rate",
            baseline_kind="peer",
        ),
        Figure(
            SUITE,
            f"dask: {CPU_TASKS} CPU-bound ~15 ms tasks on Dask, speedup over serial",
            dask_call.measurement,
            serial.measurement,
            compare="speed",
            show="rate",
        ),
        Figure(
            SUITE,
            f"local: {CPU_TASKS} CPU-bound ~15 ms tasks, speedup over serial",
            local_call.measurement,
            serial.measurement,
            compare="speed",
            show="rate",
        ),
    ]
