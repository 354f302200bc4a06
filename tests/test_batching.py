"""Small chunks travel several to a transport batch, and stay the unit of work (issue 16)."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

import manycore

from . import workloads, workloads_speed

TIMEOUT = 60


def test_chunksize_one_map_sends_many_chunks_per_batch(start_method):
    # chunksize=1 used to cost a round trip per item: one batch per chunk, two in flight
    # per worker. Once the item time is measured, chunks share batches.
    with manycore.Pool(2, context=start_method) as pool:
        first = pool.map_async(workloads_speed.calls_in_batch, range(400), chunksize=1)
        sizes = first.get(TIMEOUT)
        again = pool.map_async(workloads_speed.calls_in_batch, range(400), chunksize=1)
        sizes_again = again.get(TIMEOUT)
    assert len(sizes) == 400 and min(sizes) >= 1
    assert max(sizes) > 1
    # The same function mapped again starts from its measurement: batches from the start.
    assert max(sizes_again) > 1


def test_a_default_map_after_a_chunksize_one_map_starts_with_large_chunks(start_method):
    # A chunksize=1 call of a trivial function is mostly the call's fixed cost (a few
    # microseconds, where the work takes a tenth of one). Charged to each item, it made
    # the next default map of the same function start from chunks of a few thousand
    # items, growing them over several round trips. Its first chunk is now what the
    # balance rule allows: a quarter of a worker's share of the input, as the stdlib cuts.
    n = 40_000
    with manycore.Pool(2, context=start_method) as pool:
        ones = pool.map_async(workloads_speed.chunk_items, range(2000), chunksize=1)
        assert ones.get(TIMEOUT)[0] == 1
        done_before = pool.statistics().tasks_done
        first = pool.map_async(workloads_speed.chunk_items, range(n)).get(TIMEOUT)[0]
        chunks = pool.statistics().tasks_done - done_before
    assert first == n // 8, f"first chunk {first} items, {chunks} chunks in all"
    assert chunks <= 24


def test_a_short_map_is_split_evenly_not_handed_to_one_worker(start_method):
    # Chunks are never cut below ~1 ms of work, but that floor used to give all of a short
    # map of trivial items to one worker, or most of it and a scrap to the other.
    with manycore.Pool(2, context=start_method) as pool:
        pool.map_async(workloads_speed.chunk_items, range(50_000)).get(TIMEOUT)  # measured
        first = pool.map_async(workloads_speed.chunk_items, range(4_000)).get(TIMEOUT)[0]
    assert first <= 2_000


def test_map_cuts_lists_tuples_and_ranges_as_they_are(start_method):
    # Slices of the input travel as they are: a range's chunks as ranges.
    with manycore.Pool(2, context=start_method) as pool:
        for items in ([3, 1, 2] * 1000, tuple(range(3000)), range(3000), range(5, 60_000, 7)):
            assert pool.map(workloads.square, items) == [x * x for x in items]
        assert pool.map(workloads.square, range(0)) == []
        assert pool.map(workloads_speed.chunk_items, range(1))[0] == 1
        pairs = tuple((i, 2 * i) for i in range(500))
        assert pool.starmap(workloads.add, pairs) == [3 * i for i in range(500)]
        with pytest.raises(ValueError, match="item 7 is bad"):
            pool.map(workloads_speed.fail_on_seven, range(100))
        # A subclass is read through its own __iter__, as the stdlib reads it.
        assert pool.map(workloads.square, _Doubled([1, 2, 3])) == [4, 16, 36]


class _Doubled(list):
    def __iter__(self):
        return (2 * x for x in list.__iter__(self))


def test_a_map_read_while_it_runs_keeps_its_errors_timeouts_and_cancel(start_method):
    # get() unpickles the chunks that are back while the rest still run.
    with manycore.Pool(2, context=start_method) as pool:
        failing = pool.map_async(workloads.return_fails_to_unpickle, range(4), chunksize=1)
        with pytest.raises(manycore.ResultUnpicklingError):
            failing.get(TIMEOUT)
        slow = pool.map_async(workloads.slow, range(40), chunksize=1)  # about 1 s of sleeps
        with pytest.raises(manycore.TimeoutError):
            slow.get(timeout=0.05)
        assert slow.get(TIMEOUT) == list(range(40))
        slow = pool.map_async(workloads.slow, range(40), chunksize=1)
        canceller = threading.Timer(0.1, slow.cancel)
        canceller.start()
        try:
            with pytest.raises(concurrent.futures.CancelledError):
                slow.get(TIMEOUT)
        finally:
            canceller.join(TIMEOUT)
        assert pool.map(workloads.square, range(5)) == [0, 1, 4, 9, 16]


def test_chunks_in_one_batch_keep_their_own_results_and_errors(start_method):
    with manycore.Pool(2, context=start_method) as pool:
        assert pool.map(workloads_speed.fail_on_seven, range(6), chunksize=1) == [
            x * x for x in range(6)
        ]
        result = pool.map_async(workloads_speed.fail_on_seven, range(300), chunksize=1)
        with pytest.raises(ValueError, match="item 7 is bad"):
            result.get(TIMEOUT)
        got = list(pool.imap_unordered(workloads_speed.calls_in_batch, range(300), chunksize=1))
        assert len(got) == 300
        ordered = pool.imap(workloads_speed.fail_on_seven, range(20), chunksize=1)
        values = [ordered.next(TIMEOUT) for _ in range(7)]
        assert values == [x * x for x in range(7)]
        with pytest.raises(ValueError, match="item 7 is bad"):
            ordered.next(TIMEOUT)
        assert [ordered.next(TIMEOUT) for _ in range(12)] == [x * x for x in range(8, 20)]


def test_executor_map_chunksize_one_batches(start_method):
    with manycore.ProcessPoolExecutor(2, mp_context=start_method) as ex:
        list(ex.map(workloads_speed.calls_in_batch, range(200), chunksize=1, timeout=TIMEOUT))
        sizes = list(
            ex.map(workloads_speed.calls_in_batch, range(200), chunksize=1, timeout=TIMEOUT)
        )
    assert len(sizes) == 200 and max(sizes) > 1


def test_retries_count_per_chunk_inside_a_shared_batch(start_method):
    with manycore.Pool(2, context=start_method, retries=1, retry_on=(ValueError,)) as pool:
        pool.map(workloads_speed.calls_in_batch, range(200), chunksize=1)
        result = pool.map_async(workloads_speed.fail_on_seven, range(200), chunksize=1)
        with pytest.raises(ValueError, match="item 7 is bad") as caught:
            result.get(TIMEOUT)
    assert getattr(caught.value, "attempts", None) == 2
