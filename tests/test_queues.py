"""Queue, SimpleQueue, JoinableQueue: the stdlib's API, across processes, without its traps."""

from __future__ import annotations

import gc
import os
import pickle
import queue
import threading
from collections import defaultdict
from typing import Iterator, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manycore import _buffers
from manycore._buffers import SharedMemoryWarning
from manycore._errors import ArgumentPicklingError
from manycore._queue import Empty, Full, JoinableQueue, Queue, SimpleQueue, _fifo
from tests import workloads_ipc as w
from tests.helpers import TIMEOUT, join_ok, start_process

MIB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def shm_tracker() -> Iterator[None]:
    """Keep this process's shm tracker (which unlinks a queue's files if its creator is
    killed) running for the whole module, as in a program that keeps using queues. Otherwise
    the first queue of every test starts it and the leak check waits for it to exit."""
    from manycore import _shm

    keepalive = "manycore-q-tests-keepalive"
    _shm.track_prefix(keepalive)
    yield
    _shm.untrack_prefix(keepalive)


@pytest.fixture(autouse=True)
def collect_queues() -> Iterator[None]:
    """A queue's files go when the queue is collected: collect those caught in reference
    cycles (a traceback kept by pytest.raises) before the leak check looks at /dev/shm."""
    yield
    gc.collect()


def _files(q: Queue) -> set[str]:
    prefix = q._prefix
    return {n for n in os.listdir("/dev/shm") if n.startswith((prefix, f"sem.{prefix}"))}


# --- the stdlib API, in one process --------------------------------------------------------


def test_exceptions_are_the_stdlib_ones() -> None:
    assert Empty is queue.Empty and Full is queue.Full


def test_fifo_get_put_nowait_and_empty() -> None:
    q = Queue()
    assert q.empty() and q.qsize() == 0 and not q.full()
    for i in range(5):
        q.put(("item", i))
    q.put_nowait(None)
    assert q.qsize() == 6 and not q.empty()
    assert [q.get(timeout=TIMEOUT) for _ in range(5)] == [("item", i) for i in range(5)]
    assert q.get_nowait() is None
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.get(timeout=0.05)
    with pytest.raises(Empty):
        q.get(block=False)


def test_bounded_full_with_timeouts() -> None:
    q = Queue(2)
    q.put(1)
    q.put(2, timeout=TIMEOUT)
    assert q.full() and q.qsize() == 2
    with pytest.raises(Full):
        q.put_nowait(3)
    with pytest.raises(Full):
        q.put(3, timeout=0.05)
    with pytest.raises(Full):
        q.put(3, block=False)
    assert q.get(timeout=TIMEOUT) == 1
    q.put(3, timeout=TIMEOUT)
    assert [q.get(timeout=TIMEOUT), q.get(timeout=TIMEOUT)] == [2, 3]
    assert not q.full()


def test_bounded_put_waits_for_a_get() -> None:
    q = Queue(1)
    q.put("first")
    t = threading.Timer(0.1, q.get)
    t.start()
    q.put("second", timeout=TIMEOUT)  # returns once the timer's get freed the slot
    t.join(TIMEOUT)
    assert q.get(timeout=TIMEOUT) == "second"


def test_put_many_get_many() -> None:
    q = Queue()
    q.put_many(range(5))
    assert q.qsize() == 5
    assert q.get_many(3, timeout=TIMEOUT) == [0, 1, 2]
    assert q.get_many(10, timeout=0) == [3, 4]
    with pytest.raises(Empty):
        q.get_many(1, timeout=0)
    with pytest.raises(Empty):
        q.get_many(1, timeout=0.05)
    with pytest.raises(ValueError):
        q.get_many(0)
    bounded = Queue(3)
    with pytest.raises(Full):
        bounded.put_many(range(5), timeout=0.05)
    assert bounded.get_many(5, timeout=0) == [0, 1, 2]


def test_unpicklable_put_raises_and_the_queue_still_works() -> None:
    q = Queue()
    q.put("before")
    with pytest.raises(ArgumentPicklingError, match="lock") as info:
        q.put(threading.Lock())
    assert isinstance(info.value, pickle.PicklingError)
    assert "nothing was enqueued" in str(info.value)
    with pytest.raises(ArgumentPicklingError):
        q.put_many([1, threading.Lock(), 3])  # nothing of the batch goes in
    assert q.qsize() == 1
    q.put("after")
    assert [q.get(timeout=TIMEOUT), q.get(timeout=TIMEOUT)] == ["before", "after"]


