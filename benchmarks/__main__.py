"""``python -m benchmarks``: run the suites, print the table, write results.json and results.md."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import manycore
from manycore._bench.capacity import Capacity, capacity_note, parallel_capacity
from manycore._bench.guards import deadline, ignore_fork_warnings
from manycore._bench.machine import load_average, machine_facts
from manycore._bench.peers import find_peers, peers_note
from manycore._bench.render import Progress

from . import (
    asyncio_face,
    control,
    dask_backend,
    overhead,
    payload,
    per_item,
    queues,
    scaling,
    shared_counter,
    startup,
    submit,
    zerocopy,
)
from ._harness import CALL_DEADLINE_S, Context, Figure, describe, render_figures
from .peers import COMPARED

SUITES: dict[str, Callable[[Context], list[Figure]]] = {
    "overhead": overhead.run,
    "submit": submit.run,
    "per_item": per_item.run,
    "startup": startup.run,
    "scaling": scaling.run,
    "payload": payload.run,
    "queues": queues.run,
    "dask": dask_backend.run,
    "shared_counter": shared_counter.run,
    "zerocopy": zerocopy.run,
    "control": control.run,
    "asyncio": asyncio_face.run,
}

ROOT = Path(__file__).resolve().parent.parent

NOTES = [
    "Each value is the median of the repeats, with the spread (half their range) after it.",
    "ratio: for items/s and map figures (target >=), manycore's speed over the baseline's; "
    "for start-up figures (target <=), manycore's time over the baseline's. The baseline "
    "is the stdlib unless the figure's name says 'vs' a peer (joblib, mpire, pebble).",
    "Both sides of a figure are measured in the same run, interleaved, after a warm-up; "
    "'reference' rows have no target and are shown for context.",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="manycore beside multiprocessing and concurrent.futures, in one run.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer items and repeats")
    parser.add_argument(
        "--workers", type=int, metavar="N", help="pool size (default: manycore.cpu_count())"
    )
    parser.add_argument(
        "--repeats", type=int, metavar="N", help="timed repeats (default 5, or 3 with --quick)"
    )
    parser.add_argument(
        "--out", default="bench-results", metavar="DIR", help="where results.json/.md go"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SUITES),
        metavar="SUITE",
        help=f"run only this suite (repeatable): {', '.join(SUITES)}",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a figure misses its target"
    )
    args = parser.parse_args(argv)
    if (args.workers is not None and args.workers < 1) or (
        args.repeats is not None and args.repeats < 1
    ):
        parser.error("--workers and --repeats must be at least 1")

    progress = Progress()
    ctx = Context(
        workers=args.workers or manycore.cpu_count(),
        quick=args.quick,
        repeats=args.repeats or (3 if args.quick else 5),
        root=ROOT,
        progress=progress,
    )
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = load_average()
    progress(
        f"benchmarks: {ctx.workers} workers, median of {ctx.repeats} repeats"
        f"{' (quick)' if ctx.quick else ''}"
    )

    peers = find_peers()
    progress("peers: " + ", ".join(status.describe() for status in peers.values()))
    capacity, capacity_text = _capacity(ctx)
    figures: list[Figure] = []
    with ignore_fork_warnings():
        for name in args.only or list(SUITES):
            progress(f"suite {name}")
            suite_figures = SUITES[name](ctx)
            for figure in suite_figures:
                progress(f"  {figure.summary()}")
            figures.extend(suite_figures)

    notes = [*NOTES, capacity_text, peers_note(peers, set(COMPARED)), *ctx.notes]
    table = render_figures(figures)
    header = (
        f"manycore {machine_facts()['manycore_version']} benchmarks, "
        f"{started:%Y-%m-%d %H:%M} UTC: {ctx.workers} workers, median of {ctx.repeats} "
        f"repeats{' (--quick)' if ctx.quick else ''}, Python {sys.version.split()[0]}"
    )
    progress(f"done in {progress.elapsed:.1f} s")
    print()
    print(header)
    print()
    print("\n".join(table))
    print()
    print("\n".join(notes), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "started": started.isoformat(),
        "elapsed_s": progress.elapsed,
        "workers": ctx.workers,
        "repeats": ctx.repeats,
        "quick": ctx.quick,
        "machine": machine_facts(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "parallel_capacity": capacity.as_dict() if capacity else None,
        "peers": [status.as_dict() for status in peers.values()],
        "figures": [f.as_dict() for f in figures],
        "notes": notes,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = [f"# {header}", "", *table, "", *(f"- {note}" for note in notes)]
    (out / "results.md").write_text("\n".join(markdown) + "\n")
    progress(f"wrote {out / 'results.json'} and {out / 'results.md'}")

    if any(f.failed for f in figures):
        return 1
    if args.strict and any(f.verdict == "MISSED" for f in figures):
        return 1
    return 0


def _capacity(ctx: Context) -> tuple[Capacity | None, str]:
    """Measure the parallel capacity before any suite starts a pool; one line about it."""
    usable = manycore.cpu_count()
    if usable < 2:
        return None, "parallel capacity: not measured (a single usable CPU)."
    try:
        with ignore_fork_warnings(), deadline(CALL_DEADLINE_S, "capacity probe"):
            capacity = parallel_capacity(usable, seconds=0.2 if ctx.quick else 0.3)
    except Exception as exc:
        return None, f"parallel capacity: not measured ({describe(exc)})."
    text = capacity_note(capacity, usable)
    ctx.progress(text)
    return capacity, text


if __name__ == "__main__":
    sys.exit(main())
