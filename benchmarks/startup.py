"""Pool construction to first result, cold and warm.

Figures (issue 2), ``Pool(workers)`` with the default start method:

* cold: in a fresh interpreter, from just before ``Pool(...)`` to the first ``apply``
  result, at most 1.5x the stdlib's fork ``Pool`` measured the same way;
* second pool: the same, for a further pool in that process (after the previous one is
  terminated), at most 1.0x the stdlib fork pool's second pool. A few milliseconds is
  mostly noise, so each subprocess starts five more pools in turn and reports their median.

Each measurement is a ``python -c`` subprocess that imports everything first (imports are
not timed: both sides pay theirs once per program anyway), times the first pool, terminates
it, then times the further pools, and prints the times as JSON. The variants run interleaved,
after one untimed warm-up run each that warms the page cache.

Reference rows set manycore's default beside the stdlib's forkserver and spawn, which are
what a program gets when it avoids plain fork (and the defaults on Python 3.14 and macOS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from manycore._bench.render import format_seconds
from manycore._bench.stats import summarize

from ._harness import CALL_DEADLINE_S, Context, Figure, Measurement, describe

__all__ = ["run"]

SUITE = "startup"

# Pools started after the first in each subprocess; their median is the "second pool"
# sample. One pool start takes a few milliseconds, so a single one is mostly noise.
LATER_POOLS = 5

_SCRIPT = """\
import json, time
import multiprocessing, multiprocessing.pool
from benchmarks.workloads import square
{setup}

def first_result():
    start = time.perf_counter()
    pool = make_pool()
    try:
        result = pool.apply(square, (7,))
        elapsed = time.perf_counter() - start
    finally:
        pool.terminate()
        pool.join()
    if result != 49:
        raise SystemExit("wrong result: %r" % (result,))
    return elapsed

cold = first_result()
later = sorted(first_result() for _ in range({later}))
print(json.dumps({{"cold": cold, "second": later[len(later) // 2]}}))
"""

_MANYCORE = """\
import manycore
def make_pool():
    return manycore.Pool({workers})
"""

_STDLIB = """\
context = multiprocessing.get_context({method!r})
def make_pool():
    return context.Pool({workers})
"""


@dataclass
class _Variant:
    label: str
    setup: str
    short: str = ""  # how a figure's name refers to it
    cold_target: float | None = None
    second_target: float | None = None
    cold: list[float] = field(default_factory=list)
    second: list[float] = field(default_factory=list)
    error: str | None = None

    def measurements(self) -> tuple[Measurement, Measurement]:
        cold = Measurement(f"{self.label}, cold", error=self.error)
        second = Measurement(f"{self.label}, second pool", error=self.error)
        if self.error is None and self.cold:
            cold.stats = summarize(self.cold)
            second.stats = summarize(self.second)
        return cold, second


def _run_once(ctx: Context, variant: _Variant) -> dict[str, Any]:
    code = _SCRIPT.format(setup=variant.setup, later=LATER_POOLS)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ctx.root), env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=CALL_DEADLINE_S,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"exit status {done.returncode}: {tail}")
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return data


def run(ctx: Context) -> list[Figure]:
    w = ctx.workers
    manycore_default = _Variant("manycore.Pool (default)", _MANYCORE.format(workers=w))
    variants = [
        manycore_default,
        _Variant(
            "multiprocessing fork Pool",
            _STDLIB.format(method="fork", workers=w),
            short="stdlib fork",
            cold_target=1.5,
            second_target=1.0,
        ),
        _Variant(
            "multiprocessing forkserver Pool",
            _STDLIB.format(method="forkserver", workers=w),
            short="stdlib forkserver",
        ),
        _Variant(
            "multiprocessing spawn Pool",
            _STDLIB.format(method="spawn", workers=w),
            short="stdlib spawn",
        ),
    ]
    ctx.progress(f"pool start to first result, Pool({w}), each run in a fresh interpreter")
    for round_no in range(ctx.repeats + 1):  # round 0 is the warm-up
        timings = []
        for variant in variants:
            if variant.error is not None:
                continue
            try:
                data = _run_once(ctx, variant)
            except Exception as exc:
                variant.error = describe(exc)
                ctx.progress(f"  {variant.label} failed: {variant.error}")
                continue
            if round_no > 0:
                variant.cold.append(float(data["cold"]))
                variant.second.append(float(data["second"]))
            timings.append(
                f"{variant.label} {format_seconds(data['cold'])} / {format_seconds(data['second'])}"
            )
        what = "warm-up" if round_no == 0 else f"round {round_no}/{ctx.repeats}"
        ctx.progress(f"  {what} (cold / second): " + ", ".join(timings))

    mc_cold, mc_second = manycore_default.measurements()
    figures = []
    for variant in variants[1:]:
        cold, second = variant.measurements()
        figures.append(
            Figure(
                SUITE,
                f"Pool({w}) start to first result, cold, vs {variant.short}",
                mc_cold,
                cold,
                compare="time",
                target=variant.cold_target,
            )
        )
        figures.append(
            Figure(
                SUITE,
                f"Pool({w}) start to first result, second pool, vs {variant.short}",
                mc_second,
                second,
                compare="time",
                target=variant.second_target,
            )
        )
    return figures
