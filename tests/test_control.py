"""Issue 5's controls: task timeouts, cancel, retries, worker recycling, crash causes,
statistics, stack dumps and progress reports, on real pools.

Every blocking call has a timeout. The only time bounds are of the kind "the error came long
before the task would have finished" (a 30 s task stopped at 0.3-0.5 s must fail within
``PROMPT`` seconds), never performance figures.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import dataclasses
import functools
import io
import multiprocessing
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pytest
import tqdm
import tqdm.std

import manycore
from tests import helpers
from tests import workloads_control as w
from tests.helpers import TIMEOUT

PROMPT = 10.0  # a task stopped at its deadline is reported within this many seconds
LONG = 30  # seconds a task would run if nobody stopped it


# --- helpers ----------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    p = helpers.proc(pid)
    return p is not None


def gone(pid: int) -> bool:
    return not alive(pid)


def wait_for_file(path: Path, timeout: float = TIMEOUT) -> int:
    """Wait for a file ``announce`` writes; return the pid in it."""
    assert helpers.wait_until(path.exists, timeout), f"{path} never appeared"
    return int(path.read_text())


def full_strength(pool: Any, workers: int, dead: Iterable[int] = ()) -> list[int]:
    """Wait until the pool has ``workers`` live workers, none of them one of ``dead``, and
    every one of ``dead`` has exited; return the workers' pids."""
    dead = set(dead)
    seen: list[Any] = []

    def ready() -> bool:
        stats = pool.statistics()
        seen[:] = [stats]
        pids = [s.pid for s in stats.workers]
        return (
            len(pids) == workers
            and all(pid is not None and alive(pid) for pid in pids)
            and not set(pids) & dead
            and not any(alive(pid) for pid in dead)
        )

    assert helpers.wait_until(ready, PROMPT), (
        f"the pool did not get back to {workers} live workers (stopped: {sorted(dead)}; "
        f"still alive: {[p for p in dead if alive(p)]}): {seen}"
    )
    return [s.pid for s in seen[0].workers]


def expect(error: type[BaseException], fn: Callable[[], Any]) -> Any:
    """Run ``fn``, which must raise ``error`` within ``PROMPT`` seconds; return the error."""
    start = time.monotonic()
    with pytest.raises(error) as info:
        fn()
    elapsed = time.monotonic() - start
    assert elapsed < PROMPT, f"{error.__name__} took {elapsed:.1f} s"
    return info.value


def check_timeout_error(err: BaseException, name: str, limit: float) -> None:
    assert isinstance(err, manycore.TaskTimeoutError)
    assert isinstance(err, manycore.TimeoutError)
    assert isinstance(err, builtins.TimeoutError)
    assert isinstance(err, multiprocessing.TimeoutError)
    assert err.timeout == limit
    assert isinstance(err.pid, int) and err.pid > 0
    assert name in err.task
    assert name in str(err) and "task_timeout" in str(err)


def collect(iterator: Any, timeout: float = TIMEOUT) -> list[Any]:
    """Every item of a ``ResultIterator``, with each error in its place as ``("error", e)``
    (``next()`` continues after an error), within ``timeout`` seconds."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            out.append(iterator.next(timeout=max(0.0, deadline - time.monotonic())))
        except StopIteration:
            return out
        except manycore.TaskTimeoutError as exc:
            out.append(("error", exc))
        assert time.monotonic() < deadline, "the iterator did not finish in time"


def collect_until_error(iterable: Iterable[Any]) -> Callable[[], tuple[list[Any], Any]]:
    """For ``call_with_timeout``: items of a plain iterator up to its first error."""

    def run() -> tuple[list[Any], Any]:
        got: list[Any] = []
        try:
            for item in iterable:
                got.append(item)
        except Exception as exc:
            return got, exc
        return got, None

    return run


def settled(pool: manycore.Pool) -> None:
    """Wait until no task is left in a worker: every chunk has been settled (statistics are
    answered on the thread that settles, so nothing is still being settled either)."""
    assert helpers.wait_until(lambda: pool.statistics().tasks_running == 0, TIMEOUT)


class Calls:
    """A progress callback that records every ``(done, total)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, Optional[int]]] = []

    def __call__(self, done: int, total: Optional[int]) -> None:
        self.calls.append((done, total))

    def check(self, total: Optional[int], items: int) -> None:
        calls = list(self.calls)
        assert calls, "the callback was never called"
        dones = [d for d, _ in calls]
        assert dones == sorted(set(dones)), f"done counts not strictly increasing: {dones}"
        assert all(t == total for _, t in calls), f"totals: {calls}"
        assert dones[-1] == items, f"the last call was {calls[-1]}, not done={items}"


# --- timeouts, under every start method -------------------------------------------------------


