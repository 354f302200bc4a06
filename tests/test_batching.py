"""Small chunks travel several to a transport batch, and stay the unit of work (issue 16)."""

from __future__ import annotations

import pytest

import manycore

from . import workloads_speed

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
