"""The crash matrix: {exit, SIGKILL, segfault} x {during a task, between tasks}, on every start
method, plus crashes in map and the executor, and initializers that fail."""

from __future__ import annotations

import os
import pickle
import signal
import time
from concurrent.futures.process import BrokenProcessPool

import pytest

import manycore
from tests import helpers, workloads
from tests.helpers import TIMEOUT

CRASH_KINDS = ["exit", "sigkill", "segfault"]


def worker_pids(pool: manycore.Pool, n: int = 8) -> set[int]:
    return set(pool.map_async(workloads.getpid_slow, range(n), chunksize=1).get(timeout=TIMEOUT))


def assert_replaced(pool: manycore.Pool, dead: set[int], workers: int = 2) -> None:
    """The pool works, runs on ``workers`` processes again, and none of them is a dead one."""
    seen: set[int] = set()

    def full_strength() -> bool:
        pids = worker_pids(pool)
        assert not pids & dead, f"a dead worker ran a task: {pids & dead}"
        seen.update(pids)
        return len(pids) == workers

    assert helpers.wait_until(full_strength, 30, interval=0), f"workers seen: {seen}"
    assert pool.map_async(workloads.square, range(30)).get(timeout=TIMEOUT) == [
        x * x for x in range(30)
    ]


def check_lost(err: manycore.WorkerLostError, kind: str, fn_name: str) -> None:
    assert isinstance(err, BrokenProcessPool)  # what existing executor code catches
    message = str(err)
    assert isinstance(err.pid, int) and err.pid > 0
    assert str(err.pid) in message
    if kind == "exit":
        assert err.exitcode == 3 and err.signal is None
        assert "3" in message.replace(str(err.pid), "")
    elif kind == "sigkill":
        assert err.signal == signal.SIGKILL and err.exitcode is None
        assert "SIGKILL" in message
    else:
        assert err.signal == signal.SIGSEGV and err.exitcode is None
        assert "SIGSEGV" in message
    assert fn_name in err.task
    assert fn_name in message
    # it survives pickling with its details
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err) and str(copy) == message
    assert (copy.pid, copy.exitcode, copy.signal, copy.task) == (
        err.pid,
        err.exitcode,
        err.signal,
        err.task,
    )


@pytest.mark.parametrize("kind", CRASH_KINDS)
def test_crash_during_task(start_method, kind):
    fn = workloads.CRASHES[kind]
    with manycore.Pool(2, context=start_method) as pool:
        worker_pids(pool)
        others = pool.map_async(workloads.slow_square, range(200))
        doomed = pool.apply_async(fn)
        more = [pool.apply_async(workloads.square, (x,)) for x in range(20)]
        with pytest.raises(manycore.WorkerLostError) as info:
            doomed.get(timeout=TIMEOUT)
        check_lost(info.value, kind, fn.__name__)
        # every other task completes
        assert others.get(timeout=TIMEOUT) == [x * x for x in range(200)]
        assert [r.get(timeout=TIMEOUT) for r in more] == [x * x for x in range(20)]
        assert helpers.wait_gone(helpers.procs([info.value.pid]), 5) == set()
        assert_replaced(pool, {info.value.pid})


@pytest.mark.parametrize("kind", CRASH_KINDS)
def test_crash_between_tasks(start_method, kind):
    with manycore.Pool(2, context=start_method) as pool:
        worker_pids(pool)
        pid = pool.apply_async(workloads.crash_later, (kind, 0.2)).get(timeout=TIMEOUT)
        victim = helpers.procs([pid])
        assert helpers.wait_gone(victim, 10) == set()
        # nothing was running on it, so nothing fails
        assert pool.map_async(workloads.square, range(100)).get(timeout=TIMEOUT) == [
            x * x for x in range(100)
        ]
        results = [pool.apply_async(workloads.add, (x, 1)) for x in range(20)]
        assert [r.get(timeout=TIMEOUT) for r in results] == [x + 1 for x in range(20)]
        assert_replaced(pool, {pid})


def test_killed_from_outside_between_tasks(start_method):
    with manycore.Pool(2, context=start_method) as pool:
        pids = worker_pids(pool)
        victim = min(pids)
        victims = helpers.procs([victim])
        os.kill(victim, signal.SIGKILL)
        assert helpers.wait_gone(victims, 10) == set()
        assert pool.map_async(workloads.square, range(100)).get(timeout=TIMEOUT) == [
            x * x for x in range(100)
        ]
        assert pool.apply_async(workloads.square, (5,)).get(timeout=TIMEOUT) == 25
        assert_replaced(pool, {victim})


