"""manycore.Pool: the multiprocessing.Pool API, under every start method."""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import threading
import time
import weakref

import pytest

import manycore
from tests import helpers, workloads
from tests.helpers import TIMEOUT


def worker_pids(pool: manycore.Pool, n: int = 8) -> set[int]:
    return set(pool.map_async(workloads.getpid_slow, range(n), chunksize=1).get(timeout=TIMEOUT))


def test_pool_api(start_method):
    """Every call of the Pool API, the initializer, and task exceptions, on one pool."""
    with manycore.Pool(
        2, initializer=workloads.init_state, initargs=("ready",), context=start_method
    ) as pool:
        xs = list(range(50))
        squares = [x * x for x in xs]
        assert pool.map(workloads.square, xs) == squares
        assert pool.map(workloads.square, xs, chunksize=7) == squares
        assert pool.map(workloads.square, []) == []
        assert pool.map_async(workloads.square, xs).get(timeout=TIMEOUT) == squares
        assert helpers.drain(pool.imap(workloads.square, xs)) == squares
        assert helpers.drain(pool.imap(workloads.square, xs, chunksize=4)) == squares
        assert sorted(helpers.drain(pool.imap_unordered(workloads.square, xs))) == squares
        assert sorted(helpers.drain(pool.imap_unordered(workloads.square, xs, 3))) == squares
        pairs = [(x, 2 * x) for x in xs]
        assert pool.starmap(workloads.add, pairs) == [3 * x for x in xs]
        assert pool.starmap_async(workloads.add, pairs, 5).get(timeout=TIMEOUT) == [
            3 * x for x in xs
        ]
        assert pool.apply(workloads.add, (2, 3)) == 5
        assert pool.apply(workloads.add, (), {"a": "x", "b": "y"}) == "xy"
        assert pool.apply_async(workloads.square, (9,)).get(timeout=TIMEOUT) == 81
        assert pool.map(workloads.get_state, range(4)) == ["ready"] * 4

        # callback and error_callback
        got: list = []
        errors: list = []
        ok = pool.apply_async(workloads.square, (4,), callback=got.append)
        bad = pool.apply_async(
            workloads.raise_value_error, (4,), callback=got.append, error_callback=errors.append
        )
        assert ok.get(timeout=TIMEOUT) == 16
        ok.wait(timeout=TIMEOUT)
        bad.wait(timeout=TIMEOUT)
        assert ok.ready() and ok.successful()
        assert bad.ready() and not bad.successful()
        assert helpers.wait_until(lambda: got and errors, 10)
        assert got == [16]
        assert len(errors) == 1 and isinstance(errors[0], ValueError)
        mapped: list = []
        pool.map_async(workloads.square, range(5), callback=mapped.append).get(timeout=TIMEOUT)
        assert helpers.wait_until(lambda: mapped, 10)
        assert mapped == [[0, 1, 4, 9, 16]]

        # a task's own exception comes back as its own type, the worker traceback as cause
        with pytest.raises(ValueError, match="bad value: 4") as info:
            bad.get(timeout=TIMEOUT)
        cause = info.value.__cause__
        assert isinstance(cause, manycore.RemoteTraceback)
        assert "raise_value_error" in str(cause)
        assert "ValueError" in str(cause)
        with pytest.raises(workloads.CustomError) as custom:
            pool.apply_async(workloads.raise_custom, (7,)).get(timeout=TIMEOUT)
        assert custom.value.code == 7 and str(custom.value) == "custom failure 7"
        with pytest.raises(ValueError, match="bad value: 13"):
            pool.starmap(workloads.raise_if, [(x, 13) for x in range(20)], chunksize=3)
        with pytest.raises(ValueError, match="bad value: 5"):
            helpers.drain(pool.imap(workloads.raise_value_error, [5]))

        # and the pool is still fine afterwards
        assert pool.map(workloads.square, range(10)) == [x * x for x in range(10)]


def test_async_result_timeout():
    with manycore.Pool(2) as pool:
        result = pool.apply_async(workloads.sleep_then, (1.0, "late"))
        result.wait(timeout=0.01)
        assert not result.ready()
        with pytest.raises(manycore.TimeoutError) as info:
            result.get(timeout=0.05)
        assert isinstance(info.value, multiprocessing.TimeoutError)
        assert isinstance(info.value, TimeoutError)
        assert not result.ready()
        with pytest.raises(ValueError):
            result.successful()  # the stdlib's answer before the result is ready
        assert result.get(timeout=TIMEOUT) == "late"
        assert result.ready() and result.successful()


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_context_object(method):
    ctx = multiprocessing.get_context(method)
    with manycore.Pool(2, context=ctx) as pool:
        assert pool.map(workloads.square, range(20)) == [x * x for x in range(20)]


