"""Repeated measurements of one quantity, summarized as the median and its spread.

On a noisy, shared machine one timing means little: the bench and ``benchmarks/`` repeat
each call, interleaved with the other systems', and report the median of the repeats with
half their range beside it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["Stats", "summarize"]


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