def test_timeouts_of_single_calls(start_method: Optional[str], tmp_path: Path) -> None:
    with manycore.Pool(2, context=start_method) as pool:
        before = full_strength(pool, 2)
        plain = pool.apply_async(w.nap, (LONG,), task_timeout=0.5)
        err = expect(manycore.TaskTimeoutError, lambda: plain.get(timeout=TIMEOUT))
        check_timeout_error(err, "nap", 0.5)
        assert err.pid in before
        # SIGTERM ignored, blocked in C (a lock, libc's sleep): SIGKILL follows.
        stubborn = [
            pool.apply_async(w.stubborn_sleep, (LONG,), task_timeout=0.5),
            pool.apply_async(w.stubborn_event_wait, (LONG,), task_timeout=0.5),
            pool.apply_async(w.libc_sleep, (LONG,), task_timeout=0.5),
        ]
        others = [pool.apply_async(w.square, (i,)) for i in range(20)]
        stopped = {err.pid}
        for result, name in zip(stubborn, ["stubborn_sleep", "stubborn_event_wait", "libc_sleep"]):
            e = expect(manycore.TaskTimeoutError, functools.partial(result.get, TIMEOUT))
            check_timeout_error(e, name, 0.5)
            stopped.add(e.pid)
        assert [r.get(timeout=TIMEOUT) for r in others] == [i * i for i in range(20)]
        full_strength(pool, 2, dead=stopped)
        assert pool.map(w.square, range(10)) == [i * i for i in range(10)]

    with manycore.ProcessPoolExecutor(2, mp_context=start_method) as ex:
        timed = ex.options(task_timeout=0.5)
        future = timed.submit(w.nap, LONG)
        fine = timed.submit(w.nap, 0.01, "fine")
        err = expect(manycore.TaskTimeoutError, lambda: future.result(timeout=TIMEOUT))
        check_timeout_error(err, "nap", 0.5)
        assert fine.result(timeout=TIMEOUT) == "fine"
        assert ex.submit(w.square, 7).result(timeout=TIMEOUT) == 49
        full_strength(ex, 2, dead={err.pid})


def test_timeouts_of_maps(start_method: Optional[str]) -> None:
    item3 = functools.partial(w.slow_if, slow=3, seconds=LONG)
    squares = [i * i for i in range(8)]
    # Every worker, replacements included, imports the workloads in its initializer: a
    # fresh spawned worker's first import of them can take longer than the 0.3 s timeout
    # on a loaded machine, and a task's clock runs while its function is rebuilt.
    warm = {"initializer": w.square, "initargs": (0,)}
    with manycore.Pool(2, context=start_method, **warm) as pool:
        err = expect(manycore.TaskTimeoutError, lambda: pool.map(item3, range(8), task_timeout=0.3))
        check_timeout_error(err, "slow_if", 0.3)
        stopped = {err.pid}

        err = expect(
            manycore.TaskTimeoutError,
            lambda: pool.starmap(
                w.slow_add_if, [(i, 1, 3, LONG) for i in range(8)], task_timeout=0.3
            ),
        )
        check_timeout_error(err, "slow_add_if", 0.3)
        stopped.add(err.pid)

        start = time.monotonic()
        got = collect(pool.imap(item3, range(8), task_timeout=0.3))
        assert time.monotonic() - start < PROMPT
        assert got[:3] == squares[:3] and got[4:] == squares[4:], got
        assert got[3][0] == "error"
        check_timeout_error(got[3][1], "slow_if", 0.3)
        stopped.add(got[3][1].pid)

        got = collect(pool.imap_unordered(item3, range(8), task_timeout=0.3))
        errors = [x for x in got if isinstance(x, tuple)]
        assert len(errors) == 1, got
        check_timeout_error(errors[0][1], "slow_if", 0.3)
        stopped.add(errors[0][1].pid)
        assert sorted(x for x in got if not isinstance(x, tuple)) == sorted(
            squares[:3] + squares[4:]
        )
        full_strength(pool, 2, dead=stopped)
        assert pool.map(item3, [0, 1, 2], task_timeout=5) == squares[:3]

    with manycore.ProcessPoolExecutor(2, mp_context=start_method, **warm) as ex:
        results = ex.map(item3, range(8), task_timeout=0.3)
        got, error = helpers.call_with_timeout(collect_until_error(results))
        assert got == squares[:3]
        check_timeout_error(error, "slow_if", 0.3)


def test_timeout_escalates_to_sigkill_with_nothing_else_happening() -> None:
    """A SIGTERM-proof task is SIGKILLed and its worker replaced even when the pool has no
    other work to wake it: a later task must run (three rounds, the bug this guards
    against was a race that lost about half the time)."""
    with manycore.Pool(1) as pool:
        for _ in range(3):
            result = pool.apply_async(w.stubborn_sleep, (LONG,), task_timeout=0.3)
            err = expect(manycore.TaskTimeoutError, functools.partial(result.get, TIMEOUT))
            # no calls into the pool meanwhile; the SIGKILL is due 0.5 s after the SIGTERM,
            # and a loaded machine may take far longer to deliver it, so wait for it to land
            assert helpers.wait_until(functools.partial(gone, err.pid), TIMEOUT), (
                "the worker that ignored SIGTERM was never SIGKILLed"
            )
            assert pool.apply_async(w.square, (3,)).get(timeout=PROMPT) == 9


