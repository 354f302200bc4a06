"""Presenting numbers: units, markdown tables, progress lines and the comparison plot.

Text first: ``format_seconds``, ``format_rate`` and ``format_ratio`` give three significant
digits, ``render_table`` pads a markdown table so it also reads well in a terminal, and
``Progress`` stamps each line on stderr with the elapsed time. ``draw_comparison`` draws
``Panel``s of ``Bar``s with matplotlib, imported only when it is called.
"""

from __future__ import annotations

import importlib
import math
import sys
import textwrap
import time
from dataclasses import dataclass
from typing import Any, Sequence, TextIO

from .optional import MissingExtra, import_optional

__all__ = [
    "BAR_COLOURS",
    "Bar",
    "Panel",
    "Progress",
    "draw_comparison",
    "format_rate",
    "format_ratio",
    "format_seconds",
    "render_table",
]


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
