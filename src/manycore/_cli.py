"""The ``manycore`` command: ``manycore bench`` and ``manycore info``.

``manycore bench`` answers, on the user's own machine and in about a minute, "what would
switching buy me?": it runs the same workloads through serial code, the stdlib's thread and
process pools, the peers that are installed (joblib, mpire, pebble) and manycore, and prints
times, speedups over serial and ratios against ``multiprocessing.Pool``, all measured in the
same run. A last workload crashes a worker and shows which systems tell the caller and which
leave it hanging.

How it measures (the same rules as ``benchmarks/``):

* every pool is started and warmed up (a few tasks each) before any timing, so worker
  start-up is not in the figures; ``benchmarks/`` measures start-up on its own;
* repeats are interleaved: round 1 runs every system once, then round 2, and so on, so a
  burst of noise from a neighbour on a shared machine lands on all of them alike;
* each figure is the median of the repeats, with the spread (half the range) beside it;
* every result is checked against serial's, and every call runs under a deadline, so a
  wrong answer or a hang shows up as an error in the table instead of a stuck terminal;
  a pool that hung is terminated, so no worker outlives the command;
* before any pool starts, a probe measures how many CPUs' worth of work the machine really
  delivers (``_benchwork.parallel_capacity``), and a note says so when it is clearly fewer
  than the CPUs it claims.

``manycore info`` prints what a user checks first when parallel code is slow: usable cores,
start methods, ``/dev/shm``, the Python version and whether the GIL is enabled.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import importlib.util
import json
import multiprocessing
import multiprocessing.pool
import os
import platform
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from . import _benchwork as work
from ._cpu import cgroup_cpu_quota

__all__ = ["main"]

# A measured call that takes this long is treated as hung: the slowest legitimate call
# (the stdlib executor's 10k one-item tasks) takes a few seconds on a slow 2-core machine.
CALL_DEADLINE_S = 60.0
# Closing a pool waits for its workers to exit; more than this means it is stuck.
CLOSE_DEADLINE_S = 30.0
# The crash workload: how long a pool may take to tell the caller that a worker died. Its
# tasks take 10 ms each, so a pool that has said nothing after seconds never will (the
# stdlib's Pool waits forever); a shorter wait under --quick keeps that run under a minute.
CRASH_DEADLINE_S = 10.0
CRASH_DEADLINE_QUICK_S = 5.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``manycore`` command line; returns the process exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error: argparse already printed why
        return exc.code if isinstance(exc.code, int) else 1
    if args.command is None:
        parser.print_help()
        return 2
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manycore",
        description="manycore: true parallelism on every core, with the multiprocessing API.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    bench = sub.add_parser(
        "bench",
        help="compare serial, threads, the stdlib process pools, the peers and manycore here",
        description=(
            "Run CPU-bound, I/O-bound, trivial and large-NumPy-payload workloads through "
            "serial code, multiprocessing's ThreadPool and Pool, concurrent.futures' "
            "ProcessPoolExecutor, joblib, mpire and pebble (when installed) and manycore, and "
            "print times (median of repeats), spread, speedup over serial and the ratio "
            "against multiprocessing.Pool; then crash a worker in each pool and show which "
            "ones report it and which hang. Progress goes to stderr."
        ),
        epilog=(
            "Exit status: 0 when every manycore call succeeded (and its pools survived the "
            "crash), 1 when one did not, 2 for a usage error. Other systems' failures and "
            "hangs are reported in the table, not in the exit status."
        ),
    )
    bench.add_argument("--quick", action="store_true", help="smaller workloads, fewer repeats")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    bench.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw the comparison into FILE.png (needs matplotlib)",
    )
    bench.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="workers per pool (default: the CPUs this process may use)",
    )
    bench.add_argument(
        "--repeats",
        type=_positive_int,
        metavar="N",
        help="timed repeats per measurement (default: 5, or 3 with --quick)",
    )
    bench.set_defaults(run=_bench_command)

    info = sub.add_parser(
        "info",
        help="show cores, start methods, /dev/shm, Python and GIL: what to check when it is slow",
    )
    info.add_argument("--json", action="store_true", help="print the facts as JSON")
    info.set_defaults(run=_info_command)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# --- the systems being compared -------------------------------------------------------------


class _Runner(Protocol):
    """One system under test, already started: runs a map and is closed at the end."""

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]: ...

    def close(self) -> None: ...

    def kill(self) -> None: ...


class _Serial:
    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(map(fn, items))

    def close(self) -> None:
        pass

    def kill(self) -> None:
        pass


class _PoolRunner:
    """A ``multiprocessing.Pool``-shaped pool (the stdlib's, its ThreadPool, manycore's)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        self._pool.close()
        self._pool.join()

    def kill(self) -> None:
        self._pool.terminate()
        self._pool.join()


