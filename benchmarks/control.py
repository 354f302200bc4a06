"""What the issue-5 controls cost: options on, progress bars, and how fast a timeout lands.

Figures (issue 5), all measured in one run:

* ``map(x*x)`` over 200k ints and one ``submit`` per item (20k) on a pool with every option
  left at its default, beside the stdlib (``multiprocessing.Pool.map``,
  ``concurrent.futures`` ``submit``), which ties this run to the engine figures; reference
  rows set ``retries=3`` switched on (no task fails, so it only pays for carrying the
  options) beside the default pool. (An earlier figure, a pool with the options passed as
  off beside the default one, compared a pool with itself: both are the same code path.)
* ``progress=`` on ``map(x*x)`` over 200k ints: a tqdm bar writing to ``os.devnull``,
  ``progress=True`` (tqdm.auto, with stderr sent to ``os.devnull`` while it runs) and a
  callback, each at least 0.95x the speed of the same map without progress.
* ``task_timeout=0.2`` on a task that sleeps 10 s: the task writes ``time.monotonic()``
  when it starts (the clock is shared by every process of the machine), so the deadline
  is known exactly; the figure is the time from that start until ``get()`` has raised
  ``TaskTimeoutError`` and the stopped worker is gone (the kill included), median and
  worst of the runs, against the deadline plus the 100 ms the issue allows (ratio at most
  1.0). The notes give the same in milliseconds past the
  deadline, the time until the stopped worker is gone, and the time until the pool is back
  at full strength (its replacement has started a task).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import manycore
from manycore._bench.guards import deadline
from manycore._bench.stats import summarize

from . import workloads
from ._harness import CALL_DEADLINE_S, Call, Context, Figure, Measurement, measure, opened
from .overhead import _squares_of, k
from .submit import _submit_each

__all__ = ["record_start_then_sleep", "run", "started_then_sleep"]

SUITE = "control"

TIMEOUT = 0.2  # task_timeout of the latency runs
BUDGET = 0.1  # what the issue allows past the deadline
SLEEPER_S = 10.0  # how long the timed-out task would run
FULL_STRENGTH_TASK_S = 0.3  # each probe task's length when checking the replacement runs


def record_start_then_sleep(path: str, seconds: float) -> None:
    """Write ``time.monotonic()`` to ``path`` (atomically), then sleep ``seconds``."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(repr(time.monotonic()))
    os.replace(tmp, path)
    time.sleep(seconds)


def started_then_sleep(seconds: float) -> tuple[int, float]:
    """(pid, ``time.monotonic()`` at the start), after sleeping ``seconds``."""
    started = time.monotonic()
    time.sleep(seconds)
    return os.getpid(), started


def run(ctx: Context) -> list[Figure]:
    figures = _options_off(ctx)
    figures += _timeout_latency(ctx)
    return figures


# --- options off, and progress ------------------------------------------------------------


