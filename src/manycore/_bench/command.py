"""``manycore bench``, the main job: manycore beside the alternatives, on the user's machine.

It answers, on the user's own machine and in about a minute, "what would
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
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .capacity import Capacity, capacity_note, parallel_capacity
from .guards import BenchTimeout, deadline, ignore_fork_warnings
from .machine import load_average, machine_facts
from .optional import MissingExtra, import_optional
from .peers import PeerStatus, find_peers, peers_note
from .render import (
    Bar,
    Panel,
    Progress,
    draw_comparison,
    format_ratio,
    format_seconds,
    render_table,
)
from .stats import summarize
from .systems import MP_POOL, SERIAL, SYSTEMS, Runner, System, systems
from .workloads import (
    CRASH_ITEM,
    array_sum,
    calibrate_spin,
    exit_on_crash_item,
    sleep_ms,
    spin,
    square,
)

__all__ = ["bench_command"]

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
    spin_n = calibrate_spin(task_ms / 1000)
    trivial = 5_000 if quick else 10_000
    workloads = [
        _Workload(
            "cpu",
            "CPU-bound",
            f"{tasks} pure-Python tasks of ~{task_ms} ms",
            spin,
            [spin_n] * tasks,
        ),
        _Workload(
            "io",
            "I/O-bound",
            f"{tasks} tasks sleeping 20 ms",
            sleep_ms,
            [20.0] * tasks,
        ),
        _Workload(
            "trivial",
            "trivial tasks",
            f"map(x*x) over {trivial:,} ints, default chunking",
            square,
            list(range(trivial)),
        ),
    ]
    skipped: list[_Skipped] = []
    numpy: Any = import_optional("numpy")
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
                array_sum,
                [numpy.arange(ARRAY_ITEMS, dtype=numpy.float64) * (i + 1) for i in range(arrays)],
                # small arrays: the warm-up is for starting workers and importing numpy
                warm_items=[numpy.ones(1024) for _ in range(2 * workers)],
            )
        )
    return workloads, skipped


def _crash_items(workers: int) -> list[int]:
    """Normal items with one ``CRASH_ITEM`` a third of the way in, two or more per worker."""
    items = list(range(max(8, 2 * workers)))
    items[len(items) // 3] = CRASH_ITEM
    return items


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class _Outcome:
    """One system on one workload: its timings, or why it has none."""

    system: System
    samples: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass
class _Crash:
    """One system on the crash workload: what the caller saw, and whether the pool survived."""

    system: System
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
        seconds = format_seconds(self.seconds or 0.0)
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
    systems: list[System]
    peers: dict[str, PeerStatus]
    workloads: list[_Workload]
    skipped: list[_Skipped]
    crash_deadline: float
    crash_items: int
    capacity: Capacity | None = None
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


def bench_command(args: argparse.Namespace) -> int:
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
    progress = Progress()
    progress(
        f"manycore bench: {workers} workers per pool, median of {repeats} repeats "
        f"({usable} usable CPUs, os.cpu_count() = {os.cpu_count()})"
    )
    load_before = load_average()
    peers = find_peers()
    progress("peers: " + ", ".join(status.describe() for status in peers.values()))
    workloads, skipped = _workloads(quick, workers)
    run = _Run(
        workers=workers,
        repeats=repeats,
        usable_cpus=usable,
        systems=systems(peers),
        peers=peers,
        workloads=workloads,
        skipped=skipped,
        crash_deadline=CRASH_DEADLINE_QUICK_S if quick else CRASH_DEADLINE_S,
        crash_items=len(_crash_items(workers)),
    )
    for skip in skipped:
        progress(f"{skip.title}: skipped, {skip.reason}")

    with ignore_fork_warnings():
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
        except MissingExtra as exc:
            print(f"manycore bench: {exc}", file=sys.stderr)
            return 2
        progress(f"drew {args.plot}")
    return 1 if run.manycore_failed() else 0


def _measure_capacity(run: _Run, quick: bool, progress: Progress) -> None:
    if run.usable_cpus < 2:
        return
    try:
        with deadline(CALL_DEADLINE_S, "the parallel-capacity probe"):
            run.capacity = parallel_capacity(
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


def _run_workloads(run: _Run, progress: Progress) -> None:
    """Start every system, run the timed workloads, then the crash; close everything."""
    runners: dict[str, Runner] = {}
    why_not: dict[str, str] = {}  # systems that cannot run: why
    interrupted = False
    try:
        for system in run.systems:
            try:
                with deadline(CALL_DEADLINE_S, f"starting {system.label}"):
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
    systems: list[System],
    runners: dict[str, Runner],
    workers: int,
    repeats: int,
    progress: Progress,
) -> dict[str, _Outcome]:
    """Warm up, then time every started system in interleaved rounds."""
    outcomes = {s.key: _Outcome(s) for s in systems if s.key in runners}
    live = [s for s in systems if s.key in runners]

    def fail(system: System, error: str) -> None:
        outcomes[system.key].error = error
        progress(f"  {system.label} failed: {error}")
        live.remove(system)

    # Warm-up: a few tasks per worker, so workers are up and have imported the function.
    warm = (workload.warm_items or workload.items)[: 2 * workers]
    for system in list(live):
        try:
            with deadline(CALL_DEADLINE_S, f"{system.label}.map (warm-up)"):
                runners[system.key].map(workload.fn, warm)
        except Exception as exc:
            fail(system, _describe(exc))

    expected: list[Any] | None = None
    for round_no in range(1, repeats + 1):
        timings: list[str] = []
        for system in list(live):
            try:
                with deadline(CALL_DEADLINE_S, f"{system.label}.map"):
                    start = time.perf_counter()
                    result = runners[system.key].map(workload.fn, workload.items)
                    elapsed = time.perf_counter() - start
            except Exception as exc:
                fail(system, _describe(exc))
                continue
            if expected is None:
                # Serial runs first in every round, so its answer is the reference; when
                # serial is not among the live systems, compute the reference here.
                is_serial = system.key == SERIAL
                expected = result if is_serial else list(map(workload.fn, workload.items))
            if result != expected:
                fail(system, "returned a wrong result")
                continue
            outcomes[system.key].samples.append(elapsed)
            timings.append(f"{system.short} {format_seconds(elapsed)}")
        progress(f"  round {round_no}/{repeats}: " + ", ".join(timings))
    return outcomes


def _crash(system: System, runner: Runner, workers: int, deadline_s: float) -> _Crash:
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
        with deadline(deadline_s, f"{system.label}.map with a crashing task"):
            runner.map(exit_on_crash_item, items)
    except BenchTimeout:
        return _Crash(system, "hung", seconds=time.perf_counter() - start)
    except Exception as exc:
        raised = _describe(exc)
    elapsed = time.perf_counter() - start
    if raised is None:
        return _Crash(system, "no error", seconds=elapsed)
    crash = _Crash(system, "error", elapsed, raised)

    again = list(range(8))
    try:
        with deadline(deadline_s, f"{system.label}.map after the crash"):
            result = runner.map(square, again)
    except BenchTimeout:
        crash.next_call = "hung"
    except Exception as exc:
        crash.next_call = _describe(exc)
    else:
        crash.next_call = "ok" if result == [x * x for x in again] else "wrong result"
    return crash


def _close(key: str, runner: Runner, progress: Progress, kill: bool = False) -> None:
    """Close a system, or terminate it (``kill``, or when closing fails), under deadlines."""
    if not kill:
        try:
            with deadline(CLOSE_DEADLINE_S, f"closing {key}"):
                runner.close()
            return
        except Exception as exc:
            progress(f"closing {key} failed ({_describe(exc)}); terminating it")
    try:
        with deadline(CLOSE_DEADLINE_S, f"terminating {key}"):
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
    return summarize(outcome.samples).median


def _bench_table(run: _Run) -> list[str]:
    headers = ["workload", "system", "time", "spread", "speedup vs serial", "vs mp.Pool"]
    rows: list[list[str]] = []
    for w in run.workloads:
        per = run.results[w.key]
        serial = _median(per.get(SERIAL))
        baseline = _median(per.get(MP_POOL))
        for i, system in enumerate(run.systems):
            outcome = per[system.key]
            name = w.title if i == 0 else ""
            median = _median(outcome)
            if median is None:
                reason = "failed" if outcome.error else "-"
                rows.append([name, system.label, reason, "", "", ""])
                continue
            stats = summarize(outcome.samples)
            rows.append(
                [
                    name,
                    system.label,
                    format_seconds(median),
                    f"±{stats.spread:.0%}",
                    _times(serial, median),
                    _times(baseline, median),
                ]
            )
    for skip in run.skipped:
        rows.append([skip.title, "(skipped)", "-", "", "", ""])
    return render_table(headers, rows, right=[False, False, True, True, True, True])


def _crash_table(run: _Run) -> list[str]:
    headers = ["system", "what the caller saw", "error raised"]
    rows = []
    for system in run.systems:
        crash = run.crashes[system.key]
        raised = _error_type(crash.error) if crash.outcome == "error" else "-"
        summary = crash.summary() if crash.outcome != "not run" else "not run (see notes)"
        rows.append([system.label, summary, raised])
    return render_table(headers, rows, right=[False, False, False])


def _times(reference: float | None, value: float) -> str:
    if reference is None or value <= 0:
        return "-"
    return format_ratio(reference / value)


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
    return capacity_note(run.capacity, run.usable_cpus, best)


def _best_cpu_speedup(run: _Run) -> float | None:
    cpu = run.results.get("cpu", {})
    serial = _median(cpu.get(SERIAL))
    pools = [s.key for s in run.systems if not s.in_caller(run.workers)]
    best = [m for m in (_median(cpu.get(key)) for key in pools) if m is not None]
    return serial / min(best) if serial is not None and best else None


def _peers_note(peers: dict[str, PeerStatus]) -> str:
    return peers_note(peers, {s.peer for s in SYSTEMS if s.peer is not None})


def _outcome_json(outcome: _Outcome, per: dict[str, _Outcome]) -> dict[str, Any]:
    data: dict[str, Any] = {"system": outcome.system.key, "error": outcome.error}
    median = _median(outcome)
    if median is not None:
        data.update(summarize(outcome.samples).as_dict())
        serial = _median(per.get(SERIAL))
        baseline = _median(per.get(MP_POOL))
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
        "load_average_after": load_average(),
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
        serial = _median(per.get(SERIAL))
        bars = []
        for system in run.systems:
            outcome = per[system.key]
            median = _median(outcome)
            if median is None:
                bars.append(Bar(system.label, None, outcome.error or "no result"))
                continue
            stats = summarize(outcome.samples)
            speedup = f", {_times(serial, median)} vs serial" if serial else ""
            bars.append(
                Bar(
                    system.label,
                    median,
                    f"{format_seconds(median)}{speedup}",
                    system.group,
                    stats.low,
                    stats.high,
                )
            )
        panels.append(Panel(w.title, w.detail, tuple(bars)))
    crash_bars = []
    for system in run.systems:
        crash = run.crashes[system.key]
        seconds = crash.seconds if crash.outcome != "not run" else None
        text = crash.summary()
        if crash.outcome == "error":
            text = f"{_error_type(crash.error)}: {text}"
        crash_bars.append(Bar(system.label, seconds, text, crash.verdict))
    panels.append(
        Panel(
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
    draw_comparison(path, title, panels, footer)
