"""The ``manycore`` command: ``manycore bench`` and ``manycore info``.

``manycore bench`` answers, on the user's own machine and in about a minute, "what would
switching buy me?": it runs the same workloads through serial code, the stdlib's thread and
process pools and manycore, and prints times, speedups over serial and ratios against
``multiprocessing.Pool``, all measured in the same run.

How it measures (the same rules as ``benchmarks/``):

* every pool is started and warmed up (a few tasks each) before any timing, so worker
  start-up is not in the figures; ``benchmarks/`` measures start-up on its own;
* repeats are interleaved: round 1 runs every system once, then round 2, and so on, so a
  burst of noise from a neighbour on a shared machine lands on all of them alike;
* each figure is the median of the repeats, with the spread (half the range) beside it;
* every result is checked against serial's, and every call runs under a deadline, so a
  wrong answer or a hang shows up as an error in the table instead of a stuck terminal.

``manycore info`` prints what a user checks first when parallel code is slow: usable cores,
start methods, ``/dev/shm``, the Python version and whether the GIL is enabled.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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
        help="compare serial, threads, the stdlib process pools and manycore on this machine",
        description=(
            "Run CPU-bound, I/O-bound and trivial workloads through serial code, "
            "multiprocessing's ThreadPool and Pool, concurrent.futures' ProcessPoolExecutor "
            "and manycore, and print times (median of repeats), spread, speedup over serial "
            "and the ratio against multiprocessing.Pool. Progress goes to stderr."
        ),
    )
    bench.add_argument("--quick", action="store_true", help="smaller workloads, fewer repeats")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
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


class _ExecutorRunner:
    """A ``concurrent.futures.Executor`` (the stdlib's or manycore's process pool)."""

    def __init__(self, executor: Any) -> None:
        self._executor = executor

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(self._executor.map(fn, items))

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def kill(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


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


_SERIAL = "serial"
_MP_POOL = "multiprocessing.Pool"

SYSTEMS: tuple[_System, ...] = (
    _System(_SERIAL, "serial (for loop)", "serial", lambda n: _Serial()),
    _System(
        "ThreadPool",
        "multiprocessing.pool.ThreadPool",
        "threads",
        lambda n: _PoolRunner(multiprocessing.pool.ThreadPool(n)),
    ),
    _System(_MP_POOL, _MP_POOL, "mp.Pool", lambda n: _PoolRunner(multiprocessing.Pool(n))),
    _System(
        "ProcessPoolExecutor",
        "concurrent.futures.ProcessPoolExecutor",
        "cf.PPE",
        lambda n: _ExecutorRunner(concurrent.futures.ProcessPoolExecutor(n)),
    ),
    _System("manycore.Pool", "manycore.Pool", "mc.Pool", _open_manycore_pool),
    _System(
        "manycore.ProcessPoolExecutor",
        "manycore.ProcessPoolExecutor",
        "mc.PPE",
        _open_manycore_executor,
    ),
)


# --- the workloads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Workload:
    key: str
    title: str
    detail: str
    fn: Callable[[Any], Any]
    items: list[Any]


def _workloads(quick: bool) -> list[_Workload]:
    tasks = 20 if quick else 40
    task_ms = 15
    spin_n = work.calibrate_spin(task_ms / 1000)
    trivial = 5_000 if quick else 10_000
    return [
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


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class _Outcome:
    """One system on one workload: its timings, or why it has none."""

    system: _System
    samples: list[float] = field(default_factory=list)
    error: str | None = None


def _bench_command(args: argparse.Namespace) -> int:
    import manycore

    workers: int = args.workers or manycore.cpu_count()
    repeats: int = args.repeats or (3 if args.quick else 5)
    progress = work.Progress()
    progress(
        f"manycore bench: {workers} workers per pool, median of {repeats} repeats "
        f"({manycore.cpu_count()} usable CPUs, os.cpu_count() = {os.cpu_count()})"
    )
    load_before = work.load_average()
    workloads = _workloads(args.quick)

    runners: dict[str, _Runner] = {}
    why_not: dict[str, str] = {}  # systems that cannot run: why
    results: dict[str, dict[str, _Outcome]] = {}
    try:
        with work.ignore_fork_warnings():
            for system in SYSTEMS:
                try:
                    with work.deadline(CALL_DEADLINE_S, f"starting {system.label}"):
                        runners[system.key] = system.open(workers)
                except Exception as exc:
                    why_not[system.key] = f"could not start: {_describe(exc)}"
                    progress(f"{system.label} {why_not[system.key]}")
            for workload in workloads:
                progress(f"{workload.title}: {workload.detail}")
                outcomes = _measure(workload, runners, workers, repeats, progress)
                for system in SYSTEMS:
                    outcome = outcomes.get(system.key)
                    if outcome is None:
                        outcome = _Outcome(system, error=why_not[system.key])
                    elif outcome.error is not None:
                        # A pool that hung or failed may be broken: stop using it.
                        why_not[system.key] = f"skipped: failed on the {workload.title} workload"
                        _close(system.key, runners.pop(system.key), progress, kill=True)
                    outcomes[system.key] = outcome
                results[workload.key] = outcomes
    finally:
        for key, runner in runners.items():
            _close(key, runner, progress)

    table = _bench_table(workloads, results)
    notes = _bench_notes(workloads, results, workers, repeats)
    progress(f"done in {progress.elapsed:.1f} s")
    print()
    print("\n".join(table))
    print()
    print("\n".join(notes), flush=True)

    if args.json:
        report = {
            "command": "manycore bench",
            "quick": bool(args.quick),
            "workers": workers,
            "repeats": repeats,
            "elapsed_s": progress.elapsed,
            "machine": machine_facts(),
            "load_average_before": load_before,
            "load_average_after": work.load_average(),
            "workloads": [
                {
                    "key": w.key,
                    "title": w.title,
                    "detail": w.detail,
                    "results": [
                        _outcome_json(results[w.key][s.key], results[w.key]) for s in SYSTEMS
                    ],
                }
                for w in workloads
            ],
            "notes": notes,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        progress(f"wrote {args.json}")

    failed = any(o.error for per in results.values() for o in per.values())
    return 1 if failed else 0


def _measure(
    workload: _Workload,
    runners: dict[str, _Runner],
    workers: int,
    repeats: int,
    progress: work.Progress,
) -> dict[str, _Outcome]:
    """Warm up, then time every started system in interleaved rounds."""
    outcomes = {s.key: _Outcome(s) for s in SYSTEMS if s.key in runners}
    live = [s for s in SYSTEMS if s.key in runners]

    def fail(system: _System, error: str) -> None:
        outcomes[system.key].error = error
        progress(f"  {system.label} failed: {error}")
        live.remove(system)

    # Warm-up: a few tasks per worker, so workers are up and have imported the function.
    warm = workload.items[: 2 * workers]
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


def _median(outcome: _Outcome | None) -> float | None:
    if outcome is None or outcome.error is not None or not outcome.samples:
        return None
    return work.summarize(outcome.samples).median


def _bench_table(workloads: list[_Workload], results: dict[str, dict[str, _Outcome]]) -> list[str]:
    headers = ["workload", "system", "time", "spread", "speedup vs serial", "vs mp.Pool"]
    rows: list[list[str]] = []
    for w in workloads:
        per = results[w.key]
        serial = _median(per.get(_SERIAL))
        baseline = _median(per.get(_MP_POOL))
        for i, system in enumerate(SYSTEMS):
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
    return work.render_table(headers, rows, right=[False, False, True, True, True, True])


def _times(reference: float | None, value: float) -> str:
    if reference is None or value <= 0:
        return "-"
    return work.format_ratio(reference / value)


def _bench_notes(
    workloads: list[_Workload],
    results: dict[str, dict[str, _Outcome]],
    workers: int,
    repeats: int,
) -> list[str]:
    notes = [
        f"time: median of {repeats} repeats on warm pools of {workers} workers "
        "(pool start-up is not included; see `python -m benchmarks` for start-up figures); "
        "spread: half the range of the repeats.",
        "speedup vs serial and vs mp.Pool: how many times faster than that system "
        "(above 1.00x is faster).",
    ]
    for w in workloads:
        notes.extend(
            f"{w.title}, {per.system.label}: {per.error}"
            for per in results[w.key].values()
            if per.error
        )
    cpu = results.get("cpu", {})
    serial = _median(cpu.get(_SERIAL))
    process_pools = [s.key for s in SYSTEMS if s.key not in (_SERIAL, "ThreadPool")]
    best = [m for m in (_median(cpu.get(key)) for key in process_pools) if m is not None]
    if serial is not None and best and workers > 1:
        speedup = serial / min(best)
        if speedup < 0.75 * workers:
            notes.append(
                f"note: the best CPU-bound speedup was {speedup:.2f}x with {workers} workers "
                f"(ideal {workers}x); this machine gave about {speedup:.1f} CPUs' worth of "
                "parallel capacity during the run (shared, throttled or busy)."
            )
    return notes


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
