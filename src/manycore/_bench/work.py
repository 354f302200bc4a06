"""Workloads and measuring tools for ``manycore bench`` and the ``benchmarks/`` suite.

The workload functions run in worker processes of every pool being compared, so they live
in an importable module: the stdlib pools pickle functions by reference and could not send
anything defined in ``__main__`` under spawn or forkserver.

The measuring tools keep the numbers honest on a noisy, shared machine: several repeats,
reported as the median with the spread around it, and every ratio taken between two
measurements of the same run. ``deadline`` turns a hang into an error, so one stuck pool
cannot stop a whole benchmark run.

It also finds the peers (joblib, mpire, pebble, faster-fifo) by name, measures how many
CPUs' worth of work the machine really delivers (``parallel_capacity``), and draws the
comparison (``draw_comparison``, with matplotlib). Every optional package is imported by
name, only when it is used, so none of them is a dependency.

This module imports nothing from the rest of manycore, so a worker that unpickles one of
its functions does not import the engine a second time.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import multiprocessing
import os
import signal
import statistics
import sys
import textwrap
import threading
import time
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterator, Sequence, TextIO

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = [
    "CAPACITY_NOTE_BELOW",
    "CRASH_ITEM",
    "PEERS",
    "Bar",
    "BenchTimeout",
    "Capacity",
    "MissingExtra",
    "Panel",
    "Peer",
    "PeerStatus",
    "Progress",
    "Stats",
    "array_sum",
    "calibrate_spin",
    "capacity_note",
    "deadline",
    "draw_comparison",
    "exit_on_crash_item",
    "find_peers",
    "format_rate",
    "format_ratio",
    "format_seconds",
    "identity",
    "ignore_fork_warnings",
    "import_optional",
    "load_average",
    "parallel_capacity",
    "peers_note",
    "render_table",
    "sleep_ms",
    "spin",
    "square",
    "stop_joblib_workers",
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


def array_sum(array: Any) -> float:
    """Data movement: the sum of a NumPy array, trivial work next to sending the array."""
    return float(array.sum())


# The item on which ``exit_on_crash_item`` ends its worker.
CRASH_ITEM = -1


def exit_on_crash_item(x: int) -> int:
    """The crash workload: ends the worker with ``os._exit(1)`` on ``CRASH_ITEM``.

    That is how a segfault in an extension, a C library's ``exit()`` or the OOM killer looks
    to the pool: the worker is gone without a word. Other items return ``x * x`` after
    10 ms, so the crash happens while other tasks are in flight.
    """
    if x == CRASH_ITEM:
        os._exit(1)
    time.sleep(0.01)
    return x * x


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


# --- optional packages: numpy, matplotlib and the peers ------------------------------------


class MissingExtra(Exception):
    """An optional package a feature needs is not installed; the message names the install."""


def import_optional(module: str) -> ModuleType | None:
    """The module, or None when it is not installed (or cannot be imported here)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


@dataclass(frozen=True)
class Peer:
    """A library that does what manycore does, compared with it when installed."""

    name: str  # the distribution, as pip knows it
    module: str  # what to import
    measured_as: str  # how the comparison uses it, or why it does not


# Only pools are measured. faster-fifo is a faster multiprocessing.Queue: it is detected and
# reported so the table says why it has no row.
PEERS: tuple[Peer, ...] = (
    Peer("joblib", "joblib", "joblib.Parallel, loky backend"),
    Peer("mpire", "mpire", "mpire.WorkerPool"),
    Peer("pebble", "pebble", "pebble.ProcessPool"),
    Peer("faster-fifo", "faster_fifo", "a queue, not a pool: not measured here"),
)


@dataclass(frozen=True)
class PeerStatus:
    """Whether a peer can be used in this environment."""

    peer: Peer
    version: str | None = None  # None: not installed
    error: str | None = None  # installed, but importing it failed

    @property
    def usable(self) -> bool:
        return self.version is not None and self.error is None

    def describe(self) -> str:
        """``mpire 2.10.2``, ``pebble (not installed)`` or ``x 1.0 (import failed: ...)``."""
        if self.version is None:
            return f"{self.peer.name} (not installed)"
        if self.error is not None:
            return f"{self.peer.name} {self.version} (import failed: {self.error})"
        return f"{self.peer.name} {self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.peer.name,
            "version": self.version,
            "usable": self.usable,
            "error": self.error,
            "measured_as": self.peer.measured_as,
        }


