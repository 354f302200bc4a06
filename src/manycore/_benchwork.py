"""Workloads and measuring tools for ``manycore bench`` and the ``benchmarks/`` suite.

The workload functions run in worker processes of every pool being compared, so they live
in an importable module: the stdlib pools pickle functions by reference and could not send
anything defined in ``__main__`` under spawn or forkserver.

The measuring tools keep the numbers honest on a noisy, shared machine: several repeats,
reported as the median with the spread around it, and every ratio taken between two
measurements of the same run. ``deadline`` turns a hang into an error, so one stuck pool
cannot stop a whole benchmark run.

This module imports nothing from the rest of manycore, so a worker that unpickles one of
its functions does not import the engine a second time.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import statistics
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TextIO

__all__ = [
    "BenchTimeout",
    "Progress",
    "Stats",
    "calibrate_spin",
    "deadline",
    "format_rate",
    "format_ratio",
    "format_seconds",
    "identity",
    "ignore_fork_warnings",
    "load_average",
    "render_table",
    "sleep_ms",
    "spin",
    "square",
    "summarize",
]


# --- workloads (run in workers) -----------------------------------------------------------


def spin(n: int) -> int:
    """CPU-bound pure Python: ``n`` loop iterations that hold the GIL throughout."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def sleep_ms(ms: float) -> float:
    """I/O-bound stand-in: sleeps (releasing the GIL) and returns the milliseconds asked."""
    time.sleep(ms / 1000.0)
    return ms


def square(x: int) -> int:
    """A trivial task: the cost of running it is all overhead."""
    return x * x


def identity(x: Any) -> Any:
    """Returns its argument: for measuring how fast data moves."""
    return x


def calibrate_spin(seconds: float) -> int:
    """The ``n`` for which ``spin(n)`` takes about ``seconds`` on this machine, in this process.

    Uses the fastest of a few timings, so a burst of noise from a neighbour does not make
    the tasks shorter than intended.
    """
    probe = 20_000
    spin(probe)  # warm up
    best = min(_time_call(spin, probe) for _ in range(5))
    return max(1000, int(probe * seconds / max(best, 1e-9)))


def _time_call(fn: Any, arg: Any) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


# --- statistics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Repeated measurements of one quantity: the median, and how far the samples spread."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    @property
    def spread(self) -> float:
        """Half the range of the samples, relative to the median (0.05 reads "±5%")."""
        median = self.median
        if median <= 0 or len(self.samples) < 2:
            return 0.0
        return (self.high - self.low) / 2 / median

    def as_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "spread": self.spread,
            "samples": list(self.samples),
        }


def summarize(samples: Sequence[float]) -> Stats:
    """``Stats`` of one or more samples."""
    if not samples:
        raise ValueError("no samples to summarize")
    return Stats(tuple(samples))


# --- guarding against hangs -----------------------------------------------------------------


class BenchTimeout(Exception):
    """A measured call took longer than its deadline (the pool under test likely hung)."""


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Raise ``BenchTimeout`` in the main thread if the block runs longer than ``seconds``.

    A SIGALRM handler raises the exception; lock and condition waits are interruptible by
    signals on POSIX, exactly as Ctrl-C interrupts them, so this also ends a call that is
    blocked waiting for a pool that will never answer. Off the main thread, or where there
    is no SIGALRM, the block runs unguarded.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise BenchTimeout(f"{what} did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def ignore_fork_warnings() -> Iterator[None]:
    """Silence Python 3.12+'s warning about fork() in a multi-threaded process.

    The stdlib pools are measured as users run them, with their default start method; once
    another pool's threads exist, 3.12+ warns on each fork. The warning is about the very
    hazard manycore's default avoids, not about the measurement.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r".*use of fork\(\) may lead to deadlocks",
            category=DeprecationWarning,
        )
        yield


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages, or None where the platform has none."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


# --- presenting numbers -----------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    """``0.0421`` -> ``"42.1 ms"``; three significant digits from microseconds to minutes."""
    if math.isnan(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale or unit == "µs":
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def format_rate(per_second: float) -> str:
    """``123456.0`` -> ``"123k/s"``."""
    for unit, scale in (("M", 1e6), ("k", 1e3), ("", 1.0)):
        if per_second >= scale or unit == "":
            value = per_second / scale
            text = f"{value:.3g}" if value < 100 else f"{value:.0f}"
            return f"{text}{unit}/s"
    raise AssertionError("unreachable")


def format_ratio(ratio: float) -> str:
    """How many times faster, to about three digits.

    ``2.345`` -> ``"2.35x"``, ``66.56`` -> ``"66.6x"``, ``0.000671`` -> ``"0.00067x"``.
    """
    if math.isnan(ratio):
        return "-"
    if ratio >= 100:
        return f"{ratio:.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    if ratio >= 0.1:
        return f"{ratio:.2f}x"
    return f"{ratio:.2g}x"


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]
) -> list[str]:
    """A markdown table with its columns padded, so it also reads well in a terminal."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(cells, widths, right)]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, right))
        + "|"
    )
    return [line(headers), rule, *(line(row) for row in rows)]


class Progress:
    """Progress lines on stderr while a benchmark runs, each stamped with the elapsed time."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self._start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def __call__(self, message: str) -> None:
        if self._enabled:
            print(f"[{self.elapsed:5.1f}s] {message}", file=self._stream, flush=True)
