"""Queues against other processes' faults: a process killed while it holds the queue's lock,
and another local user who takes the names a queue would create."""

from __future__ import annotations

import gc
import itertools
import os
import pickle
import queue
import signal
from typing import Any, Iterator, Optional

import pytest

from manycore._errors import ManycoreError
from manycore._queue import JoinableQueue, Queue, _fifo, _layout
from manycore._queue._layout import H_HEAD, H_OVF_DIRTY, H_TAIL, PICKLE
from tests.helpers import TIMEOUT, call_with_timeout, join_ok, start_process

# How long a call that must give up (a timeout, a nowait call) is given here: far beyond its
# own timeout, so only a call that ignores it fails the test.
SHORT = 0.2

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


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _killed(process: Any) -> None:
    process.join(TIMEOUT)
    assert process.exitcode == -signal.SIGKILL, f"child exit code {process.exitcode}"


# Children. Each takes the queue's lock the way put and get do, then dies inside it: the
# steps the queue's own code takes before a kill landing there, done deterministically.


def die_holding_the_lock(q: Queue) -> None:
    q._lock()
    _die()


def die_with_an_items_token(q: Queue) -> None:
    """A get killed after it took an "items" token, before it took the lock and the record."""
    q._items.acquire()
    _die()


def die_before_naming_itself(q: Queue) -> None:
    """Killed between taking the lock's semaphore and writing its pid next to it."""
    q._mutex.acquire()
    _die()


def die_after_publishing_a_record(q: Queue, item: Any) -> None:
    """A put killed after its record went in, before the counters and "items" were told."""
    data = pickle.dumps(item, 5)
    q._lock()
    tail = int(q._hdr[H_TAIL])
    pos = tail % q._cap
    q._dataq[pos >> 3] = (len(data) << 8) | PICKLE
    q._data[pos + 8 : pos + 8 + len(data)] = data
    q._hdr[H_TAIL] = tail + 8 + ((len(data) + 7) & ~7)
    _die()


def die_taking_a_record(q: Queue) -> None:
    """A get killed between moving the ring's head and its cursor (its "items" token taken)."""
    assert q._items.acquire(True, TIMEOUT)
    q._lock()
    head = int(q._hdr[H_HEAD])
    word = q._dataq[(head % q._cap) >> 3]
    q._hdr[H_HEAD] = head + 8 + (((word >> 8) + 7) & ~7)
    _die()


def die_changing_the_overflow_chain(q: Queue) -> None:
    q._lock()
    q._hdr[H_OVF_DIRTY] = 1
    _die()


def hold_the_lock_until_told(q: Queue, told: Queue, locked: Queue) -> None:
    q._lock()
    locked.put("locked")
    told.get(timeout=TIMEOUT)
    q._unlock()


def put_forever(q: Queue, first: int) -> None:
    n = first
    while True:
        q.put((n, b"x" * (200 << 10) if n % 3 == 0 else None), timeout=TIMEOUT)
        n += 1


def get_forever(q: Queue, seen: Queue) -> None:
    while True:
        try:
            n, _ = q.get(timeout=TIMEOUT)
        except queue.Empty:
            continue
        seen.put(n, timeout=TIMEOUT)


def _get(q: Queue, block: bool = True, timeout: Optional[float] = None) -> Any:
    return call_with_timeout(q.get, block, timeout)


# --- a process killed while it holds the queue's lock --------------------------------------


def test_a_lock_whose_holder_was_killed_is_taken_over(start_method: Optional[str]) -> None:
    q = Queue()
    q.put("before")
    child = start_process(start_method, die_holding_the_lock, q)
    # Not joined first: a killed child its parent has not reaped yet is dead too.
    assert _get(q, True, TIMEOUT) == "before"
    call_with_timeout(q.put, "after")
    assert _get(q, True, TIMEOUT) == "after"
    assert q.qsize() == 0
    _killed(child)


