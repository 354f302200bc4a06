"""Pool construction to first result, cold and warm.

Figures (issue 2), ``Pool(workers)`` with the default start method:

* cold: in a fresh interpreter, from just before ``Pool(...)`` to the first ``apply``
  result, at most 1.5x the stdlib's fork ``Pool`` measured the same way;
* second pool: the same, for a further pool in that process (after the previous one is
  terminated), at most 1.0x the stdlib fork pool's second pool. A few milliseconds is
  mostly noise, so each subprocess starts nine more pools in turn and reports their median.

Figures (issue 16), the same with ``context="spawn"`` and ``context="forkserver"``: at most
1.0x the stdlib's pool of the same start method, cold (and for spawn, the second pool too).

Each measurement is a script run in a fresh ``python`` subprocess, with the function it
maps defined in the script itself (as users write it; the stdlib's spawn and forkserver
workers import the script as ``__mp_main__`` to find it). The script imports everything
first (imports are not timed: both sides pay theirs once per program anyway), times the
first pool, terminates it, then times the further pools, and prints the times as JSON. The
variants run interleaved, after one untimed warm-up run each that warms the page cache and
leaves manycore's bytecode in ``__pycache__``: the subprocesses run without
``PYTHONDONTWRITEBYTECODE``, since an installed package has its bytecode (the installer
compiles it) as the stdlib has its own; with the variable set, every spawned worker would
compile manycore's modules anew, and the figure would time the compiler.

Reference rows set manycore's default beside the stdlib's forkserver and spawn, which are
what a program gets when it avoids plain fork (and the defaults on Python 3.14 and macOS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manycore._bench.render import format_seconds
from manycore._bench.stats import summarize

from ._harness import CALL_DEADLINE_S, Context, Figure, Measurement, describe

__all__ = ["run"]

SUITE = "startup"

# Pools started after the first in each subprocess; their median is the "second pool"
# sample. One pool start takes a few milliseconds, so a single one is mostly noise.
LATER_POOLS = 9  # five left the stdlib's figure spread by up to ±90% within a run

_SCRIPT = """\
import json, time
import multiprocessing, multiprocessing.pool
{setup}

def square(x):
    return x * x

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

if __name__ == "__main__":
    cold = first_result()
    later = sorted(first_result() for _ in range({later}))
    print(json.dumps({{"cold": cold, "second": later[len(later) // 2]}}))
"""

_MANYCORE = """\
import manycore
from manycore import Pool  # the pool's modules load on first use: load them here, untimed
def make_pool():
    return Pool({workers}{context})
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


def _run_once(ctx: Context, variant: _Variant, script: Path) -> dict[str, Any]:
    script.write_text(_SCRIPT.format(setup=variant.setup, later=LATER_POOLS))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ctx.root), env.get("PYTHONPATH")) if p)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # see the module docstring
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", str(script)],
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

    def manycore(label: str, context: str | None) -> _Variant:
        extra = "" if context is None else f", context={context!r}"
        return _Variant(label, _MANYCORE.format(workers=w, context=extra))

    def stdlib(method: str) -> _Variant:
        return _Variant(
            f"multiprocessing {method} Pool",
            _STDLIB.format(method=method, workers=w),
            short=f"stdlib {method}",
        )

    mc_default = manycore("manycore.Pool (default)", None)
    mc_spawn = manycore("manycore.Pool (spawn)", "spawn")
    mc_forkserver = manycore("manycore.Pool (forkserver)", "forkserver")
    mp_fork, mp_forkserver, mp_spawn = stdlib("fork"), stdlib("forkserver"), stdlib("spawn")
    # (manycore's side, the stdlib's, cold target, second-pool target); no target: reference
    pairs: list[tuple[_Variant, _Variant, float | None, float | None]] = [
        (mc_default, mp_fork, 1.5, 1.0),
        (mc_default, mp_forkserver, None, None),
        (mc_default, mp_spawn, None, None),
        (mc_spawn, mp_spawn, 1.0, 1.0),
        (mc_forkserver, mp_forkserver, 1.0, None),
    ]
    variants = [mc_default, mp_fork, mc_forkserver, mp_forkserver, mc_spawn, mp_spawn]
    ctx.progress(f"pool start to first result, Pool({w}), each run in a fresh interpreter")
    with tempfile.TemporaryDirectory(prefix="manycore-bench-") as tmp:
        script = Path(tmp) / "first_result.py"
        for round_no in range(ctx.repeats + 1):  # round 0 is the warm-up
            timings = []
            for variant in variants:
                if variant.error is not None:
                    continue
                try:
                    data = _run_once(ctx, variant, script)
                except Exception as exc:
                    variant.error = describe(exc)
                    ctx.progress(f"  {variant.label} failed: {variant.error}")
                    continue
                if round_no > 0:
                    variant.cold.append(float(data["cold"]))
                    variant.second.append(float(data["second"]))
                timings.append(
                    f"{variant.label} {format_seconds(data['cold'])} / "
                    f"{format_seconds(data['second'])}"
                )
            what = "warm-up" if round_no == 0 else f"round {round_no}/{ctx.repeats}"
            ctx.progress(f"  {what} (cold / second): " + ", ".join(timings))

    figures = []
    for ours, theirs, cold_target, second_target in pairs:
        mc_cold, mc_second = ours.measurements()
        cold, second = theirs.measurements()
        method = "" if ours is mc_default else f" {ours.label.split('(')[1].rstrip(')')}"
        figures.append(
            Figure(
                SUITE,
                f"Pool({w}){method} start to first result, cold, vs {theirs.short}",
                mc_cold,
                cold,
                compare="time",
                target=cold_target,
            )
        )
        figures.append(
            Figure(
                SUITE,
                f"Pool({w}){method} start to first result, second pool, vs {theirs.short}",
                mc_second,
                second,
                compare="time",
                target=second_target,
            )
        )
    return figures
