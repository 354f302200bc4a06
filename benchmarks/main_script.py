"""The per-item pool rows, run as a script: the functions the workers run live in ``__main__``.

Most users define the function they map in the script they run, not in an importable
module, and the two pools treat such a function differently: the stdlib's fork workers find
``__main__.square`` in their copy of the script's module, while manycore sends it by value.
The suite ``perItem`` (``benchmarks/per_item.py``) runs this file with ``python`` in a
subprocess, so these rows measure that path; it prints one JSON object: each row's
measurements and their samples. ``python benchmarks/main_script.py --help`` to run it alone.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing
import sys
from pathlib import Path
from typing import Any

import manycore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for ``benchmarks``

from benchmarks._harness import Call, Context, Measurement, measure, opened
from benchmarks.per_item import MAPS_PER_SAMPLE
from manycore._bench.render import Progress


def square(x: int) -> int:
    """The trivial task, defined here in ``__main__`` as a user's script would."""
    return x * x


def _apply_each(pool: Any, n: int) -> list[Any]:
    pending = [pool.apply_async(square, (i,)) for i in range(n)]
    return [r.get() for r in pending]


ROWS = ("apply_async", "map_chunksize_1", "map_default")


def _maps(pool: Any, n: int) -> list[Any]:
    return [pool.map(square, range(n)) for _ in range(MAPS_PER_SAMPLE)]


def _rows(ctx: Context, quick: bool, wanted: set[str]) -> list[tuple[str, list[Call]]]:
    n_each = 5_000 if quick else 20_000
    n_map = 50_000 if quick else 200_000
    expected_each = [i * i for i in range(n_each)]
    expected_map = [i * i for i in range(n_map)]
    w = ctx.workers
    rows: list[tuple[str, list[Call]]] = []
    with contextlib.ExitStack() as stack:
        mp = stack.enter_context(opened(ctx, "multiprocessing.Pool", multiprocessing.Pool(w)))
        mc = stack.enter_context(opened(ctx, "manycore.Pool", manycore.Pool(w)))

        def each_right(result: Any) -> bool:
            return bool(result == expected_each)

        def maps_right(results: list[Any]) -> bool:
            return all(result == expected_map for result in results)

        apply_calls = [
            Call(
                Measurement(f"{name}.apply_async per item, then get()", n_each),
                functools.partial(_apply_each, pool, n_each),
                each_right,
                warmup=functools.partial(_apply_each, pool, 1000),
            )
            for name, pool in (("manycore.Pool", mc), ("multiprocessing.Pool", mp))
        ]
        if "apply_async" in wanted:
            measure(ctx, f"apply_async per item, {n_each:,} items", apply_calls)
            rows.append(("apply_async", apply_calls))

        chunk1_calls = [
            Call(
                Measurement(f"{name}.map(chunksize=1)", n_each),
                functools.partial(pool.map, square, range(n_each), 1),
                each_right,
                warmup=functools.partial(pool.map, square, range(1000), 1),
            )
            for name, pool in (("manycore.Pool", mc), ("multiprocessing.Pool", mp))
        ]
        if "map_chunksize_1" in wanted:
            measure(ctx, f"map(chunksize=1), {n_each:,} items", chunk1_calls)
            rows.append(("map_chunksize_1", chunk1_calls))

        # One such map takes 20-40 ms here: a sample of one map is at the mercy of the
        # machine's moment (a shared machine stalls a process for tens of milliseconds now
        # and then), so a sample is MAPS_PER_SAMPLE maps back to back.
        map_calls = [
            Call(
                Measurement(f"{name}.map, default chunking", n_map * MAPS_PER_SAMPLE),
                functools.partial(_maps, pool, n_map),
                maps_right,
            )
            for name, pool in (("manycore.Pool", mc), ("multiprocessing.Pool", mp))
        ]
        if "map_default" in wanted:
            measure(
                ctx, f"map, default chunking, {n_map:,} items, {MAPS_PER_SAMPLE} maps", map_calls
            )
            rows.append(("map_default", map_calls))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=manycore.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"comma-separated, of: {', '.join(ROWS)}"
    )
    args = parser.parse_args()
    wanted = set(args.rows.split(","))
    if not wanted <= set(ROWS):
        parser.error(f"--rows: unknown {', '.join(sorted(wanted - set(ROWS)))}")
    progress = Progress()
    ctx = Context(
        workers=args.workers,
        quick=args.quick,
        repeats=args.repeats,
        root=Path(__file__).resolve().parent.parent,
        progress=progress,
    )
    report = {}
    for key, calls in _rows(ctx, args.quick, wanted):
        report[key] = [call.measurement.as_dict() | {"samples": call.samples} for call in calls]
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
