"""How the benchmarks measure, compare and report.

Every figure sets manycore beside a baseline measured in the same run, in the same process
where it can be, and reports their ratio against the target an issue set: the stdlib, or a
peer (joblib, mpire, pebble: reference figures, with no target). On a noisy, shared
machine only such ratios mean anything; absolute times are kept for context.

Measuring rules (``measure``):

* warm-up first: each call runs once untimed (or a smaller warm-up call runs), so worker
  start-up, imports and caches are not in the figures;
* repeats are interleaved, manycore, stdlib, manycore, stdlib, ..., so noise from a
  neighbour lands on both sides alike;
* the figure is the median of the repeats, with the spread (half the range) beside it;
* every timed call's result is checked, and every call runs under a deadline, so a wrong
  answer or a hang becomes an error in the table, never a stuck run.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from manycore._bench.guards import deadline
from manycore._bench.render import Progress, format_rate, format_ratio, format_seconds, render_table
from manycore._bench.stats import Stats, summarize

__all__ = [
    "CALL_DEADLINE_S",
    "Call",
    "Context",
    "Figure",
    "Measurement",
    "measure",
    "opened",
    "render_figures",
]

# A measured call that takes this long is treated as hung: the slowest legitimate one (the
# stdlib executor's 20k one-item submits) takes about 3 s on a 2-core machine.
CALL_DEADLINE_S = 120.0
# Closing a pool waits for its workers to exit; more than this means it is stuck.
CLOSE_DEADLINE_S = 30.0


@dataclass
class Context:
    """What every benchmark suite is given: sizes, repeats, and where to report progress."""

    workers: int
    quick: bool
    repeats: int
    root: Path  # the repository, for subprocesses that import benchmarks.workloads
    progress: Progress
    notes: list[str] = field(default_factory=list)  # for the report, below the table

    def note(self, text: str) -> None:
        """Add a line to the report's notes (and show it in the progress log)."""
        if text not in self.notes:
            self.notes.append(text)
        self.progress(text)

    def size(self, full: int, quick: int) -> int:
        """An input size: ``full`` normally, ``quick`` under ``--quick``."""
        return quick if self.quick else full


@dataclass
class Measurement:
    """One timed call, repeated: seconds per call, and how many items each call handled."""

    label: str
    items: int = 1
    stats: Stats | None = None
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.stats.median if self.stats is not None else math.nan

    @property
    def rate(self) -> float:
        """Items per second at the median time."""
        return self.items / self.seconds if self.stats is not None else math.nan

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"label": self.label, "items": self.items, "error": self.error}
        if self.stats is not None:
            data["seconds"] = self.stats.as_dict()
            data["items_per_s"] = self.rate
        return data


@dataclass
class Figure:
    """manycore against a baseline (the stdlib, or a peer), with the ratio an issue asks for.

    ``compare="speed"``: the ratio is manycore's items/s over the baseline's (higher is
    better; the same as the time ratio inverted when both handled the same items).
    ``compare="time"``: the ratio is manycore's time over the baseline's (lower is better).
    A figure with no target is a reference: shown for context, never passed or missed.
    Figures against peers are references: the issues set targets against the stdlib.
    """

    suite: str
    name: str
    subject: Measurement
    baseline: Measurement
    compare: str  # "speed" or "time"
    target: float | None = None
    show: str = "time"  # how to print the values: "time" (per call) or "rate" (items/s)
    baseline_kind: str = "stdlib"  # or "peer"

    @property
    def ratio(self) -> float:
        if self.subject.stats is None or self.baseline.stats is None:
            return math.nan
        if self.compare == "speed":
            return self.subject.rate / self.baseline.rate
        return self.subject.seconds / self.baseline.seconds

    @property
    def failed(self) -> bool:
        """Whether this figure is an error that fails the run: manycore's side failed, or
        the stdlib's did. A peer that fails is reported in the table, not in the exit status."""
        return bool(self.subject.error or (self.baseline.error and self.baseline_kind == "stdlib"))

    @property
    def verdict(self) -> str:
        if self.subject.error or self.baseline.error:
            return "error"
        if self.target is None:
            return "reference"
        met = self.ratio >= self.target if self.compare == "speed" else self.ratio <= self.target
        return "ok" if met else "MISSED"

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f"{'>=' if self.compare == 'speed' else '<='} {self.target:g}x"

    def as_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "name": self.name,
            "compare": self.compare,
            "ratio": None if math.isnan(self.ratio) else self.ratio,
            "target": self.target,
            "verdict": self.verdict,
            "manycore": self.subject.as_dict(),
            "baseline_kind": self.baseline_kind,
            "baseline": self.baseline.as_dict(),
        }

    def summary(self) -> str:
        """One line for the progress log."""
        if self.verdict == "error":
            errors = "; ".join(e for e in (self.subject.error, self.baseline.error) if e)
            return f"{self.name}: error: {errors}"
        return (
            f"{self.name}: {self.subject.label} {_value(self, self.subject)} vs "
            f"{self.baseline.label} {_value(self, self.baseline)} -> "
            f"{format_ratio(self.ratio)} (target {self.target_text}) {self.verdict}"
        )


