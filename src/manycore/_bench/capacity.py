"""How many CPUs' worth of CPU-bound work this machine really delivers.

A machine may claim more CPUs than it gives: a cgroup quota, a busy neighbour or
hyper-threads for cores. ``parallel_capacity`` measures it with a few spinning processes
before any pool starts, and ``capacity_note`` says so in a report when it is clearly
fewer than the usable CPUs, so a low speedup is not blamed on the pools.

Who runs where::

    caller (parallel_capacity)              probe processes (_capacity_worker)
    start N processes, one Pipe each  --->  send "ready"
    send (start, stop) to one, then all --> spin until stop, send the count of slices
    send None                         --->  close the pipe and exit

The probe processes are forked when the caller has one thread, else spawned (they import
this module by name); they are always joined, or killed, before ``parallel_capacity``
returns.
"""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from .guards import BenchTimeout
from .workloads import spin

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["CAPACITY_NOTE_BELOW", "Capacity", "capacity_note", "parallel_capacity"]


@dataclass(frozen=True)
class Capacity:
    """How many CPUs' worth of pure-Python work ``processes`` spinning processes got done.

    Each round counts the work one process does alone in a fixed wall-clock window, then
    the work all of them do together in another. The capacity is the median of the
    together counts over the best of the alone counts: a neighbour that steals time from a
    solo window must not inflate the result. On an idle machine with that many real cores
    it is close to ``processes``; on a shared, throttled (cgroup quota) or busy one, or with
    hyper-threads for cores, it is lower, and no pool can do better on CPU-bound work.
    """

    processes: int
    alone: tuple[int, ...]  # work done by one process, per round
    together: tuple[int, ...]  # work done by all of them, per round
    seconds: float  # the window of each count

    @property
    def cpus(self) -> float:
        if not self.alone or not self.together:
            return float(self.processes)
        return statistics.median(self.together) / max(1, *self.alone)

    def as_dict(self) -> dict[str, Any]:
        return {
            "processes": self.processes,
            "cpus": self.cpus,
            "work_alone": list(self.alone),
            "work_together": list(self.together),
            "window_s": self.seconds,
        }


# A capacity below this share of the usable CPUs gets a note: on an idle machine the
# probe's own noise stays well above it.
CAPACITY_NOTE_BELOW = 0.8


def capacity_note(capacity: Capacity, usable_cpus: int, best_speedup: float | None = None) -> str:
    """One line for a report: the measured capacity, and a warning when it is clearly
    below ``usable_cpus`` (with ``best_speedup``, the best CPU-bound speedup measured)."""
    cpus = capacity.cpus
    text = (
        f"parallel capacity: {capacity.processes} processes spinning together did "
        f"{cpus:.2f}x the work of one (ideal {usable_cpus}x, the usable CPUs)."
    )
    if cpus >= CAPACITY_NOTE_BELOW * usable_cpus:
        return text
    seen = f"; the best CPU-bound speedup measured was {best_speedup:.2f}x" if best_speedup else ""
    return (
        f"note: this machine gave fewer CPUs than it claims: {capacity.processes} processes "
        f"spinning together did only {cpus:.2f}x the work of one, not {usable_cpus}x (it is "
        "shared, throttled or busy, or its CPUs are hyper-threads). No pool can go much "
        f"beyond {cpus:.1f}x on CPU-bound work here{seen}."
    )


def _capacity_worker(conn: Connection) -> None:
    """In a probe process: for each ``(start, stop)`` window received, spin from ``start``
    to ``stop`` (``time.monotonic``, one clock for every process) and send back how many
    slices of work were done; ``None`` ends the process."""
    conn.send("ready")
    while True:
        window = conn.recv()
        if window is None:
            conn.close()
            return
        start, stop = window
        while time.monotonic() < start:
            pass  # spin rather than sleep: the window opens within a millisecond for all
        slices = 0
        while time.monotonic() < stop:
            spin(2_000)  # about 0.1 ms
            slices += 1
        conn.send(slices)


def parallel_capacity(processes: int, seconds: float = 0.3, rounds: int = 3) -> Capacity:
    """Measure how many CPUs' worth of CPU-bound work ``processes`` processes get done.

    Takes about ``2 * rounds * seconds`` plus process start-up. The probe processes are
    forked when the caller has a single thread (fork is then safe and cheap), otherwise
    spawned; they are always joined (or killed) before this returns.
    """
    if processes < 2:
        return Capacity(processes, (), (), seconds)
    method = "fork" if threading.active_count() == 1 else "spawn"
    if method not in multiprocessing.get_all_start_methods():
        method = "spawn"
    context: Any = multiprocessing.get_context(method)
    conns: list[Connection] = []
    procs: list[Any] = []
    try:
        for _ in range(processes):
            parent, child = context.Pipe()
            proc = context.Process(target=_capacity_worker, args=(child,), daemon=True)
            proc.start()
            child.close()
            conns.append(parent)
            procs.append(proc)
        for conn in conns:  # every process is up before the first window opens
            _receive(conn, 60.0)
        alone: list[int] = []
        together: list[int] = []
        for _ in range(rounds):
            alone.append(_spin_window(conns[:1], seconds)[0])
            together.append(sum(_spin_window(conns, seconds)))
        return Capacity(processes, tuple(alone), tuple(together), seconds)
    finally:
        for conn in conns:
            try:
                conn.send(None)
            except OSError:
                pass
            conn.close()
        for proc in procs:
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join()


def _spin_window(conns: Sequence[Connection], seconds: float) -> list[int]:
    # The window opens 20 ms from now, time enough for every process to receive it.
    start = time.monotonic() + 0.02
    for conn in conns:
        conn.send((start, start + seconds))
    return [int(_receive(conn, seconds + 30.0)) for conn in conns]


def _receive(conn: Connection, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise BenchTimeout(f"a parallel-capacity probe process did not answer in {timeout:g} s")
    return conn.recv()