def test_per_call_timeout_overrides_the_pool_default() -> None:
    with manycore.Pool(1, task_timeout=0.3) as pool:
        err = expect(manycore.TaskTimeoutError, lambda: pool.apply(w.nap, (LONG,)))
        check_timeout_error(err, "nap", 0.3)
        assert pool.apply_async(w.nap, (0.5, "longer"), task_timeout=5).get(TIMEOUT) == "longer"
        assert pool.apply_async(w.nap, (0.5, "none"), task_timeout=None).get(TIMEOUT) == "none"
        assert pool.map(w.nap, [0.5], task_timeout=5) == [None]
        err = expect(
            manycore.TaskTimeoutError,
            lambda: pool.apply_async(w.nap, (LONG,), task_timeout=0.6).get(TIMEOUT),
        )
        assert err.timeout == 0.6
    with manycore.Pool(1) as pool:  # no default: only the call's own
        assert pool.apply_async(w.nap, (0.5, "x")).get(TIMEOUT) == "x"
        err = expect(
            manycore.TaskTimeoutError,
            lambda: pool.apply_async(w.nap, (LONG,), task_timeout=0.3).get(TIMEOUT),
        )
        assert err.timeout == 0.3
    with manycore.ProcessPoolExecutor(1, task_timeout=0.3) as ex:
        future = ex.submit(w.nap, LONG)
        expect(manycore.TaskTimeoutError, lambda: future.result(timeout=TIMEOUT))
        assert ex.options(task_timeout=5).submit(w.nap, 0.5, "y").result(TIMEOUT) == "y"
        assert list(ex.map(w.nap, [0.5], task_timeout=5)) == [None]


@pytest.mark.parametrize("bad", [0, -1, "x", True, float("nan")])
def test_bad_task_timeouts_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="task_timeout"):
        manycore.Pool(1, task_timeout=bad)
    with pytest.raises(ValueError, match="task_timeout"):
        manycore.ProcessPoolExecutor(1, task_timeout=bad)
    with manycore.Pool(1) as pool:
        calls: list[Callable[[], Any]] = [
            lambda: pool.apply_async(w.square, (1,), task_timeout=bad),
            lambda: pool.apply(w.square, (1,), task_timeout=bad),
            lambda: pool.map(w.square, [1], task_timeout=bad),
            lambda: pool.map_async(w.square, [1], task_timeout=bad),
            lambda: pool.starmap(w.add, [(1, 2)], task_timeout=bad),
            lambda: pool.imap(w.square, [1], task_timeout=bad),
            lambda: pool.imap_unordered(w.square, [1], task_timeout=bad),
        ]
        for call in calls:
            with pytest.raises(ValueError, match="task_timeout"):
                call()
    with manycore.ProcessPoolExecutor(1) as ex:
        with pytest.raises(ValueError, match="task_timeout"):
            ex.options(task_timeout=bad)
        with pytest.raises(ValueError, match="task_timeout"):
            ex.map(w.square, [1], task_timeout=bad)


def test_bad_retry_and_memory_options_are_refused() -> None:
    bad: Any
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match="retries"):
            manycore.Pool(1, retries=bad)
    with pytest.raises(TypeError, match="retry_on"):
        manycore.Pool(1, retries=1, retry_on=("not a class",))
    for bad_size in ("lots", "-5MiB", 0, -1, "12 parsecs"):
        with pytest.raises(ValueError, match="max_memory_per_child"):
            manycore.Pool(1, max_memory_per_child=bad_size)


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_a_running_future(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with manycore.ProcessPoolExecutor(1) as ex:
        future = ex.submit(w.announce_then_sleep, str(marker), LONG)
        pid = wait_for_file(marker)
        assert future.running()
        assert future.cancel() is True
        assert future.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=PROMPT)
        full_strength(ex, 1, dead={pid})
        stats = ex.statistics()
        assert stats.tasks_cancelled == 1
        assert stats.workers[0].restarts == 1
        assert "cancel" in stats.workers[0].restart_reasons[-1]
        done = ex.submit(w.square, 4)
        assert done.result(timeout=TIMEOUT) == 16
        assert done.cancel() is False  # finished


