"""Big buffers through Queue and Pipe (issue 4): round trips between processes, reuse of the
queue's segments and of the pipe's memfds, what a full queue, a dead reader or an exiting
sender leaves behind, the in-band fallback, and what a forged pipe message gets.

Queue segments are files named ``<queue prefix>-s...`` (kept) and ``<prefix>-o...`` (one-off)
whose first u64 is a state word; the tests read both straight from /dev/shm.
"""

from __future__ import annotations

import array
import errno
import fcntl
import gc
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import socket
import stat
import struct
import tempfile
import threading
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pytest

from manycore import _buffers, _memfd, _shm
from manycore._buffers import SharedMemoryWarning
from manycore._connection import BufferTooShort, Connection, Pipe
from manycore._errors import ArgumentPicklingError
from manycore._queue import Empty, Full, Queue, _layout
from manycore._queue._layout import SEG_FREE, SEG_HELD, SEG_SENT, SEG_SLOTS
from tests import helpers
from tests import workloads_bigmsg as w
from tests.helpers import TIMEOUT, join_ok, start_process
from tests.workloads import FailsToUnpickle

KIB = 1 << 10
MIB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def shm_tracker() -> Iterator[None]:
    """Keep this process's shm tracker running for the whole module (as a program that keeps
    using queues does), so the leak check does not wait for it to exit after every test."""
    keepalive = "manycore-q-bigmsg-keepalive"
    _shm.track_prefix(keepalive)
    yield
    _shm.untrack_prefix(keepalive)


@pytest.fixture(autouse=True)
def collect() -> Iterator[None]:
    """Queues and received arrays caught in reference cycles (a traceback kept by
    pytest.raises) go before the leak check looks at /dev/shm."""
    yield
    gc.collect()


def _segments(q: Queue, kind: str) -> list[str]:
    """The queue's kept ("s") or one-off ("o") big-buffer segments now in /dev/shm."""
    start = f"{q._prefix}-{kind}"
    return sorted(n for n in os.listdir(_shm.shm_dir()) if n.startswith(start))


def _state(name: str) -> int:
    """A segment's state word (native-endian u64 at offset 0)."""
    with open(os.path.join(_shm.shm_dir(), name), "rb") as f:
        return int(struct.unpack("=Q", f.read(8))[0])


def _slot_names(q: Queue) -> list[str]:
    return [q._name_at(_layout.SEG_SLOT0 + i * _layout.NAME_BYTES) for i in range(SEG_SLOTS)]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _memfds() -> tuple[int, int]:
    """(descriptors, mappings) of manycore's message memfds in this process."""
    fds = 0
    for entry in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:  # the descriptor listdir itself used
            continue
        fds += "memfd:manycore-message" in target
    with open("/proc/self/maps") as f:
        maps = sum("memfd:manycore-message" in line for line in f)
    return fds, maps


def _same(expected: Any, got: Any) -> None:
    problem = w.mismatch(expected, got)
    assert problem is None, problem


def _echoed(label: str, value: Any, reply: Any) -> Any:
    """Check a child's reply for ``(label, value)``: it got the item intact and writable,
    and what it sent back is equal and writable here. Returns the echoed value."""
    got_label, problem, read_only, echoed = reply
    assert got_label == label
    assert problem is None, f"the child received {problem}"
    assert read_only == [], f"read-only arrays in the child: {read_only}"
    _same(value, echoed)
    assert w.read_only_arrays(echoed) == []
    return echoed


# --- Queue: round trips -----------------------------------------------------------------------


def test_queue_round_trips_every_kind_every_start_method(start_method: Optional[str]) -> None:
    q_in, q_out = Queue(), Queue()
    p = start_process(start_method, w.queue_echo, q_in, q_out, TIMEOUT)
    items = w.samples()
    try:
        for item in items:
            q_in.put(item)
        q_in.put(None)
        back = []  # kept alive: the child's later items cannot reuse their segments
        for label, value in items:
            back.append(_echoed(label, value, q_out.get(timeout=TIMEOUT)))
    finally:
        join_ok(p)
    # Both directions went through segments (not only in band), and nothing changed since.
    assert 1 <= len(_segments(q_in, "s")) <= SEG_SLOTS
    assert 1 <= len(_segments(q_out, "s")) <= SEG_SLOTS
    for (_, value), echoed in zip(items, back):
        _same(value, echoed)


def test_queue_arrays_keep_their_layout_and_are_views_of_a_segment() -> None:
    q = Queue()
    f = np.asfortranarray(np.arange(300 * 400, dtype=np.float32).reshape(300, 400))
    q.put({"f": f, "c": f.copy(order="C")})
    got = q.get(timeout=TIMEOUT)
    assert got["f"].flags.f_contiguous and not got["f"].flags.c_contiguous
    assert got["c"].flags.c_contiguous
    assert np.array_equal(got["f"], f) and np.array_equal(got["c"], f)
    (kept,) = _segments(q, "s")
    assert _state(kept) == (os.getpid() << 2) | SEG_HELD  # built on the segment, held by us
    got["f"][0, 0] = -1.0  # writable
    assert got["f"][0, 0] == -1.0
    del got
    assert _state(kept) == SEG_FREE


