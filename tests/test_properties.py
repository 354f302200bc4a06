"""Hypothesis properties: every map-style call gives what the builtin map gives, for any input,
chunk size and worker count. One pool per worker count is reused across examples."""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from hypothesis import given
from hypothesis import strategies as st

import manycore
from tests import helpers, workloads
from tests.helpers import TIMEOUT

chunksizes = st.one_of(st.none(), st.integers(min_value=1, max_value=50))
worker_counts = st.integers(min_value=1, max_value=3)
ints = st.lists(st.integers(), max_size=300)
values = st.lists(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.binary(max_size=20),
        st.tuples(st.integers(), st.text(max_size=5)),
    ),
    max_size=100,
)


class Cache:
    """Pools (or executors) by worker count, made on first use and all closed at the end."""

    def __init__(self, make: Callable[[int], Any]) -> None:
        self.make = make
        self.items: dict[int, Any] = {}

    def __call__(self, workers: int) -> Any:
        if workers not in self.items:
            self.items[workers] = self.make(workers)
        return self.items[workers]

    def close(self, how: Callable[[Any], None]) -> None:
        for item in self.items.values():
            helpers.call_with_timeout(how, item)


def test_pool_map_family_matches_builtin_map(start_method):
    pools = Cache(lambda n: manycore.Pool(n, context=start_method))
    examples: list[int] = []

    @given(
        xs=ints,
        pairs=st.lists(st.tuples(st.integers(), st.integers()), max_size=200),
        objs=values,
        chunksize=chunksizes,
        workers=worker_counts,
    )
    def check(xs, pairs, objs, chunksize, workers):
        examples.append(workers)
        pool = pools(workers)
        kw = {} if chunksize is None else {"chunksize": chunksize}
        expected = list(map(workloads.square, xs))
        assert pool.map(workloads.square, xs, chunksize) == expected
        assert pool.map_async(workloads.square, xs, chunksize).get(timeout=TIMEOUT) == expected
        assert helpers.drain(pool.imap(workloads.square, xs, **kw)) == expected
        unordered = helpers.drain(pool.imap_unordered(workloads.square, xs, **kw))
        assert Counter(unordered) == Counter(expected)
        assert pool.starmap(workloads.add, pairs, chunksize) == [a + b for a, b in pairs]
        assert pool.map(workloads.identity, objs, chunksize) == objs

    try:
        check()
    finally:
        pools.close(lambda pool: pool.terminate())
    assert len(examples) >= 10, examples  # the property really ran


def test_executor_map_matches_builtin_map(start_method):
    executors = Cache(lambda n: manycore.ProcessPoolExecutor(n, mp_context=start_method))
    examples: list[int] = []

    @given(xs=ints, ys=ints, chunksize=chunksizes, workers=worker_counts)
    def check(xs, ys, chunksize, workers):
        examples.append(workers)
        ex = executors(workers)
        kw = {} if chunksize is None else {"chunksize": chunksize}
        got = list(ex.map(workloads.square, xs, timeout=TIMEOUT, **kw))
        assert got == list(map(workloads.square, xs))
        got = list(ex.map(workloads.add, xs, ys, timeout=TIMEOUT, **kw))
        assert got == list(map(workloads.add, xs, ys))

    try:
        check()
    finally:
        executors.close(lambda ex: ex.shutdown(wait=True, cancel_futures=True))
    assert len(examples) >= 10, examples  # the property really ran
