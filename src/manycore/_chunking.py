"""How many items go into one chunk, from measured run times.

The trade-off: every chunk costs a fixed overhead (pickling a frame, two socket writes, a
wake-up on each side: tens of microseconds), so chunks of trivial items must be large; but
a chunk is the unit of load balancing and of result latency, so chunks of slow items must
be small. The sizer aims at ``TARGET_SECONDS`` of work per chunk, measured by the workers.

* It starts at one item, since nothing is known: a first chunk of 1 s items must not be
  a hundred of them. (A map whose function the pool has mapped before starts from that
  measurement instead.)
* With a known total it never gives a worker more than ``1/BALANCE_SHARE`` of its share of
  the remaining input, so the tail of a map stays balanced (the stdlib's ``map`` rule),
  unless that would cut chunks below ``floor`` seconds of work (``FLOOR_SECONDS``; the
  Dask backend raises it, since its tasks cost far more), where overhead would
  dominate. That rule also bounds the harm of a wrong estimate, so the size may jump to
  its target at once.
* With an unknown total (``imap`` over an iterator) it grows at most ``MAX_GROWTH`` times
  per step, so one noisy measurement cannot produce a chunk that runs for a minute.
* An explicit ``chunksize`` is honoured exactly as the unit of work (one call, one
  outcome, one retry or timeout); small chunks then travel several to a transport batch
  (``batch_chunks``), as many as make about ``TARGET_SECONDS`` of work, within the same
  balance rule, so ``chunksize=1`` does not pay a round trip per item.
"""

from __future__ import annotations

import math

__all__ = ["ChunkSizer"]

TARGET_SECONDS = 0.01  # ~10 ms of work per chunk: overhead below 1%, latency still small
FLOOR_SECONDS = 0.001  # the balance rule never cuts a chunk below ~1 ms of work
MAX_GROWTH = 16
BALANCE_SHARE = 4
_SMOOTHING = 0.5


class ChunkSizer:
    """Picks chunk sizes for one stream of similar items (one map call, or a pool's tasks)."""

    def __init__(self, workers: int, fixed: int | None = None) -> None:
        if fixed is not None and fixed < 1:
            raise ValueError(f"chunksize must be a positive integer, not {fixed!r}")
        self.workers = max(1, workers)
        self.fixed = fixed
        self.per_item: float | None = None  # smoothed seconds per item
        self.largest = 0  # the largest size handed out so far
        self.floor = FLOOR_SECONDS  # the balance rule's floor (a backend may raise it)

    def record(self, items: int, elapsed: float) -> None:
        """Feed back that ``items`` items took ``elapsed`` seconds in a worker."""
        if items <= 0:
            return
        sample = max(elapsed, 1e-7) / items
        if self.per_item is None:
            self.per_item = sample
        else:
            self.per_item += _SMOOTHING * (sample - self.per_item)

    def batch_chunks(self, remaining: int | None = None) -> int:
        """Chunks of an explicit ``chunksize`` to send in one batch: about ``TARGET_SECONDS``
        of work by the measured item time, and with ``remaining`` items known, no more than
        the balance rule gives a worker (unless that is under ``floor`` seconds of work).
        One while nothing is measured, or without an explicit ``chunksize``."""
        if self.fixed is None or self.per_item is None:
            return 1
        chunk_time = self.per_item * self.fixed
        count = max(1, int(TARGET_SECONDS / chunk_time))
        if remaining is not None:
            share = math.ceil(remaining / (self.fixed * self.workers * BALANCE_SHARE))
            count = min(count, max(share, int(self.floor / chunk_time)))
        return max(1, count)

    def next_size(self, remaining: int | None = None) -> int:
        """The size of the next chunk; ``remaining`` is the known number of items left."""
        if self.fixed is not None:
            size = self.fixed
        elif self.per_item is None:
            size = 1
        else:
            size = max(1, int(TARGET_SECONDS / self.per_item))
            if remaining is None:
                size = min(size, max(1, self.largest) * MAX_GROWTH)
            else:
                share = math.ceil(remaining / (self.workers * BALANCE_SHARE))
                floor = int(self.floor / self.per_item)
                size = min(size, max(share, floor))
        if remaining is not None:
            size = min(size, remaining)
        size = max(1, size)
        self.largest = max(self.largest, size)
        return size