def find_peers() -> dict[str, PeerStatus]:
    """Every peer in ``PEERS``, by name: installed or not, and importable or not."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, PeerStatus] = {}
    for peer in PEERS:
        try:
            installed = version(peer.name)
        except PackageNotFoundError:
            found[peer.name] = PeerStatus(peer)
            continue
        try:
            importlib.import_module(peer.module)
        except Exception as exc:  # a broken install: say so instead of failing the run
            first = (str(exc).strip().splitlines() or [""])[0]
            found[peer.name] = PeerStatus(peer, installed, f"{type(exc).__name__}: {first}")
            continue
        found[peer.name] = PeerStatus(peer, installed)
    return found


def peers_note(peers: dict[str, PeerStatus], compared: set[str]) -> str:
    """One line for a report: which peers were measured (those in ``compared`` that are
    usable), which are installed but not compared, and which are missing."""
    measured = [s.describe() for s in peers.values() if s.usable and s.peer.name in compared]
    detected = [
        f"{s.describe()} ({s.peer.measured_as})"
        for s in peers.values()
        if s.usable and s.peer.name not in compared
    ]
    broken = [s.describe() for s in peers.values() if s.version is not None and not s.usable]
    missing = [s.peer.name for s in peers.values() if s.version is None]
    parts = []
    if measured:
        parts.append("measured " + ", ".join(measured))
    if detected:
        parts.append("installed but not compared: " + ", ".join(detected))
    if broken:
        parts.append("installed but not importable: " + ", ".join(broken))
    if missing:
        parts.append(
            f"not installed: {', '.join(missing)} (pip install 'manycore[bench]' adds them)"
        )
    return "peers: " + "; ".join(parts) + "."


def stop_joblib_workers(kill: bool = False) -> None:
    """Shut down the loky executor that joblib keeps for reuse, if there is one.

    joblib leaves it running for 300 s after the last ``Parallel`` call and offers no
    public handle on it; a benchmark that leaves no process behind must stop it itself.
    """
    module = import_optional("joblib.externals.loky.reusable_executor")
    executor = getattr(module, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=kill)


# --- parallel capacity ------------------------------------------------------------------------


@dataclass(frozen=True)
class Capacity:
    """How many CPUs' worth of pure-Python work ``processes`` spinning processes got done.

    Each round counts the work one process does alone in a fixed wall-clock window, then
    the work all of them do together in another. The capacity is the median of the
    together counts over the best of the alone counts: a neighbour that steals time from a
    solo window must not inflate the result. On an idle machine with that many real cores
    it is close to ``processes``; on a shared, throttled (cgroup quota) or busy one, or with
    hyper-threads for cores, it is lower, and no pool can do better on CPU-bound work.
    """

    processes: int
    alone: tuple[int, ...]  # work done by one process, per round
    together: tuple[int, ...]  # work done by all of them, per round
    seconds: float  # the window of each count

    @property
    def cpus(self) -> float:
        if not self.alone or not self.together:
            return float(self.processes)
        return statistics.median(self.together) / max(1, *self.alone)

    def as_dict(self) -> dict[str, Any]:
        return {
            "processes": self.processes,
            "cpus": self.cpus,
            "work_alone": list(self.alone),
            "work_together": list(self.together),
            "window_s": self.seconds,
        }


# A capacity below this share of the usable CPUs gets a note: on an idle machine the
# probe's own noise stays well above it.
CAPACITY_NOTE_BELOW = 0.8


def capacity_note(capacity: Capacity, usable_cpus: int, best_speedup: float | None = None) -> str:
    """One line for a report: the measured capacity, and a warning when it is clearly
    below ``usable_cpus`` (with ``best_speedup``, the best CPU-bound speedup measured)."""
    cpus = capacity.cpus
    text = (
        f"parallel capacity: {capacity.processes} processes spinning together did "
        f"{cpus:.2f}x the work of one (ideal {usable_cpus}x, the usable CPUs)."
    )
    if cpus >= CAPACITY_NOTE_BELOW * usable_cpus:
        return text
    seen = f"; the best CPU-bound speedup measured was {best_speedup:.2f}x" if best_speedup else ""
    return (
        f"note: this machine gave fewer CPUs than it claims: {capacity.processes} processes "
        f"spinning together did only {cpus:.2f}x the work of one, not {usable_cpus}x (it is "
        "shared, throttled or busy, or its CPUs are hyper-threads). No pool can go much "
        f"beyond {cpus:.1f}x on CPU-bound work here{seen}."
    )


def _capacity_worker(conn: Connection) -> None:
    """In a probe process: for each ``(start, stop)`` window received, spin from ``start``
    to ``stop`` (``time.monotonic``, one clock for every process) and send back how many
    slices of work were done; ``None`` ends the process."""
    conn.send("ready")
    while True:
        window = conn.recv()
        if window is None:
            conn.close()
            return
        start, stop = window
        while time.monotonic() < start:
            pass  # spin rather than sleep: the window opens within a millisecond for all
        slices = 0
        while time.monotonic() < stop:
            spin(2_000)  # about 0.1 ms
            slices += 1
        conn.send(slices)


def parallel_capacity(processes: int, seconds: float = 0.3, rounds: int = 3) -> Capacity:
    """Measure how many CPUs' worth of CPU-bound work ``processes`` processes get done.

    Takes about ``2 * rounds * seconds`` plus process start-up. The probe processes are
    forked when the caller has a single thread (fork is then safe and cheap), otherwise
    spawned; they are always joined (or killed) before this returns.
    """
    if processes < 2:
        return Capacity(processes, (), (), seconds)
    method = "fork" if threading.active_count() == 1 else "spawn"
    if method not in multiprocessing.get_all_start_methods():
        method = "spawn"
    context: Any = multiprocessing.get_context(method)
    conns: list[Connection] = []
    procs: list[Any] = []
    try:
        for _ in range(processes):
            parent, child = context.Pipe()
            proc = context.Process(target=_capacity_worker, args=(child,), daemon=True)
            proc.start()
            child.close()
            conns.append(parent)
            procs.append(proc)
        for conn in conns:  # every process is up before the first window opens
            _receive(conn, 60.0)
        alone: list[int] = []
        together: list[int] = []
        for _ in range(rounds):
            alone.append(_spin_window(conns[:1], seconds)[0])
            together.append(sum(_spin_window(conns, seconds)))
        return Capacity(processes, tuple(alone), tuple(together), seconds)
    finally:
        for conn in conns:
            try:
                conn.send(None)
            except OSError:
                pass
            conn.close()
        for proc in procs:
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join()


def _spin_window(conns: Sequence[Connection], seconds: float) -> list[int]:
    # The window opens 20 ms from now, time enough for every process to receive it.
    start = time.monotonic() + 0.02
    for conn in conns:
        conn.send((start, start + seconds))
    return [int(_receive(conn, seconds + 30.0)) for conn in conns]


def _receive(conn: Connection, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise BenchTimeout(f"a parallel-capacity probe process did not answer in {timeout:g} s")
    return conn.recv()


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


# --- drawing the comparison (matplotlib) ------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One system's value in a panel of ``draw_comparison``."""

    label: str
    seconds: float | None  # None: no bar (failed, not run); ``text`` says why
    text: str = ""  # written after the end of the bar
    group: str = "stdlib"  # a key of BAR_COLOURS
    low: float | None = None  # the range of the repeats, drawn as an error bar
    high: float | None = None


