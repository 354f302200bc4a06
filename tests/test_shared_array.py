"""SharedArray behaves as a NumPy array where NumPy code expects one (issue 15, #6)."""

from __future__ import annotations

import pickle
from typing import Optional

import pytest

import manycore
from tests.helpers import TIMEOUT

np = pytest.importorskip("numpy")


def rework(a):
    """Array-style code a task might run; the same on an ndarray and on a SharedArray."""
    a[1:3] += 5
    a[0] = len(a)
    total = a.sum() + (a * 2)[-1] + np.sqrt(a).round(3)[4] + (1 - a)[2]
    return [
        float(total),
        a.shape,
        str(a.dtype),
        [int(x) for x in a],
        bool(7 in a),
        (a == 5).tolist(),
        (-a).tolist()[:2],
        float(np.mean(a)),
        np.asarray(a).tolist(),
    ]


def test_operations_as_on_an_ndarray() -> None:
    plain = np.arange(6, dtype=np.int64)
    with manycore.SharedArray.from_array(plain.copy()) as shared:
        assert rework(shared) == rework(plain)
        assert shared.array.tolist() == plain.tolist()
        assert isinstance(shared + 1, np.ndarray)
        assert np.shares_memory(np.asarray(shared), shared.array)
        view = shared[2:4]
        view[:] = -1
        assert shared.array.tolist()[2:4] == [-1, -1]
        np.multiply(shared, 2, out=shared)
        assert shared.array[2] == -2
        with pytest.raises(TypeError):
            hash(shared)


def test_a_zero_dimensional_array() -> None:
    with manycore.shared_array((), dtype=np.float64) as shared:
        shared[()] = 2.5
        assert float(shared) == 2.5
        with pytest.raises(TypeError):
            len(shared)


def in_a_worker(a):
    return rework(a)


def test_in_a_worker_the_shared_memory_is_written(start_method: Optional[str]) -> None:
    plain = np.arange(6, dtype=np.int64)
    expected = rework(plain.copy())
    with manycore.SharedArray.from_array(np.arange(6, dtype=np.int64)) as shared:
        with manycore.Pool(1, context=start_method) as pool:
            assert pool.apply_async(in_a_worker, (shared,)).get(TIMEOUT) == expected
        assert shared.array.tolist() == expected[-1]
        clone = pickle.loads(pickle.dumps(shared))
        assert clone[0] == len(plain)
