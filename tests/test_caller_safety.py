"""Nothing a worker or a task does can crash the caller, hang it, or drop work silently
(issue 13): what the caller unpickles, where, and how it notices a worker's death."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

import manycore
from tests import helpers
from tests import workloads_safety as ws
from tests.helpers import TIMEOUT

# --- the caller never runs a task's argument-unpickling code -------------------------------

SEGFAULTING_ARGUMENT = textwrap.dedent(
    """
    import sys
    from concurrent.futures.process import BrokenProcessPool
    import manycore
    from tests import workloads_safety as ws

    method = sys.argv[1] or None
    with manycore.ProcessPoolExecutor(1, mp_context=method) as ex:
        future = ex.submit(id, ws.SegfaultsWhenUnpickled())
        try:
            future.result(timeout=60)
        except BrokenProcessPool as exc:
            print("executor:", type(exc).__name__, exc.signal, exc.task)
            print("message:", exc)
        print("executor goes on:", ex.submit(abs, -3).result(timeout=60))
    with manycore.Pool(1, context=method) as pool:
        result = pool.apply_async(id, (ws.SegfaultsWhenUnpickled(),))
        try:
            result.get(timeout=60)
        except manycore.WorkerLostError as exc:
            print("pool:", type(exc).__name__, exc.signal, exc.task)
        print("pool goes on:", pool.apply_async(abs, (-4,)).get(timeout=60))
    """
)


def test_an_argument_that_segfaults_when_unpickled_kills_only_the_worker(
    start_method: Optional[str],
) -> None:
    done = helpers.run_python(["-c", SEGFAULTING_ARGUMENT, start_method or ""])
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if not line.startswith("message:")]
    sigsegv = int(signal.SIGSEGV)
    assert "rebuilding the function and arguments of task" in done.stdout
    assert lines[0].startswith(f"executor: WorkerLostError {sigsegv} task "), lines
    assert "id(...)" in lines[0]
    assert lines[1] == "executor goes on: 3"
    assert lines[2].startswith(f"pool: WorkerLostError {sigsegv} task "), lines
    assert "id(...)" in lines[2]
    assert lines[3] == "pool goes on: 4"


# --- whatever settling one result raises fails that task alone -----------------------------


def test_a_result_that_exits_when_unpickled_fails_its_task_alone(
    start_method: Optional[str],
) -> None:
    with manycore.ProcessPoolExecutor(2, mp_context=start_method) as ex:
        future = ex.submit(ws.return_exits_when_unpickled)
        with pytest.raises(manycore.ResultUnpicklingError) as info:
            future.result(timeout=TIMEOUT)
        assert "boom" in str(info.value) and "return_exits_when_unpickled" in str(info.value)
        assert isinstance(info.value.__cause__, SystemExit)
        assert ex.submit(abs, -3).result(timeout=TIMEOUT) == 3
    with manycore.Pool(2, context=start_method) as pool:
        result = pool.apply_async(ws.return_exits_when_unpickled)
        with pytest.raises(manycore.ResultUnpicklingError):
            result.get(timeout=TIMEOUT)
        it = pool.imap(ws.return_exits_when_unpickled, range(3), chunksize=1)
        with pytest.raises(manycore.ResultUnpicklingError):
            helpers.take(it, 1)
        assert pool.map_async(abs, [-1, -2]).get(timeout=TIMEOUT) == [1, 2]


def test_a_callback_that_exits_does_not_stop_the_pool() -> None:
    def exits(_: object) -> None:
        sys.exit("callback")

    with manycore.Pool(1) as pool:
        first = pool.apply_async(abs, (-1,), callback=exits)
        assert first.get(timeout=TIMEOUT) == 1
        assert pool.apply_async(abs, (-2,)).get(timeout=TIMEOUT) == 2


class ExitsWhenPickled:
    """A map input whose pickling raises SystemExit (in the caller, on the engine's thread)."""

    def __reduce__(self) -> tuple[object, ...]:
        sys.exit("pickling")


@pytest.mark.parametrize("method", ["map", "imap"])
def test_an_input_that_exits_when_pickled_fails_its_map_alone(method: str) -> None:
    with manycore.Pool(2) as pool:
        items = [1, ExitsWhenPickled(), 3]
        with pytest.raises(SystemExit, match="pickling"):
            if method == "map":
                pool.map_async(abs, items).get(timeout=TIMEOUT)
            else:
                helpers.take(pool.imap(abs, items, chunksize=1), 3)
        assert pool.map_async(abs, [-1, -2]).get(timeout=TIMEOUT) == [1, 2]


# --- a worker's death is seen even while a process it forked lives on ----------------------

GRANDCHILD_SLEEPS = 300.0  # far past TIMEOUT: only noticing the worker's exit can answer


def _kill_grandchild(pid_file: Path) -> None:
    if helpers.wait_until(pid_file.exists, 5):
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        helpers.wait_until(lambda: helpers.proc(pid) is None, TIMEOUT)


def test_a_worker_that_dies_leaving_a_forked_child_is_noticed(
    start_method: Optional[str], tmp_path: Path
) -> None:
    pid_file = tmp_path / "grandchild"
    try:
        with manycore.Pool(1, context=start_method) as pool:
            result = pool.apply_async(ws.fork_then_die, (str(pid_file), GRANDCHILD_SLEEPS))
            with pytest.raises(manycore.WorkerLostError) as info:
                result.get(timeout=TIMEOUT)
            assert info.value.signal == signal.SIGKILL and "fork_then_die" in info.value.task
            assert pool.apply_async(abs, (-5,)).get(timeout=TIMEOUT) == 5
    finally:
        _kill_grandchild(pid_file)


def test_with_a_task_timeout_that_death_is_a_loss_not_a_timeout(
    start_method: Optional[str], tmp_path: Path
) -> None:
    pid_file = tmp_path / "grandchild"
    try:
        with manycore.ProcessPoolExecutor(1, mp_context=start_method) as ex:
            timed = ex.options(task_timeout=TIMEOUT / 4)
            future = timed.submit(ws.fork_then_die, str(pid_file), GRANDCHILD_SLEEPS)
            with pytest.raises(manycore.WorkerLostError) as info:
                future.result(timeout=TIMEOUT)
            assert isinstance(info.value, BrokenProcessPool)
            assert ex.submit(abs, -6).result(timeout=TIMEOUT) == 6
    finally:
        _kill_grandchild(pid_file)


# --- retries=0 means at most once ------------------------------------------------------------


def test_with_no_retries_a_task_whose_outcome_died_with_its_worker_is_not_run_again(
    start_method: Optional[str], tmp_path: Path
) -> None:
    # A timed map sends one-item tasks, three per batch here: the first returns (its
    # outcome waits in the worker to share a frame), the second kills the worker, the
    # third never starts.
    runs = tmp_path / "runs"
    items = [(str(runs), False), (str(runs), True), (str(runs), False)]
    with manycore.Pool(1, context=start_method) as pool:
        # Imported before: the first item then takes well under the 2 ms that flush it.
        assert pool.apply(ws.count_then_die_star, ((str(tmp_path / "warm"), False),)) > 0
        it = pool.imap(ws.count_then_die_star, items, chunksize=3, task_timeout=TIMEOUT)
        outcomes: list[object] = []
        for _ in items:
            try:
                outcomes.append(helpers.call_with_timeout(it.next, TIMEOUT))
            except manycore.WorkerLostError as exc:
                outcomes.append(exc)
        lost = [o for o in outcomes if isinstance(o, manycore.WorkerLostError)]
        assert isinstance(outcomes[1], manycore.WorkerLostError)
        assert isinstance(outcomes[2], int)  # it never started, so it ran elsewhere
        # The first one ran, once: its value came back, or its loss was reported.
        assert runs.read_text().count("x") == 3, (outcomes, runs.read_text())
        for exc in lost:
            assert "count_then_die" in exc.task


# --- results are unpickled by whoever reads them, not by the scheduler thread ---------------


def test_a_result_is_unpickled_by_its_reader(start_method: Optional[str]) -> None:
    ws.REBUILDS.clear()
    with manycore.Pool(1, context=start_method) as pool:
        slow = pool.apply_async(ws.return_slow_to_unpickle, (0.2, "pool"))
        assert helpers.wait_until(slow.ready, TIMEOUT)
        assert ws.REBUILDS == []  # ready, and nobody has rebuilt it yet
        assert slow.get(timeout=TIMEOUT) == "pool"
        assert slow.get(timeout=TIMEOUT) == "pool"  # rebuilt once
        mapped = pool.starmap(ws.return_slow_to_unpickle, [(0.01, "map")], chunksize=1)
    with manycore.ProcessPoolExecutor(1, mp_context=start_method) as ex:
        future = ex.submit(ws.return_slow_to_unpickle, 0.2, "executor")
        assert helpers.wait_until(future.done, TIMEOUT)
        assert future.exception(timeout=TIMEOUT) is None
        assert future.result(timeout=TIMEOUT) == "executor"
        assert list(ex.map(ws.return_slow_to_unpickle, [0.01], ["map"], timeout=TIMEOUT)) == ["map"]
    assert mapped == ["map"]
    me = threading.current_thread().name
    assert [("start", me), ("end", me)] * 4 == ws.REBUILDS


def test_threads_reading_one_result_together_get_one_object(start_method: Optional[str]) -> None:
    """Threads that read a result at once get the same object, rebuilt once by whichever
    came first while the others wait for it."""
    with (
        manycore.Pool(1, context=start_method) as pool,
        manycore.ProcessPoolExecutor(1, mp_context=start_method) as ex,
    ):
        results: list[Any] = [
            pool.apply_async(ws.return_slow_to_unpickle, (0.3, {"pool"})),
            ex.submit(ws.return_slow_to_unpickle, 0.3, {"executor"}),
        ]
        for result in results:
            read = result.get if hasattr(result, "get") else result.result
            assert helpers.wait_until(
                result.ready if hasattr(result, "ready") else result.done, TIMEOUT
            )
            ws.REBUILDS.clear()
            got: list[object] = []
            barrier = threading.Barrier(4)

            def reader(
                read: Callable[..., object] = read,
                barrier: threading.Barrier = barrier,
                got: list[object] = got,
            ) -> None:
                barrier.wait(TIMEOUT)
                got.append(read(timeout=TIMEOUT))

            threads = [threading.Thread(target=reader) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(TIMEOUT)
            assert len(got) == 4 and all(value is got[0] for value in got), got
            assert [phase for phase, _ in ws.REBUILDS] == ["start", "end"]


def test_a_slow_result_delays_no_other_task() -> None:
    ws.REBUILDS.clear()
    with manycore.ProcessPoolExecutor(2) as ex:
        slow = ex.submit(ws.return_slow_to_unpickle, 3.0, "slow")
        assert helpers.wait_until(slow.done, TIMEOUT)
        got: list[object] = []
        thread = threading.Thread(target=lambda: got.append(slow.result(timeout=TIMEOUT)))
        thread.start()
        try:
            assert helpers.wait_until(lambda: bool(ws.REBUILDS), TIMEOUT)  # rebuilding now
            timed = ex.options(task_timeout=0.5).submit(ws.sleep_then, TIMEOUT)
            with pytest.raises(manycore.TaskTimeoutError):
                timed.result(timeout=TIMEOUT)
            assert ex.submit(abs, -7).result(timeout=TIMEOUT) == 7
            # The timeout and a new task were served while the slow result was rebuilt.
            assert [phase for phase, _ in ws.REBUILDS] == ["start"]
        finally:
            thread.join(TIMEOUT)
        assert got == ["slow"]