def _options_off(ctx: Context) -> list[Figure]:
    n_map = 200_000
    n_each = ctx.size(20_000, 5_000)
    warm_each = min(n_each, 2_000)
    expected_each = [i * i for i in range(n_each)]
    square = workloads.square
    w = ctx.workers
    # "Within 3%" of calls that take tens of milliseconds asks for more samples than the
    # other suites take: four times the repeats (cheap here, and the median steadies).
    tight = dataclasses.replace(ctx, repeats=ctx.repeats * 4)

    def right_each(result: Any) -> bool:
        return bool(result == expected_each)

    with contextlib.ExitStack() as stack:
        mc_pool = stack.enter_context(opened(ctx, "manycore.Pool", manycore.Pool(w)))
        retry_pool = stack.enter_context(
            opened(ctx, "manycore.Pool (retries=3)", manycore.Pool(w, retries=3))
        )
        mp_pool = stack.enter_context(opened(ctx, "multiprocessing.Pool", multiprocessing.Pool(w)))
        squares = _squares_of(n_map)
        map_calls = [
            Call(
                Measurement("manycore.Pool.map, default options", n_map),
                lambda: mc_pool.map(square, range(n_map)),
                squares,
            ),
            Call(
                Measurement("manycore.Pool(retries=3).map", n_map),
                lambda: retry_pool.map(square, range(n_map)),
                squares,
            ),
            Call(
                Measurement("multiprocessing.Pool.map", n_map),
                lambda: mp_pool.map(square, range(n_map)),
                squares,
            ),
        ]
        measure(tight, f"map(x*x) over {n_map:,} ints", map_calls)

        updates: list[int] = []
        progress_calls = _progress_calls(mc_pool, n_map, updates)
        measure(tight, f"map(x*x) over {n_map:,} ints with progress", progress_calls)
        _note_progress_cost(ctx, progress_calls[0].measurement, updates)

        mc_exec = stack.enter_context(
            opened(ctx, "manycore.ProcessPoolExecutor", manycore.ProcessPoolExecutor(w))
        )
        retry_exec = stack.enter_context(
            opened(
                ctx,
                "manycore.ProcessPoolExecutor (retries=3)",
                manycore.ProcessPoolExecutor(w, retries=3),
            )
        )
        cf_exec = stack.enter_context(
            opened(ctx, "concurrent.futures.ProcessPoolExecutor", ProcessPoolExecutor(w))
        )

        def per_item(name: str, each: Callable[[Any, int], Any], target: Any) -> Call:
            """One item at a time through ``target``: ``n_each`` calls, after a warm-up."""
            return Call(
                Measurement(name, n_each),
                lambda: each(target, n_each),
                right_each,
                warmup=lambda: each(target, warm_each),
            )

        each_calls = [
            per_item("manycore.ProcessPoolExecutor.submit, default options", _submit_each, mc_exec),
            per_item("manycore.ProcessPoolExecutor(retries=3).submit", _submit_each, retry_exec),
            per_item("concurrent.futures.ProcessPoolExecutor.submit", _submit_each, cf_exec),
        ]
        # The stdlib executor's side takes seconds a round: the usual repeats for it.
        measure(tight, f"one submit / apply_async per item, {n_each:,} items", each_calls[:-1])
        measure(ctx, f"concurrent.futures submit per item, {n_each:,} items", each_calls[-1:])

    mc_map, retry_map, mp_map = (c.measurement for c in map_calls)
    plain, bar, auto, callback = (c.measurement for c in progress_calls)
    mc_submit, retry_submit, cf_submit = (c.measurement for c in each_calls)
    engine = "manycore"  # the baseline is manycore's own engine path, measured in this run

    def versus_engine(
        name: str, subject: Measurement, baseline: Measurement, target: Any
    ) -> Figure:
        return Figure(
            SUITE,
            name,
            subject,
            baseline,
            compare="speed",
            target=target,
            show="rate",
            baseline_kind=engine,
        )

    return [
        versus_engine(
            f"Pool.map(x*x) {k(n_map)}, retries=3 (on, no failures) vs default",
            retry_map,
            mc_map,
            None,
        ),
        Figure(
            SUITE,
            f"Pool.map(x*x) {k(n_map)}, default options, vs stdlib (engine figure)",
            mc_map,
            mp_map,
            compare="speed",
            target=1.0,
            show="rate",
        ),
        versus_engine(
            f"Executor.submit per item {k(n_each)}, retries=3 (on, no failures) vs default",
            retry_submit,
            mc_submit,
            None,
        ),
        Figure(
            SUITE,
            f"Executor.submit per item {k(n_each)}, default options, vs stdlib (engine figure)",
            mc_submit,
            cf_submit,
            compare="speed",
            target=10.0,
            show="rate",
        ),
        versus_engine(
            f"Pool.map(x*x) {k(n_map)}, progress=tqdm(file=devnull) vs no progress",
            bar,
            plain,
            0.95,
        ),
        versus_engine(
            f"Pool.map(x*x) {k(n_map)}, progress=True (stderr to devnull) vs no progress",
            auto,
            plain,
            0.95,
        ),
        versus_engine(
            f"Pool.map(x*x) {k(n_map)}, progress=callback vs no progress", callback, plain, 0.95
        ),
    ]


