"""PoolConfig: Pool's and the executor's settings, checked in one place, frozen once built.

The refusals below start no process: the config is checked before the scheduler is built.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import pytest

import manycore
from manycore._options import PoolConfig, TaskOptions
from tests import workloads
from tests.helpers import TIMEOUT

POOL_DEFAULTS: dict[str, Any] = dict(
    processes=None,
    initializer=None,
    initargs=(),
    maxtasksperchild=None,
    max_tasks_per_child=None,
    context=None,
    backend="local",
    address=None,
    task_timeout=None,
    retries=0,
    retry_on=None,
    max_memory_per_child=None,
)


def pool_config(**given: Any) -> PoolConfig:
    return PoolConfig.for_pool(**{**POOL_DEFAULTS, **given})


def test_the_config_holds_checked_values_under_one_vocabulary() -> None:
    config = pool_config(
        processes=3,
        initializer=workloads.init_state,
        initargs=["ready"],
        max_tasks_per_child=5,
        context="spawn",
        task_timeout=2,
        max_memory_per_child="1KiB",
    )
    assert config.workers == config.requested_workers == 3
    assert config.initargs == ("ready",)
    assert config.max_tasks_per_child == 5
    assert config.max_memory_per_child == 1024
    assert config.context == "spawn"
    assert config.options == TaskOptions(2.0, 0, (manycore.WorkerLostError,))
    unset = pool_config()
    assert unset.workers == manycore.cpu_count() and unset.requested_workers is None
    assert unset.options is None  # no per-task option on: tasks carry no options
    same = PoolConfig.for_executor(
        max_workers=3,
        mp_context="spawn",
        initializer=workloads.init_state,
        initargs=("ready",),
        max_tasks_per_child=5,
        backend="local",
        address=None,
        task_timeout=2,
        retries=0,
        retry_on=None,
        max_memory_per_child=1024,
    )
    assert same == config


def test_the_config_is_frozen_and_built_by_keyword() -> None:
    config = pool_config(processes=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 4  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        PoolConfig.for_pool(*POOL_DEFAULTS.values())  # type: ignore[misc]


# Each mistake, made through each face: the error type and the words, naming the argument
# the user wrote (each face keeps its stdlib counterpart's words for the worker count).
REFUSALS: list[tuple[Callable[[], object], type[BaseException], str]] = [
    (lambda: manycore.Pool(0), ValueError, r"^Number of processes must be at least 1, not 0$"),
    (lambda: manycore.Pool("2"), ValueError, "Number of processes"),  # type: ignore[arg-type]
    (
        lambda: manycore.ProcessPoolExecutor(0),
        ValueError,
        r"^max_workers must be greater than 0, not 0$",
    ),
    (
        lambda: manycore.Pool(2, maxtasksperchild=0),
        ValueError,
        r"^maxtasksperchild must be a positive int or None, not 0$",
    ),
    (
        lambda: manycore.Pool(2, max_tasks_per_child=0),
        ValueError,
        r"^max_tasks_per_child must be a positive int or None, not 0$",
    ),
    (
        lambda: manycore.ProcessPoolExecutor(2, max_tasks_per_child=1.5),  # type: ignore[arg-type]
        ValueError,
        r"^max_tasks_per_child must be a positive int or None, not 1.5$",
    ),
    (
        lambda: manycore.Pool(2, maxtasksperchild=1, max_tasks_per_child=2),
        ValueError,
        r"^give maxtasksperchild or max_tasks_per_child, not both$",
    ),
    (
        lambda: manycore.Pool(2, initializer=1),  # type: ignore[arg-type]
        TypeError,
        r"^initializer must be a callable, not 1$",
    ),
    (
        lambda: manycore.ProcessPoolExecutor(2, initializer=1),  # type: ignore[arg-type]
        TypeError,
        r"^initializer must be a callable, not 1$",
    ),
    (lambda: manycore.ProcessPoolExecutor(2, retries=-1), ValueError, "retries"),
    (
        lambda: manycore.ProcessPoolExecutor(2, max_memory_per_child="x"),
        ValueError,
        "max_memory_per_child",
    ),
    (lambda: manycore.ProcessPoolExecutor(2, backend="ray"), ValueError, "unknown backend"),
    (lambda: manycore.Pool(2, address="tcp://127.0.0.1:1"), ValueError, "needs backend='dask'"),
    (
        lambda: manycore.ProcessPoolExecutor(2, mp_context="spawn", backend="dask"),
        ValueError,
        "start method",
    ),
    (
        lambda: manycore.Pool(2, max_tasks_per_child=3, backend="dask"),
        ValueError,
        "max_tasks_per_child",
    ),
    (
        lambda: manycore.ProcessPoolExecutor(2, max_memory_per_child=10**9, backend="dask"),
        ValueError,
        "max_memory_per_child",
    ),
    (lambda: manycore.Pool(2, context="nonsense"), ValueError, "unknown start method"),
    (
        lambda: manycore.ProcessPoolExecutor(2, mp_context="nonsense"),
        ValueError,
        "unknown start method",
    ),
]


@pytest.mark.parametrize("make, error, words", REFUSALS)
def test_bad_settings_are_refused_in_the_faces_own_words(
    make: Callable[[], object], error: type[BaseException], words: str
) -> None:
    with pytest.raises(error, match=words):
        make()


def test_of_several_mistakes_the_first_in_the_signature_is_reported() -> None:
    with pytest.raises(ValueError, match="Number of processes"):
        manycore.Pool(0, maxtasksperchild=0, backend="ray")
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        manycore.ProcessPoolExecutor(2, max_tasks_per_child=0, task_timeout=-1)
    with pytest.raises(ValueError, match="task_timeout"):
        manycore.Pool(2, task_timeout=-1, max_memory_per_child="x", backend="ray")
    with pytest.raises(ValueError, match="max_memory_per_child"):
        manycore.Pool(2, max_memory_per_child="x", backend="ray")


def test_a_bad_chunksize_is_refused_by_both_faces() -> None:
    message = r"^chunksize must be a positive int or None, not 0$"
    with manycore.Pool(1) as pool:
        for call in (pool.map, pool.map_async, pool.imap, pool.imap_unordered):
            with pytest.raises(ValueError, match=message):
                call(workloads.square, [1], chunksize=0)  # type: ignore[operator]
        assert pool.map(workloads.square, [3], chunksize=1) == [9]
    with manycore.ProcessPoolExecutor(1) as ex:
        with pytest.raises(ValueError, match=message):
            ex.map(workloads.square, [1], chunksize=0)
        with pytest.raises(ValueError, match=message):
            ex.options(retries=1).map(workloads.square, [1], chunksize=0)
        assert list(ex.map(workloads.square, [3], timeout=TIMEOUT)) == [9]