def test_a_holder_killed_before_naming_itself_is_taken_over_too(
    start_method: Optional[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_fifo, "STALE_S", 0.5)  # in this process, the waiter
    q = Queue()
    q.put("before")
    child = start_process(start_method, die_before_naming_itself, q)
    _killed(child)
    with pytest.raises(queue.Empty):  # shorter than STALE_S: the timeout holds
        _get(q, True, SHORT)
    assert _get(q, True, TIMEOUT) == "before"
    call_with_timeout(q.put, "after")
    assert _get(q, True, TIMEOUT) == "after"


def test_timeouts_are_honoured_while_the_lock_is_held(start_method: Optional[str]) -> None:
    q, told, locked = Queue(), Queue(), Queue()
    q.put("waiting")
    child = start_process(start_method, hold_the_lock_until_told, q, told, locked)
    assert locked.get(timeout=TIMEOUT) == "locked"
    with pytest.raises(queue.Empty):
        _get(q, True, SHORT)
    with pytest.raises(queue.Empty):
        _get(q, False)
    with pytest.raises(queue.Full):
        call_with_timeout(q.put, "x", True, SHORT)
    with pytest.raises(queue.Full):
        call_with_timeout(q.put_nowait, "x")
    told.put("go")
    join_ok(child)
    assert _get(q, True, TIMEOUT) == "waiting"  # nothing was lost or added by the timeouts
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_a_put_killed_after_writing_its_record_delivers_it(start_method: Optional[str]) -> None:
    q = JoinableQueue()
    q.put(1)
    child = start_process(start_method, die_after_publishing_a_record, q, 2)
    _killed(child)
    call_with_timeout(q.put, 3)
    assert [_get(q, True, TIMEOUT) for _ in range(3)] == [1, 2, 3]
    assert q.qsize() == 0
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_a_get_killed_while_taking_a_record_loses_only_that(start_method: Optional[str]) -> None:
    q = Queue()
    for i in range(4):
        q.put(i)
    child = start_process(start_method, die_taking_a_record, q)
    _killed(child)
    assert [_get(q, True, TIMEOUT) for _ in range(3)] == [1, 2, 3]
    assert q.qsize() == 0
    call_with_timeout(q.put, 4)  # the ring's cursors agree again: new items come out in order
    assert _get(q, True, TIMEOUT) == 4


def test_damage_that_cannot_be_repaired_is_a_clear_error(start_method: Optional[str]) -> None:
    q = Queue()
    q.put("x")
    child = start_process(start_method, die_changing_the_overflow_chain, q)
    _killed(child)
    for call in (lambda: q.get(timeout=TIMEOUT), lambda: q.put("y")):
        with pytest.raises(ManycoreError, match="died while it held the lock") as info:
            call_with_timeout(call)
        assert isinstance(info.value, RuntimeError)


def test_an_item_whose_token_a_dead_consumer_took_is_still_got(start_method: Optional[str]) -> None:
    # Nobody posts that token again: a get that only waited for one missed the item until
    # another was put, and the queue's last item stayed unseen for good.
    q = Queue()
    for item, take in (("first", lambda: _get(q, True, 5.0)), ("second", q.get_nowait)):
        q.put(item)
        _killed(start_process(start_method, die_with_an_items_token, q))
        assert q.qsize() == 1
        assert take() == item
    for i in range(3):  # the tokens and the records agree again
        q.put(i)
    assert [_get(q, True, TIMEOUT) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(queue.Empty):
        _get(q, True, SHORT)


def test_producers_and_consumers_killed_in_a_loop(start_method: Optional[str]) -> None:
    """Kills at random moments (many inside put or get, where the lock is held): the queue
    keeps working, no item arrives twice, and every call returns within its timeout."""
    import random

    rng = random.Random(13)
    q, seen = Queue(), Queue()
    producer = start_process(start_method, put_forever, q, 0)
    consumer = start_process(start_method, get_forever, q, seen)
    for round_ in range(1, 6):
        seen.get(timeout=TIMEOUT)  # both are at work
        victim = rng.choice(["producer", "consumer"])
        os.kill((producer if victim == "producer" else consumer).pid, signal.SIGKILL)
        if victim == "producer":
            _killed(producer)
            producer = start_process(start_method, put_forever, q, round_ * 10_000_000)
        else:
            _killed(consumer)
            consumer = start_process(start_method, get_forever, q, seen)
    for child in (producer, consumer):
        os.kill(child.pid, signal.SIGKILL)
        _killed(child)
    got = []
    while True:  # what the consumers took, then what is left in the queue
        try:
            got.append(call_with_timeout(seen.get, True, SHORT))
        except queue.Empty:
            break
    while True:
        try:
            got.append(call_with_timeout(q.get, True, SHORT)[0])
        except queue.Empty:
            break
    # The queue still works: a new item goes through. Items may still come before it: a
    # get above times out while a holder killed before it could name itself keeps the lock
    # for STALE_S, and the take-over may finish a put that holder had half done.
    call_with_timeout(q.put, ("after", None), True, TIMEOUT)
    while True:
        item = _get(q, True, TIMEOUT)
        if item == ("after", None):
            break
        got.append(item[0])
    assert len(got) == len(set(got)), "an item arrived twice"


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