def test_a_stdlib_connection_travels_through_a_queue(start_method: Optional[str]) -> None:
    # As the stdlib's put does, by multiprocessing's reducer (plain pickle takes the stdlib
    # Connection as its descriptor's number, which means nothing in the child).
    from multiprocessing import resource_sharer
    from multiprocessing.connection import Client, Listener

    q = Queue()
    text = "over a queued connection"
    p = start_process(start_method, w.answer_on_queued_connection, q, text, TIMEOUT)
    try:
        # The listener is made after the child started: the child inherits nothing of it.
        with (
            Listener(family="AF_UNIX") as listener,
            Client(listener.address) as client,
            listener.accept() as served,
        ):
            q.put((served,))  # in a tuple: the queue's fast path for plain data
            assert client.poll(TIMEOUT), "nothing arrived on the queued connection"
            assert client.recv() == text
    finally:
        join_ok(p)
        resource_sharer.stop(TIMEOUT)


def test_lambdas_and_main_objects_travel_by_value() -> None:
    q = Queue()
    q.put(lambda x: x * 3)
    assert q.get(timeout=TIMEOUT)(2) == 6


def test_big_items_bytes_bytearray_and_numpy() -> None:
    q = Queue()
    blob = os.urandom(MIB)
    q.put(blob)
    q.put(bytearray(blob))
    assert q.get(timeout=TIMEOUT) == blob
    assert q.get(timeout=TIMEOUT) == bytearray(blob)


def test_error_names_the_type() -> None:
    q = Queue()
    with pytest.raises(ArgumentPicklingError, match="generator"):
        q.put(x for x in range(3))
    assert q.empty()


def test_numpy_arrays_out_of_band() -> None:
    np = pytest.importorskip("numpy")
    q = Queue()
    arrays = [np.arange(300_000, dtype=np.int32), np.ones((50, 40))[:, ::3], np.array([])]
    q.put_many(arrays)
    for sent in arrays:
        got = q.get(timeout=TIMEOUT)
        assert got.dtype == sent.dtype and got.shape == sent.shape and (got == sent).all()


def test_full_ring_spills_to_overflow_blocks_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fifo, "SPACE_WAIT", 0.01)
    q = Queue()
    items = [bytes([i]) * MIB for i in range(12)] + [b"z" * (3 * MIB), ("small", 1)]
    for item in items:  # 8 MiB of ring: no consumer, so the rest must spill, not block
        q.put(item, timeout=TIMEOUT)
    assert q.qsize() == len(items)
    assert any("-b" in name for name in _files(q)), "nothing spilled to an overflow block"
    q.put(("after", 2))
    assert [q.get(timeout=TIMEOUT) for _ in range(len(items) + 1)] == [*items, ("after", 2)]
    blocks = [name for name in _files(q) if "-b" in name]
    assert len(blocks) <= 1, f"emptied blocks were not unlinked (one spare is kept): {blocks}"
    q.put(("ring", 3))  # back to the ring
    assert q.get(timeout=TIMEOUT) == ("ring", 3)


def test_ring_wraps_around_many_times() -> None:
    q = Queue()
    chunk = b"w" * (MIB + 13)  # not a divisor of the ring: records wrap at odd offsets
    for i in range(40):
        q.put((i, chunk))
        assert q.get(timeout=TIMEOUT) == (i, chunk)
    assert q.empty()


def test_close_then_put_or_get_raises() -> None:
    q = Queue()
    q.cancel_join_thread()
    with pytest.raises(ValueError):
        q.join_thread()  # as the stdlib: only after close()
    q.close()
    q.join_thread()
    with pytest.raises(ValueError, match="closed"):
        q.put(1)
    with pytest.raises(ValueError, match="closed"):
        q.get(timeout=0)


