"""The board: one shared page where each pool worker says what it is running.

The local scheduler makes the board (``Board.create``) and hands its descriptor to every
worker it starts; each worker maps it (``Board.attach``) and writes into its own stride.
The page is a row of 8-byte cells; worker ``i``'s stride is the ``CELLS`` cells from
``i * CELLS``::

    cell 0       RUNNING   the running task's id (-1 when idle)
    cell 1       STARTED   when it started (a float)
    cell 2       FINISHED  the id of the last task whose call has returned (-1: none yet);
                           with RUNNING it tells a dead worker's tasks that ran from those
                           that never started
    cell 3       CALLED    the id of the last task whose function and arguments were
                           rebuilt, so its code was called: RUNNING with another id means
                           the worker is still rebuilding them
    cells 4..7   SKIPS     ids of up to four tasks of its batches cancelled before they
                           started: the owner writes them, the worker skips them (-1: none)

The start time is on the clock that ``time.perf_counter`` and ``time.monotonic`` share on
Linux (CLOCK_MONOTONIC, machine-wide), so the owner can tell how long a task has run.

Guarantees: the worker writes only the RUNNING, STARTED, FINISHED and CALLED cells of its
own stride and the owner only the SKIPS cells. Every cell is read and written whole, through
typed views of the mapping (one aligned 8-byte load or store each; ``struct.pack_into``
would not do: it clears the target before packing, so a reader can see a zero that nobody
wrote). A task and its start time are two cells, so they follow a small sequence lock whose
sequence is the task id (ids are never reused): the worker stores -1, then the start time,
then the new id (``mark_running``); the owner reads the id, the time, then the id again
(``running``) and takes the pair only when both ids agree. The owner never pairs a task with
the start time of another one (which once timed a task out as soon as it started, "after"
the machine's whole uptime).
"""

from __future__ import annotations

import mmap
import os

__all__ = ["CELLS", "SKIPS", "Board"]

CELLS = 8  # cells per worker: RUNNING, STARTED, FINISHED, CALLED and the SKIPS
_RUNNING, _STARTED, _FINISHED, _CALLED, _SKIPS = 0, 1, 2, 3, 4
SKIPS = CELLS - _SKIPS  # cancelled tasks a stride can name


class Board:
    """A mapping of the board and its two typed views (the same cells as ints and floats)."""

    def __init__(self, fd: int, mapping: mmap.mmap) -> None:
        self.fd = fd  # -1 in a worker, which closes its copy once mapped
        self._mapping = mapping
        raw = memoryview(mapping)
        self._ints = raw.cast("q")
        self._floats = raw.cast("d")
        raw.release()

    @classmethod
    def create(cls, workers: int) -> Board:
        """A new board (a memory file and its mapping) with a stride for each worker."""
        size = max(mmap.PAGESIZE, workers * CELLS * 8)
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("manycore-board", os.MFD_CLOEXEC)
        else:  # pragma: no cover - non-Linux
            import tempfile

            fd, path = tempfile.mkstemp(prefix="manycore-board-")
            os.unlink(path)
        os.ftruncate(fd, size)
        return cls(fd, mmap.mmap(fd, size))

    @classmethod
    def attach(cls, fd: int) -> Board:
        """Map the board a worker was handed; the descriptor is closed."""
        try:
            return cls(-1, mmap.mmap(fd, 0))
        finally:
            os.close(fd)

    def close(self) -> None:
        """Unmap the board (the memory file lives while a mapping or descriptor does)."""
        self._ints.release()
        self._floats.release()
        self._mapping.close()

    # owner side ----------------------------------------------------------------

    def reset(self, index: int) -> None:
        """Clear worker ``index``'s stride before a new process takes that seat."""
        base = index * CELLS
        self._ints[base + _RUNNING] = -1
        self._floats[base + _STARTED] = 0.0
        self._ints[base + _FINISHED] = -1
        self._ints[base + _CALLED] = -1
        for cell in range(base + _SKIPS, base + CELLS):
            self._ints[cell] = -1

    def running(self, index: int) -> tuple[int, float]:
        """(the id of the task worker ``index`` runs or -1, when it started).

        The id is read before and after the time; when they differ the worker was moving
        to its next task, and the read is tried again (a worker stores a slot in well under
        a microsecond; after 100 tries the answer is "between tasks").
        """
        ints, at = self._ints, index * CELLS + _RUNNING
        for _ in range(100):
            task_id = ints[at]
            started = self._floats[at + 1]
            if ints[at] == task_id:
                return task_id, started
        return -1, 0.0

    def finished(self, index: int) -> int:
        """The id of the last task whose call returned in worker ``index`` (-1: none)."""
        return int(self._ints[index * CELLS + _FINISHED])

    def called(self, index: int) -> int:
        """The id of the last task whose code worker ``index`` called (-1: none)."""
        return int(self._ints[index * CELLS + _CALLED])

    def write_skips(self, index: int, task_ids: set[int]) -> None:
        """Tell worker ``index`` to skip these cancelled tasks (the lowest ``SKIPS`` of them)."""
        first = sorted(task_ids)[:SKIPS]
        first += [-1] * (SKIPS - len(first))
        base = index * CELLS + _SKIPS
        for offset, task_id in enumerate(first):
            self._ints[base + offset] = task_id

    # worker side ---------------------------------------------------------------

    def mark_running(self, index: int, task_id: int, started: float) -> None:
        """Worker ``index`` now runs ``task_id``, since ``started``.

        The id goes to -1 while the time changes, and the new id is stored last: an owner
        that reads the same id before and after the time has read that id's own time.
        """
        at = index * CELLS
        ints = self._ints
        ints[at] = -1
        self._floats[at + _STARTED] = started
        ints[at] = task_id

    def mark_finished(self, index: int, task_id: int) -> None:
        """Worker ``index``'s call of ``task_id`` returned (its outcome is not sent yet)."""
        self._ints[index * CELLS + _FINISHED] = task_id

    def mark_called(self, index: int) -> None:
        """Worker ``index`` has rebuilt the running task's function and arguments, and calls
        it now."""
        at = index * CELLS
        self._ints[at + _CALLED] = self._ints[at + _RUNNING]

    def mark_idle(self, index: int) -> None:
        """Worker ``index`` runs nothing."""
        self._ints[index * CELLS] = -1

    def skipped(self, index: int, task_id: int) -> bool:
        """Whether the owner asked worker ``index`` to skip ``task_id``."""
        base = index * CELLS + _SKIPS
        ints = self._ints
        return any(ints[cell] == task_id for cell in range(base, base + SKIPS))
