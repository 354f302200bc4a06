"""The ``manycore`` command as a user runs it: ``info``, and ``bench --quick`` in a subprocess.

Speed is never asserted here (``benchmarks/`` measures it). What is asserted: the command
finishes within its timeout, reports every workload for every system, gets manycore's
answers right, shows manycore surviving a worker crash while the stdlib ``Pool`` hangs, and
leaves no process behind (the leak fixture in ``conftest.py`` checks every test, and the
bench's processes carry this run's token). The optional parts (numpy, the peers,
matplotlib) are checked whether they are installed or not.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from manycore import _cli
from manycore._bench import command
from manycore._bench import systems as bench_systems
from manycore._bench.capacity import Capacity, capacity_note, parallel_capacity
from manycore._bench.optional import MissingExtra
from manycore._bench.peers import PEERS, PeerStatus, peers_note
from manycore._bench.render import Bar, Panel, draw_comparison
from tests import helpers

# `bench --quick --repeats 1` takes about 20 s on a 2-core machine; a hang is caught by the
# command's own deadlines long before this.
BENCH_TIMEOUT = 150.0

STDLIB = ["serial", "ThreadPool", "multiprocessing.Pool", "ProcessPoolExecutor"]
MANYCORE = ["manycore.Pool", "manycore.ProcessPoolExecutor"]
POOL_PEERS = ["joblib", "mpire", "pebble"]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_info_prints_what_to_check_first() -> None:
    done = helpers.run_python(["-m", "manycore", "info"], timeout=60)
    assert done.returncode == 0, done.stderr
    for key in ("usable CPUs", "os.cpu_count()", "start methods", "/dev/shm", "GIL", "Python"):
        assert key in done.stdout

    done = helpers.run_python(["-m", "manycore", "info", "--json"], timeout=60)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert 1 <= facts["cpus"]["usable"] <= (facts["cpus"]["os_cpu_count"] or 1)
    assert "fork" in facts["start_methods"]["available"]


def test_bench_quick_reports_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["-m", "manycore", "bench", "--quick", "--repeats", "1", "--json", str(out)]
    done = helpers.run_python(args, timeout=BENCH_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["exit_status"] == 0
    assert report["quick"] is True and report["repeats"] == 1

    # Systems: the stdlib and manycore always; each pool peer exactly when it is usable.
    systems = [s["key"] for s in report["systems"]]
    assert set(STDLIB + MANYCORE) <= set(systems)
    peers = {p["name"]: p for p in report["peers"]}
    assert set(peers) == {"joblib", "mpire", "pebble", "faster-fifo"}
    for name in POOL_PEERS:
        assert (name in systems) == peers[name]["usable"], name
        assert (peers[name]["version"] is not None) == _installed(name)
    assert "faster-fifo" not in systems  # a queue: detected, never measured
    peers_line = next(n for n in report["notes"] if n.startswith("peers:"))
    missing = [name for name, peer in peers.items() if peer["version"] is None]
    if missing:
        assert f"not installed: {', '.join(missing)} (" in peers_line
    else:
        assert "not installed" not in peers_line

    # Timed workloads: every system has a row; manycore's ran and matched serial's answer
    # (the bench records "returned a wrong result" as an error otherwise).
    workloads = {w["key"]: w for w in report["workloads"]}
    expected = ["cpu", "io", "trivial"] + (["numpy"] if _installed("numpy") else [])
    assert list(workloads) == expected
    if not _installed("numpy"):
        assert [s["key"] for s in report["skipped_workloads"]] == ["numpy"]
    for key, workload in workloads.items():
        rows = {r["system"]: r for r in workload["results"]}
        assert list(rows) == systems, key
        for system in ["serial", *MANYCORE]:
            row = rows[system]
            assert row["error"] is None, (key, system, row["error"])
            assert len(row["samples"]) == 1 and row["median"] > 0, (key, system)
        assert rows["serial"]["speedup_vs_serial"] == pytest.approx(1.0)

    # The crash: manycore reports the lost worker promptly and its pools keep working; the
    # stdlib Pool hangs until the deadline; the stdlib executor breaks.
    crash = report["crash"]
    deadline = crash["deadline_s"]
    outcomes = {r["system"]: r for r in crash["results"]}
    assert list(outcomes) == systems
    for system in MANYCORE:
        row = outcomes[system]
        assert row["outcome"] == "error", row
        assert row["error"].startswith("WorkerLostError"), row
        assert row["usable_after"] is True and row["next_call"] == "ok", row
        assert row["seconds"] < deadline
    assert outcomes["multiprocessing.Pool"]["outcome"] == "hung"
    assert outcomes["multiprocessing.Pool"]["seconds"] >= deadline
    executor = outcomes["ProcessPoolExecutor"]
    assert executor["outcome"] == "error" and executor["error"].startswith("BrokenProcessPool")
    assert executor["usable_after"] is False
    assert outcomes["serial"]["outcome"] == outcomes["ThreadPool"]["outcome"] == "not run"

    if report["machine"]["cpus"]["usable"] >= 2:
        assert report["parallel_capacity"]["cpus"] > 0

    # The printed report: both tables, with every system, and the crash verdicts.
    text = done.stdout
    assert "| workload" in text and "speedup vs serial" in text
    assert "what the caller saw" in text
    assert f"hung (killed after {deadline:g} s)" in text
    assert text.count("pool still usable") >= len(MANYCORE)
    for system in report["systems"]:
        assert system["label"] in text


def test_bench_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["bench", "--workers", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_plot_without_matplotlib_names_the_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    assert _cli.main(["bench", "--quick", "--plot", str(tmp_path / "x.png")]) == 2
    assert "pip install matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(MissingExtra, match="pip install matplotlib"):
        draw_comparison(str(tmp_path / "y.png"), "t", [], [])


def test_plot_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    panels = [
        Panel(
            "CPU-bound",
            "20 tasks",
            (
                Bar("serial", 0.30, "300 ms", "reference", 0.29, 0.31),
                Bar("manycore.Pool", 0.16, "160 ms", "manycore", 0.15, 0.17),
                Bar("joblib", None, "failed"),
            ),
        ),
        Panel(
            "worker crash",
            "one task exits",
            (
                Bar("multiprocessing.Pool", 5.0, "hung", "hung"),
                Bar("manycore.Pool", 0.01, "error in 10 ms", "ok"),
            ),
        ),
        Panel("trivial", "map", (Bar("a", 1e-4, "x", "stdlib"),)),
    ]
    path = tmp_path / "bench.png"
    draw_comparison(str(path), "manycore bench", panels, ["a note", "peers: x"])
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width >= 800 and height >= 400


def test_missing_numpy_and_peers_are_skipped_not_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)
    workloads, skipped = command._workloads(quick=True, workers=2)
    assert [w.key for w in workloads] == ["cpu", "io", "trivial"]
    assert [(s.key, "pip install numpy" in s.reason) for s in skipped] == [("numpy", True)]

    nowhere = {p.name: PeerStatus(p) for p in PEERS}  # none installed
    assert [s.key for s in bench_systems.systems(nowhere)] == [*STDLIB, *MANYCORE]
    note = peers_note(nowhere, set(POOL_PEERS))
    assert note.startswith("peers: not installed: joblib, mpire, pebble, faster-fifo")
    assert "pip install 'manycore[bench]'" in note


def test_parallel_capacity_and_its_note() -> None:
    capacity = parallel_capacity(2, seconds=0.05, rounds=2)
    assert capacity.processes == 2 and len(capacity.alone) == len(capacity.together) == 2
    assert min(capacity.alone) > 0 and min(capacity.together) > 0
    # How much the probe measured depends on the machine's load, so no bound on it here (a
    # busy CI machine disturbs a 50 ms window either way); the arithmetic is checked below.
    assert capacity.cpus > 0

    # the median of the together counts over the best alone count
    assert Capacity(2, (100, 50), (190, 150, 170), 0.3).cpus == pytest.approx(1.7)
    full = capacity_note(Capacity(2, (100,), (190,), 0.3), usable_cpus=2)
    assert full.startswith("parallel capacity: 2 processes") and "fewer" not in full
    starved = capacity_note(Capacity(4, (100,), (120, 100, 140), 0.3), 4, 1.1)
    assert "fewer CPUs than it claims" in starved and "1.20x" in starved
    assert "best CPU-bound speedup measured was 1.10x" in starved


def _sleep_through_sigterm(seconds: float) -> None:
    import signal
    import time

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)


class _LeavesAWorker:
    """A pool whose close() and kill() leave its worker process running, as mpire 2.10's
    terminate() did after a hung map."""

    def __init__(self) -> None:
        import multiprocessing

        self.worker = multiprocessing.get_context("fork").Process(
            target=_sleep_through_sigterm, args=(helpers.TIMEOUT,)
        )
        self.worker.start()

    def map(self, fn: Any, items: list[Any]) -> list[Any]:
        return [fn(x) for x in items]

    def close(self) -> None:
        self.worker.terminate()  # ignored

    def kill(self) -> None:
        self.close()


def test_bench_kills_a_process_a_closed_pool_left_running() -> None:
    # The stdlib joins every multiprocessing child at exit: such a worker would keep the
    # command from ever returning.
    from manycore._bench import measure
    from manycore._bench.render import Progress
    from manycore._bench.workloads import square

    opened: list[_LeavesAWorker] = []

    def open_pool(workers: int) -> _LeavesAWorker:
        opened.append(_LeavesAWorker())
        return opened[-1]

    leaky = bench_systems.System(
        "leaky", "leaky pool", "leaky", open_pool, "peer", in_caller_up_to=bench_systems.ALWAYS
    )
    run = measure.Run(
        workers=2,
        repeats=1,
        usable_cpus=2,
        systems=[leaky],
        peers={},
        workloads=[measure.Workload("sq", "squares", "x*x", square, [1, 2, 3])],
        skipped=[],
        crash_deadline=1.0,
        crash_items=8,
    )
    measure.run_workloads(run, Progress(enabled=False))
    assert run.results["sq"]["leaky"].error is None
    [pool] = opened
    assert not pool.worker.is_alive()
    assert pool.worker.exitcode == -9  # killed: it ignored SIGTERM