@dataclass(frozen=True)
class Panel:
    """One chart of ``draw_comparison``: a horizontal bar per system, time along x."""

    title: str
    subtitle: str
    bars: tuple[Bar, ...]
    xlabel: str = "median time (shorter is faster); whiskers: range of the repeats"


BAR_COLOURS = {
    "manycore": "#1f6fb4",
    "stdlib": "#8c8c8c",
    "peer": "#e8912d",
    "reference": "#c9c9c9",  # serial and threads
    # the crash panel
    "ok": "#2ca02c",
    "broken": "#f2c12e",
    "hung": "#d62728",
    "wrong": "#d62728",
}
_LEGEND = (("manycore", "manycore"), ("stdlib", "stdlib"), ("peer", "peers"))
# A panel whose times span more than this factor gets a log axis; narrower ones read
# better on a linear axis that starts at zero.
_LOG_SPAN = 20.0


def draw_comparison(path: str, title: str, panels: Sequence[Panel], notes: Sequence[str]) -> None:
    """Draw ``panels``, two to a row, and ``notes`` into the image file ``path``.

    The format follows the suffix of ``path`` (``.png``, ``.svg``, ``.pdf``). The notes go
    into the grid's empty cell when there is one, else below the panels.

    Raises:
        MissingExtra: matplotlib is not installed.
    """
    if import_optional("matplotlib") is None:
        raise MissingExtra(
            "drawing the comparison needs matplotlib: pip install matplotlib "
            "(or pip install 'manycore[bench]')"
        )
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")  # draw into a file, never open a window
    plt: Any = importlib.import_module("matplotlib.pyplot")
    patches: Any = importlib.import_module("matplotlib.patches")

    cols = 1 if len(panels) < 2 else 2
    rows = math.ceil(len(panels) / cols)
    spare = rows * cols > len(panels)
    lines = [line for text in notes for line in textwrap.wrap(text, 80 if spare else 160)]
    below = 0.0 if spare or not lines else 0.16 * len(lines) + 0.3  # inches for the notes
    tallest = max((len(p.bars) for p in panels), default=1)
    height = rows * (0.3 * tallest + 1.5) + below + 0.7
    fig, axes = plt.subplots(rows, cols, figsize=(8 * cols, height), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        _draw_panel(ax, panel)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if lines and spare:
        ax = axes.flat[len(panels)]
        ax.text(0.02, 0.98, "\n".join(lines), fontsize=8, va="top", ha="left", wrap=True)
    elif lines:
        fig.text(0.01, 0.01, "\n".join(lines), fontsize=8, va="bottom", ha="left")
    fig.suptitle(title, fontsize=13, fontweight="bold", x=0.01, ha="left")
    fig.legend(
        handles=[patches.Patch(color=BAR_COLOURS[key], label=text) for key, text in _LEGEND],
        loc="upper right",
        ncol=len(_LEGEND),
        frameon=False,
    )
    fig.tight_layout(rect=(0, below / height, 1, 1 - 0.5 / height))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _draw_panel(ax: Any, panel: Panel) -> None:
    values = [b.seconds for b in panel.bars if b.seconds is not None and b.seconds > 0]
    highs = [max(b.seconds, b.high or 0.0) for b in panel.bars if b.seconds]
    log = bool(values) and max(values) / min(values) > _LOG_SPAN
    if log:
        left = min(values) / 3
        right = max(highs) * 60  # room for the text after the longest bar
    else:
        left = 0.0
        right = max(highs, default=1.0) * 2.2
    for y, bar in enumerate(panel.bars):
        if bar.seconds is None or bar.seconds <= 0:
            ax.text(left * 1.1 if log else 0.0, y, " " + (bar.text or "no result"), va="center")
            continue
        error = None
        if bar.low is not None and bar.high is not None:
            error = [[bar.seconds - bar.low], [bar.high - bar.seconds]]
        colour = BAR_COLOURS.get(bar.group, BAR_COLOURS["stdlib"])
        ax.barh(y, bar.seconds - left, left=left, color=colour, height=0.7)
        if error is not None:
            ax.errorbar(bar.seconds, y, xerr=error, fmt="none", ecolor="black", capsize=2, lw=1)
        end = max(bar.seconds, bar.high or 0.0)
        ax.text(end * 1.12 if log else end + right * 0.015, y, bar.text, va="center")
    if log:
        ax.set_xscale("log")
    ax.set_xlim(left, right)
    ax.set_ylim(len(panel.bars) - 0.5, -0.5)  # the first system on top, as in the table
    ax.set_yticks(range(len(panel.bars)))
    ax.set_yticklabels([b.label for b in panel.bars])
    ax.xaxis.set_major_formatter(_seconds_formatter())
    ax.set_title(panel.title, loc="left", fontsize=10, fontweight="bold", pad=16)
    ax.text(0.0, 1.02, panel.subtitle, transform=ax.transAxes, va="bottom")
    ax.set_xlabel(panel.xlabel, fontsize=8)
    ax.tick_params(labelsize=8)
    for text in ax.texts:
        text.set_fontsize(8)
    ax.grid(axis="x", alpha=0.3)


def _seconds_formatter() -> Any:
    ticker: Any = importlib.import_module("matplotlib.ticker")
    return ticker.FuncFormatter(lambda value, _pos: format_seconds(value) if value > 0 else "0")