@dataclass
class Call:
    """One thing to time: ``run()`` does the work; ``check(result)`` says it was right."""

    measurement: Measurement
    run: Callable[[], Any]
    check: Callable[[Any], bool] = field(default=lambda result: True)
    warmup: Callable[[], Any] | None = None  # default: one untimed run()
    samples: list[float] = field(default_factory=list)


def measure(ctx: Context, title: str, calls: Sequence[Call]) -> None:
    """Warm up, then time ``calls`` in interleaved rounds; fills each call's measurement."""
    ctx.progress(f"{title}: warming up")
    live = list(calls)

    def fail(call: Call, error: str) -> None:
        call.measurement.error = error
        ctx.progress(f"  {call.measurement.label} failed: {error}")
        live.remove(call)

    for call in list(live):
        try:
            with deadline(CALL_DEADLINE_S, f"{call.measurement.label} (warm-up)"):
                (call.warmup or call.run)()
        except Exception as exc:
            fail(call, describe(exc))

    for round_no in range(1, ctx.repeats + 1):
        timings = []
        for call in list(live):
            try:
                with deadline(CALL_DEADLINE_S, call.measurement.label):
                    start = time.perf_counter()
                    result = call.run()
                    elapsed = time.perf_counter() - start
            except Exception as exc:
                fail(call, describe(exc))
                continue
            if not call.check(result):
                fail(call, "returned a wrong result")
                continue
            call.samples.append(elapsed)
            timings.append(f"{call.measurement.label} {format_seconds(elapsed)}")
        ctx.progress(f"  round {round_no}/{ctx.repeats}: " + ", ".join(timings))

    for call in calls:
        if call.samples and call.measurement.error is None:
            call.measurement.stats = summarize(call.samples)


def describe(exc: BaseException) -> str:
    """``TypeName: first line of the message``."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


@contextlib.contextmanager
def opened(ctx: Context, label: str, pool: Any) -> Iterator[Any]:
    """Yield ``pool``, then close it (``close()``+``join()`` or ``shutdown()``) under a deadline.

    A pool that does not close in time is terminated; one that cannot be terminated either
    is reported and left behind, so the remaining benchmarks still run.
    """
    try:
        yield pool
    finally:
        try:
            with deadline(CLOSE_DEADLINE_S, f"closing {label}"):
                if hasattr(pool, "shutdown"):
                    pool.shutdown(wait=True)
                else:
                    pool.close()
                    pool.join()
        except Exception as exc:
            ctx.progress(f"closing {label} failed ({describe(exc)}); terminating it")
            try:
                with deadline(CLOSE_DEADLINE_S, f"terminating {label}"):
                    if hasattr(pool, "shutdown"):
                        pool.shutdown(wait=False, cancel_futures=True)
                    else:
                        pool.terminate()
            except Exception as again:
                ctx.progress(f"terminating {label} failed too: {describe(again)}")


def _value(figure: Figure, m: Measurement) -> str:
    if m.stats is None:
        return "failed" if m.error else "-"
    text = format_rate(m.rate) if figure.show == "rate" else format_seconds(m.seconds)
    return f"{text} ±{m.stats.spread:.0%}"


def render_figures(figures: Sequence[Figure]) -> list[str]:
    """The markdown table of figures: one row each, manycore beside the stdlib or a peer.

    The cells hold values only; the figure's name says what ran (the JSON keeps the full
    label of each side).
    """
    headers = ["figure", "manycore", "baseline", "ratio", "target", "result"]
    rows = [
        [
            f.name,
            _value(f, f.subject),
            _value(f, f.baseline),
            format_ratio(f.ratio),
            f.target_text,
            f.verdict,
        ]
        for f in figures
    ]
    return render_table(headers, rows, [False, True, True, True, True, False])
