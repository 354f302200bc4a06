"""The board: one shared page where each pool worker says what it is running.

The local scheduler makes the board (``make_board``) and hands its descriptor to every
worker it starts; each worker maps it and writes into its own stride. Layout of worker
``i``'s stride, at byte ``i * BOARD_STRIDE``::

    BOARD_SLOT   <q d>   the running task's id (-1 when idle) and when it started
    BOARD_SKIPS  <4q>    ids of up to four tasks of its batches cancelled before they
                         started: the owner writes them, the worker skips them (-1: none)

The start time is on the clock that ``time.perf_counter`` and ``time.monotonic`` share on
Linux (CLOCK_MONOTONIC, machine-wide), so the owner can tell how long a task has run.

Guarantees: the worker writes only ``BOARD_SLOT`` of its own stride and the owner only
``BOARD_SKIPS``; each is a single aligned write of at most 32 bytes, read whole or a little
stale, never torn in a way that names a task of another worker.
"""

from __future__ import annotations

import mmap
import os
import struct

__all__ = [
    "BOARD_SKIPS",
    "BOARD_SLOT",
    "BOARD_STRIDE",
    "SKIPS",
    "make_board",
    "read_slot",
    "reset",
    "write_skips",
]

BOARD_SLOT = struct.Struct("<qd")
BOARD_SKIPS = struct.Struct("<4q")
BOARD_STRIDE = BOARD_SLOT.size + BOARD_SKIPS.size  # bytes per worker on the board
SKIPS = BOARD_SKIPS.size // 8  # cancelled tasks a stride can name


def make_board(workers: int) -> tuple[int, mmap.mmap]:
    """A shared page (a memory file and its mapping) with a stride for each worker."""
    size = max(mmap.PAGESIZE, workers * BOARD_STRIDE)
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("manycore-board", os.MFD_CLOEXEC)
    else:  # pragma: no cover - non-Linux
        import tempfile

        handle, path = tempfile.mkstemp(prefix="manycore-board-")
        os.unlink(path)
        fd = handle
    os.ftruncate(fd, size)
    return fd, mmap.mmap(fd, size)


def reset(board: mmap.mmap, index: int) -> None:
    """Clear worker ``index``'s stride before a new process takes that seat."""
    BOARD_SLOT.pack_into(board, index * BOARD_STRIDE, -1, 0.0)
    BOARD_SKIPS.pack_into(board, index * BOARD_STRIDE + BOARD_SLOT.size, *([-1] * SKIPS))


def read_slot(board: mmap.mmap, index: int) -> tuple[int, float]:
    """(the id of the task worker ``index`` runs or -1, when it started)."""
    return BOARD_SLOT.unpack_from(board, index * BOARD_STRIDE)


def write_skips(board: mmap.mmap, index: int, task_ids: set[int]) -> None:
    """Tell worker ``index`` to skip these cancelled tasks (the lowest ``SKIPS`` of them)."""
    first = sorted(task_ids)[:SKIPS]
    first += [-1] * (SKIPS - len(first))
    BOARD_SKIPS.pack_into(board, index * BOARD_STRIDE + BOARD_SLOT.size, *first)
