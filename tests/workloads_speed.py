"""Functions the batching tests run in pool workers (importable, so every start method can)."""

from __future__ import annotations

import sys
from typing import Any


def calls_in_batch(x: Any) -> int:
    """How many calls the worker's current batch holds: read from the worker loop's frame
    (``_worker._Worker._run_batch``), so a test sees how tasks were grouped for transport.
    -1 when not run by the pool's worker loop."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_run_batch" and "batch" in frame.f_locals:
            return len(frame.f_locals["batch"].calls)
        frame = frame.f_back  # type: ignore[assignment]
    return -1


def fail_on_seven(x: int) -> int:
    if x == 7:
        raise ValueError(f"item {x} is bad")
    return x * x


def chunk_items(x: int) -> int:
    """For item 0, how many items its call holds (the map chunk it belongs to): read from
    the frame of the worker's call runner (``_outcome.CallRunner.run``), as
    ``calls_in_batch`` reads the batch; -1 when not run by a pool's call runner. Other
    items return 0 at once, so the function stays trivial to run."""
    if x != 0:
        return 0
    frame = sys._getframe(1)
    while frame is not None:
        payload = frame.f_locals.get("payload") if frame.f_code.co_name == "run" else None
        if isinstance(payload, (list, tuple, range)):
            return len(payload)
        frame = frame.f_back  # type: ignore[assignment]
    return -1
