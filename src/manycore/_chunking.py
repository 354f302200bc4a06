"""How many items go into one chunk, from measured run times.

The trade-off: every chunk costs a fixed overhead (pickling a frame, two socket writes, a
wake-up on each side: tens of microseconds), so chunks of trivial items must be large; but
a chunk is the unit of load balancing and of result latency, so chunks of slow items must
be small. The sizer aims at ``TARGET_SECONDS`` of work per chunk, measured by the workers.

* It starts at one item, since nothing is known: a first chunk of 1 s items must not be
  a hundred of them. (A map whose function the pool has mapped before starts from that
  measurement instead.)
* A call's run time is a fixed cost (rebuilding the arguments' list, encoding the
  result list: a few microseconds) plus its items' work, and only the work grows with
  the chunk. A call shorter than ``TRUSTED_SECONDS`` may be mostly that fixed cost (a
  one-item call of ``x*x`` takes ~3 us, where the work is ~0.1 us), so the sizer takes
  the shortest such call it has seen (at most ``FIXED_COST_MAX``) as the fixed cost and
  counts only the rest as work, and at least ``MIN_WORK_SHARE`` of the call. Without
  that, a map that follows a ``chunksize=1`` map of the same function started from
  small chunks, and so did every map after a one-item probe. What is left of a short
  call is still noisy, and its noise only adds, so a short call may lower the estimate,
  never raise it; a longer call raises it at most ``MAX_RISE`` times, so one call slowed
  by a busy machine cannot undo what thousands measured. The pool's single tasks are
  whole calls (``calls=True``): their fixed cost is theirs, and is counted.
* With a known total it never gives a worker more than ``1/BALANCE_SHARE`` of its share of
  the remaining input, so the tail of a map stays balanced (the stdlib's ``map`` rule),
  unless that would cut chunks below ``floor`` seconds of work (``FLOOR_SECONDS``; the
  Dask backend raises it, since its tasks cost far more), where overhead would
  dominate. That rule also bounds the harm of a wrong estimate, so the size may jump to
  its target at once. Nor does the floor give one chunk more than an even split of the
  whole input among the workers (``total``): a map of 10k trivial items goes out as two
  halves, not as one chunk for one worker and a scrap for the other.
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
# A call that ran at least this long measures its items' work (a fixed cost of a few
# microseconds is under 1% of it); a shorter one may be mostly fixed cost.
TRUSTED_SECONDS = 0.001
# The most of a short call's time taken as its fixed cost: measured at 2-4 us on a
# loaded 2-core machine, so this leaves room for slower ones; and the least of its time
# counted as work. Together they bound how far a short call can lower the estimate:
# chunks of items that take under ~50 us may come out up to 10x the target, within the
# balance rule, and only until a chunk of them has run for ``TRUSTED_SECONDS``.
FIXED_COST_MAX = 50e-6
MIN_WORK_SHARE = 0.1
MAX_GROWTH = 16
MAX_RISE = 4  # a measured item time rises at most this many times per call recorded
BALANCE_SHARE = 4
_SMOOTHING = 0.5


class ChunkSizer:
    """Picks chunk sizes for one stream of similar items (one map call, or a pool's tasks)."""

    def __init__(self, workers: int, fixed: int | None = None, calls: bool = False) -> None:
        if fixed is not None and fixed < 1:
            raise ValueError(f"chunksize must be a positive integer, not {fixed!r}")
        self.workers = max(1, workers)
        self.fixed = fixed
        self.calls = calls  # its items are whole calls (single tasks): no fixed cost apart
        self.per_item: float | None = None  # smoothed seconds of work per item
        self.per_call: float | None = None  # smoothed seconds per call, fixed cost included
        self.shortest: float | None = None  # the shortest short call: its fixed cost, at most
        self.total: int | None = None  # a map's input size, when its job knows it
        self.largest = 0  # the largest size handed out so far
        self.floor = FLOOR_SECONDS  # the balance rule's floor (a backend may raise it)

    def record(self, items: int, elapsed: float) -> None:
        """Feed back that a call of ``items`` items took ``elapsed`` seconds in a worker (for
        a ``calls`` sizer: ``items`` calls took ``elapsed`` seconds in all)."""
        if items <= 0:
            return
        if not self.calls:
            if self.per_call is None:
                self.per_call = elapsed
            else:
                self.per_call += _SMOOTHING * (elapsed - self.per_call)
            if elapsed < TRUSTED_SECONDS:  # perhaps mostly fixed cost (module docstring)
                if self.shortest is None or elapsed < self.shortest:
                    self.shortest = elapsed
                fixed = min(self.shortest, FIXED_COST_MAX)
                work = max(elapsed - fixed, elapsed * MIN_WORK_SHARE)
                # What is left is still noisy, and the noise of a short call only adds: it
                # may lower the estimate, never raise it.
                sample = max(work, 1e-7) / items
                if self.per_item is None or sample < self.per_item:
                    self.per_item = sample
                return
        sample = max(elapsed, 1e-7) / items
        if self.per_item is None:
            self.per_item = sample
        elif self.calls:
            self.per_item += _SMOOTHING * (sample - self.per_item)
        else:
            # One call of a map that ran long because its worker lost its CPU for a while
            # must not undo what many short ones measured: the estimate rises MAX_RISE
            # times a call at most, so a real change takes a few calls to be followed.
            smoothed = self.per_item + _SMOOTHING * (sample - self.per_item)
            self.per_item = min(smoothed, self.per_item * MAX_RISE)

    def batch_chunks(self, remaining: int | None = None) -> int:
        """Chunks of an explicit ``chunksize`` to send in one batch: about ``TARGET_SECONDS``
        of work by the measured item time, and with ``remaining`` items known, no more than
        the balance rule gives a worker (unless that is under ``floor`` seconds of work).
        One while nothing is measured, or without an explicit ``chunksize``."""
        if self.fixed is None or self.per_item is None:
            return 1
        # A chunk's whole call, fixed cost included, once one is measured (a job that
        # starts from the function's remembered item time has only that).
        chunk_time = self.per_call if self.per_call is not None else self.per_item * self.fixed
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
                if self.total is not None:  # never more than an even split of the input
                    floor = min(floor, math.ceil(self.total / self.workers))
                size = min(size, max(share, floor))
        if remaining is not None:
            size = min(size, remaining)
        size = max(1, size)
        self.largest = max(self.largest, size)
        return size