def test_killed_from_outside_during_task(tmp_path):
    with manycore.Pool(2) as pool:
        worker_pids(pool)
        marker = tmp_path / "pid"
        doomed = pool.apply_async(workloads.announce_then_sleep, (str(marker), 30.0))
        others = pool.map_async(workloads.slow_square, range(100))
        assert helpers.wait_until(marker.exists, TIMEOUT)
        victim = int(marker.read_text())
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(manycore.WorkerLostError) as info:
            doomed.get(timeout=TIMEOUT)
        assert info.value.pid == victim and info.value.signal == signal.SIGKILL
        assert "announce_then_sleep" in info.value.task
        assert others.get(timeout=TIMEOUT) == [x * x for x in range(100)]
        assert_replaced(pool, {victim})


def test_crash_inside_map():
    with manycore.Pool(2) as pool:
        with pytest.raises(manycore.WorkerLostError) as info:
            pool.starmap_async(workloads.exit_if, [(x, 37) for x in range(80)]).get(timeout=TIMEOUT)
        assert info.value.exitcode == 7
        assert "exit_if" in info.value.task
        with pytest.raises(manycore.WorkerLostError):
            helpers.drain(pool.imap(workloads.crash_exit, [4]))
        assert pool.map_async(workloads.square, range(50)).get(timeout=TIMEOUT) == [
            x * x for x in range(50)
        ]


def test_executor_survives_a_crash():
    with manycore.ProcessPoolExecutor(2) as ex:
        futures = [ex.submit(workloads.slow_square, x) for x in range(30)]
        doomed = ex.submit(workloads.crash_sigkill)
        exc = doomed.exception(timeout=TIMEOUT)
        assert isinstance(exc, manycore.WorkerLostError)
        assert exc.signal == signal.SIGKILL and "crash_sigkill" in exc.task
        assert [f.result(timeout=TIMEOUT) for f in futures] == [x * x for x in range(30)]
        # unlike the stdlib's executor, this one is not broken
        assert list(ex.map(workloads.square, range(10), timeout=TIMEOUT)) == [
            x * x for x in range(10)
        ]
        with pytest.raises(manycore.WorkerLostError):
            list(ex.map(workloads.exit_if, range(10), [4] * 10, timeout=TIMEOUT))
        assert ex.submit(workloads.add, 1, 1).result(timeout=TIMEOUT) == 2


def _assert_no_respawn_loop() -> None:
    """No new worker processes keep appearing once the pool has reported the failure."""
    time.sleep(0.3)
    first = helpers.descendants()
    time.sleep(0.7)
    later = helpers.descendants()
    assert not later - first, f"workers are still being started: {later - first}"


def test_initializer_raises(start_method):
    pool = manycore.Pool(2, initializer=workloads.init_raise, context=start_method)
    try:
        with pytest.raises(manycore.InitializerError) as info:
            pool.apply_async(workloads.square, (3,)).get(timeout=TIMEOUT)
        assert isinstance(info.value, BrokenProcessPool)
        assert isinstance(info.value.__cause__, ValueError)
        assert "initializer failed on purpose" in str(info.value.__cause__)
        # every later call fails the same way, promptly, and nothing keeps respawning
        with pytest.raises(manycore.PoolBrokenError):
            pool.map_async(workloads.square, range(10)).get(timeout=TIMEOUT)
        with pytest.raises(manycore.PoolBrokenError):
            pool.apply_async(workloads.square, (1,)).get(timeout=TIMEOUT)
        _assert_no_respawn_loop()
        # A broken pool is still a pool: entering it (as `with Pool(...) as pool:` does, at a
        # moment that races with the initializer) must not raise; its calls report the error.
        with pool as entered:
            assert entered is pool
            with pytest.raises(manycore.PoolBrokenError):
                pool.apply(workloads.square, (2,))
    finally:
        pool.terminate()


def test_initializer_exits():
    with manycore.Pool(2, initializer=workloads.init_exit) as pool:
        with pytest.raises(manycore.InitializerError):
            pool.map_async(workloads.square, range(10)).get(timeout=TIMEOUT)
        with pytest.raises(manycore.PoolBrokenError):
            pool.apply_async(workloads.square, (1,)).get(timeout=TIMEOUT)
        _assert_no_respawn_loop()


def test_executor_initializer_raises():
    ex = manycore.ProcessPoolExecutor(2, initializer=workloads.init_raise)
    try:
        # the failure surfaces through the first future, or at submit once the executor
        # already knows it is broken (as the stdlib's executor raises BrokenProcessPool)
        try:
            exc = ex.submit(workloads.square, 2).exception(timeout=TIMEOUT)
        except manycore.InitializerError as raised:
            exc = raised
        assert isinstance(exc, manycore.InitializerError)
        assert isinstance(exc.__cause__, ValueError)
        with pytest.raises(manycore.PoolBrokenError):
            ex.submit(workloads.square, 3).result(timeout=TIMEOUT)
        with pytest.raises(BrokenProcessPool):
            list(ex.map(workloads.square, range(4), timeout=TIMEOUT))
        _assert_no_respawn_loop()
    finally:
        helpers.call_with_timeout(lambda: ex.shutdown(wait=True, cancel_futures=True))
