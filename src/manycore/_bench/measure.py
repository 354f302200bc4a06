"""Running every system through every workload, and what a run found.

How it measures (the same rules as ``benchmarks/``):

* every pool is started and warmed up (a few tasks each) before any timing, so worker
  start-up is not in the figures; ``benchmarks/`` measures start-up on its own;
* repeats are interleaved: round 1 runs every system once, then round 2, and so on, so a
  burst of noise from a neighbour on a shared machine lands on all of them alike;
* each figure is the median of the repeats, with the spread (half the range) beside it;
  a repeat runs its call back to back until they span ``SAMPLE_SPAN_S`` and counts their
  mean, so a call of a millisecond or two (the trivial workload) is not one wake-up's
  luck on a shared machine, while a long call is timed once;
* every result is checked against serial's, and every call runs under a deadline, so a
  wrong answer or a hang shows up as an error in the table instead of a stuck terminal;
  a pool that hung is terminated, so no worker outlives the command;
* before any pool starts, a probe measures how many CPUs' worth of work the machine really
  delivers (``capacity.parallel_capacity``), and a note says so when it is clearly fewer
  than the CPUs it claims.

``Run`` holds what one run found (``Outcome`` per system and workload, ``Crash`` per system)
for ``report`` to print, write as JSON and draw.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .capacity import Capacity, parallel_capacity
from .guards import BenchTimeout, deadline
from .peers import PeerStatus
from .render import Progress, format_seconds
from .systems import SERIAL, Runner, System
from .workloads import CRASH_ITEM, exit_on_crash_item, square

__all__ = [
    "CALL_DEADLINE_S",
    "CLOSE_DEADLINE_S",
    "Crash",
    "Outcome",
    "Run",
    "Skipped",
    "Workload",
    "crash_items_for",
    "error_type",
    "measure_capacity",
    "run_workloads",
]

# A measured call that takes this long is treated as hung: the slowest legitimate call
# (the stdlib executor's 10k one-item tasks) takes a few seconds on a slow 2-core machine.
CALL_DEADLINE_S = 60.0
# A repeat runs its call again until the calls span this long (module docstring).
SAMPLE_SPAN_S = 0.02
# Closing a pool waits for its workers to exit; more than this means it is stuck.
CLOSE_DEADLINE_S = 30.0
LEFTOVER_GRACE_S = 2.0  # for a closed pool's processes to end before they are killed


@dataclass(frozen=True)
class Workload:
    """One timed workload: ``fn`` mapped over ``items`` by every system."""

    key: str
    title: str
    detail: str
    fn: Callable[[Any], Any]
    items: list[Any]
    # The warm-up's items, when the first items would make it needlessly long.
    warm_items: list[Any] | None = None


@dataclass(frozen=True)
class Skipped:
    """A workload this run cannot do, and why (numpy not installed)."""

    key: str
    title: str
    reason: str


def crash_items_for(workers: int) -> list[int]:
    """Normal items with one ``CRASH_ITEM`` a third of the way in, two or more per worker."""
    items = list(range(max(8, 2 * workers)))
    items[len(items) // 3] = CRASH_ITEM
    return items


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One system on one workload: its timings, or why it has none."""

    system: System
    samples: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass
class Crash:
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
            after = f"pool broken (next call: {error_type(self.next_call)})"
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


def error_type(described: str | None) -> str:
    """``"BrokenProcessPool: A process in..."`` -> ``"BrokenProcessPool"``."""
    return (described or "?").split(":", 1)[0]


@dataclass
class Run:
    """Everything one ``manycore bench`` run found, for the table, the notes, JSON and plot."""

    workers: int
    repeats: int
    usable_cpus: int
    systems: list[System]
    peers: dict[str, PeerStatus]
    workloads: list[Workload]
    skipped: list[Skipped]
    crash_deadline: float
    crash_items: int
    capacity: Capacity | None = None
    capacity_error: str | None = None
    results: dict[str, dict[str, Outcome]] = field(default_factory=dict)
    crashes: dict[str, Crash] = field(default_factory=dict)

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


def measure_capacity(run: Run, quick: bool, progress: Progress) -> None:
    """Probe the machine's parallel capacity into ``run`` (or why it could not)."""
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


def run_workloads(run: Run, progress: Progress) -> None:
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
                    outcome = Outcome(system, error=why_not[system.key])
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
                crash = Crash(system, "not run", error=why_not[system.key])
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
        _kill_leftovers(progress)


def _measure(
    workload: Workload,
    systems: list[System],
    runners: dict[str, Runner],
    workers: int,
    repeats: int,
    progress: Progress,
) -> dict[str, Outcome]:
    """Warm up, then time every started system in interleaved rounds."""
    outcomes = {s.key: Outcome(s) for s in systems if s.key in runners}
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
                    calls = 0
                    start = time.perf_counter()
                    while True:
                        result = runners[system.key].map(workload.fn, workload.items)
                        calls += 1
                        elapsed = time.perf_counter() - start
                        if elapsed >= SAMPLE_SPAN_S:
                            break
                    elapsed /= calls
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


def _crash(system: System, runner: Runner, workers: int, deadline_s: float) -> Crash:
    """Run a map in which one task kills its worker; if it raised, try the pool again."""
    if system.in_caller(workers):
        return Crash(
            system,
            "not run",
            error="its tasks run in the caller's own process, which os._exit would end",
        )
    items = crash_items_for(workers)
    raised: str | None = None
    start = time.perf_counter()
    try:
        with deadline(deadline_s, f"{system.label}.map with a crashing task"):
            runner.map(exit_on_crash_item, items)
    except BenchTimeout:
        return Crash(system, "hung", seconds=time.perf_counter() - start)
    except Exception as exc:
        raised = _describe(exc)
    elapsed = time.perf_counter() - start
    if raised is None:
        return Crash(system, "no error", seconds=elapsed)
    crash = Crash(system, "error", elapsed, raised)

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


def _kill_leftovers(progress: Progress) -> None:
    """Kill the ``multiprocessing`` children still running once every system is closed.

    A peer stopped after it hung may leave a worker behind (mpire 2.10's ``terminate()``
    after the crash workload left one waiting for results forever), and the stdlib's exit
    handler joins every such child: the command would never return. They get a moment to
    end on their own (``LEFTOVER_GRACE_S``), then SIGKILL.
    """
    leftovers = multiprocessing.active_children()
    end = time.monotonic() + LEFTOVER_GRACE_S
    for child in leftovers:
        child.join(max(0.0, end - time.monotonic()))
    for child in leftovers:
        if child.is_alive():
            progress(f"killing process {child.pid} ({child.name}), left running by a pool")
            child.kill()
            child.join(CLOSE_DEADLINE_S)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