def test_after_close_empty_raises_as_the_stdlibs_does() -> None:
    # The stdlib's close() closes a queue's pipe once the process has put on it (an unused
    # queue's close has nothing to close), and a SimpleQueue's at once: empty() then raises.
    unused, used, simple = Queue(), JoinableQueue(), SimpleQueue()
    used.put("x")
    for q in (unused, used, simple):
        q.close()
    assert unused.empty()
    with pytest.raises(OSError, match="closed"):
        used.empty()
    assert used.qsize() == 1 and not used.full()
    for call in (simple.empty, lambda: simple.put(1), lambda: simple.get()):
        with pytest.raises(OSError, match="closed"):
            call()


def test_simple_queue() -> None:
    q = SimpleQueue()
    assert q.empty()
    q.put([1, 2])
    assert not q.empty()
    assert q.get() == [1, 2]
    q.close()


def test_creator_unlinks_everything_when_collected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fifo, "SPACE_WAIT", 0.0)
    q = JoinableQueue(100)
    for _ in range(10):
        q.put(b"x" * MIB)  # leaves overflow blocks behind, unread
    files = _files(q)
    assert len(files) >= 6  # ring, a block, and the semaphores m, i, w, s, d
    data = pickle.dumps(q)
    del q
    gc.collect()
    assert not {n for n in os.listdir("/dev/shm") if n in files}
    with pytest.raises(ValueError, match="no longer exists"):
        pickle.loads(data)


def test_queue_through_a_queue() -> None:
    outer, inner = Queue(), Queue()
    outer.put(inner)
    got = outer.get(timeout=TIMEOUT)
    got.put("via the copy")
    assert inner.get(timeout=TIMEOUT) == "via the copy"


# --- JoinableQueue ---------------------------------------------------------------------------


def test_joinable_in_one_process() -> None:
    q = JoinableQueue()
    assert q.join(timeout=TIMEOUT) is True  # nothing put: returns at once
    q.put(1)
    q.put(2)
    assert q.join(timeout=0.05) is False
    q.get(timeout=TIMEOUT)
    q.task_done()
    assert q.join(timeout=0.05) is False
    q.get(timeout=TIMEOUT)
    t = threading.Timer(0.05, q.task_done)
    t.start()
    assert q.join(timeout=TIMEOUT) is True
    t.join(TIMEOUT)
    with pytest.raises(ValueError, match="task_done"):
        q.task_done()


def test_joinable_across_processes(start_method: Optional[str]) -> None:
    q, results = JoinableQueue(), Queue()
    p = start_process(start_method, w.work_and_task_done, q, results, 6, TIMEOUT)
    q.put_many(range(6))
    assert q.join(timeout=TIMEOUT) is True
    assert sorted(results.get(timeout=TIMEOUT) for _ in range(6)) == [n * n for n in range(6)]
    join_ok(p)


# --- across processes ------------------------------------------------------------------------


def test_child_consumes_every_start_method(start_method: Optional[str]) -> None:
    q, out = Queue(), Queue()
    p = start_process(start_method, w.consume, q, out, 4, TIMEOUT)
    q.put_many([("a", 1), b"b" * MIB, None])
    q.put({"d": 4})
    assert out.get(timeout=TIMEOUT) == [("a", 1), b"b" * MIB, None, {"d": 4}]
    join_ok(p)


def test_producer_exits_without_a_reader(start_method: Optional[str]) -> None:
    q = Queue()
    items = [("small", i) for i in range(1000)] + [b"big" * (3 * MIB)]
    p = start_process(start_method, w.produce_items, q, items)
    p.join(TIMEOUT)  # the stdlib's feeder thread would hold the child here
    assert p.exitcode == 0
    assert q.qsize() == len(items)
    assert q.get_many(len(items), timeout=TIMEOUT) == items


def test_queue_sent_through_a_queue_to_a_child() -> None:
    inbox, target = Queue(), Queue()
    p = start_process("spawn", w.forward, inbox, 3, TIMEOUT)
    inbox.put(target)
    assert [target.get(timeout=TIMEOUT) for _ in range(3)] == [0, 1, 2]
    join_ok(p)


def test_queue_in_pool_initargs_and_task_args() -> None:
    import manycore

    q = Queue()
    with manycore.Pool(2, initializer=w.init_queue, initargs=(q,)) as pool:
        assert pool.map(w.put_on_init_queue, range(4), 1) == [0, 1, 2, 3]
        pool.apply(w.produce_items, (q, ["from a task"]))
    got = sorted(map(str, (q.get(timeout=TIMEOUT) for _ in range(5))))
    assert got == ["0", "1", "2", "3", "from a task"]