class _ExecutorRunner:
    """A ``concurrent.futures.Executor`` (the stdlib's or manycore's process pool)."""

    def __init__(self, executor: Any) -> None:
        self._executor = executor

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(self._executor.map(fn, items))

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def kill(self) -> None:
        terminate = getattr(self._executor, "terminate_workers", None)  # Python 3.14+
        if terminate is not None:
            terminate()
            return
        # Before 3.14 the stdlib executor cannot stop a worker that is stuck in a task, and
        # would wait for it at interpreter exit: kill its processes (a private table).
        processes = list((getattr(self._executor, "_processes", None) or {}).values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
            process.join()


class _JoblibRunner:
    """``joblib.Parallel(n_jobs, backend="loky")``, called as users call it: a new
    ``Parallel`` per map. joblib keeps loky's executor alive between calls, which is what
    makes the second call warm."""

    def __init__(self, workers: int) -> None:
        self._joblib: Any = importlib.import_module("joblib")
        self._workers = workers

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        parallel = self._joblib.Parallel(n_jobs=self._workers, backend="loky")
        call = self._joblib.delayed(fn)
        return list(parallel(call(x) for x in items))

    def close(self) -> None:
        work.stop_joblib_workers()

    def kill(self) -> None:
        work.stop_joblib_workers(kill=True)


class _MpireRunner:
    """``mpire.WorkerPool(n_jobs, keep_alive=True)``: without ``keep_alive`` mpire starts
    its workers afresh for every map, and start-up is not what this table compares."""

    def __init__(self, workers: int) -> None:
        mpire: Any = importlib.import_module("mpire")
        self._pool = mpire.WorkerPool(n_jobs=workers, keep_alive=True)

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        self._pool.stop_and_join()

    def kill(self) -> None:
        self._pool.terminate()


class _PebbleRunner:
    """``pebble.ProcessPool(max_workers)``; its ``map`` returns a future of an iterator."""

    def __init__(self, workers: int) -> None:
        pebble: Any = importlib.import_module("pebble")
        self._pool = pebble.ProcessPool(max_workers=workers)

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(self._pool.map(fn, items).result())

    def close(self) -> None:
        self._pool.close()
        self._pool.join()

    def kill(self) -> None:
        self._pool.stop()
        self._pool.join()


def _open_manycore_pool(workers: int) -> _Runner:
    import manycore

    return _PoolRunner(manycore.Pool(workers))


def _open_manycore_executor(workers: int) -> _Runner:
    import manycore

    return _ExecutorRunner(manycore.ProcessPoolExecutor(workers))


@dataclass(frozen=True)
class _System:
    key: str  # stable name, for --json
    label: str  # for the table
    short: str  # for progress lines
    open: Callable[[int], _Runner]
    group: str  # "reference" (serial, threads), "stdlib", "peer" or "manycore"
    peer: str | None = None  # the peer (a name in work.PEERS) it needs installed
    # With this many workers or fewer it runs tasks in the caller's own process, so a task
    # that crashes would end the command: serial and threads always, joblib with n_jobs=1
    # (its sequential backend).
    in_caller_up_to: int = 0

    def in_caller(self, workers: int) -> bool:
        return workers <= self.in_caller_up_to


_ALWAYS = sys.maxsize


_SERIAL = "serial"
_MP_POOL = "multiprocessing.Pool"

SYSTEMS: tuple[_System, ...] = (
    _System(
        _SERIAL,
        "serial (for loop)",
        "serial",
        lambda n: _Serial(),
        "reference",
        in_caller_up_to=_ALWAYS,
    ),
    _System(
        "ThreadPool",
        "multiprocessing.pool.ThreadPool",
        "threads",
        lambda n: _PoolRunner(multiprocessing.pool.ThreadPool(n)),
        "reference",
        in_caller_up_to=_ALWAYS,
    ),
    _System(
        _MP_POOL,
        _MP_POOL,
        "mp.Pool",
        lambda n: _PoolRunner(multiprocessing.Pool(n)),
        "stdlib",
    ),
    _System(
        "ProcessPoolExecutor",
        "concurrent.futures.ProcessPoolExecutor",
        "cf.PPE",
        lambda n: _ExecutorRunner(concurrent.futures.ProcessPoolExecutor(n)),
        "stdlib",
    ),
    _System(
        "joblib",
        "joblib.Parallel (loky)",
        "joblib",
        _JoblibRunner,
        "peer",
        peer="joblib",
        in_caller_up_to=1,
    ),
    _System("mpire", "mpire.WorkerPool", "mpire", _MpireRunner, "peer", peer="mpire"),
    _System("pebble", "pebble.ProcessPool", "pebble", _PebbleRunner, "peer", peer="pebble"),
    _System("manycore.Pool", "manycore.Pool", "mc.Pool", _open_manycore_pool, "manycore"),
    _System(
        "manycore.ProcessPoolExecutor",
        "manycore.ProcessPoolExecutor",
        "mc.PPE",
        _open_manycore_executor,
        "manycore",
    ),
)


def _systems(peers: dict[str, work.PeerStatus]) -> list[_System]:
    """The systems this run measures: every one whose peer (if it needs one) is usable."""
    return [s for s in SYSTEMS if s.peer is None or peers[s.peer].usable]


# --- the workloads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Workload:
    key: str
    title: str
    detail: str
    fn: Callable[[Any], Any]
    items: list[Any]
    # The warm-up's items, when the first items would make it needlessly long.
    warm_items: list[Any] | None = None


@dataclass(frozen=True)
class _Skipped:
    """A workload this run cannot do, and why (numpy not installed)."""

    key: str
    title: str
    reason: str


# The NumPy payload: arrays of 16 MiB, the size of a batch of images or a column of a
# table, where the cost is moving the data and the work itself (a sum) is trivial.
ARRAY_ITEMS = 16 * 1024 * 1024 // 8


def _workloads(quick: bool, workers: int) -> tuple[list[_Workload], list[_Skipped]]:
    tasks = 20 if quick else 40
    task_ms = 15
    spin_n = work.calibrate_spin(task_ms / 1000)
    trivial = 5_000 if quick else 10_000
    workloads = [
        _Workload(
            "cpu",
            "CPU-bound",
            f"{tasks} pure-Python tasks of ~{task_ms} ms",
            work.spin,
            [spin_n] * tasks,
        ),
        _Workload(
            "io",
            "I/O-bound",
            f"{tasks} tasks sleeping 20 ms",
            work.sleep_ms,
            [20.0] * tasks,
        ),
        _Workload(
            "trivial",
            "trivial tasks",
            f"map(x*x) over {trivial:,} ints, default chunking",
            work.square,
            list(range(trivial)),
        ),
    ]
    skipped: list[_Skipped] = []
    numpy: Any = work.import_optional("numpy")
    arrays = 4 if quick else 8
    title = "NumPy payload"
    if numpy is None:
        reason = "numpy is not installed (pip install numpy)"
        skipped.append(_Skipped("numpy", title, reason))
    else:
        workloads.append(
            _Workload(
                "numpy",
                title,
                f"{arrays} float64 arrays of 16 MiB, each sent to a task that returns its sum",
                work.array_sum,
                [numpy.arange(ARRAY_ITEMS, dtype=numpy.float64) * (i + 1) for i in range(arrays)],
                # small arrays: the warm-up is for starting workers and importing numpy
                warm_items=[numpy.ones(1024) for _ in range(2 * workers)],
            )
        )
    return workloads, skipped


def _crash_items(workers: int) -> list[int]:
    """Normal items with one ``CRASH_ITEM`` a third of the way in, two or more per worker."""
    items = list(range(max(8, 2 * workers)))
    items[len(items) // 3] = work.CRASH_ITEM
    return items


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class _Outcome:
    """One system on one workload: its timings, or why it has none."""

    system: _System
    samples: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass
class _Crash:
    """One system on the crash workload: what the caller saw, and whether the pool survived."""

    system: _System
    outcome: str  # "error", "hung", "no error" or "not run"
    seconds: float | None = None  # from the call to the error (or to the deadline)
    error: str | None = None  # what the call raised; for "not run", why it was not run
    next_call: str | None = None  # after an error: "ok", "wrong result", "hung" or its error

    @property
    def usable_after(self) -> bool | None:
        return self.next_call == "ok" if self.outcome == "error" else None

    @property
    def verdict(self) -> str:
        """What this means for a user: "ok", "broken", "hung", "wrong" or "not run"."""
        if self.outcome == "error":
            return "ok" if self.usable_after else "broken"
        return {"hung": "hung", "no error": "wrong"}.get(self.outcome, "not run")

    def summary(self) -> str:
        """``error in 0.05 s, pool still usable``, ``hung (killed after 10 s)``, ..."""
        if self.outcome == "not run":
            return f"not run: {self.error}"
        seconds = work.format_seconds(self.seconds or 0.0)
        if self.outcome == "hung":
            return f"hung (killed after {seconds})"
        if self.outcome == "no error":
            return f"no error: returned in {seconds} without the lost task's result"
        if self.next_call == "ok":
            after = "pool still usable"
        elif self.next_call == "hung":
            after = "pool broken (the next call hung)"
        elif self.next_call == "wrong result":
            after = "the next call returned a wrong result"
        else:
            after = f"pool broken (next call: {_error_type(self.next_call)})"
        return f"error in {seconds}, {after}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "system": self.system.key,
            "outcome": self.outcome,
            "verdict": self.verdict,
            "seconds": self.seconds,
            "error": self.error,
            "next_call": self.next_call,
            "usable_after": self.usable_after,
            "summary": self.summary(),
        }


def _error_type(described: str | None) -> str:
    """``"BrokenProcessPool: A process in..."`` -> ``"BrokenProcessPool"``."""
    return (described or "?").split(":", 1)[0]


@dataclass
class _Run:
    """Everything one ``manycore bench`` run found, for the table, the notes, JSON and plot."""

    workers: int
    repeats: int
    usable_cpus: int
    systems: list[_System]
    peers: dict[str, work.PeerStatus]
    workloads: list[_Workload]
    skipped: list[_Skipped]
    crash_deadline: float
    crash_items: int
    capacity: work.Capacity | None = None
    capacity_error: str | None = None
    results: dict[str, dict[str, _Outcome]] = field(default_factory=dict)
    crashes: dict[str, _Crash] = field(default_factory=dict)

    @property
    def crash_title(self) -> str:
        return "worker crash"

    @property
    def crash_detail(self) -> str:
        return (
            f"one of {self.crash_items} tasks calls os._exit(1); deadline "
            f"{self.crash_deadline:g} s, then the same pool runs map(x*x) once more"
        )

    def manycore_failed(self) -> bool:
        """Whether a manycore system failed a workload or did not survive the crash."""
        mine = [s.key for s in self.systems if s.group == "manycore"]
        timed = any(per[key].error for per in self.results.values() for key in mine)
        crashed = any(self.crashes[k].verdict != "ok" for k in mine if k in self.crashes)
        return timed or crashed


def _bench_command(args: argparse.Namespace) -> int:
    import manycore

    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print(
            "manycore bench: --plot needs matplotlib, which is not installed: "
            "pip install matplotlib (or pip install 'manycore[bench]')",
            file=sys.stderr,
        )
        return 2
    quick = bool(args.quick)
    usable = manycore.cpu_count()
    workers: int = args.workers or usable
    repeats: int = args.repeats or (3 if quick else 5)
    progress = work.Progress()
    progress(
        f"manycore bench: {workers} workers per pool, median of {repeats} repeats "
        f"({usable} usable CPUs, os.cpu_count() = {os.cpu_count()})"
    )
    load_before = work.load_average()
    peers = work.find_peers()
    progress("peers: " + ", ".join(status.describe() for status in peers.values()))
    workloads, skipped = _workloads(quick, workers)
    run = _Run(
        workers=workers,
        repeats=repeats,
        usable_cpus=usable,
        systems=_systems(peers),
        peers=peers,
        workloads=workloads,
        skipped=skipped,
        crash_deadline=CRASH_DEADLINE_QUICK_S if quick else CRASH_DEADLINE_S,
        crash_items=len(_crash_items(workers)),
    )
    for skip in skipped:
        progress(f"{skip.title}: skipped, {skip.reason}")

    with work.ignore_fork_warnings():
        # Before any pool exists: the probe has the machine to itself, and this process
        # has one thread, so the probe's processes can be forked.
        _measure_capacity(run, quick, progress)
        _run_workloads(run, progress)

    table = _bench_table(run)
    crash_table = _crash_table(run)
    notes = _bench_notes(run)
    progress(f"done in {progress.elapsed:.1f} s")
    print()
    print("\n".join(table))
    print()
    print(f"{run.crash_title}: {run.crash_detail}")
    print()
    print("\n".join(crash_table))
    print()
    print("\n".join(notes), flush=True)

    if args.json:
        report = _report_json(run, quick, progress.elapsed, load_before, notes)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        progress(f"wrote {args.json}")
    if args.plot:
        try:
            _plot(run, args.plot, notes)
        except work.MissingExtra as exc:
            print(f"manycore bench: {exc}", file=sys.stderr)
            return 2
        progress(f"drew {args.plot}")
    return 1 if run.manycore_failed() else 0


def _measure_capacity(run: _Run, quick: bool, progress: work.Progress) -> None:
    if run.usable_cpus < 2:
        return
    try:
        with work.deadline(CALL_DEADLINE_S, "the parallel-capacity probe"):
            run.capacity = work.parallel_capacity(
                run.usable_cpus, seconds=0.2 if quick else 0.3, rounds=2 if quick else 3
            )
    except Exception as exc:
        run.capacity_error = _describe(exc)
        progress(f"parallel capacity: not measured ({run.capacity_error})")
        return
    progress(
        f"parallel capacity: {run.capacity.processes} processes spinning together did "
        f"{run.capacity.cpus:.2f}x the work of one"
    )


def _run_workloads(run: _Run, progress: work.Progress) -> None:
    """Start every system, run the timed workloads, then the crash; close everything."""
    runners: dict[str, _Runner] = {}
    why_not: dict[str, str] = {}  # systems that cannot run: why
    interrupted = False
    try:
        for system in run.systems:
            try:
                with work.deadline(CALL_DEADLINE_S, f"starting {system.label}"):
                    runners[system.key] = system.open(run.workers)
            except Exception as exc:
                why_not[system.key] = f"could not start: {_describe(exc)}"
                progress(f"{system.label} {why_not[system.key]}")
        for workload in run.workloads:
            progress(f"{workload.title}: {workload.detail}")
            outcomes = _measure(workload, run.systems, runners, run.workers, run.repeats, progress)
            for system in run.systems:
                outcome = outcomes.get(system.key)
                if outcome is None:
                    outcome = _Outcome(system, error=why_not[system.key])
                elif outcome.error is not None:
                    # A pool that hung or failed may be broken: stop using it.
                    why_not[system.key] = f"skipped: failed on the {workload.title} workload"
                    _close(system.key, runners.pop(system.key), progress, kill=True)
                outcomes[system.key] = outcome
            run.results[workload.key] = outcomes

        progress(f"{run.crash_title}: {run.crash_detail}")
        for system in run.systems:
            runner = runners.get(system.key)
            if runner is None:
                crash = _Crash(system, "not run", error=why_not[system.key])
            else:
                crash = _crash(system, runner, run.workers, run.crash_deadline)
                if crash.verdict in ("hung", "wrong") or crash.next_call == "hung":
                    # Stuck workers or a pool in an unknown state: terminate it now.
                    _close(system.key, runners.pop(system.key), progress, kill=True)
            run.crashes[system.key] = crash
            progress(f"  {system.label}: {crash.summary()}")
    except BaseException:  # Ctrl-C, or a bug here: stop every pool now, do not wait on them
        interrupted = True
        raise
    finally:
        for key, runner in runners.items():
            _close(key, runner, progress, kill=interrupted)


def _measure(
    workload: _Workload,
    systems: list[_System],
    runners: dict[str, _Runner],
    workers: int,
    repeats: int,
    progress: work.Progress,
) -> dict[str, _Outcome]:
    """Warm up, then time every started system in interleaved rounds."""
    outcomes = {s.key: _Outcome(s) for s in systems if s.key in runners}
    live = [s for s in systems if s.key in runners]

    def fail(system: _System, error: str) -> None:
        outcomes[system.key].error = error
        progress(f"  {system.label} failed: {error}")
        live.remove(system)

    # Warm-up: a few tasks per worker, so workers are up and have imported the function.
    warm = (workload.warm_items or workload.items)[: 2 * workers]
    for system in list(live):
        try:
            with work.deadline(CALL_DEADLINE_S, f"{system.label}.map (warm-up)"):
                runners[system.key].map(workload.fn, warm)
        except Exception as exc:
            fail(system, _describe(exc))

    expected: list[Any] | None = None
    for round_no in range(1, repeats + 1):
        timings: list[str] = []
        for system in list(live):
            try:
                with work.deadline(CALL_DEADLINE_S, f"{system.label}.map"):
                    start = time.perf_counter()
                    result = runners[system.key].map(workload.fn, workload.items)
                    elapsed = time.perf_counter() - start
            except Exception as exc:
                fail(system, _describe(exc))
                continue
            if expected is None:
                # Serial runs first in every round, so its answer is the reference; when
                # serial is not among the live systems, compute the reference here.
                is_serial = system.key == _SERIAL
                expected = result if is_serial else list(map(workload.fn, workload.items))
            if result != expected:
                fail(system, "returned a wrong result")
                continue
            outcomes[system.key].samples.append(elapsed)
            timings.append(f"{system.short} {work.format_seconds(elapsed)}")
        progress(f"  round {round_no}/{repeats}: " + ", ".join(timings))
    return outcomes


def _crash(system: _System, runner: _Runner, workers: int, deadline_s: float) -> _Crash:
    """Run a map in which one task kills its worker; if it raised, try the pool again."""
    if system.in_caller(workers):
        return _Crash(
            system,
            "not run",
            error="its tasks run in the caller's own process, which os._exit would end",
        )
    items = _crash_items(workers)
    raised: str | None = None
    start = time.perf_counter()
    try:
        with work.deadline(deadline_s, f"{system.label}.map with a crashing task"):
            runner.map(work.exit_on_crash_item, items)
    except work.BenchTimeout:
        return _Crash(system, "hung", seconds=time.perf_counter() - start)
    except Exception as exc:
        raised = _describe(exc)
    elapsed = time.perf_counter() - start
    if raised is None:
        return _Crash(system, "no error", seconds=elapsed)
    crash = _Crash(system, "error", elapsed, raised)

    again = list(range(8))
    try:
        with work.deadline(deadline_s, f"{system.label}.map after the crash"):
            result = runner.map(work.square, again)
    except work.BenchTimeout:
        crash.next_call = "hung"
    except Exception as exc:
        crash.next_call = _describe(exc)
    else:
        crash.next_call = "ok" if result == [x * x for x in again] else "wrong result"
    return crash


def _close(key: str, runner: _Runner, progress: work.Progress, kill: bool = False) -> None:
    """Close a system, or terminate it (``kill``, or when closing fails), under deadlines."""
    if not kill:
        try:
            with work.deadline(CLOSE_DEADLINE_S, f"closing {key}"):
                runner.close()
            return
        except Exception as exc:
            progress(f"closing {key} failed ({_describe(exc)}); terminating it")
    try:
        with work.deadline(CLOSE_DEADLINE_S, f"terminating {key}"):
            runner.kill()
    except Exception as exc:
        progress(f"terminating {key} failed: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --- reporting ----------------------------------------------------------------------------------


def _median(outcome: _Outcome | None) -> float | None:
    if outcome is None or outcome.error is not None or not outcome.samples:
        return None
    return work.summarize(outcome.samples).median


def _bench_table(run: _Run) -> list[str]:
    headers = ["workload", "system", "time", "spread", "speedup vs serial", "vs mp.Pool"]
    rows: list[list[str]] = []
    for w in run.workloads:
        per = run.results[w.key]
        serial = _median(per.get(_SERIAL))
        baseline = _median(per.get(_MP_POOL))
        for i, system in enumerate(run.systems):
            outcome = per[system.key]
            name = w.title if i == 0 else ""
            median = _median(outcome)
            if median is None:
                reason = "failed" if outcome.error else "-"
                rows.append([name, system.label, reason, "", "", ""])
                continue
            stats = work.summarize(outcome.samples)
            rows.append(
                [
                    name,
                    system.label,
                    work.format_seconds(median),
                    f"±{stats.spread:.0%}",
                    _times(serial, median),
                    _times(baseline, median),
                ]
            )
    for skip in run.skipped:
        rows.append([skip.title, "(skipped)", "-", "", "", ""])
    return work.render_table(headers, rows, right=[False, False, True, True, True, True])


def _crash_table(run: _Run) -> list[str]:
    headers = ["system", "what the caller saw", "error raised"]
    rows = []
    for system in run.systems:
        crash = run.crashes[system.key]
        raised = _error_type(crash.error) if crash.outcome == "error" else "-"
        summary = crash.summary() if crash.outcome != "not run" else "not run (see notes)"
        rows.append([system.label, summary, raised])
    return work.render_table(headers, rows, right=[False, False, False])


def _times(reference: float | None, value: float) -> str:
    if reference is None or value <= 0:
        return "-"
    return work.format_ratio(reference / value)


def _bench_notes(run: _Run) -> list[str]:
    notes = [
        f"time: median of {run.repeats} repeats on warm pools of {run.workers} workers "
        "(pool start-up is not included; see `python -m benchmarks` for start-up figures); "
        "spread: half the range of the repeats.",
        "speedup vs serial and vs mp.Pool: how many times faster than that system "
        "(above 1.00x is faster).",
    ]
    for w in run.workloads:
        notes.extend(
            f"{w.title}, {per.system.label}: {per.error}"
            for per in run.results[w.key].values()
            if per.error
        )
    notes.extend(f"{skip.title}: skipped, {skip.reason}." for skip in run.skipped)
    in_caller = [s for s in run.systems if s.in_caller(run.workers)]
    if in_caller:
        notes.append(
            f"{run.crash_title}: not run for {', '.join(s.label for s in in_caller)}: their "
            "tasks run in the caller's own process, which os._exit would end."
        )
    if any(s.key == "joblib" for s in in_caller):
        notes.append(
            "joblib.Parallel (loky): with n_jobs=1 joblib runs every task in the caller's "
            "process, one after another, without starting loky's workers."
        )
    notes.extend(
        f"{run.crash_title}, {c.system.label}: {c.error}"
        for c in run.crashes.values()
        if c.outcome == "not run" and not c.system.in_caller(run.workers)
    )
    notes.append(_capacity_note(run))
    notes.append(_peers_note(run.peers))
    return notes


def _capacity_note(run: _Run) -> str:
    if run.capacity is None:
        why = run.capacity_error or "a single usable CPU"
        return f"parallel capacity: not measured ({why})."
    # The best speedup is a fair comparison only when the pools had every usable CPU.
    best = _best_cpu_speedup(run) if run.workers >= run.usable_cpus else None
    return work.capacity_note(run.capacity, run.usable_cpus, best)


def _best_cpu_speedup(run: _Run) -> float | None:
    cpu = run.results.get("cpu", {})
    serial = _median(cpu.get(_SERIAL))
    pools = [s.key for s in run.systems if not s.in_caller(run.workers)]
    best = [m for m in (_median(cpu.get(key)) for key in pools) if m is not None]
    return serial / min(best) if serial is not None and best else None


def _peers_note(peers: dict[str, work.PeerStatus]) -> str:
    return work.peers_note(peers, {s.peer for s in SYSTEMS if s.peer is not None})


def _outcome_json(outcome: _Outcome, per: dict[str, _Outcome]) -> dict[str, Any]:
    data: dict[str, Any] = {"system": outcome.system.key, "error": outcome.error}
    median = _median(outcome)
    if median is not None:
        data.update(work.summarize(outcome.samples).as_dict())
        serial = _median(per.get(_SERIAL))
        baseline = _median(per.get(_MP_POOL))
        data["speedup_vs_serial"] = serial / median if serial else None
        data["ratio_vs_multiprocessing_pool"] = baseline / median if baseline else None
    return data


def _report_json(
    run: _Run,
    quick: bool,
    elapsed: float,
    load_before: tuple[float, float, float] | None,
    notes: list[str],
) -> dict[str, Any]:
    return {
        "command": "manycore bench",
        "quick": quick,
        "workers": run.workers,
        "repeats": run.repeats,
        "elapsed_s": elapsed,
        "machine": machine_facts(),
        "load_average_before": load_before,
        "load_average_after": work.load_average(),
        "parallel_capacity": run.capacity.as_dict() if run.capacity else None,
        "systems": [
            {"key": s.key, "label": s.label, "group": s.group, "peer": s.peer} for s in run.systems
        ],
        "peers": [status.as_dict() for status in run.peers.values()],
        "workloads": [
            {
                "key": w.key,
                "title": w.title,
                "detail": w.detail,
                "results": [
                    _outcome_json(run.results[w.key][s.key], run.results[w.key])
                    for s in run.systems
                ],
            }
            for w in run.workloads
        ],
        "skipped_workloads": [
            {"key": s.key, "title": s.title, "reason": s.reason} for s in run.skipped
        ],
        "crash": {
            "key": "crash",
            "title": run.crash_title,
            "detail": run.crash_detail,
            "deadline_s": run.crash_deadline,
            "results": [run.crashes[s.key].as_dict() for s in run.systems],
        },
        "notes": notes,
        "exit_status": 1 if run.manycore_failed() else 0,
    }


def _plot(run: _Run, path: str, notes: list[str]) -> None:
    panels = []
    for w in run.workloads:
        per = run.results[w.key]
        serial = _median(per.get(_SERIAL))
        bars = []
        for system in run.systems:
            outcome = per[system.key]
            median = _median(outcome)
            if median is None:
                bars.append(work.Bar(system.label, None, outcome.error or "no result"))
                continue
            stats = work.summarize(outcome.samples)
            speedup = f", {_times(serial, median)} vs serial" if serial else ""
            bars.append(
                work.Bar(
                    system.label,
                    median,
                    f"{work.format_seconds(median)}{speedup}",
                    system.group,
                    stats.low,
                    stats.high,
                )
            )
        panels.append(work.Panel(w.title, w.detail, tuple(bars)))
    crash_bars = []
    for system in run.systems:
        crash = run.crashes[system.key]
        seconds = crash.seconds if crash.outcome != "not run" else None
        text = crash.summary()
        if crash.outcome == "error":
            text = f"{_error_type(crash.error)}: {text}"
        crash_bars.append(work.Bar(system.label, seconds, text, crash.verdict))
    panels.append(
        work.Panel(
            run.crash_title,
            f"one of {run.crash_items} tasks calls os._exit(1); then the same pool runs again",
            tuple(crash_bars),
            xlabel=(
                "time until the caller got an error. green: the pool still works after it; "
                "yellow: the pool is broken; red: no error at all"
            ),
        )
    )
    facts = f"{run.workers} workers, median of {run.repeats} repeats"
    title = f"manycore bench: {facts}, Python {platform.python_version()}"
    footer = [n for n in notes if n.startswith(("note:", "parallel capacity", "peers:"))]
    work.draw_comparison(path, title, panels, footer)


# --- info -----------------------------------------------------------------------------------------


def _info_command(args: argparse.Namespace) -> int:
    facts = machine_facts()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    cpus = facts["cpus"]
    shm = facts["dev_shm"]
    lines = [
        ("manycore", facts["manycore_version"]),
        ("Python", f"{facts['python']} ({facts['implementation']}, {sys.executable})"),
        ("platform", facts["platform"]),
        ("GIL", facts["gil"]),
        ("usable CPUs", f"{cpus['usable']} (manycore.cpu_count(): what pools use by default)"),
        ("  os.cpu_count()", str(cpus["os_cpu_count"])),
        ("  affinity mask", _or_dash(cpus["affinity"], suffix=" CPUs")),
        ("  cgroup quota", _or_dash(cpus["cgroup_quota"], "no limit")),
        ("  load average", _or_dash(cpus["load_average"])),
        ("start methods", ", ".join(facts["start_methods"]["available"])),
        ("  stdlib default", facts["start_methods"]["stdlib_default"]),
        ("  manycore default", facts["start_methods"]["manycore_default"]),
        ("/dev/shm", _shm_text(shm)),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}")
    for warning in _info_warnings(facts):
        print(f"warning: {warning}")
    return 0


def machine_facts() -> dict[str, Any]:
    """What ``manycore info`` shows, as a JSON-ready dict (also recorded with benchmark results)."""
    import manycore

    affinity: int | None = None
    if hasattr(os, "sched_getaffinity"):
        try:
            affinity = len(os.sched_getaffinity(0))
        except OSError:
            pass
    try:
        stdlib_default = multiprocessing.get_start_method()
    except RuntimeError:  # pragma: no cover - only if the context cannot be fixed
        stdlib_default = "unknown"
    return {
        "manycore_version": _version(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "gil": _gil_text(),
        "cpus": {
            "usable": manycore.cpu_count(),
            "os_cpu_count": os.cpu_count(),
            "affinity": affinity,
            "cgroup_quota": cgroup_cpu_quota(),
            "load_average": work.load_average(),
        },
        "start_methods": {
            "available": multiprocessing.get_all_start_methods(),
            "stdlib_default": stdlib_default,
            "manycore_default": (
                "fork server (context=None): forked from the caller while it has one "
                "thread, else started fresh"
            ),
        },
        "dev_shm": _shm_facts(),
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("manycore")
    except Exception:  # not installed as a distribution (running from a source tree)
        return "unknown (not installed)"


def _gil_text() -> str:
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    free_threaded_build = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    if is_enabled is None:
        return "enabled (this Python has no free-threaded mode)"
    if is_enabled():
        build = "free-threaded build, GIL re-enabled" if free_threaded_build else "standard build"
        return f"enabled ({build})"
    return "disabled (free-threaded build): threads run Python code in parallel"


def _shm_facts() -> dict[str, Any] | None:
    try:
        st = os.statvfs("/dev/shm")
    except (OSError, AttributeError):
        return None
    return {"size_bytes": st.f_blocks * st.f_frsize, "free_bytes": st.f_bavail * st.f_frsize}


def _shm_text(shm: dict[str, Any] | None) -> str:
    if shm is None:
        return "not available (shared memory falls back to temporary files)"
    return f"{_bytes(shm['free_bytes'])} free of {_bytes(shm['size_bytes'])}"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _or_dash(value: Any, none: str = "-", suffix: str = "") -> str:
    if value is None:
        return none
    if isinstance(value, int):
        return f"{value}{suffix}"
    if isinstance(value, (tuple, list)):
        return " ".join(f"{v:.2f}" for v in value)
    if isinstance(value, float):
        return f"{value:g} CPUs"
    return str(value)


def _info_warnings(facts: dict[str, Any]) -> list[str]:
    warnings: list[str] = []
    cpus = facts["cpus"]
    if cpus["os_cpu_count"] and cpus["usable"] < cpus["os_cpu_count"]:
        warnings.append(
            f"this process may use {cpus['usable']} of the machine's {cpus['os_cpu_count']} "
            "CPUs; pools sized with os.cpu_count() would oversubscribe them"
        )
    load = cpus["load_average"]
    if load and load[0] > cpus["usable"]:
        warnings.append(
            f"the 1-minute load average ({load[0]:.2f}) exceeds the usable CPUs: "
            "other work competes for them, and timings will be noisy"
        )
    shm = facts["dev_shm"]
    if shm is not None and shm["size_bytes"] < 256 * 1024 * 1024:
        warnings.append(
            f"/dev/shm is small ({_bytes(shm['size_bytes'])}); containers often default to "
            "64 MiB (docker run --shm-size=1g raises it)"
        )
    return warnings