def test_default_process_count():
    with manycore.Pool() as pool:
        assert pool.map(workloads.square, range(10)) == [x * x for x in range(10)]
        assert helpers.wait_until(lambda: len(worker_pids(pool)) == manycore.cpu_count(), 30)


def test_cpu_count():
    n = manycore.cpu_count()
    assert isinstance(n, int)
    assert 1 <= n <= (multiprocessing.cpu_count() or n)


def test_close_then_join_finishes_outstanding_work(start_method):
    pool = manycore.Pool(2, context=start_method)
    try:
        pids = helpers.procs(worker_pids(pool))
        pending = pool.map_async(workloads.slow, range(6), chunksize=1)
        pool.close()
        with pytest.raises(manycore.PoolClosedError) as info:
            pool.apply_async(workloads.square, (1,))
        assert isinstance(info.value, ValueError)  # what multiprocessing.Pool raises
        with pytest.raises(manycore.PoolClosedError):
            pool.map(workloads.square, range(3))
        helpers.call_with_timeout(pool.join)
        assert pending.ready()
        assert pending.get(timeout=1) == list(range(6))
        assert helpers.wait_gone(pids, 2) == set()
    finally:
        pool.terminate()


def test_terminate_settles_pending_work():
    pool = manycore.Pool(2)
    try:
        pids = helpers.procs(worker_pids(pool))
        pending = pool.map_async(workloads.sleep_then, [30.0] * 4, chunksize=1)
        single = pool.apply_async(workloads.sleep_then, (30.0,))
        time.sleep(0.2)
        helpers.call_with_timeout(pool.terminate, timeout=10)
        # the stdlib leaves these hanging forever; manycore settles them
        with pytest.raises(manycore.PoolClosedError):
            pending.get(timeout=10)
        with pytest.raises(manycore.PoolClosedError):
            single.get(timeout=10)
        helpers.call_with_timeout(pool.join, timeout=10)
        assert helpers.wait_gone(pids, 5) == set()
        with pytest.raises(manycore.PoolClosedError):
            pool.apply_async(workloads.square, (1,))
    finally:
        pool.terminate()


def test_context_manager_exit_stops_workers():
    with manycore.Pool(2) as pool:
        pids = helpers.procs(worker_pids(pool))
        assert pids
    assert helpers.wait_gone(pids, 5) == set()
    with pytest.raises(manycore.PoolClosedError):
        pool.apply_async(workloads.square, (1,))


def test_a_stdlib_connection_as_a_task_argument(start_method):
    # As the stdlib's pool sends it, by multiprocessing's reducer: plain pickle takes a
    # stdlib Connection (from Listener/Client) as its descriptor's number, which names
    # nothing, or something else, in the worker.
    from multiprocessing import resource_sharer
    from multiprocessing.connection import Client, Listener

    from tests import workloads_ipc

    with manycore.Pool(1, context=start_method) as pool:
        assert pool.apply(abs, (-1,)) == 1  # the worker exists before the connection does
        try:
            with (
                Listener(family="AF_UNIX") as listener,
                Client(listener.address) as client,
                listener.accept() as served,
            ):
                task = pool.apply_async(workloads_ipc.send_on, (served, "from a worker"))
                assert task.get(TIMEOUT) is None
                assert client.poll(TIMEOUT), "nothing arrived on the connection"
                assert client.recv() == "from a worker"
        finally:
            resource_sharer.stop(TIMEOUT)