def test_queue_memoryviews_come_back_as_memoryviews() -> None:
    q = Queue()
    plain = memoryview(bytes(range(256)) * 512)  # 128 KiB
    doubles = memoryview(bytearray(200_000)).cast("d")
    q.put(("tag", plain, {"d": doubles}))
    tag, got, rest = q.get(timeout=TIMEOUT)
    assert tag == "tag" and type(got) is memoryview and type(rest["d"]) is memoryview
    assert got.tobytes() == plain.tobytes() and got.shape == plain.shape
    assert rest["d"].format == "d" and rest["d"].shape == doubles.shape
    assert rest["d"].tobytes() == doubles.tobytes()
    assert not got.readonly


def test_queue_memoryview_received_can_be_put_again() -> None:
    q = Queue()
    plain = memoryview(bytes(range(256)) * 512)
    q.put(("tag", plain))
    got = q.get(timeout=TIMEOUT)[1]
    fmt = got.format
    q.put(("again", got))  # what a consumer that forwards items does
    del got
    again: Any
    try:
        again = q.get(timeout=TIMEOUT)[1].tobytes()
    except ValueError as exc:  # kept as text: a traceback would keep the queue alive
        again = repr(exc)
    left = q.qsize()
    del q
    assert fmt == plain.format
    assert again == plain.tobytes(), f"get() raised {again}; {left} items left in the queue"


# --- Queue: reuse and one-off segments --------------------------------------------------------