def _progress_calls(pool: manycore.Pool, n: int, updates: list[int]) -> list[Call]:
    """Calls that return (result, items the progress report saw), checked together;
    ``updates`` gets the number of progress reports of each callback run."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    square = workloads.square
    expected = [x * x for x in range(n)]

    def right(outcome: tuple[list[int], int]) -> bool:
        result, seen = outcome
        return result == expected and seen == n

    def plain() -> tuple[list[int], int]:
        return pool.map(square, range(n)), n

    def with_bar() -> tuple[list[int], int]:
        with open(os.devnull, "w") as devnull, tqdm(file=devnull) as bar:
            result = pool.map(square, range(n), progress=bar)
            return result, bar.n

    def with_auto() -> tuple[list[int], int]:
        # tqdm.auto draws on sys.stderr, looked up when the bar is made. The bar is
        # manycore's own, so only the result can be checked here.
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            result = pool.map(square, range(n), progress=True)
        return result, n

    def with_callback() -> tuple[list[int], int]:
        seen = [0, 0]

        def count(done: int, total: Optional[int]) -> None:
            seen[0] = done
            seen[1] += 1

        result = pool.map(square, range(n), progress=count)
        updates.append(seen[1])
        return result, seen[0]

    return [
        Call(Measurement("manycore.Pool.map, no progress", n), plain, right),
        Call(Measurement("manycore.Pool.map, progress=tqdm(file=devnull)", n), with_bar, right),
        Call(Measurement("manycore.Pool.map, progress=True", n), with_auto, right),
        Call(Measurement("manycore.Pool.map, progress=callback", n), with_callback, right),
    ]


def _note_progress_cost(ctx: Context, plain: Measurement, updates: list[int]) -> None:
    """The bar's own cost, timed without the pool: on a shared machine the map's noise is
    far larger than a few updates, so this says what the ratios above cannot."""
    from tqdm import tqdm

    from manycore._progress import make_progress

    if plain.stats is None or not updates:
        return
    per_map = max(updates)
    n = plain.items
    rounds = 100
    with open(os.devnull, "w") as devnull:
        start = time.perf_counter()
        for _ in range(rounds):
            with tqdm(file=devnull) as bar:
                progress = make_progress(bar, n)
                assert progress is not None
                for _ in range(per_map):
                    progress.advance(n // per_map)
                progress.finish()
        cost = (time.perf_counter() - start) / rounds
    ctx.note(
        f"control: progress is reported once per chunk ({min(updates)}-{per_map} updates per "
        f"{k(n)}-item map here); a tqdm bar made, updated that often and closed takes "
        f"{cost * 1000:.2f} ms, {cost / plain.seconds:.1%} of the map's median "
        f"{plain.seconds * 1000:.0f} ms."
    )


# --- timeout latency ----------------------------------------------------------------------


@dataclasses.dataclass
class _Landing:
    """One timed-out task: seconds from its start until each thing happened."""

    raised: float  # get() raised TaskTimeoutError
    gone: float  # the stopped worker's process no longer runs
    full: float  # the replacement worker started a task (nan: not seen)


def _timeout_latency(ctx: Context) -> list[Figure]:
    runs = ctx.size(10, 5)
    w = max(2, ctx.workers)
    landings: list[_Landing] = []
    error: Optional[str] = None
    ctx.progress(f"task_timeout={TIMEOUT:g} on a {SLEEPER_S:g} s task: {runs} runs")
    with (
        tempfile.TemporaryDirectory(prefix="manycore-bench-") as tmp,
        opened(ctx, "manycore.Pool", manycore.Pool(w)) as pool,
    ):
        try:
            with deadline(CALL_DEADLINE_S, "timeout latency (warm-up)"):
                pool.map(started_then_sleep, [0.01] * (2 * w), chunksize=1)
            for number in range(runs):
                with deadline(CALL_DEADLINE_S, f"timeout latency run {number + 1}"):
                    landing = _one_timeout(pool, w, Path(tmp) / f"start-{number}")
                landings.append(landing)
                ctx.progress(
                    f"  run {number + 1}/{runs}: raised {_ms(landing.raised - TIMEOUT)} past "
                    f"the deadline, worker gone {_ms(landing.gone - TIMEOUT)}, full strength "
                    f"{_ms(landing.full - TIMEOUT)}"
                )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            ctx.progress(f"  failed: {error}")

    budget = Measurement(f"deadline + {BUDGET * 1000:.0f} ms")
    budget.stats = summarize([TIMEOUT + BUDGET])
    what = "task start to TaskTimeoutError and its worker gone"
    median_m = Measurement(f"{what}, median of {runs}")
    worst_m = Measurement(f"{what}, worst of {runs}")
    if error is not None or not landings:
        median_m.error = worst_m.error = error or "no run finished"
    else:
        # The error comes first (at the deadline); the kill is counted by taking the later.
        settled = [max(x.raised, x.gone) for x in landings]
        median_m.stats = summarize(settled)
        worst_m.stats = summarize([max(settled)])
        past = [x.raised - TIMEOUT for x in landings]
        gone = [x.gone - TIMEOUT for x in landings]
        full = [x.full - TIMEOUT for x in landings if x.full == x.full]
        ctx.note(
            f"control: task_timeout={TIMEOUT:g} s, {len(landings)} runs, times after the "
            f"deadline: TaskTimeoutError raised {_ms(statistics.median(past))} median, "
            f"{_ms(max(past))} worst; the stopped worker gone "
            f"{_ms(statistics.median(gone))} median, {_ms(max(gone))} worst"
            + (
                f"; pool back at full strength (the replacement started a task) "
                f"{_ms(statistics.median(full))} median, {_ms(max(full))} worst"
                if full
                else "; the replacement was not seen starting a task"
            )
            + f" ({len(full)} of {len(landings)} runs)."
        )
    return [
        Figure(
            SUITE,
            f"task_timeout={TIMEOUT:g} s: start to error + kill, median, vs deadline + 100 ms",
            median_m,
            budget,
            compare="time",
            target=1.0,
            baseline_kind="manycore",
        ),
        Figure(
            SUITE,
            f"task_timeout={TIMEOUT:g} s: start to error + kill, worst, vs deadline + 100 ms",
            worst_m,
            budget,
            compare="time",
            target=1.0,
            baseline_kind="manycore",
        ),
    ]


def _one_timeout(pool: manycore.Pool, workers: int, path: Path) -> _Landing:
    earlier = {worker.pid for worker in pool.statistics().workers}
    result = pool.apply_async(record_start_then_sleep, (str(path), SLEEPER_S), task_timeout=TIMEOUT)
    try:
        result.get(timeout=SLEEPER_S)
    except manycore.TaskTimeoutError as exc:
        raised_at = time.monotonic()
        stopped = exc.pid
    else:
        raise RuntimeError(f"a {SLEEPER_S:g} s task with task_timeout={TIMEOUT:g} returned")
    # Probe tasks, sent at once: the healthy workers take two each (a worker may have two
    # batches in flight), the rest wait for the replacement, whose first start is when the
    # pool was whole again (none reaches it if it takes longer than a probe task to start).
    probes = pool.map_async(started_then_sleep, [FULL_STRENGTH_TASK_S] * (2 * workers), chunksize=1)
    gone_at = _wait_gone(stopped, raised_at + SLEEPER_S)
    started = float(path.read_text())
    runs = probes.get(timeout=SLEEPER_S)
    fresh = [at for pid, at in runs if pid not in earlier]
    full_at = min(fresh) if fresh else float("nan")
    return _Landing(raised_at - started, gone_at - started, full_at - started)


def _wait_gone(pid: int, until: float) -> float:
    """When ``pid`` stopped running (exited or a zombie), polled every millisecond."""
    while time.monotonic() < until:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            return time.monotonic()
        if data[data.rindex(b")") + 2 :].split()[0] in (b"Z", b"X"):
            return time.monotonic()
        time.sleep(0.001)
    raise RuntimeError(f"the worker stopped for its timeout (pid {pid}) is still running")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
