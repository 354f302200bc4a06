"""The seed's shared counter: ``Value('i')`` + ``Lock``, 4 processes, beside the stdlib.

Each of 4 processes runs ``with lock: total.value += 1`` (the seed example, whose 10,000
per process take about 0.1 s: too short to measure steadily on a shared machine, so the
full run does 40,000 each and ``--quick`` the seed's 10,000); the figure is increments per
second from the first ``start()`` to the last ``join()``, and each run checks the exact
total.

* target (issue 3: at least 1.0x): ``manycore.Process`` (its default start method) with
  manycore's ``Value`` and ``Lock``, against ``multiprocessing.Process`` (the stdlib's
  default context) with the stdlib's ``Value`` and ``Lock``: what the seed program gets
  with ``import manycore as multiprocessing`` instead of the stdlib;
* reference: both sides started by the stdlib's fork context, so only the shared value and
  the lock differ.
"""

from __future__ import annotations

import multiprocessing
from typing import Any, Callable

import manycore  # noqa: F401  (the package's start-up work is not timed)
from manycore._process import Process as ManycoreProcess
from manycore._sharedctypes import Value as ManycoreValue
from manycore._synchronize import Lock as ManycoreLock

from ._harness import Call, Context, Figure, Measurement, measure

__all__ = ["add_many", "run"]

SUITE = "shared_counter"
PROCESSES = 4
INCREMENTS = 40_000  # per process; --quick: the seed's 10,000


def add_many(total: Any, lock: Any, times: int) -> None:
    """The seed's worker."""
    for _ in range(times):
        with lock:
            total.value += 1


def _counter(
    process: Callable[..., Any], value: Callable[..., Any], lock: Callable[[], Any], times: int
) -> Callable[[], int]:
    def once() -> int:
        total, guard = value("i", 0), lock()
        workers = [process(target=add_many, args=(total, guard, times)) for _ in range(PROCESSES)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if any(w.exitcode != 0 for w in workers):
            raise RuntimeError(f"a counter process failed: {[w.exitcode for w in workers]}")
        return int(total.value)

    return once


def run(ctx: Context) -> list[Figure]:
    times = ctx.size(INCREMENTS, 10_000)
    expected = PROCESSES * times
    fork = multiprocessing.get_context("fork")

    def exact(result: Any) -> bool:
        return bool(result == expected)

    def call(label: str, process: Any, value: Any, lock: Any) -> Call:
        return Call(Measurement(label, expected), _counter(process, value, lock, times), exact)

    drop_in = [
        call("manycore", ManycoreProcess, ManycoreValue, ManycoreLock),
        call(
            "multiprocessing", multiprocessing.Process, multiprocessing.Value, multiprocessing.Lock
        ),
    ]
    primitives = [
        call("manycore (fork)", fork.Process, ManycoreValue, ManycoreLock),
        call("multiprocessing (fork)", fork.Process, multiprocessing.Value, multiprocessing.Lock),
    ]
    title = f"{PROCESSES} processes x {times:,} increments"
    measure(ctx, f"{title}, each library's Process", drop_in)
    measure(ctx, f"{title}, fork-started on both sides", primitives)
    return [
        Figure(
            SUITE,
            f"shared counter, {PROCESSES} processes x {times:,} (increments/s)",
            drop_in[0].measurement,
            drop_in[1].measurement,
            compare="speed",
            target=1.0,
            show="rate",
        ),
        Figure(
            SUITE,
            "shared counter, both sides fork-started: Value+Lock only (increments/s)",
            primitives[0].measurement,
            primitives[1].measurement,
            compare="speed",
            show="rate",
        ),
    ]
