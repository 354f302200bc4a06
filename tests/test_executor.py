"""manycore.ProcessPoolExecutor: the concurrent.futures API, under every start method."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import copy
import gc
import multiprocessing
import pickle
import threading
import weakref
from concurrent.futures.process import BrokenProcessPool

import pytest

import manycore
from tests import helpers, workloads
from tests.helpers import TIMEOUT


def test_executor_api(start_method):
    with manycore.ProcessPoolExecutor(
        max_workers=2,
        mp_context=start_method,
        initializer=workloads.init_state,
        initargs=(42,),
    ) as ex:
        fut = ex.submit(workloads.add, 2, b=3)
        assert isinstance(fut, cf.Future)
        assert fut.result(timeout=TIMEOUT) == 5
        assert fut.done() and not fut.cancelled() and fut.exception(timeout=0) is None
        assert ex.submit(workloads.get_state).result(timeout=TIMEOUT) == 42

        xs = list(range(40))
        assert list(ex.map(workloads.square, xs, timeout=TIMEOUT)) == [x * x for x in xs]
        assert list(ex.map(workloads.square, xs, chunksize=6, timeout=TIMEOUT)) == [
            x * x for x in xs
        ]
        # several iterables, stopping at the shortest, like the builtin map
        assert list(ex.map(workloads.add, xs, range(100, 110), timeout=TIMEOUT)) == [
            x + 100 + x for x in range(10)
        ]
        assert list(ex.map(workloads.square, [], timeout=TIMEOUT)) == []

        futures = [ex.submit(workloads.square, x) for x in range(20)]
        done, not_done = cf.wait(futures, timeout=TIMEOUT)
        assert len(done) == 20
        assert not not_done
        assert sorted(f.result() for f in cf.as_completed(futures, timeout=TIMEOUT)) == [
            x * x for x in range(20)
        ]

        seen: list = []
        fut = ex.submit(workloads.square, 6)
        fut.add_done_callback(lambda f: seen.append(f.result()))
        fut.result(timeout=TIMEOUT)
        assert helpers.wait_until(lambda: seen, 10)
        assert seen == [36]

        # a task's exception: its own type, the worker traceback as cause
        bad = ex.submit(workloads.raise_value_error, "x")
        exc = bad.exception(timeout=TIMEOUT)
        assert isinstance(exc, ValueError) and "bad value: 'x'" in str(exc)
        assert isinstance(exc.__cause__, manycore.RemoteTraceback)
        assert "raise_value_error" in str(exc.__cause__)
        with pytest.raises(ValueError, match="bad value: 3"):
            list(ex.map(workloads.raise_if, range(6), [3] * 6, timeout=TIMEOUT))

        assert ex.submit(workloads.square, 11).result(timeout=TIMEOUT) == 121


def test_executor_context_object():
    ctx = multiprocessing.get_context("spawn")
    with manycore.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert list(ex.map(workloads.square, range(10), timeout=TIMEOUT)) == [
            x * x for x in range(10)
        ]


def test_executor_map_timeout():
    ex = manycore.ProcessPoolExecutor(2)
    try:
        results = ex.map(workloads.sleep_then, [0.0, 2.0, 2.0], timeout=0.5)
        assert next(results) is None
        with pytest.raises(cf.TimeoutError):
            next(results)
    finally:
        helpers.call_with_timeout(lambda: ex.shutdown(wait=True, cancel_futures=True), timeout=30)


def test_result_timeout():
    with manycore.ProcessPoolExecutor(1) as ex:
        fut = ex.submit(workloads.sleep_then, 1.0, "late")
        with pytest.raises(cf.TimeoutError):
            fut.result(timeout=0.05)
        assert fut.result(timeout=TIMEOUT) == "late"


def test_shutdown_then_submit_raises():
    ex = manycore.ProcessPoolExecutor(2)
    fut = ex.submit(workloads.slow, "done", 0.2)
    helpers.call_with_timeout(ex.shutdown)
    assert fut.done() and fut.result(timeout=0) == "done"
    with pytest.raises(manycore.PoolClosedError) as info:
        ex.submit(workloads.square, 2)
    assert isinstance(info.value, RuntimeError)  # what concurrent.futures raises
    helpers.call_with_timeout(ex.shutdown)  # a second shutdown is harmless


def test_shutdown_cancel_futures():
    ex = manycore.ProcessPoolExecutor(1)
    try:
        futures = [ex.submit(workloads.slow, i, 0.1) for i in range(30)]
        assert futures[0].result(timeout=TIMEOUT) == 0
        helpers.call_with_timeout(lambda: ex.shutdown(wait=True, cancel_futures=True))
        assert all(f.done() for f in futures)
        cancelled = [f for f in futures if f.cancelled()]
        assert cancelled, "nothing was cancelled"
        for i, f in enumerate(futures):
            if not f.cancelled():
                assert f.result(timeout=0) == i
    finally:
        helpers.call_with_timeout(lambda: ex.shutdown(wait=True, cancel_futures=True))


def test_shutdown_without_wait():
    ex = manycore.ProcessPoolExecutor(2)
    pids = helpers.procs(
        f.result(timeout=TIMEOUT) for f in [ex.submit(workloads.getpid_slow) for _ in range(4)]
    )
    futures = [ex.submit(workloads.slow, i, 0.05) for i in range(6)]
    helpers.call_with_timeout(lambda: ex.shutdown(wait=False), timeout=5)
    # the work already submitted still completes, and then the workers go
    assert [f.result(timeout=TIMEOUT) for f in futures] == list(range(6))
    assert helpers.wait_gone(pids, 5) == set()


def test_max_tasks_per_child():
    with manycore.ProcessPoolExecutor(1, max_tasks_per_child=2) as ex:
        pids = [ex.submit(workloads.getpid).result(timeout=TIMEOUT) for _ in range(6)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
    assert len(set(pids)) == 3


def test_asyncio_integration():
    async def main(ex: manycore.ProcessPoolExecutor) -> tuple:
        loop = asyncio.get_running_loop()
        a = await asyncio.wait_for(loop.run_in_executor(ex, workloads.square, 9), TIMEOUT)
        b = await asyncio.wait_for(asyncio.wrap_future(ex.submit(workloads.add, 1, 2)), TIMEOUT)
        return a, b

    with manycore.ProcessPoolExecutor(2) as ex:
        assert asyncio.run(main(ex)) == (81, 3)


class RefusesToPickle:
    """Its pickling raises RuntimeError, which the stdlib executor lets through as it is."""

    def __reduce__(self) -> object:
        raise RuntimeError("RefusesToPickle refuses")


def test_errors_are_caught_by_the_stdlibs_except_clauses(start_method):
    """What the stdlib executor raises (checked on 3.11): the pickler's own error for an
    argument (RuntimeError here, TypeError for a lock), BrokenProcessPool when a worker cannot
    rebuild an argument or the caller a result. manycore's errors are those too, and only
    the one task fails."""
    with manycore.ProcessPoolExecutor(2, mp_context=start_method) as ex:
        for bad in (RefusesToPickle(), threading.Lock()):
            with pytest.raises(manycore.ArgumentPicklingError) as info:
                ex.submit(workloads.identity, bad)
            assert isinstance(info.value, type(info.value.__cause__))
            assert isinstance(info.value, pickle.PicklingError)
            assert "argument 0 of identity()" in str(info.value)
        with pytest.raises(RuntimeError, match="input item 1 of identity"):
            list(ex.map(workloads.identity, [1, RefusesToPickle()], timeout=TIMEOUT))

        fut = ex.submit(workloads.identity, workloads.FailsToUnpickle())
        with pytest.raises(BrokenProcessPool, match="could not rebuild"):
            fut.result(timeout=TIMEOUT)
        assert isinstance(fut.exception(), manycore.ArgumentUnpicklingError)
        fut = ex.submit(workloads.return_fails_to_unpickle)
        with pytest.raises(BrokenProcessPool, match="could not be unpickled"):
            fut.result(timeout=TIMEOUT)
        assert isinstance(fut.exception(), manycore.ResultUnpicklingError)
        assert ex.submit(workloads.square, 7).result(timeout=TIMEOUT) == 49  # not broken


def test_a_mixed_argument_error_survives_pickling():
    error = manycore.ArgumentPicklingError.for_cause(
        RuntimeError("inner"), "cannot send argument 0", argument="argument 0"
    )
    assert isinstance(error, RuntimeError) and isinstance(error.__cause__, RuntimeError)
    for back in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(back) is type(error)
        assert str(back) == "cannot send argument 0" and back.argument == "argument 0"
    error = manycore.ArgumentPicklingError.for_cause(FileNotFoundError(2, "x"), "msg")
    assert isinstance(error, FileNotFoundError)
    assert type(pickle.loads(pickle.dumps(error))) is type(error)
    # never a StopIteration, which would end the caller's loop without a word
    error = manycore.ArgumentPicklingError.for_cause(StopIteration(), "msg")
    assert type(error) is manycore.ArgumentPicklingError


def test_futures_is_the_whole_concurrent_futures_namespace():
    import manycore.futures
    from manycore.futures.process import BrokenProcessPool as Broken
    from manycore.futures.process import ProcessPoolExecutor

    assert ProcessPoolExecutor is manycore.ProcessPoolExecutor and Broken is BrokenProcessPool
    for name in cf.__all__:
        if name == "InterpreterPoolExecutor":  # Python 3.14's, for subinterpreters
            continue
        ours = getattr(manycore.futures, name)
        assert name in manycore.futures.__all__
        assert ours is (
            manycore.ProcessPoolExecutor if name == "ProcessPoolExecutor" else getattr(cf, name)
        ), name
    assert manycore.futures.InvalidStateError is cf.InvalidStateError
    assert issubclass(manycore.ProcessPoolExecutor, manycore.futures.Executor)
    # manycore's own timeout is caught as the futures' timeout on every version
    assert issubclass(manycore.TimeoutError, cf.TimeoutError)


def test_map_keeps_no_result_alive(start_method):
    """The stdlib's test_free_reference: a result the loop dropped is freed."""
    inputs = [{i} for i in range(30)]  # sets: weakly referenceable, rebuilt in the caller
    with manycore.ProcessPoolExecutor(2, mp_context=start_method) as ex:
        for result in ex.map(workloads.identity, inputs, chunksize=10, timeout=TIMEOUT):
            ref = weakref.ref(result)
            del result
            gc.collect()
            assert ref() is None
    with manycore.Pool(2, context=start_method) as pool:
        for result in pool.imap(workloads.identity, inputs, chunksize=10):
            ref = weakref.ref(result)
            del result
            gc.collect()
            assert ref() is None