@settings(max_examples=8)
@given(
    counts=st.lists(st.integers(0, 300), min_size=1, max_size=3),
    consumers=st.integers(1, 3),
    batch=st.sampled_from([0, 1, 7, 64]),
)
def test_fifo_per_producer_no_loss_no_duplication(
    counts: list[int], consumers: int, batch: int
) -> None:
    q, out = Queue(), Queue()
    readers = [
        start_process("fork", w.consume_until_none, q, out, TIMEOUT) for _ in range(consumers)
    ]
    writers = [
        start_process("fork", w.produce_many, q, tag, n, batch)
        if batch
        else start_process("fork", w.produce, q, tag, n)
        for tag, n in enumerate(counts)
    ]
    for p in writers:
        join_ok(p)
    q.put_many([None] * consumers)
    received = [out.get(timeout=TIMEOUT) for _ in range(consumers)]
    for p in readers:
        join_ok(p)
    everything = sorted(item for got in received for item in got)
    assert everything == sorted((tag, i) for tag, n in enumerate(counts) for i in range(n))
    for got in received:  # each consumer saw each producer's items in the order put
        seen: dict[int, list[int]] = defaultdict(list)
        for tag, i in got:
            seen[tag].append(i)
        assert all(s == sorted(s) for s in seen.values())


@settings(max_examples=5)
@given(
    sizes=st.lists(
        st.lists(st.sampled_from([0, 10, 70_000, 300_000, MIB, 3 * MIB]), max_size=25),
        min_size=1,
        max_size=3,
    ),
    consumers=st.integers(1, 3),
)
def test_big_and_small_records_with_concurrent_consumers(
    sizes: list[list[int]], consumers: int
) -> None:
    # Big records are copied out with the mutex released, several at once; small ones read
    # meanwhile are swept later; the ring's space must come back in order, with no corruption.
    q, out = Queue(), Queue()
    readers = [
        start_process("fork", w.consume_until_none, q, out, TIMEOUT) for _ in range(consumers)
    ]
    writers = [start_process("fork", w.produce_sized, q, tag, s) for tag, s in enumerate(sizes)]
    for p in writers:
        join_ok(p)
    q.put_many([None] * consumers)
    received = [out.get(timeout=TIMEOUT) for _ in range(consumers)]
    for p in readers:
        join_ok(p)
    got = sorted((tag, i, len(data)) for part in received for tag, i, data in part)
    assert got == sorted((t, i, n) for t, s in enumerate(sizes) for i, n in enumerate(s))
    for part in received:
        for tag, i, data in part:
            assert data == w.payload(tag, i, len(data))
        for tag in range(len(sizes)):
            order = [i for t, i, _ in part if t == tag]
            assert order == sorted(order)


def test_full_shared_memory_raises_in_put_and_nothing_is_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    from manycore._shm import ShmUnavailableError

    monkeypatch.setattr(_fifo, "SPACE_WAIT", 0.0)
    q = Queue(50)
    items = [bytes([i]) * MIB for i in range(7)]
    q.put_many(items)  # most of the 8 MiB ring
    real = os.posix_fallocate

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)  # /dev/shm is full from now on
    monkeypatch.setattr(_buffers, "_warned", False)
    # Too big for the ring: no segment of its own can be made (one warning), then no
    # overflow block either.
    with (
        pytest.warns(SharedMemoryWarning),
        pytest.raises(ShmUnavailableError, match="nothing was enqueued") as info,
    ):
        q.put(b"y" * (3 * MIB))
    assert info.value.errno == errno.ENOSPC
    assert q.qsize() == len(items)
    monkeypatch.setattr(os, "posix_fallocate", real)
    q.put(b"z" * (3 * MIB))
    got = [q.get(timeout=TIMEOUT) for _ in range(len(items) + 1)]
    assert got == [*items, b"z" * (3 * MIB)]
    q.put_many(range(50))  # every slot came back, the failed put's included
    assert q.full()


def test_copies_release_their_descriptors_and_mappings() -> None:
    q = Queue()
    before = len(os.listdir("/proc/self/fd"))
    for i in range(100):
        copy = pickle.loads(pickle.dumps(q))
        copy.put(i)
        assert q.get(timeout=TIMEOUT) == i
        del copy
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before
