"""One message at a time (issue 16): per-item pool calls with the function in ``__main__``.

Figures, 2 workers by default, the stdlib's default (fork) ``Pool`` and ``manycore.Pool``
side by side, the function a trivial ``x*x`` defined in the running script, as most users
write it (``main_script.py``, run in a subprocess; the rows are measured there with the
usual rules, interleaved and checked):

* ``apply_async`` per item, then ``get()`` of every result, 20k items: at least 3x;
* ``Pool.map(f, xs, chunksize=1)``, 20k items: at least 1.5x;
* ``Pool.map`` with default chunking, 200k items (a sample is ``MAPS_PER_SAMPLE`` maps back
  to back: one takes 20-40 ms, too short to time alone on a shared machine): at least 1.5x.

Run alone: ``python -m benchmarks --only per_item``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from manycore._bench.stats import summarize

from ._harness import CALL_DEADLINE_S, Context, Figure, Measurement, describe

__all__ = ["run"]

SUITE = "per_item"
SCRIPT = "main_script.py"
MAPS_PER_SAMPLE = 8  # maps back to back in one sample of the default-chunking row

# (key in the script's report, the figure's name, the target)
ROWS = [
    ("apply_async", "Pool.apply_async per item then get() all, f in __main__", 3.0),
    ("map_chunksize_1", "Pool.map(f, xs, chunksize=1), f in __main__", 1.5),
    ("map_default", "Pool.map(f, xs), default chunking, f in __main__", 1.5),
]


def _measurement(data: dict[str, Any]) -> Measurement:
    measurement = Measurement(str(data["label"]), int(data["items"]), error=data.get("error"))
    if data.get("samples") and measurement.error is None:
        measurement.stats = summarize([float(s) for s in data["samples"]])
    return measurement


def run_script(
    ctx: Context, workers: int, rows: list[str]
) -> dict[str, tuple[Measurement, Measurement]]:
    """Run ``main_script.py`` with ``workers`` for the ``rows`` named (keys of ``ROWS``):
    manycore's and the stdlib's measurement of each row. A script that fails gives both
    sides of every row its error."""
    args = [sys.executable, str(ctx.root / "benchmarks" / SCRIPT)]
    args += ["--workers", str(workers), "--repeats", str(ctx.repeats), "--rows", ",".join(rows)]
    if ctx.quick:
        args.append("--quick")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ctx.root), env.get("PYTHONPATH")) if p)
    ctx.progress(f"per-item rows, {workers} workers: running {SCRIPT} (functions in its __main__)")
    try:
        done = subprocess.run(
            args,
            stdout=subprocess.PIPE,
            text=True,
            timeout=CALL_DEADLINE_S * 4,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{SCRIPT} exited with status {done.returncode}")
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except Exception as exc:
        error = describe(exc)
        ctx.progress(f"  {SCRIPT} failed: {error}")
        return {
            key: (Measurement("manycore", error=error), Measurement("multiprocessing", error=error))
            for key in rows
        }
    pairs = {}
    for key in rows:
        ours, theirs = (_measurement(side) for side in report[key])
        pairs[key] = (ours, theirs)
    return pairs


def run(ctx: Context) -> list[Figure]:
    pairs = run_script(ctx, ctx.workers, [key for key, _, _ in ROWS])
    figures = []
    for key, name, target in ROWS:
        ours, theirs = pairs[key]
        items = f", {ours.items // 1000}k items" if ours.items > 1 else ""
        if key == "map_default" and ours.items > 1:
            per_map = ours.items // MAPS_PER_SAMPLE
            items = f", {per_map // 1000}k items ({MAPS_PER_SAMPLE} maps a sample)"
        figures.append(
            Figure(
                SUITE,
                f"{name}{items}",
                ours,
                theirs,
                compare="speed",
                target=target,
                show="rate",
            )
        )
    return figures