def test_a_finished_map_frees_its_values_without_the_cyclic_collector(start_method):
    """No reference cycle holds a map's values once the caller drops them: with the
    cyclic garbage collector off, they are freed at once. (A cycle between a map's job and
    its result kept every chunk's values until the next collection, and made each
    collection meanwhile walk them: 30-50 ms pauses in a loop of 200k-item maps.)"""
    inputs = [{i} for i in range(40)]  # sets: weakly referenceable, rebuilt in the caller
    pairs = [(0, x) for x in inputs]  # sleep_then(0, x) is x
    with manycore.Pool(2, context=start_method) as pool:
        calls = {
            "map": lambda: pool.map(workloads.identity, inputs, chunksize=10),
            "map, default chunking": lambda: pool.map(workloads.identity, inputs),
            "map_async": lambda: pool.map_async(workloads.identity, inputs, 10).get(TIMEOUT),
            "map_async with a callback": lambda: pool.map_async(
                workloads.identity, inputs, 10, callback=lambda values: None
            ).get(TIMEOUT),
            "starmap": lambda: pool.starmap(workloads.sleep_then, pairs, chunksize=10),
        }
        calls["map"]()
        gc.collect()
        gc.disable()
        try:
            for name, call in calls.items():
                values = call()
                assert values == inputs, name
                refs = [weakref.ref(value) for value in values]
                del values
                # The pool's thread may still be leaving the frame that settled the last
                # chunk: wait for it, a little.
                freed = helpers.wait_until(lambda refs=refs: all(r() is None for r in refs), 10)
                assert freed, f"{name}: values still alive once dropped"
        finally:
            gc.enable()


def test_maxtasksperchild():
    with manycore.Pool(1, maxtasksperchild=2) as pool:
        pids = [pool.apply_async(workloads.getpid).get(timeout=TIMEOUT) for _ in range(6)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
    assert len(set(pids)) == 3


def test_imap_reads_input_lazily():
    seen = []

    def numbers():
        for i in itertools.count():
            seen.append(i)
            yield i

    with manycore.Pool(2) as pool:
        it = pool.imap(workloads.slow_square, numbers())
        assert helpers.take(it, 50) == [i * i for i in range(50)]
        unordered = pool.imap_unordered(workloads.slow_square, itertools.count())
        got = helpers.take(unordered, 50)
        assert len(set(got)) == 50 and all(round(g**0.5) ** 2 == g for g in got)
    # a bounded look-ahead, not the whole (infinite) input
    assert len(seen) < 2_000


def test_imap_yields_results_as_they_are_ready():
    """imap hands over the first result while later ones are still running."""
    with manycore.Pool(2) as pool:
        it = pool.imap(workloads.sleep_then, [0.0] + [10.0] * 3, chunksize=1)
        assert it.next(timeout=5) is None


def test_nested_pools(start_method):
    with manycore.Pool(2, context=start_method) as pool:
        results = pool.map_async(workloads.nested_map, [10, 12], chunksize=1).get(timeout=120)
    inner = set()
    for n, (squares, pids) in zip([10, 12], results):
        assert squares == [x * x for x in range(n)]
        assert pids
        inner.update(pids)
    # the inner pools' workers ended with their pools
    assert helpers.wait_gone(helpers.procs(inner), 5) == set()


def test_pool_from_threads():
    """Several threads may share one pool."""
    results = {}

    def use(k: int) -> None:
        results[k] = pool.starmap(workloads.add, [(x, k) for x in range(100)])

    with manycore.Pool(2) as pool:
        threads = [threading.Thread(target=use, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
            assert not t.is_alive()
    assert results == {k: [x + k for x in range(100)] for k in range(4)}


def fail_on_multiples_of_seven(x: int) -> int:
    if x % 7 == 0:
        raise ValueError(x)
    return x


def _drain(iterator) -> tuple[list[int], list[str]]:
    values, errors = [], []
    while True:
        try:
            values.append(iterator.next(timeout=TIMEOUT))
        except StopIteration:
            return values, errors
        except ValueError as exc:
            errors.append(str(exc))


@pytest.mark.parametrize("chunksize", [None, 1, 3, 50])
def test_imap_errors_fail_their_items_alone(chunksize):
    # Several failures per chunk, one at a chunk's end, one at the very end of the input.
    items = list(range(1, 50))
    good = [x for x in items if x % 7]
    bad = [str(x) for x in items if x % 7 == 0]
    kwargs = {} if chunksize is None else {"chunksize": chunksize}
    with manycore.Pool(2) as pool:
        values, errors = _drain(pool.imap(fail_on_multiples_of_seven, items, **kwargs))
        assert values == good
        assert errors == bad
        values, errors = _drain(pool.imap_unordered(fail_on_multiples_of_seven, items, **kwargs))
        assert sorted(values) == good
        assert sorted(errors, key=int) == bad
