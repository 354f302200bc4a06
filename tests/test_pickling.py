"""Pickling failures at each of the four points (argument in the caller, argument in the worker,
result or exception in the worker, result or exception in the caller): each fails one task with
a clear error, loses nothing else, and leaves the pool usable."""

from __future__ import annotations

import pickle
import threading

import pytest

import manycore
from tests import helpers, workloads
from tests.helpers import TIMEOUT


def test_unpicklable_argument_raises_at_submit():
    with manycore.Pool(2) as pool:
        with pytest.raises(manycore.ArgumentPicklingError) as info:
            pool.apply_async(workloads.identity, (workloads.Unpicklable(),))
        assert isinstance(info.value, pickle.PicklingError)
        assert isinstance(info.value, manycore.SerializationError)
        assert "Unpicklable" in str(info.value)
        with pytest.raises(manycore.ArgumentPicklingError) as info:
            pool.apply(workloads.identity, (threading.Lock(),))
        assert "lock" in str(info.value)
        with pytest.raises(manycore.ArgumentPicklingError):
            pool.apply_async(workloads.identity, (), {"x": workloads.Unpicklable()})
        # a bad item in a map fails that map, not the pool
        with pytest.raises(manycore.ArgumentPicklingError):
            pool.map_async(workloads.identity, [1, workloads.Unpicklable(), 3]).get(timeout=TIMEOUT)
        with pytest.raises(manycore.ArgumentPicklingError):
            helpers.drain(pool.imap(workloads.identity, [1, workloads.Unpicklable(), 3]))
        assert pool.map_async(workloads.square, range(10)).get(timeout=TIMEOUT) == [
            x * x for x in range(10)
        ]

    with manycore.ProcessPoolExecutor(2) as ex:
        with pytest.raises(manycore.ArgumentPicklingError) as info:
            ex.submit(workloads.identity, workloads.Unpicklable())
        assert "Unpicklable" in str(info.value)
        with pytest.raises(manycore.ArgumentPicklingError):
            list(ex.map(workloads.identity, [1, threading.Lock()], timeout=TIMEOUT))
        assert ex.submit(workloads.square, 3).result(timeout=TIMEOUT) == 9


def test_failures_in_worker_and_on_return(start_method):
    with manycore.Pool(2, context=start_method) as pool:
        # each bad task sits among good ones, which must all complete
        calls = [
            (workloads.identity, (workloads.FailsToUnpickle(),), manycore.ArgumentUnpicklingError),
            (workloads.return_unpicklable, (), manycore.ResultPicklingError),
            (workloads.raise_unpicklable_error, (), manycore.ResultPicklingError),
            (workloads.return_fails_to_unpickle, (), manycore.ResultUnpicklingError),
            (workloads.raise_two_arg_error, (), manycore.ResultUnpicklingError),
        ]
        results = []
        for fn, args, expected in calls:
            results.append((pool.apply_async(workloads.square, (len(results),)), None))
            results.append((pool.apply_async(fn, args), expected))
        results.append((pool.apply_async(workloads.square, (len(results),)), None))

        for i, (result, expected) in enumerate(results):
            if expected is None:
                assert result.get(timeout=TIMEOUT) == i * i
                continue
            with pytest.raises(expected) as info:
                result.get(timeout=TIMEOUT)
            err = info.value
            assert isinstance(err, manycore.SerializationError)
            if expected in (manycore.ArgumentUnpicklingError, manycore.ResultUnpicklingError):
                assert isinstance(err, pickle.UnpicklingError)
            else:
                assert isinstance(err, pickle.PicklingError)
            text = f"{err} {err.__cause__ or ''}"
            if expected is manycore.ArgumentUnpicklingError:
                assert "FailsToUnpickle refuses to be unpickled" in text
            if calls[i // 2][0] is workloads.raise_unpicklable_error:
                assert "an error holding a lock" in text  # the exception's own text
            if calls[i // 2][0] is workloads.raise_two_arg_error:
                assert "first part and second part" in text

        # the same failures inside a map fail that map only
        with pytest.raises(manycore.ArgumentUnpicklingError):
            pool.map_async(
                workloads.identity, [1, 2, workloads.FailsToUnpickle(), 4], chunksize=1
            ).get(timeout=TIMEOUT)
        with pytest.raises(manycore.ResultPicklingError):
            pool.map_async(workloads.return_unpicklable, range(3)).get(timeout=TIMEOUT)
        with pytest.raises(manycore.ResultUnpicklingError):
            helpers.drain(pool.imap(workloads.return_fails_to_unpickle, range(3)))
        assert pool.map_async(workloads.square, range(20)).get(timeout=TIMEOUT) == [
            x * x for x in range(20)
        ]


def test_executor_failures_in_worker():
    with manycore.ProcessPoolExecutor(2) as ex:
        bad_arg = ex.submit(workloads.identity, workloads.FailsToUnpickle())
        bad_result = ex.submit(workloads.return_unpicklable)
        bad_exc = ex.submit(workloads.raise_two_arg_error)
        good = ex.submit(workloads.square, 12)
        assert isinstance(bad_arg.exception(timeout=TIMEOUT), manycore.ArgumentUnpicklingError)
        assert isinstance(bad_result.exception(timeout=TIMEOUT), manycore.ResultPicklingError)
        assert isinstance(bad_exc.exception(timeout=TIMEOUT), manycore.ResultUnpicklingError)
        assert good.result(timeout=TIMEOUT) == 144


def test_values_round_trip(start_method):
    """Ordinary values, big ones included, come back from a worker intact."""
    values = [
        None,
        True,
        2**100,
        -1.5,
        "text ü",
        b"\x00bytes",
        bytearray(b"ba"),
        (1, (2, [3, {4: 5}])),
        {"a": {1, 2}, "b": frozenset({3})},
        range(3, 9, 2),
        complex(1, 2),
        workloads.CustomError("carried", 5),
        b"x" * 3_000_000,  # bigger than any socket buffer
    ]
    with manycore.Pool(2, context=start_method) as pool:
        back = pool.map_async(workloads.identity, values, 1).get(timeout=TIMEOUT)
    assert back[:-2] == values[:-2]
    assert isinstance(back[-2], workloads.CustomError) and back[-2].code == 5
    assert back[-1] == values[-1]