def test_queue_reuses_one_kept_segment_when_each_item_is_dropped() -> None:
    q = Queue()
    names = set()
    for i in range(20):
        q.put(w.big_array(i))
        got = q.get(timeout=TIMEOUT)
        assert np.array_equal(got, w.big_array(i))
        del got
        kept = _segments(q, "s")
        assert len(kept) == 1 and _segments(q, "o") == []
        assert _state(kept[0]) == SEG_FREE
        names.update(kept)
    assert len(names) == 1  # the same segment every time
    # A top-level bytes object too big for the ring reuses it too (copied out, so freed).
    big = bytes(range(256)) * (3 * MIB // 256)
    for _ in range(3):
        q.put(big)
        assert q.get(timeout=TIMEOUT) == big
    assert len(_segments(q, "s")) <= 2 and _segments(q, "o") == []
    assert all(_state(n) == SEG_FREE for n in _segments(q, "s"))
    # get_many decodes segment records too.
    q.put_many([w.big_array(i) for i in range(3)])
    got_many = q.get_many(3, timeout=TIMEOUT)
    assert all(np.array_equal(a, w.big_array(i)) for i, a in enumerate(got_many))


def test_queue_uses_one_off_segments_while_every_kept_one_is_busy() -> None:
    q = Queue()
    n = SEG_SLOTS + 2
    for i in range(n):
        q.put(w.big_array(i))
    kept = _segments(q, "s")
    assert len(kept) == SEG_SLOTS
    assert len(_segments(q, "o")) == 2
    assert all(_state(name) == SEG_SENT for name in kept)
    held = [q.get(timeout=TIMEOUT) for _ in range(n)]
    assert _segments(q, "o") == []  # a one-off is unlinked by its reader on receipt
    assert all(np.array_equal(a, w.big_array(i)) for i, a in enumerate(held))
    mine = (os.getpid() << 2) | SEG_HELD
    assert [_state(name) for name in kept] == [mine] * SEG_SLOTS
    q.put(w.big_array(99))  # everything is still held: another one-off
    assert len(_segments(q, "o")) == 1
    held.append(q.get(timeout=TIMEOUT))
    assert np.array_equal(held[-1], w.big_array(99))
    assert all(np.array_equal(a, w.big_array(i)) for i, a in enumerate(held[:n]))
    del held
    gc.collect()
    assert [_state(name) for name in kept] == [SEG_FREE] * SEG_SLOTS
    assert _segments(q, "o") == []
    q.put(w.big_array(100))  # a kept one again
    assert _segments(q, "s") == kept and _segments(q, "o") == []
    assert np.array_equal(q.get(timeout=TIMEOUT), w.big_array(100))


def test_queue_reader_keeping_each_item_until_the_next_needs_two_kept_segments() -> None:
    # Such a reader holds item i's segment while the producer writes item i + 1, and drops
    # it a moment after that arrives, usually just after the producer starts on item i + 2.
    # Its first wait fails (the reader cannot drop item 0 before item 1 comes): a second
    # segment, and the next writes wait for whichever is dropped, not a third 8 MiB one.
    # (Before, the failed wait turned waiting off, and a third came in most rounds.)
    for _ in range(3):
        q, results = Queue(), Queue()
        p = start_process(None, w.sum_keeping_previous, q, results, TIMEOUT)
        try:
            # Running before the first put: items written before their reader runs are in
            # flight, not kept, and need segments of their own.
            assert results.get(timeout=TIMEOUT) == "ready"
            count, n = 8, MIB  # 8 MiB arrays: big enough for a writer to wait for a busy one
            for i in range(count):
                q.put(w.big_array(i, n))
            q.put(None)
            expected = sum(float(w.big_array(i, n)[0]) for i in range(count))
            assert results.get(timeout=TIMEOUT) == expected
        finally:
            join_ok(p)
        assert len(_segments(q, "s")) == 2 and _segments(q, "o") == []


def _deleted_mappings(prefix: str) -> int:
    """Mappings in this process of files under ``prefix`` that were unlinked."""
    with open("/proc/self/maps") as f:
        return sum(prefix in line and "(deleted)" in line for line in f)


def test_queue_growing_items_replace_small_segments() -> None:
    q = Queue()
    for step in range(1, 9):  # 1 MiB .. 8 MiB: each too big for every kept segment
        a = w.big_array(step, step * MIB // 8)
        q.put(a)
        got = q.get(timeout=TIMEOUT)
        assert np.array_equal(got, a)
        del got
        assert len(_segments(q, "s")) <= SEG_SLOTS and _segments(q, "o") == []
        assert len(q._segments) <= _layout.SEG_MAPPINGS
    assert _layout._CREATING not in _slot_names(q)
    for step in (1, 3, 8):  # smaller ones fit what is kept
        kept = _segments(q, "s")
        q.put(w.big_array(step, step * MIB // 8))
        assert np.array_equal(q.get(timeout=TIMEOUT), w.big_array(step, step * MIB // 8))
        assert _segments(q, "s") == kept
    gc.collect()
    assert _deleted_mappings(q._prefix) == 0  # replaced segments are unmapped here too


def test_queue_producers_and_consumers_never_see_a_segment_refilled_under_them() -> None:
    q, out = Queue(), Queue()
    count, n = 60, 32 * KIB  # 256 KiB arrays
    consumers = [
        start_process(None, w.consume_checking, q, out, TIMEOUT, batch, 3) for batch in (1, 4)
    ]
    producers = [start_process(None, w.produce_tagged, q, tag, count, n) for tag in (1, 2)]
    try:
        for p in producers:
            join_ok(p)
        for _ in consumers:
            q.put(None)
        reports = [out.get(timeout=TIMEOUT) for _ in consumers]
    finally:
        for p in consumers:
            join_ok(p)
    seen = sorted(item for got, _ in reports for item in got)
    assert seen == sorted((tag, i) for tag in (1, 2) for i in range(count))
    assert [bad for _, bad in reports] == [[], []]
    for got, _ in reports:  # FIFO per producer, for each consumer
        for tag in (1, 2):
            order = [i for t, i in got if t == tag]
            assert order == sorted(order)
    assert _segments(q, "o") == []


def test_joinable_queue_with_big_items() -> None:
    from manycore._queue import JoinableQueue

    q = JoinableQueue()
    q.put_many([w.big_array(i) for i in range(3)])
    for i in range(3):
        assert np.array_equal(q.get(timeout=TIMEOUT), w.big_array(i))
        q.task_done()
    assert q.join(TIMEOUT)


# --- Queue: items that are not enqueued release their segments --------------------------------


def test_bounded_put_that_times_out_frees_its_segment() -> None:
    q = Queue(1)
    q.put("first")
    with pytest.raises(Full):
        q.put(w.big_array(1), timeout=0.1)
    assert q.qsize() == 1
    kept = _segments(q, "s")
    assert len(kept) == 1 and _state(kept[0]) == SEG_FREE
    assert _segments(q, "o") == []
    assert q.get(timeout=TIMEOUT) == "first"
    q.put(w.big_array(2), timeout=TIMEOUT)  # the freed segment is used again
    assert _segments(q, "s") == kept
    held = [q.get(timeout=TIMEOUT)]
    assert np.array_equal(held[0], w.big_array(2))
    # Every kept segment held by this reader: the item claims a one-off, which goes again.
    for i in range(SEG_SLOTS - 1):
        q.put(w.big_array(i), timeout=TIMEOUT)
        held.append(q.get(timeout=TIMEOUT))
    assert len(_segments(q, "s")) == SEG_SLOTS
    q.put("filler")
    with pytest.raises(Full):
        q.put(w.big_array(3), timeout=0.1)
    assert _segments(q, "o") == []
    assert q.qsize() == 1 and q.get(timeout=TIMEOUT) == "filler"


def test_put_many_with_an_unpicklable_item_enqueues_nothing_and_frees_segments() -> None:
    q = Queue()
    with pytest.raises(ArgumentPicklingError):
        q.put_many([w.big_array(1), w.big_array(2), threading.Lock()])
    assert q.qsize() == 0
    with pytest.raises(Empty):
        q.get(timeout=0.1)
    kept = _segments(q, "s")
    assert len(kept) == 2  # both big items had claimed a segment
    assert [_state(name) for name in kept] == [SEG_FREE, SEG_FREE]
    assert _segments(q, "o") == []
    q.put_many([w.big_array(3), w.big_array(4)])  # the same two, reused
    assert _segments(q, "s") == kept
    got = q.get_many(2, timeout=TIMEOUT)
    assert np.array_equal(got[0], w.big_array(3)) and np.array_equal(got[1], w.big_array(4))


def test_bounded_put_many_that_fills_up_frees_the_rest() -> None:
    q = Queue(1)
    with pytest.raises(Full):
        q.put_many([w.big_array(1), w.big_array(2), w.big_array(3)], timeout=0.1)
    assert q.qsize() == 1  # the items before the one that failed went in
    states = sorted(_state(name) for name in _segments(q, "s"))
    assert states == [SEG_FREE, SEG_FREE, SEG_SENT]
    assert _segments(q, "o") == []
    got = q.get(timeout=TIMEOUT)
    assert np.array_equal(got, w.big_array(1))
    del got
    assert all(_state(name) == SEG_FREE for name in _segments(q, "s"))


# --- Queue: dead readers, exiting producers, cleanup ------------------------------------------


def test_segment_held_by_a_killed_reader_is_taken_back() -> None:
    q, ready = Queue(), Queue()
    p = start_process(None, w.hold_one, q, ready, TIMEOUT)
    try:
        q.put(w.big_array(1))
        pid, first = ready.get(timeout=TIMEOUT)
        assert pid == p.pid and first == w.big_array(1)[0]
        kept = _segments(q, "s")
        assert len(kept) == 1
        assert _state(kept[0]) == (pid << 2) | SEG_HELD  # names the reader holding it
        os.kill(pid, signal.SIGKILL)
        p.join(TIMEOUT)
        assert p.exitcode == -signal.SIGKILL
        q.put(w.big_array(2))  # its reader is dead: the segment is claimed again
        assert _segments(q, "s") == kept and _segments(q, "o") == []
        assert _state(kept[0]) == SEG_SENT
        assert np.array_equal(q.get(timeout=TIMEOUT), w.big_array(2))
    finally:
        if p.exitcode is None:
            p.kill()
            p.join(TIMEOUT)


def test_a_forked_child_dropping_its_copy_does_not_free_the_parents_array() -> None:
    q = Queue()
    q.put(w.big_array(1))
    held = q.get(timeout=TIMEOUT)
    kept = _segments(q, "s")
    p = start_process("fork", w.drop_and_exit, held)  # the child holds a copy, then drops it
    join_ok(p)
    assert _state(kept[0]) == (os.getpid() << 2) | SEG_HELD  # still ours
    q.put(w.big_array(2))  # so this one goes elsewhere
    assert np.array_equal(q.get(timeout=TIMEOUT), w.big_array(2))
    assert np.array_equal(held, w.big_array(1))


def test_get_many_that_fails_frees_the_segments_of_the_items_after_it() -> None:
    q = Queue()
    q.put(w.big_array(1))
    q.put((w.big_array(2), FailsToUnpickle()))
    q.put(w.big_array(3))
    with pytest.raises(RuntimeError, match="refuses to be unpickled"):
        q.get_many(3, timeout=TIMEOUT)
    gc.collect()
    assert all(_state(name) == SEG_FREE for name in _segments(q, "s"))
    assert _segments(q, "o") == []


def test_more_than_65535_buffers_in_one_item() -> None:
    item = [np.full(1, i, dtype=np.int64) for i in range(70_000)]
    q = Queue()
    q.put(item)
    got = q.get(timeout=TIMEOUT)
    assert len(got) == len(item) and all(int(x[0]) == i for i, x in enumerate(got))
    del got
    a, b = Pipe()
    with a, b:
        sender = threading.Thread(target=a.send, args=(item,))  # more than a socket holds
        sender.start()
        assert b.poll(TIMEOUT)
        got = b.recv()
        sender.join(TIMEOUT)
        assert len(got) == len(item) and int(got[-1][0]) == len(item) - 1


def test_keeping_more_arrays_than_the_descriptor_limit_allows() -> None:
    # A consumer keeping every array it gets holds one mapping (and, before Python 3.13,
    # one descriptor) per one-off segment: with a soft limit of 64 it must still go on.
    code = """
import resource
import numpy as np
from manycore._queue import Queue
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
q = Queue()
kept = []
for i in range(150):
    q.put(np.full(16384, i, dtype=np.float64))
    kept.append(q.get(timeout=30))
assert all(float(a[0]) == i for i, a in enumerate(kept))
print("ok", len(kept))
"""
    done = helpers.run_python(["-c", code])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "150"]


def test_items_of_a_producer_that_exited_arrive_intact() -> None:
    q = Queue()
    seeds = list(range(SEG_SLOTS + 2))  # kept segments and one-offs
    p = start_process(None, w.put_arrays_and_exit, q, seeds)
    join_ok(p)
    assert q.qsize() == len(seeds)
    assert len(_segments(q, "o")) == 2
    got = [q.get(timeout=TIMEOUT) for _ in seeds]
    for seed, (tag, value) in zip(seeds, got):
        assert tag == seed and np.array_equal(value, w.big_array(seed))
    assert _segments(q, "o") == []
    del got, tag, value
    gc.collect()
    assert all(_state(name) == SEG_FREE for name in _segments(q, "s"))


def test_queue_files_go_with_the_queue_and_received_arrays_outlive_it() -> None:
    q = Queue()
    prefix = q._prefix
    for i in range(SEG_SLOTS + 2):  # kept and one-off segments; most never read
        q.put(w.big_array(i))
    held = q.get(timeout=TIMEOUT)
    ours = [n for n in os.listdir(_shm.shm_dir()) if prefix in n]
    assert any("-s" in n for n in ours) and any("-o" in n for n in ours)
    del q
    gc.collect()
    assert [n for n in os.listdir(_shm.shm_dir()) if prefix in n] == []
    assert np.array_equal(held, w.big_array(0))  # still mapped
    held[:] = 1.0
    assert held.sum() == held.size
    del held
    gc.collect()


# --- Queue: no room in shared memory, and shared memory off -----------------------------------


def _two_arrive_after_one_warning(
    send: Callable[[Any], Any], receive: Callable[[], Any], arr: Any
) -> None:
    """Send ``arr`` and ``arr + 1`` with no shared memory to be had: one SharedMemoryWarning
    in all, and both arrive equal."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        send(arr)
        send(arr + 1)
        got = [receive() for _ in range(2)]
    shm_warnings = [c for c in caught if issubclass(c.category, SharedMemoryWarning)]
    assert len(shm_warnings) == 1, [str(c.message) for c in caught]
    assert np.array_equal(got[0], arr) and np.array_equal(got[1], arr + 1)


def test_no_room_for_a_segment_warns_once_and_the_item_goes_in_band(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    q = Queue()
    ring_fd = q._ring.fd
    real = os.posix_fallocate
    refused: list[int] = []

    def fallocate(fd: int, offset: int, length: int) -> None:
        if fd != ring_fd:  # every new file (segments, overflow blocks) finds /dev/shm full
            refused.append(length)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    monkeypatch.setattr(_buffers, "_warned", False)
    a = np.arange(32 * KIB, dtype=np.float64)  # 256 KiB
    _two_arrive_after_one_warning(q.put, lambda: q.get(timeout=TIMEOUT), a)
    assert len(refused) == 2  # a segment was tried for each item
    assert _segments(q, "s") == [] and _segments(q, "o") == []
    assert _layout._CREATING not in _slot_names(q)  # the slot claimed for it was given back
    monkeypatch.setattr(os, "posix_fallocate", real)  # room again: a segment again
    q.put(a + 2)
    assert len(_segments(q, "s")) == 1
    assert np.array_equal(q.get(timeout=TIMEOUT), a + 2)


def test_no_memory_for_a_memfd_warns_once_and_the_message_goes_through_the_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_room(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))

    a, b = Pipe()
    with a, b:
        monkeypatch.setattr(os, "posix_fallocate", no_room)  # no memfd can be made
        monkeypatch.setattr(_buffers, "_warned", False)
        arr = np.arange(32 * KIB, dtype=np.float64)  # 256 KiB
        _two_arrive_after_one_warning(a.send, lambda: b.poll(TIMEOUT) and b.recv(), arr)
        assert a._outbox is not None and a._outbox.kept == []


@pytest.fixture
def threshold_off() -> Iterator[None]:
    before = _buffers.shm_threshold()
    _buffers.set_shm_threshold(None)
    try:
        yield
    finally:
        _buffers.set_shm_threshold(before)


def test_threshold_off_big_items_still_round_trip(threshold_off: None) -> None:
    q = Queue()
    items = w.samples()
    for item in items:
        q.put(item)
    for label, value in items:
        got_label, echoed = q.get(timeout=TIMEOUT)
        assert got_label == label
        _same(value, echoed)
    assert _segments(q, "s") == [] and _segments(q, "o") == []
    # A pipe too, to a forked child (which inherits the threshold): everything in band.
    mine, theirs = Pipe()
    with mine, theirs:
        p = start_process("fork", w.pipe_echo, theirs, theirs, TIMEOUT)
        for label, value in items:
            mine.send((label, value))
            assert mine.poll(TIMEOUT)
            got_label, problem, _, echoed = mine.recv()
            assert (got_label, problem) == (label, None)
            _same(value, echoed)
        mine.send(None)
        join_ok(p)
        assert mine._outbox is None and mine._inbox is None  # no memfd either way


# --- Pipe: round trips ------------------------------------------------------------------------


def _pipe_round_trip(start_method: Optional[str], duplex: bool) -> None:
    if duplex:
        mine, theirs = Pipe()
        tx = rx = mine
        child_rx = child_tx = theirs
        ends = [mine, theirs]
    else:
        child_rx, tx = Pipe(duplex=False)
        rx, child_tx = Pipe(duplex=False)
        ends = [child_rx, tx, rx, child_tx]
    items = w.samples()
    try:
        p = start_process(start_method, w.pipe_echo, child_rx, child_tx, TIMEOUT)
        back = []  # kept alive: the child's later messages cannot reuse their memfds
        try:
            for label, value in items:
                tx.send((label, value))
                assert rx.poll(TIMEOUT), f"no answer for {label}"
                back.append(_echoed(label, value, rx.recv()))
            tx.send(None)
        finally:
            join_ok(p)
        # Both ways went through memfds: ours to send, the child's mapped here.
        assert tx._outbox is not None and 1 <= len(tx._outbox.kept) <= _memfd.KEPT
        assert rx._inbox is not None and rx._inbox.mapped
        for (_, value), echoed in zip(items, back):
            _same(value, echoed)
    finally:
        for end in ends:
            end.close()


def test_pipe_round_trips_every_start_method(start_method: Optional[str]) -> None:
    _pipe_round_trip(start_method, duplex=True)


def test_one_way_pipes_round_trip() -> None:
    _pipe_round_trip(None, duplex=False)


@pytest.mark.parametrize("duplex", [True, False])
def test_pipe_message_outlives_its_sender(duplex: bool) -> None:
    r, s = Pipe(duplex=duplex)
    with r, s:
        p = start_process(None, w.send_and_exit, s, 2 * MIB)  # 16 MiB
        s.close()
        join_ok(p)  # exited before anything was read
        assert r.poll(TIMEOUT)
        got = r.recv()
        assert np.array_equal(got, w.big_array(7, 2 * MIB))
        assert got.flags.writeable
        assert r.poll(TIMEOUT)
        with pytest.raises(EOFError):
            r.recv()
        del got


# --- Pipe: reuse, and no descriptor or mapping left behind ------------------------------------


@contextmanager
def _pipe_leaving_nothing_open() -> Iterator[tuple[Connection, Connection]]:
    """A Pipe whose ends are closed after the block; then no descriptor, memfd or
    mapping of this process is left from it."""
    before, memfds_before = _fds(), _memfds()
    a, b = Pipe()
    try:
        yield a, b
    finally:
        a.close()
        b.close()
    gc.collect()
    assert _fds() == before
    assert _memfds() == memfds_before


def test_pipe_reuses_one_memfd_and_leaks_no_descriptor() -> None:
    with _pipe_leaving_nothing_open() as (a, b):
        _reuse_one_memfd(a, b)


def _reuse_one_memfd(a: Connection, b: Connection) -> None:
    for i in range(20):
        a.send(w.big_array(i))
        got = b.recv()
        assert np.array_equal(got, w.big_array(i))
        del got
        assert a._outbox is not None and len(a._outbox.kept) == 1
        assert a._outbox.kept[0].free()
    assert b._inbox is not None and len(b._inbox.mapped) == 1


def test_pipe_one_offs_while_the_reader_holds_every_kept_memfd() -> None:
    with _pipe_leaving_nothing_open() as (a, b):
        _hold_every_kept_memfd(a, b)


def _hold_every_kept_memfd(a: Connection, b: Connection) -> None:
    held = []
    for i in range(_memfd.KEPT + 2):
        a.send(w.big_array(i))
        held.append(b.recv())
    assert a._outbox is not None and len(a._outbox.kept) == _memfd.KEPT
    assert not any(m.free() for m in a._outbox.kept)
    assert all(np.array_equal(x, w.big_array(i)) for i, x in enumerate(held))
    del held
    gc.collect()
    assert all(m.free() for m in a._outbox.kept)


def test_pipe_growing_messages_replace_small_memfds() -> None:
    with _pipe_leaving_nothing_open() as (a, b):
        _grow_messages(a, b)


def _grow_messages(a: Connection, b: Connection) -> None:
    for step in [*range(1, 9), 1, 3, 8]:  # growing, then smaller ones that fit
        arr = w.big_array(step, step * MIB // 8)
        a.send(arr)
        assert b.poll(TIMEOUT)
        got = b.recv()
        assert np.array_equal(got, arr)
        del got
        assert a._outbox is not None and len(a._outbox.kept) <= _memfd.KEPT
        assert b._inbox is not None and len(b._inbox.mapped) <= _memfd.MAPPED


def test_pipe_reuse_across_processes_leaves_nothing_mapped() -> None:
    memfds_before = _memfds()
    parent, child = Pipe()
    with parent, child:
        p = start_process(None, w.send_arrays_counting_kept, child, 20, TIMEOUT)
        child.close()
        for i in range(20):
            assert parent.poll(TIMEOUT)
            got = parent.recv()
            assert np.array_equal(got, w.big_array(i))
            del got
            parent.send(("ack", i))
        assert parent.poll(TIMEOUT)
        assert parent.recv() == ("kept", 1, 1)  # the child refilled one memfd 20 times
        join_ok(p)
    gc.collect()
    assert _memfds() == memfds_before


def test_pipe_reader_keeping_each_message_until_the_next_needs_two_kept_memfds() -> None:
    # As the queue's test above, over a pipe: a reader that drops each message only when
    # the next one arrives makes the sender keep two memfds, not three.
    for _ in range(3):
        parent, child = Pipe()
        with parent, child:
            count, n = 8, MIB
            p = start_process(None, w.send_arrays_then_kept, child, count, n)
            child.close()
            got = None
            for i in range(count):
                assert parent.poll(TIMEOUT)
                got = parent.recv()  # the previous message goes only now
                assert np.array_equal(got, w.big_array(i, n))
            del got
            assert parent.poll(TIMEOUT)
            assert parent.recv() == ("kept", 2)
            join_ok(p)


# --- Pipe: recv_bytes of a big send -----------------------------------------------------------


def test_recv_bytes_of_a_big_send_is_its_ordinary_pickle() -> None:
    a, b = Pipe()
    with a, b:
        arr = w.big_array(3)
        a.send(arr)
        data = b.recv_bytes()
        assert type(data) is bytes and data[:1] == b"\x80"
        assert np.array_equal(pickle.loads(data), arr)
        assert a._outbox is not None and a._outbox.kept[0].free()  # nothing holds it
        a.send(arr)
        buf = bytearray(len(data) + 16)
        assert b.recv_bytes_into(buf, 8) == len(data)
        assert np.array_equal(pickle.loads(buf[8 : 8 + len(data)]), arr)
        a.send(arr)
        with pytest.raises(BufferTooShort) as info:
            b.recv_bytes_into(bytearray(100))
        assert np.array_equal(pickle.loads(info.value.args[0]), arr)
        a.send(arr)
        with pytest.raises(OSError):
            b.recv_bytes(maxlength=len(data) - 1)
        assert b.closed  # as the stdlib does


# --- Pipe: forged messages --------------------------------------------------------------------

_PAYLOAD = b"0123456789abcdef"
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


def _blob() -> bytes:
    """A blob naming one 16-byte buffer at offset 0 of the descriptor's data."""
    body = pickle.dumps(pickle.PickleBuffer(_PAYLOAD), 5, buffer_callback=lambda _: False)
    return _memfd._BLOB_HEAD.pack(0, 1, 0) + struct.pack("<QQ", 0, len(_PAYLOAD)) + body


def _memfd_with_payload(size: int, sealed: bool) -> int:
    fd = os.memfd_create("forged", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if size >= _memfd.RESERVED + len(_PAYLOAD):
        os.pwrite(fd, _PAYLOAD, _memfd.RESERVED)
    if sealed:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    return fd


def _regular_file() -> int:
    fd, path = tempfile.mkstemp()
    os.unlink(path)
    os.ftruncate(fd, 64 * KIB)
    os.pwrite(fd, _PAYLOAD, _memfd.RESERVED)
    return fd


def _forge(sender: socket.socket, fds: list[int], blob: bytes) -> None:
    sender.sendall(struct.pack("!i", _memfd.FD_MESSAGE))
    parts = [struct.pack("!Q", len(blob)), blob]
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        sender.sendmsg(parts, ancillary)
    else:
        sender.sendall(b"".join(parts))


def _send_plain(sender: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj)
    sender.sendall(struct.pack("!i", len(data)) + data)


def test_forged_message_with_a_sealed_memfd_is_read() -> None:
    """The control for the refusals below: the forged format is the real one."""
    s1, sender = socket.socketpair()
    conn = Connection(s1.detach())
    fd = _memfd_with_payload(64 * KIB, sealed=True)
    try:
        _forge(sender, [fd], _blob())
        assert conn.poll(TIMEOUT)
        got = conn.recv()
        assert bytes(got) == _PAYLOAD
        del got
    finally:
        os.close(fd)
        conn.close()
        sender.close()


FORGED: dict[str, Callable[[], list[int]]] = {
    "unsealed memfd": lambda: [_memfd_with_payload(64 * KIB, sealed=False)],
    "sealed memfd too small": lambda: [_memfd_with_payload(_memfd.RESERVED, sealed=True)],
    "regular file": lambda: [_regular_file()],
    "pipe": lambda: list(os.pipe()[:1]),
    "two descriptors": lambda: [_memfd_with_payload(64 * KIB, sealed=True) for _ in range(2)],
    "no descriptor": lambda: [],
}


@pytest.mark.parametrize("what", list(FORGED))
def test_forged_message_is_refused_without_leaking(what: str) -> None:
    s1, sender = socket.socketpair()
    conn = Connection(s1.detach())
    mine = FORGED[what]()
    try:
        before = _fds()
        _forge(sender, mine, _blob())
        assert conn.poll(TIMEOUT)
        with pytest.raises(OSError, match=r"memfd|descriptor") as info:
            conn.recv()
        assert not isinstance(info.value, (EOFError, BufferTooShort))
        assert _fds() == before  # the descriptors that came with it were closed
        _send_plain(sender, "after")  # the refused blob was read: the stream is in step
        assert conn.poll(TIMEOUT) and conn.recv() == "after"
    finally:
        for fd in mine:
            os.close(fd)
        conn.close()
        sender.close()


# --- Pipe: received arrays are independent ----------------------------------------------------


def _queue_pair() -> tuple[Callable[[Any], None], Callable[[], Any], Any]:
    q = Queue()
    return q.put, lambda: q.get(timeout=TIMEOUT), q


def _pipe_pair() -> tuple[Callable[[Any], None], Callable[[], Any], Any]:
    a, b = Pipe()

    def recv() -> Any:
        assert b.poll(TIMEOUT)
        return b.recv()

    return a.send, recv, (a, b)


@pytest.mark.parametrize("make", [_queue_pair, _pipe_pair], ids=["queue", "pipe"])
def test_received_arrays_are_writable_and_independent(make: Any) -> None:
    send, recv, keep = make()
    send(w.big_array(1))
    a1 = recv()
    send(w.big_array(2))
    a2 = recv()
    assert np.array_equal(a1, w.big_array(1)) and np.array_equal(a2, w.big_array(2))
    a1[:10] = -1.0
    send(w.big_array(3))
    a3 = recv()
    assert np.array_equal(a3, w.big_array(3))
    assert np.array_equal(a2, w.big_array(2))
    assert (a1[:10] == -1.0).all() and np.array_equal(a1[10:], w.big_array(1)[10:])
    del a1  # its memory may now carry the next message
    send(w.big_array(4))
    a4 = recv()
    assert np.array_equal(a4, w.big_array(4))
    assert np.array_equal(a2, w.big_array(2)) and np.array_equal(a3, w.big_array(3))
    del a2, a3, a4
    if isinstance(keep, tuple):
        for end in keep:
            end.close()


# --- Pipe: big objects inside containers go through a memfd too ------------------------------


def test_pipe_sends_big_bytes_inside_a_container_through_a_memfd() -> None:
    a, b = Pipe()
    with a, b:
        item = ("tag", b"\x01" * (256 * KIB))
        a.send(item)
        assert b.poll(TIMEOUT) and b.recv() == item
        assert a._outbox is not None and len(a._outbox.kept) == 1


def test_pipe_sends_a_memoryview_inside_a_container_like_a_queue_does() -> None:
    view = memoryview(bytes(range(256)) * 512)
    q = Queue()
    q.put(("tag", view))
    from_queue = q.get(timeout=TIMEOUT)[1]
    assert type(from_queue) is memoryview and from_queue == view
    del from_queue, q
    a, b = Pipe()
    with a, b:
        a.send(("tag", view))
        assert b.poll(TIMEOUT)
        got = b.recv()[1]
        assert type(got) is memoryview and got == view
        assert a._outbox is not None and len(a._outbox.kept) == 1


# --- the stdlib's Pipe ------------------------------------------------------------------------


def test_stdlib_pipe_is_untouched() -> None:
    a, b = multiprocessing.Pipe()
    r, s = multiprocessing.Pipe(duplex=False)
    try:
        assert type(a) is multiprocessing.connection.Connection
        assert stat.S_ISFIFO(os.fstat(r.fileno()).st_mode)  # still an OS pipe
        arr = np.arange(9_000, dtype=np.float64)  # 72000 bytes: over the threshold
        a.send(arr)
        assert b.poll(TIMEOUT)
        data = b.recv_bytes()
        assert data[:1] == b"\x80"  # an ordinary pickle, as the stdlib makes
        assert np.array_equal(pickle.loads(data), arr)
        a.send(arr)
        assert b.poll(TIMEOUT) and np.array_equal(b.recv(), arr)
        small = arr[:4000]  # an OS pipe holds 64 KiB
        s.send(small)
        assert r.poll(TIMEOUT) and np.array_equal(r.recv(), small)
    finally:
        for end in (a, b, r, s):
            end.close()
