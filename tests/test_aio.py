"""``manycore.aio.Pool``: the pool from asyncio code (real processes, real event loops).

Each test runs its coroutine under ``asyncio.run`` with an overall timeout, so a hang fails.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import os
import threading
from pathlib import Path
from typing import Any, Awaitable, Optional, TypeVar

import pytest

import manycore
import manycore.aio
from manycore import PoolClosedError, TaskTimeoutError, WorkerLostError
from tests import helpers, workloads, workloads_control
from tests import workloads_aio as wa
from tests.helpers import TIMEOUT

T = TypeVar("T")


def run(awaitable: Awaitable[T], debug: bool = False) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(awaitable, TIMEOUT)

    return asyncio.run(bounded(), debug=debug)


def _fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


# ------------------------------------------------------------------ the API


def test_apply_map_starmap_imap(start_method: Optional[str]) -> None:
    async def body() -> None:
        async with manycore.aio.Pool(2, context=start_method) as pool:
            assert await pool.apply(workloads.square, 7) == 49
            assert await pool.apply(wa.add, 1, 2, scale=3) == 9
            assert await pool.map(workloads.square, range(50)) == [x * x for x in range(50)]
            assert await pool.map(wa.double, range(50)) == [2 * x for x in range(50)]
            assert await pool.starmap(wa.add, [(1, 2), (3, 4)]) == [3, 7]
            got = [r async for r in pool.imap(workloads.square, range(200))]
            assert got == [x * x for x in range(200)]
            got = [r async for r in pool.imap_unordered(wa.double, range(100))]
            assert sorted(got) == [2 * x for x in range(100)]

    run(body())


def test_the_loop_is_never_blocked(caplog: pytest.LogCaptureFixture) -> None:
    """asyncio's debug mode logs every callback that runs longer than
    ``slow_callback_duration``: none may come from the pool. The threshold is 0.4 s, not
    asyncio's 0.1 s, because a loaded 2-core machine sometimes deschedules a step for
    0.3 s; every wait below would take 0.5 s or more if it blocked the loop."""

    async def body() -> None:
        asyncio.get_running_loop().slow_callback_duration = 0.4
        async with manycore.aio.Pool(2, context="spawn") as pool:  # a slow start
            await asyncio.gather(*(pool.apply(wa.nap, i, 0.01) for i in range(100)))
            await pool.map(workloads.square, range(20_000))
            async for _ in pool.imap(workloads.square, range(20_000)):
                pass
            await pool.apply(workloads.sleep_then, 0.6)
            await pool.apply(wa.nap, 0, 0.6)
            last = asyncio.ensure_future(pool.apply(wa.nap, 0, 0.6))  # close() waits for it
            await asyncio.sleep(0.1)
        assert await last == 0
        with pytest.raises(asyncio.TimeoutError):
            async with manycore.aio.Pool(1) as pool:  # terminate() on the way out
                await asyncio.wait_for(pool.apply(workloads.sleep_then, 30), 0.2)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run(body(), debug=True)
    slow = [r.getMessage() for r in caplog.records if "Executing" in r.getMessage()]
    assert not slow, slow


def test_the_sync_api_is_awaitable() -> None:
    async def body() -> None:
        with manycore.Pool(2) as pool:
            assert await pool.apply_async(workloads.square, (6,)) == 36
            assert await pool.map_async(workloads.square, range(5)) == [0, 1, 4, 9, 16]
            assert [r async for r in pool.imap(workloads.square, range(5))] == [0, 1, 4, 9, 16]
            with pytest.raises(ValueError):
                await pool.apply_async(workloads.raise_value_error)
        with manycore.ProcessPoolExecutor(2) as executor:
            assert await asyncio.wrap_future(executor.submit(workloads.square, 5)) == 25
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(executor, workloads.square, 4) == 16

    run(body())


def test_bad_options_are_refused_where_the_pool_is_made() -> None:
    with pytest.raises(ValueError, match="concurrency must be a positive int"):
        manycore.aio.Pool(1, concurrency=0)
    with pytest.raises(ValueError):
        manycore.aio.Pool(0)
    with pytest.raises(ValueError):
        manycore.aio.Pool(1, task_timeout=-1)


def test_await_starts_the_pool_and_an_unstarted_pool_says_how() -> None:
    async def body() -> None:
        pool = manycore.aio.Pool(1)
        with pytest.raises(RuntimeError, match=r"await manycore\.aio\.Pool"):
            pool.imap(workloads.square, range(3))
        assert "not started" in repr(pool)
        assert await pool.apply(workloads.square, 2) == 4  # an async call starts it
        same = await pool
        assert same is pool
        iterator = pool.imap(workloads.square, range(10))
        assert await iterator.__anext__() == 0
        await iterator.aclose()
        pool.close()
        await pool.join()
        with pytest.raises(PoolClosedError):
            await pool.apply(workloads.square, 2)

    run(body())


# ------------------------------------------------------------------ coroutine tasks


def test_coroutines_run_together_up_to_the_concurrency(start_method: Optional[str]) -> None:
    async def body() -> list[tuple[int, int]]:
        async with manycore.aio.Pool(2, context=start_method, concurrency=3) as pool:
            return await pool.map(wa.at_once, [0.1] * 24)

    seen = run(body())
    most = {}
    for pid, count in seen:
        most[pid] = max(most.get(pid, 0), count)
    assert max(most.values()) == 3, most  # several at once, never more than the limit


def test_an_exception_in_a_coroutine_is_raised_with_the_worker_traceback() -> None:
    async def body() -> None:
        async with manycore.aio.Pool(1) as pool:
            with pytest.raises(ValueError, match="bad value 5") as info:
                await pool.apply(wa.raise_value_error, 5)
            assert "raise_value_error" in str(info.value.__cause__)
            with pytest.raises(ValueError, match="bad value 0"):
                await pool.map(wa.raise_value_error, range(5))
            assert await pool.apply(wa.double, 4) == 8  # the worker goes on

    run(body())


def test_coroutines_also_run_from_the_sync_pool() -> None:
    with manycore.Pool(1) as pool:
        assert pool.apply(wa.double, (21,)) == 42
        assert pool.map(wa.double, range(4)) == [0, 2, 4, 6]


# ------------------------------------------------------------------ cancellation


def test_cancelling_a_queued_call_drops_it(tmp_path: Path) -> None:
    async def body() -> None:
        async with manycore.aio.Pool(1) as pool:
            busy = asyncio.ensure_future(pool.apply(workloads.sleep_then, 0.5, "done"))
            queued = asyncio.ensure_future(pool.apply(wa.touch_plain, str(tmp_path), 1))
            await asyncio.sleep(0.1)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            assert await busy == "done"
            assert await pool.apply(workloads.square, 3) == 9
            assert pool.statistics().workers[0].restarts == 0

    run(body())
    assert not (tmp_path / "1").exists()


def test_cancelling_a_running_coroutine_cancels_it_in_its_worker(
    start_method: Optional[str], tmp_path: Path
) -> None:
    marker = tmp_path / "marker"

    async def body() -> None:
        async with manycore.aio.Pool(1, context=start_method) as pool:
            pid = await pool.apply(wa.getpid)
            task = asyncio.ensure_future(pool.apply(wa.mark_then_sleep, str(marker), 30))
            assert await _until(lambda: marker.exists())
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await _until(lambda: marker.read_text().startswith("cancelled"))
            assert marker.read_text() == f"cancelled {pid}"  # in the same worker, still alive
            assert await pool.apply(wa.getpid) == pid
            assert pool.statistics().workers[0].restarts == 0

    run(body())


def test_cancelling_a_running_plain_function_stops_it(start_method: Optional[str]) -> None:
    async def body() -> None:
        async with manycore.aio.Pool(1, context=start_method) as pool:
            pid = await pool.apply(workloads.getpid)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(pool.apply(workloads.sleep_then, 60), 0.3)
            assert await pool.apply(workloads.getpid) != pid  # stopped and replaced
            assert pool.statistics().workers[0].restarts == 1

    run(body())


def test_leaving_async_for_early_stops_the_work(tmp_path: Path) -> None:
    async def body() -> None:
        async with manycore.aio.Pool(1, concurrency=2) as pool:
            async for x in pool.imap(wa_touch(tmp_path), range(200)):
                assert x == 0
                break
            # What was sent is cancelled in the worker and the rest is dropped: the pool
            # answers at once, and most items never started.
            assert await pool.apply(workloads.square, 2) == 4
            started = len(list(tmp_path.iterdir()))
        assert started < 20, started

    run(body())


def wa_touch(directory: Path) -> Any:
    import functools

    return functools.partial(wa.touch, str(directory))


def test_an_exception_in_async_with_does_not_wait_for_the_backlog() -> None:
    async def body() -> None:
        with pytest.raises(KeyError):
            async with manycore.aio.Pool(1) as pool:
                pending = [asyncio.ensure_future(pool.apply(workloads.sleep_then, 30))]
                pending += [asyncio.ensure_future(pool.apply(wa.nap, i, 30)) for i in range(3)]
                await asyncio.sleep(0.2)
                raise KeyError("leave")
        for future in pending:
            with pytest.raises(PoolClosedError):
                await future

    run(body())


# ------------------------------------------------------------------ failures


def test_a_worker_crash_fails_only_the_awaiting_task(start_method: Optional[str]) -> None:
    async def body() -> None:
        async with manycore.aio.Pool(2, context=start_method) as pool:
            results = await asyncio.gather(
                pool.apply(workloads.crash_exit, 3),
                *(pool.apply(workloads.square, i) for i in range(5)),
                return_exceptions=True,
            )
            assert isinstance(results[0], WorkerLostError), results[0]
            assert results[1:] == [i * i for i in range(5)]
            assert await pool.apply(wa.double, 1) == 2

    run(body())


def test_a_worker_crash_inside_a_coroutine_fails_its_coroutines() -> None:
    async def body() -> None:
        async with manycore.aio.Pool(1) as pool:
            with pytest.raises(WorkerLostError):
                await pool.apply(wa.crash)
            assert await pool.apply(wa.double, 5) == 10

    run(body())


def test_task_timeout_cancels_a_coroutine_in_its_worker() -> None:
    async def body() -> None:
        async with manycore.aio.Pool(1, task_timeout=0.2) as pool:
            pid = await pool.apply(wa.getpid)
            with pytest.raises(TaskTimeoutError, match="nap"):
                await pool.apply(wa.nap, 1, 30)
            with pytest.raises(TaskTimeoutError):
                await pool.apply(workloads.sleep_then, 30)  # a plain function: stopped
            assert await pool.apply(wa.getpid) != pid
            assert pool.statistics().workers[0].restarts == 1

    run(body())


# ------------------------------------------------------------------ options


def test_every_pool_option_works_here(tmp_path: Path) -> None:
    numpy = pytest.importorskip("numpy")
    ticks: list[tuple[int, Any]] = []

    async def body() -> None:
        async with manycore.aio.Pool(
            2, retries=1, max_memory_per_child="150MiB", maxtasksperchild=50
        ) as pool:
            # retries: the first worker dies, the second attempt succeeds
            script = tmp_path / "once"
            assert await pool.apply(workloads_control.crash_once, str(script), 3) == 3
            # progress on a map
            got = await pool.map(wa.double, range(10), progress=lambda d, t: ticks.append((d, t)))
            assert got == [2 * x for x in range(10)]
            # memory: a worker over the limit is replaced after its task
            pid = await pool.apply(wa.grow, 200)
            assert pid not in await pool.map(wa.getpid_of, range(4))
            # zero-copy arrays in and out
            array = numpy.arange(1_000_000, dtype=numpy.float64)
            assert await pool.apply(wa.total, array) == float(array.sum())
            # per-call options
            with pytest.raises(TaskTimeoutError):
                await pool.options(task_timeout=0.2, retries=0).apply(wa.nap, 1, 30)

    run(body())
    assert ticks and ticks[-1][0] == 10


# ------------------------------------------------------------------ nothing left


def test_nothing_is_left_after_async_with(start_method: Optional[str]) -> None:
    """No asyncio task, thread, process or descriptor; the autouse leak check also looks
    for processes, threads and segments."""

    async def body() -> None:
        tasks = asyncio.all_tasks()
        async with manycore.aio.Pool(2, context=start_method) as pool:
            await pool.map(wa.nap, range(40))
            await pool.apply(workloads.square, 3)
            async for _ in pool.imap(workloads.square, range(100)):
                pass
        assert asyncio.all_tasks() <= tasks

    run(body())  # once first: a start method's fork server lives on, with its descriptors
    gc.collect()
    threads = set(threading.enumerate())
    fds = _fds()
    run(body())
    gc.collect()
    assert helpers.wait_until(lambda: set(threading.enumerate()) <= threads, TIMEOUT)
    left = {fd: _readlink(fd) for fd in _fds() - fds}
    assert not {fd: name for fd, name in left.items() if name is not None}


def _readlink(fd: int) -> Optional[str]:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


async def _until(predicate: Any, timeout: float = TIMEOUT) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def test_wrap_future_cancel_stops_an_executor_task() -> None:
    async def body() -> None:
        with manycore.ProcessPoolExecutor(1) as executor:
            future = executor.submit(workloads.sleep_then, 60)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.wrap_future(future), 0.3)
            assert future.cancelled()
            assert executor.submit(workloads.square, 3).result(TIMEOUT) == 9

    run(body())


_ = concurrent.futures
