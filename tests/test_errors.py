"""manycore's error tree: what each error also is, and that each survives pickling."""

from __future__ import annotations

import builtins
import copy
import multiprocessing
import pickle
from concurrent.futures.process import BrokenProcessPool

import cloudpickle
import pytest

import manycore

PUBLIC = [
    "ManycoreError",
    "WorkerLostError",
    "PoolBrokenError",
    "InitializerError",
    "PoolClosedError",
    "TimeoutError",
    "SerializationError",
    "ArgumentPicklingError",
    "ArgumentUnpicklingError",
    "ResultPicklingError",
    "ResultUnpicklingError",
    "RemoteTraceback",
]


def all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(all_subclasses(sub))
    return found


# Every class in the tree, including any the engine defines beyond the public ones.
TREE = sorted(
    {manycore.ManycoreError, *all_subclasses(manycore.ManycoreError)},
    key=lambda c: (c.__module__, c.__qualname__),
)


def test_public_names():
    for name in PUBLIC:
        cls = getattr(manycore, name)
        assert isinstance(cls, type) and issubclass(cls, BaseException), name
        assert cls.__module__.startswith("manycore"), name


def test_what_each_error_also_is():
    e = manycore
    assert issubclass(e.WorkerLostError, (e.ManycoreError))
    assert issubclass(e.WorkerLostError, BrokenProcessPool)
    assert issubclass(e.PoolBrokenError, BrokenProcessPool)
    assert issubclass(e.InitializerError, e.PoolBrokenError)
    assert issubclass(e.PoolClosedError, ValueError)
    assert issubclass(e.PoolClosedError, RuntimeError)
    assert issubclass(e.TimeoutError, multiprocessing.TimeoutError)
    assert issubclass(e.TimeoutError, builtins.TimeoutError)
    for name in ["ArgumentPicklingError", "ResultPicklingError"]:
        assert issubclass(getattr(e, name), (pickle.PicklingError))
        assert issubclass(getattr(e, name), e.SerializationError)
    for name in ["ArgumentUnpicklingError", "ResultUnpicklingError"]:
        assert issubclass(getattr(e, name), (pickle.UnpicklingError))
        assert issubclass(getattr(e, name), e.SerializationError)
    for name in PUBLIC:
        if name != "RemoteTraceback":
            assert issubclass(getattr(e, name), e.ManycoreError)


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__qualname__)
@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_errors_survive_pickling(cls, dumps):
    details = {"pid": 4242, "exitcode": None, "signal": 9, "task": "square(3)", "extra": [1, 2]}
    err = cls("worker 4242 was killed by SIGKILL while running square(3)", **details)
    for back in (pickle.loads(dumps(err)), copy.copy(err)):
        assert type(back) is cls
        assert str(back) == str(err)
        assert back.args == err.args
        for key, value in details.items():
            assert getattr(back, key) == value, key
    # and without details
    plain = pickle.loads(dumps(cls("just a message")))
    assert type(plain) is cls and str(plain) == "just a message"


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_remote_traceback_survives_pickling(dumps):
    tb = 'Traceback (most recent call last):\n  File "w.py", line 1\nValueError: x\n'
    err = manycore.RemoteTraceback(tb)
    back = pickle.loads(dumps(err))
    assert type(back) is manycore.RemoteTraceback
    assert back.tb == tb
    assert tb in str(back)


def test_errors_from_a_real_pool_survive_pickling():
    from tests import workloads
    from tests.helpers import TIMEOUT

    with manycore.Pool(1) as pool:
        with pytest.raises(manycore.TimeoutError) as timeout:
            pool.apply_async(workloads.sleep_then, (0.3,)).get(timeout=0.01)
        with pytest.raises(manycore.ResultUnpicklingError) as unpickling:
            pool.apply_async(workloads.raise_two_arg_error).get(timeout=TIMEOUT)
        pool.close()
        with pytest.raises(manycore.PoolClosedError) as closed:
            pool.apply_async(workloads.square, (1,))
    for err in (timeout.value, unpickling.value, closed.value):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
        assert back.__dict__ == err.__dict__
