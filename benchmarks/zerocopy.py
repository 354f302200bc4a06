"""Zero-copy data (issue 4): big NumPy arrays to and from workers, beside the stdlib and joblib.

Figures, all as MB/s of array data (one array's bytes per call, for the echo too, so the
echo's rate is the array size over the round-trip time):

* a 64 MiB float64 array to a worker that returns its sum: manycore.Pool against
  multiprocessing.Pool (target: at least 20x); the executors side by side and joblib as
  references;
* the same array echoed back, the caller summing it inside the timed region (so every page
  of the result is read): the same pairs (target: at least 20x, and 2 GB/s).

Run alone: ``python -m benchmarks --only zerocopy`` (``--quick``: 16 MiB arrays). Skipped,
with a note, when NumPy is not installed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import multiprocessing
from typing import Any, Callable

import manycore
from manycore._bench.peers import find_peers, stop_joblib_workers

from . import workloads
from ._harness import Call, Context, Figure, Measurement, measure, opened

__all__ = ["run"]

SUITE = "zerocopy"
MIB = 1 << 20
TARGET = 20.0


def run(ctx: Context) -> list[Figure]:
    try:
        import numpy as np
    except ImportError:
        ctx.note("zerocopy: skipped, NumPy is not installed (pip install 'manycore[bench]')")
        return []
    size_mib = ctx.size(64, 16)
    array = np.random.default_rng(0).random(size_mib * MIB // 8)
    expected = float(array.sum())
    megabytes = size_mib * MIB // 1_000_000  # items = MB, so items/s reads as MB/s
    w = ctx.workers

    def summed(result: Any) -> bool:
        return bool(result == expected)

    def echoed(result: Any) -> bool:
        # The sum was taken inside the timed region (``read_back``): every byte was read.
        return bool(result == expected)

    def read_back(call: Callable[[], Any]) -> Callable[[], Any]:
        """The call, then the caller reads the echoed array (its sum) while the clock runs:
        a receiver that only maps the memory has not paid for the pages yet."""
        return lambda: float(call().sum())

    def pool_call(pool: Any, fn: Callable[[Any], Any]) -> Callable[[], Any]:
        return lambda: pool.apply(fn, (array,))

    def executor_call(ex: Any, fn: Callable[[Any], Any]) -> Callable[[], Any]:
        return lambda: ex.submit(fn, array).result()

    with contextlib.ExitStack() as stack:
        sides: list[tuple[str, Callable[[Callable[[Any], Any]], Callable[[], Any]]]] = []
        mc = stack.enter_context(opened(ctx, "manycore.Pool", manycore.Pool(w)))
        sides.append(("manycore.Pool", lambda fn: pool_call(mc, fn)))
        mp = stack.enter_context(opened(ctx, "multiprocessing.Pool", multiprocessing.Pool(w)))
        sides.append(("multiprocessing.Pool", lambda fn: pool_call(mp, fn)))
        mce = stack.enter_context(
            opened(ctx, "manycore.ProcessPoolExecutor", manycore.ProcessPoolExecutor(w))
        )
        sides.append(("manycore.ProcessPoolExecutor", lambda fn: executor_call(mce, fn)))
        cfe = stack.enter_context(
            opened(
                ctx,
                "concurrent.futures.ProcessPoolExecutor",
                concurrent.futures.ProcessPoolExecutor(w),
            )
        )
        sides.append(("concurrent.futures.ProcessPoolExecutor", lambda fn: executor_call(cfe, fn)))
        if find_peers()["joblib"].usable:
            joblib: Any = importlib.import_module("joblib")
            stack.enter_context(opened(ctx, "joblib's loky executor", _Closer(stop_joblib_workers)))

            def joblib_call(fn: Callable[[Any], Any]) -> Callable[[], Any]:
                def call() -> Any:
                    parallel = joblib.Parallel(n_jobs=w, backend="loky")
                    return parallel([joblib.delayed(fn)(array)])[0]

                return call

            sides.append(("joblib.Parallel (loky)", joblib_call))
        else:
            ctx.note("zerocopy: joblib is not installed, so it has no figure here")

        one_way = [
            Call(Measurement(f"{name}: sum", megabytes), make(workloads.array_sum), summed)
            for name, make in sides
        ]
        round_trip = [
            Call(
                Measurement(f"{name}: echo", megabytes),
                read_back(make(workloads.identity)),
                echoed,
            )
            for name, make in sides
        ]
        title = f"one {size_mib} MiB float64 array"
        measure(ctx, f"{title}, summed in a worker", one_way)
        measure(ctx, f"{title}, echoed back", round_trip)

    figures = []
    for what, calls in (("summed in a worker", one_way), ("echoed back", round_trip)):
        name = f"{size_mib} MiB float64 array {what} (MB/s of the array)"
        figures.append(
            Figure(
                SUITE,
                f"{name}: Pool",
                calls[0].measurement,
                calls[1].measurement,
                compare="speed",
                target=TARGET,
                show="rate",
            )
        )
        figures.append(
            Figure(
                SUITE,
                f"{name}: ProcessPoolExecutor",
                calls[2].measurement,
                calls[3].measurement,
                compare="speed",
                show="rate",
            )
        )
        if len(calls) > 4:
            figures.append(
                Figure(
                    SUITE,
                    f"{name}: Pool vs joblib",
                    calls[0].measurement,
                    calls[4].measurement,
                    compare="speed",
                    show="rate",
                    baseline_kind="peer",
                )
            )
    rate = round_trip[0].measurement
    if rate.stats is not None:
        ctx.note(
            f"zerocopy: manycore.Pool echoes a {size_mib} MiB array at "
            f"{rate.rate / 1000:.2f} GB/s (target 2 GB/s)"
        )
    return figures


class _Closer:
    def __init__(self, close: Callable[[], Any]) -> None:
        self.close = close

    def join(self) -> None:
        pass
