"""Queues against other processes' faults: a process killed while it holds the queue's lock,
and another local user who takes the names a queue would create."""

from __future__ import annotations

import gc
import itertools
import os
from typing import Iterator

import pytest

from manycore._queue import Queue, _fifo, _layout
from tests.helpers import TIMEOUT

MIB = 1 << 20
SHM = "/dev/shm"


@pytest.fixture(scope="module", autouse=True)
def shm_tracker() -> Iterator[None]:
    """Keep this process's shm tracker running for the module (see test_queues.py)."""
    from manycore import _shm

    keepalive = "manycore-q-tests-keepalive"
    _shm.track_prefix(keepalive)
    yield
    _shm.untrack_prefix(keepalive)


@pytest.fixture(autouse=True)
def collect_queues() -> Iterator[None]:
    yield
    gc.collect()


def _squat(name: str) -> None:
    """Create ``name`` in /dev/shm as another local user would, to make our create fail."""
    fd = os.open(os.path.join(SHM, name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
    os.close(fd)


# --- names another local user could take ---------------------------------------------------


def test_overflow_block_names_cannot_be_taken_in_advance(monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefix shows in /dev/shm; the names of the overflow blocks must not follow from it."""
    monkeypatch.setattr(_fifo, "SPACE_WAIT", 0.01)
    q = Queue()
    squatted = [f"{q._prefix}-b{n}" for n in range(1, 4)]  # the counted names used before
    for name in squatted:
        _squat(name)
    try:
        items = [bytes([i]) * MIB for i in range(12)]
        for item in items:  # no consumer: 8 MiB of ring, the rest spills to overflow blocks
            q.put(item, timeout=TIMEOUT)
        assert [q.get(timeout=TIMEOUT) for _ in items] == items
    finally:
        for name in squatted:
            os.unlink(os.path.join(SHM, name))


def test_a_taken_random_name_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file a queue creates retries under a new random name if the one drawn is taken:
    the ring and the semaphores (a new prefix), overflow blocks and kept segments."""
    monkeypatch.setattr(_fifo, "SPACE_WAIT", 0.01)
    taken = "5eed" * 4
    fresh = itertools.count(1)
    draws = itertools.count()

    def token_hex(nbytes: int = 32) -> str:  # every other draw is the name already taken
        return taken if next(draws) % 2 == 0 else f"{next(fresh):0{2 * nbytes}x}"

    squatted = [f"manycore-q{taken}-ring"]
    _squat(squatted[0])
    try:
        monkeypatch.setattr(_layout.secrets, "token_hex", token_hex)
        q = Queue()
        assert q._prefix != f"manycore-q{taken}"
        for kind in "bs":
            squatted.append(f"{q._prefix}-{kind}{taken}")
            _squat(squatted[-1])
        items = [bytes([i]) * MIB for i in range(12)]  # no consumer: some spill to blocks
        for item in items:
            q.put(item, timeout=TIMEOUT)
        assert [q.get(timeout=TIMEOUT) for _ in items] == items
        big = bytearray(b"x" * (4 * MIB))  # a big buffer travels in a kept segment
        q.put(big, timeout=TIMEOUT)
        assert q.get(timeout=TIMEOUT) == big
    finally:
        monkeypatch.undo()
        for name in squatted:
            os.unlink(os.path.join(SHM, name))
