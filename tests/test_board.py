"""The board's slot protocol: the owner never pairs a task id with another task's start time.

A worker process rewrites its slot as fast as it can while this process reads it; every pair
read must be one the worker wrote. Before the protocol, about 2% of reads paired a new id with
the previous time, and a timed task read as "started at 0.0" was timed out at once.
"""

from __future__ import annotations

import os
import time

from manycore import _board


def test_reads_never_pair_an_id_with_another_tasks_time() -> None:
    board = _board.Board.create(2)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the writer
            try:
                end = time.monotonic() + 1.0
                task_id = 0
                while time.monotonic() < end:
                    task_id += 1
                    board.mark_running(1, task_id, float(task_id))
                    if task_id % 7 == 0:
                        board.mark_idle(1)
            finally:
                os._exit(0)
        reads = torn = running = 0
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            task_id, started = board.running(1)
            reads += 1
            if task_id != -1:
                running += 1
                torn += started != float(task_id)
        deadline = time.monotonic() + 10
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            assert time.monotonic() < deadline, "the writer did not exit"
            time.sleep(0.01)
        assert running > 1000, (reads, running)  # the race was really exercised
        assert torn == 0, f"{torn} of {running} reads paired an id with another task's time"
    finally:
        board.close()
        os.close(board.fd)


def test_skips_are_read_per_stride() -> None:
    board = _board.Board.create(2)
    try:
        board.reset(0)
        board.reset(1)
        assert board.running(0) == (-1, 0.0)
        board.write_skips(1, {9, 4, 7, 30, 12})  # the lowest SKIPS of them are kept
        assert [board.skipped(1, t) for t in (4, 7, 9, 12, 30)] == [True] * 4 + [False]
        assert not board.skipped(0, 4)
        board.mark_running(0, 5, 2.5)
        assert board.running(0) == (5, 2.5) and board.running(1) == (-1, 0.0)
    finally:
        board.close()
        os.close(board.fd)
