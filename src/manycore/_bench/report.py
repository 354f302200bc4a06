"""What ``manycore bench`` prints and writes about a run: the tables, the notes, JSON, the plot.

Every ratio is between two medians of the same run: speedup over serial, and the ratio
against ``multiprocessing.Pool``. ``report_json`` is the ``--json`` file, ``plot`` the
``--plot`` image (through ``render.draw_comparison``).
"""

from __future__ import annotations

import platform
from typing import Any

from .capacity import capacity_note
from .machine import load_average, machine_facts
from .measure import Outcome, Run, error_type
from .peers import PeerStatus, peers_note
from .render import Bar, Panel, draw_comparison, format_ratio, format_seconds, render_table
from .stats import summarize
from .systems import MP_POOL, SERIAL, SYSTEMS

__all__ = ["bench_notes", "bench_table", "crash_table", "plot", "report_json"]


def _median(outcome: Outcome | None) -> float | None:
    if outcome is None or outcome.error is not None or not outcome.samples:
        return None
    return summarize(outcome.samples).median


def bench_table(run: Run) -> list[str]:
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


def crash_table(run: Run) -> list[str]:
    headers = ["system", "what the caller saw", "error raised"]
    rows = []
    for system in run.systems:
        crash = run.crashes[system.key]
        raised = error_type(crash.error) if crash.outcome == "error" else "-"
        summary = crash.summary() if crash.outcome != "not run" else "not run (see notes)"
        rows.append([system.label, summary, raised])
    return render_table(headers, rows, right=[False, False, False])


def _times(reference: float | None, value: float) -> str:
    if reference is None or value <= 0:
        return "-"
    return format_ratio(reference / value)


def bench_notes(run: Run) -> list[str]:
    notes = [
        f"time: median of {run.repeats} repeats on warm pools of {run.workers} workers "
        "(pool start-up is not included; see `python -m benchmarks` for start-up figures); "
        "a repeat of a call shorter than 20 ms runs it back to back until 20 ms have passed "
        "and counts the mean; spread: half the range of the repeats.",
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


def _capacity_note(run: Run) -> str:
    if run.capacity is None:
        why = run.capacity_error or "a single usable CPU"
        return f"parallel capacity: not measured ({why})."
    # The best speedup is a fair comparison only when the pools had every usable CPU.
    best = _best_cpu_speedup(run) if run.workers >= run.usable_cpus else None
    return capacity_note(run.capacity, run.usable_cpus, best)


def _best_cpu_speedup(run: Run) -> float | None:
    cpu = run.results.get("cpu", {})
    serial = _median(cpu.get(SERIAL))
    pools = [s.key for s in run.systems if not s.in_caller(run.workers)]
    best = [m for m in (_median(cpu.get(key)) for key in pools) if m is not None]
    return serial / min(best) if serial is not None and best else None


def _peers_note(peers: dict[str, PeerStatus]) -> str:
    return peers_note(peers, {s.peer for s in SYSTEMS if s.peer is not None})


def _outcome_json(outcome: Outcome, per: dict[str, Outcome]) -> dict[str, Any]:
    data: dict[str, Any] = {"system": outcome.system.key, "error": outcome.error}
    median = _median(outcome)
    if median is not None:
        data.update(summarize(outcome.samples).as_dict())
        serial = _median(per.get(SERIAL))
        baseline = _median(per.get(MP_POOL))
        data["speedup_vs_serial"] = serial / median if serial else None
        data["ratio_vs_multiprocessing_pool"] = baseline / median if baseline else None
    return data


def report_json(
    run: Run,
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


def plot(run: Run, path: str, notes: list[str]) -> None:
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
            text = f"{error_type(crash.error)}: {text}"
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