def test_cancel_a_running_async_result(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with manycore.Pool(1) as pool:
        result = pool.apply_async(w.announce_then_sleep, (str(marker), LONG))
        pid = wait_for_file(marker)
        assert result.cancel() is True
        assert result.ready()
        expect(concurrent.futures.CancelledError, lambda: result.get(timeout=TIMEOUT))
        assert result.cancel() is False
        full_strength(pool, 1, dead={pid})
        assert "cancel" in pool.statistics().workers[0].restart_reasons[-1]
        assert pool.apply(w.square, (5,)) == 25


def _announced(directory: Path) -> list[Path]:
    """The items ``announce_item`` has announced in ``directory``: their files, by item name
    (not the temporary files a worker writes them through, which a kill may leave)."""
    return [p for p in directory.iterdir() if p.name.isdigit()]


def test_cancel_a_running_map(tmp_path: Path) -> None:
    announce = functools.partial(w.announce_item, directory=str(tmp_path), seconds=LONG)
    with manycore.Pool(2) as pool:
        result = pool.map_async(announce, range(6), chunksize=1)
        assert helpers.wait_until(lambda: len(_announced(tmp_path)) >= 2, TIMEOUT)
        pids = {int(p.read_text()) for p in _announced(tmp_path)}
        assert result.cancel() is True
        expect(concurrent.futures.CancelledError, lambda: result.get(timeout=TIMEOUT))
        full_strength(pool, 2, dead=pids)
        assert pool.statistics().tasks_cancelled == 2
        assert pool.map(w.square, range(5)) == [0, 1, 4, 9, 16]
        assert len(_announced(tmp_path)) == 2  # no more started

        # imap's iterator: cancel() stops the running chunks too
        sub = tmp_path / "imap"
        sub.mkdir()
        announce = functools.partial(w.announce_item, directory=str(sub), seconds=LONG)
        iterator = pool.imap(announce, range(6), chunksize=1)
        assert helpers.wait_until(lambda: len(_announced(sub)) >= 2, TIMEOUT)
        pids = {int(p.read_text()) for p in _announced(sub)}
        iterator.cancel()
        with pytest.raises(StopIteration):
            iterator.next(timeout=PROMPT)
        full_strength(pool, 2, dead=pids)


@pytest.mark.parametrize("task", ["write_after", "write_now"])
def test_cancelled_task_waiting_in_a_worker_batch_never_completes(
    tmp_path: Path, task: str
) -> None:
    """A task already sent to a worker, but queued behind a running one there, is cancelled:
    it must not run to completion (its side effect never happens), as AsyncResult.cancel()
    promises ("if it has not started it never will")."""
    side_effect = tmp_path / "side-effect"
    marker = tmp_path / "first-started"
    args = (str(side_effect), 0.2) if task == "write_after" else (str(side_effect),)
    with manycore.Pool(1) as pool:
        first = pool.apply_async(w.announce_then_sleep, (str(marker), 1.0))
        second = pool.apply_async(getattr(w, task), args)
        wait_for_file(marker)
        # Both are in the worker: one running, one waiting in its batch (or the next).
        assert helpers.wait_until(lambda: pool.statistics().tasks_running == 2, PROMPT)
        assert second.cancel() is True
        expect(concurrent.futures.CancelledError, lambda: second.get(timeout=TIMEOUT))
        first_pid = first.get(timeout=TIMEOUT)
        # The handshake: a task that runs after everything the worker held. On the same
        # worker it runs after the cancelled task would have; on a replacement, the old
        # worker must be gone, so it can write nothing more.
        later = pool.apply_async(w.getpid).get(timeout=TIMEOUT)
        if later != first_pid:
            assert helpers.wait_gone(helpers.procs([first_pid]), TIMEOUT) == set()
        assert not side_effect.exists(), f"the cancelled task {task} ran to completion"
        assert pool.apply(w.square, (6,)) == 36


def test_waiting_on_a_running_future_sees_its_cancel() -> None:
    """concurrent.futures.wait and as_completed return when another thread cancels a
    running future (as they do for every other way a future ends)."""
    with manycore.ProcessPoolExecutor(1) as ex:
        for waiter in ("wait", "as_completed"):
            future = ex.submit(w.nap, LONG)
            assert helpers.wait_until(lambda: ex.statistics().tasks_running == 1, PROMPT)
            timer = threading.Timer(0.3, future.cancel)
            timer.start()
            try:
                if waiter == "wait":
                    done, _ = concurrent.futures.wait([future], timeout=PROMPT)
                    finished = list(done)
                else:
                    try:
                        finished = list(concurrent.futures.as_completed([future], PROMPT))
                    except concurrent.futures.TimeoutError:
                        finished = []
            finally:
                timer.join(TIMEOUT)
            assert future.cancelled()
            assert finished == [future], f"{waiter}() did not see the cancel"


def test_an_idle_worker_takes_new_work_while_another_runs_long(tmp_path: Path) -> None:
    """A short task submitted while one worker runs a long task and the other is idle runs
    on the idle one, not queued behind the long task (every other task is unaffected)."""
    marker = tmp_path / "started"
    with manycore.Pool(2) as pool:
        long = pool.apply_async(w.announce_then_sleep, (str(marker), LONG))
        busy = wait_for_file(marker)
        quick = pool.apply_async(w.getpid)
        try:
            pid = quick.get(timeout=PROMPT)
        except manycore.TimeoutError:
            pytest.fail(f"a quick task waited behind a {LONG} s one with a worker idle")
        finally:
            assert long.cancel()
        assert pid != busy


# --- retries ----------------------------------------------------------------------------------


def test_a_task_that_crashes_once_succeeds_with_one_retry(tmp_path: Path) -> None:
    with manycore.Pool(2) as pool:
        runs = tmp_path / "runs"
        assert pool.apply_async(w.crash_once, (str(runs), "v"), retries=1).get(TIMEOUT) == "v"
        assert w.count_runs(str(runs)) == 2
        assert pool.statistics().tasks_retried == 1

        no_retry = tmp_path / "no-retry"  # retries=0, the default: no second run
        err = expect(
            manycore.WorkerLostError,
            lambda: pool.apply_async(w.crash_once, (str(no_retry),)).get(TIMEOUT),
        )
        assert w.count_runs(str(no_retry)) == 1
        assert not hasattr(err, "attempts")
        explicit = tmp_path / "explicit-zero"
        expect(
            manycore.WorkerLostError,
            lambda: pool.apply_async(w.crash_once, (str(explicit),), retries=0).get(TIMEOUT),
        )
        assert w.count_runs(str(explicit)) == 1

    with manycore.ProcessPoolExecutor(2, retries=1) as ex:  # the pool-wide default
        runs = tmp_path / "executor"
        assert ex.submit(w.crash_once, str(runs), "w").result(TIMEOUT) == "w"
        assert w.count_runs(str(runs)) == 2


def test_an_always_crashing_task_fails_after_its_retries(tmp_path: Path) -> None:
    with manycore.Pool(2) as pool:
        runs = tmp_path / "runs"
        err = expect(
            manycore.WorkerLostError,
            lambda: pool.apply_async(w.crash_always, (str(runs),), retries=2).get(TIMEOUT),
        )
        assert w.count_runs(str(runs)) == 3
        assert err.attempts == 3
        assert err.signal == signal.SIGKILL
        if sys.version_info >= (3, 11):
            assert any("3 attempts" in note for note in err.__notes__)
        assert len(set(Path(runs).read_text().split())) == 3  # three different workers
        full_strength(pool, 2)
        assert pool.map(w.square, range(20)) == [i * i for i in range(20)]
        stats = pool.statistics()
        assert stats.tasks_retried == 2 and stats.tasks_failed == 1
        assert sum(s.restarts for s in stats.workers) == 3

    with manycore.ProcessPoolExecutor(2) as ex:
        runs = tmp_path / "executor"
        future = ex.options(retries=2).submit(w.crash_always, str(runs))
        err = expect(manycore.WorkerLostError, lambda: future.result(timeout=TIMEOUT))
        assert err.attempts == 3 and w.count_runs(str(runs)) == 3
        assert ex.submit(w.square, 3).result(timeout=TIMEOUT) == 9


def test_retry_on_a_user_exception(tmp_path: Path) -> None:
    with manycore.Pool(1) as pool:
        path = str(tmp_path / "a")
        assert pool.apply(w.flaky, (path, 2), retries=2, retry_on=w.FlakyError) == "ok after 3 runs"
        path = str(tmp_path / "b")
        err = expect(
            w.FlakyError,
            lambda: pool.apply(w.flaky, (path, 2), retries=1, retry_on=(w.FlakyError,)),
        )
        assert err.attempts == 2 and w.count_runs(path) == 2
        assert "run 2 failed" in str(err)  # the last cause
        path = str(tmp_path / "c")  # not in retry_on (the default): not retried
        expect(w.FlakyError, lambda: pool.apply(w.flaky, (path, 1), retries=3))
        assert w.count_runs(path) == 1
        path = str(tmp_path / "d")  # a base class in retry_on counts
        assert pool.apply(w.flaky, (path, 1), retries=1, retry_on=Exception) == "ok after 2 runs"


def test_timeouts_are_retried_only_when_asked(tmp_path: Path) -> None:
    with manycore.Pool(1) as pool:
        path = str(tmp_path / "default")
        err = expect(
            manycore.TaskTimeoutError,
            lambda: pool.apply(w.run_then_sleep, (path, LONG), task_timeout=0.3, retries=1),
        )
        assert w.count_runs(path) == 1 and not hasattr(err, "attempts")
        path = str(tmp_path / "asked")
        err = expect(
            manycore.TaskTimeoutError,
            lambda: pool.apply(
                w.run_then_sleep,
                (path, LONG),
                task_timeout=0.3,
                retries=1,
                retry_on=(manycore.TaskTimeoutError,),
            ),
        )
        assert w.count_runs(path) == 2 and err.attempts == 2
        stats = pool.statistics()
        assert stats.tasks_timed_out == 3
        assert stats.tasks_retried == 1
        assert stats.tasks_failed == 2


def test_retries_rerun_a_map_chunk(tmp_path: Path) -> None:
    crash5 = functools.partial(w.crash_item_once, directory=str(tmp_path), bad=5)
    squares = [i * i for i in range(20)]
    with manycore.Pool(2) as pool:
        assert pool.map(crash5, range(20), chunksize=4, retries=1) == squares
        assert w.count_runs(str(tmp_path / "item5")) == 2

        other = tmp_path / "imap"
        other.mkdir()
        crash7 = functools.partial(w.crash_item_once, directory=str(other), bad=7)
        assert helpers.drain(pool.imap(crash7, range(20), chunksize=3, retries=1)) == squares

        third = tmp_path / "no-retries"
        third.mkdir()
        crash2 = functools.partial(w.crash_item_once, directory=str(third), bad=2)
        expect(manycore.WorkerLostError, lambda: pool.map(crash2, range(20), chunksize=4))
        assert pool.map(w.square, range(20)) == squares


# --- recycling --------------------------------------------------------------------------------


def test_max_tasks_per_child_gives_fresh_workers() -> None:
    with manycore.Pool(2, maxtasksperchild=1) as pool:
        pids = pool.map(w.getpid_slow, range(6), chunksize=1)
        assert len(set(pids)) == 6
        assert any("retired" in r for s in pool.statistics().workers for r in s.restart_reasons)
    with manycore.Pool(2, max_tasks_per_child=2) as pool:
        pids = pool.map(w.getpid_slow, range(8), chunksize=1)
        assert len(set(pids)) == 4 and all(pids.count(p) == 2 for p in set(pids))
    with manycore.ProcessPoolExecutor(2, max_tasks_per_child=1) as ex:
        futures = [ex.submit(w.getpid_slow) for _ in range(5)]
        assert len({f.result(timeout=TIMEOUT) for f in futures}) == 5


def test_max_memory_per_child_replaces_the_worker_after_the_task() -> None:
    with manycore.Pool(1, max_memory_per_child="50MiB") as pool:
        first = pool.apply_async(w.getpid)
        big = pool.apply_async(w.grow, (100,))
        after = [pool.apply_async(w.getpid) for _ in range(10)]
        pid = first.get(timeout=TIMEOUT)
        assert big.get(timeout=TIMEOUT) == pid
        later = {r.get(timeout=TIMEOUT) for r in after}  # nothing lost
        assert pid not in later and len(later) == 1
        stats = pool.statistics()
        assert stats.workers[0].restarts == 1
        assert "memory" in stats.workers[0].restart_reasons[-1]
        assert stats.tasks_done == 12 and stats.tasks_failed == 0

    grow3 = functools.partial(w.grow_if, big=3, mib=100)
    with manycore.ProcessPoolExecutor(2, max_memory_per_child=50 * 2**20) as ex:
        got = list(ex.map(grow3, range(30), chunksize=2, timeout=TIMEOUT))
        assert [v for v, _ in got] == [i * i for i in range(30)]
        grown = dict(got)[9]
        assert not any(pid == grown for x, pid in got if x > 9 * 9 and x != 9)
        assert any("memory" in r for s in ex.statistics().workers for r in s.restart_reasons)


def test_maxtasksperchild_one_with_many_tasks_does_not_deadlock() -> None:
    """CPython gh-115634: a pool with maxtasksperchild=1 could hang with many tasks."""
    with manycore.Pool(2, maxtasksperchild=1) as pool:
        singles = [pool.apply_async(w.square, (i,)) for i in range(40)]
        mapped = pool.map_async(w.square, range(40), chunksize=1)
        assert [r.get(timeout=TIMEOUT) for r in singles] == [i * i for i in range(40)]
        assert mapped.get(timeout=TIMEOUT) == [i * i for i in range(40)]
        assert sum(s.restarts for s in pool.statistics().workers) >= 78


# --- crash causes -----------------------------------------------------------------------------


def test_sigkill_is_reported_as_a_possible_oom_kill() -> None:
    with manycore.Pool(1) as pool:
        err = expect(
            manycore.WorkerLostError,
            lambda: pool.apply_async(w.sigkill_with_args, ("hello-preview", 12345)).get(TIMEOUT),
        )
        message = str(err)
        assert "OOM" in message and "memory" in message
        assert "sigkill_with_args" in message and "'hello-preview'" in message
        assert "12345" in message
        assert "sigkill_with_args" in err.task

        err = expect(
            manycore.WorkerLostError,
            lambda: pool.apply_async(w.sigkill_after_growing, (100, 1.5)).get(TIMEOUT),
        )
        message = str(err)
        assert "OOM" in message
        assert "last known resident memory" in message and "MiB" in message


def test_segfault_is_reported_as_such() -> None:
    with manycore.Pool(1) as pool:
        err = expect(
            manycore.WorkerLostError,
            lambda: pool.apply_async(w.segfault_task, ("some-label",)).get(TIMEOUT),
        )
        assert err.signal == signal.SIGSEGV
        assert "segmentation fault" in str(err).lower()
        assert "segfault_task" in str(err) and "'some-label'" in str(err)
        assert pool.apply(w.square, (2,)) == 4


# --- statistics and stacks --------------------------------------------------------------------


def test_statistics_are_consistent_with_what_ran(tmp_path: Path) -> None:
    with manycore.Pool(2) as pool:
        start = pool.statistics()
        assert len(start.workers) == 2
        assert [s.index for s in start.workers] == [0, 1]
        assert all(s.pid is not None and alive(s.pid) for s in start.workers)
        assert (start.tasks_done, start.tasks_failed, start.tasks_retried) == (0, 0, 0)
        assert (start.tasks_queued, start.tasks_running, start.jobs_pending) == (0, 0, 0)
        assert all(s.restarts == 0 and s.busy_time == 0 for s in start.workers)

        assert pool.apply(w.nap, (0.2, "slept")) == "slept"  # 1 task, 1 item
        assert pool.map(w.square, range(100), chunksize=10)[-1] == 99 * 99  # 10 tasks
        with pytest.raises(ValueError):
            pool.apply(w.raise_value_error, (1,))  # 1 failed
        assert pool.apply(w.crash_once, (str(tmp_path / "c"), 1), retries=1) == 1  # 1 retry
        with pytest.raises(manycore.TaskTimeoutError) as timed_out:
            pool.apply(w.nap, (LONG,), task_timeout=0.3)
        marker = tmp_path / "started"
        running = pool.apply_async(w.announce_then_sleep, (str(marker), LONG))
        cancelled = wait_for_file(marker)
        assert running.cancel()
        full_strength(pool, 2, dead={timed_out.value.pid, cancelled})

        stats = pool.statistics()
        assert stats.tasks_done == 1 + 10 + 1
        assert stats.tasks_failed == 2  # the ValueError and the timeout
        assert stats.tasks_retried == 1
        assert stats.tasks_timed_out == 1
        assert stats.tasks_cancelled == 1
        assert (stats.tasks_queued, stats.tasks_running, stats.jobs_pending) == (0, 0, 0)
        assert sum(s.items_done for s in stats.workers) >= 100 + 1 + 1
        assert sum(s.tasks_done for s in stats.workers) >= stats.tasks_done
        assert sum(s.busy_time for s in stats.workers) >= 0.2
        assert sum(s.restarts for s in stats.workers) == 3  # crash, timeout, cancel
        reasons = " | ".join(r for s in stats.workers for r in s.restart_reasons)
        assert "lost" in reasons and "task_timeout" in reasons and "cancel" in reasons
        assert stats.ipc_time > 0 and stats.uptime >= stats.ipc_time
        assert all(s.idle_time >= 0 for s in stats.workers)

        with pytest.raises(dataclasses.FrozenInstanceError):
            stats.tasks_done = 0  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            stats.workers[0].pid = 1  # type: ignore[misc]


def test_statistics_count_items_of_maps_and_executor_work() -> None:
    with manycore.ProcessPoolExecutor(2) as ex:
        assert list(ex.map(w.square, range(50), chunksize=5)) == [i * i for i in range(50)]
        assert ex.submit(w.square, 3).result(timeout=TIMEOUT) == 9
        stats = ex.statistics()
        assert stats.tasks_done == 11
        assert sum(s.items_done for s in stats.workers) == 51
        assert sum(s.tasks_done for s in stats.workers) == 11


def test_stacks_show_what_a_busy_worker_runs(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with manycore.Pool(2) as pool:
        assert pool.stacks() == ()
        result = pool.apply_async(w.announce_then_sleep, (str(marker), LONG))
        pid = wait_for_file(marker)
        assert pool.statistics().tasks_running == 1
        stacks = pool.stacks(timeout=5.0)
        assert len(stacks) == 1
        stack = stacks[0]
        assert stack.pid == pid
        assert "announce_then_sleep(" in stack.task and f"{LONG})" in stack.task
        assert "announce_then_sleep" in stack.stack  # faulthandler answered from time.sleep
        assert stack.running_for > 0
        assert "announce_then_sleep" in str(stack)
        assert result.cancel()
        full_strength(pool, 2, dead={pid})
        assert pool.stacks() == ()


# --- progress ---------------------------------------------------------------------------------


def test_progress_callback_for_every_map_kind() -> None:
    squares = [i * i for i in range(50)]
    with manycore.Pool(2) as pool:
        calls = Calls()
        assert pool.map(w.square, range(50), chunksize=5, progress=calls) == squares
        calls.check(50, 50)
        calls = Calls()
        got = pool.map_async(w.square, range(50), progress=calls).get(timeout=TIMEOUT)
        assert got == squares
        calls.check(50, 50)
        calls = Calls()
        pairs = [(i, i) for i in range(50)]
        assert pool.starmap(w.add, pairs, chunksize=7, progress=calls) == [2 * i for i in range(50)]
        calls.check(50, 50)
        calls = Calls()
        assert helpers.drain(pool.imap(w.square, range(50), chunksize=3, progress=calls)) == squares
        calls.check(50, 50)
        calls = Calls()
        got = helpers.drain(pool.imap_unordered(w.square, range(50), progress=calls))
        assert sorted(got) == squares
        calls.check(50, 50)
        calls = Calls()  # with a timeout, chunks are single items
        assert pool.map(w.square, range(20), task_timeout=10, progress=calls) == squares[:20]
        calls.check(20, 20)
    with manycore.ProcessPoolExecutor(2) as ex:
        calls = Calls()
        assert list(ex.map(w.square, range(50), timeout=TIMEOUT, progress=calls)) == squares
        calls.check(50, 50)


def test_progress_total_of_executor_map_over_several_sized_inputs() -> None:
    """Executor.map zips its inputs; when each has a length the total is known."""
    with manycore.ProcessPoolExecutor(2) as ex:
        calls = Calls()
        got = list(ex.map(w.add, range(30), range(40), chunksize=4, progress=calls))
        assert got == [2 * i for i in range(30)]
        calls.check(30, 30)


def test_progress_with_unsized_input_has_no_total() -> None:
    with manycore.Pool(2) as pool:
        calls = Calls()
        got = helpers.drain(pool.imap(w.square, (i for i in range(40)), progress=calls))
        assert got == [i * i for i in range(40)]
        calls.check(None, 40)
    with manycore.ProcessPoolExecutor(2) as ex:
        calls = Calls()
        got = list(ex.map(w.square, iter(range(40)), timeout=TIMEOUT, progress=calls))
        assert len(got) == 40
        calls.check(None, 40)


@pytest.fixture
def no_tqdm_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    """tqdm's monitor thread outlives the bars (the leak check would count it)."""
    monkeypatch.setattr(tqdm.std.tqdm, "monitor_interval", 0)


def test_progress_with_a_tqdm_instance(no_tqdm_monitor: None) -> None:
    with manycore.Pool(2) as pool:
        bar = tqdm.tqdm(file=io.StringIO())  # no total: manycore sets it
        assert pool.map(w.square, range(40), chunksize=4, progress=bar) == [
            i * i for i in range(40)
        ]
        assert bar.n == 40 and bar.total == 40
        assert not bar.disable, "manycore closed a bar it does not own"
        bar.close()

        bar = tqdm.tqdm(file=io.StringIO(), total=None)
        got = helpers.drain(pool.imap_unordered(w.square, iter(range(25)), progress=bar))
        assert len(got) == 25 and bar.n == 25
        bar.close()


def test_progress_true_draws_a_bar(
    capsys: pytest.CaptureFixture[str], no_tqdm_monitor: None
) -> None:
    with manycore.Pool(2) as pool:
        assert len(pool.map(w.square, range(30), progress=True)) == 30
        assert len(helpers.drain(pool.imap(w.square, range(20), progress=True))) == 20
    err = capsys.readouterr().err
    assert "100%" in err and "30/30" in err and "20/20" in err


def test_progress_stops_and_closes_on_error(no_tqdm_monitor: None) -> None:
    std = tqdm.std.tqdm
    fails = functools.partial(w.fail_first_then_slow, seconds=0.3)
    with manycore.Pool(2) as pool:
        calls = Calls()
        with pytest.raises(ValueError, match="item 0 fails"):
            pool.map(fails, range(8), chunksize=1, progress=calls)
        seen = len(calls.calls)
        settled(pool)  # chunks still in workers finish meanwhile
        assert len(calls.calls) == seen, "the callback was called after map raised"

        bar = std(file=io.StringIO(), total=8)
        with pytest.raises(ValueError):
            pool.map(fails, range(8), chunksize=1, progress=bar)
        assert not bar.disable, "manycore closed the user's bar"
        n = bar.n
        settled(pool)
        assert bar.n == n and n < 8
        bar.close()

        open_bars = len(getattr(std, "_instances", ()))
        stderr = io.StringIO()
        old, sys.stderr = sys.stderr, stderr
        try:
            with pytest.raises(ValueError):
                pool.map(fails, range(8), chunksize=1, progress=True)
        finally:
            sys.stderr = old
        assert len(getattr(std, "_instances", ())) == open_bars, "the owned bar was not closed"

        calls = Calls()  # cancelling a map stops its progress too
        result = pool.map_async(w.nap, [LONG] * 4, chunksize=1, progress=calls)
        assert result.cancel()
        assert calls.calls == []
