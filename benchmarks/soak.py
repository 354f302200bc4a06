"""The long chaos run: faults injected at every point a task passes, queue producers and
consumers killed mid-operation, then workers SIGKILLed at random while a pool with
``retries`` works.

``python -m benchmarks.soak [--tasks 100000] [--seconds 180] [--kill-every 0.3]
[--workers 2] [--start-method default|fork|forkserver|spawn]
[--fault-methods fork,spawn,default] [--no-faults] [--faults-only]``

First the fault phase (``benchmarks.soak_faults``, whose docstring lists the faults and the
checks): each scenario in a caller process of its own, so a fault that kills the caller or
hangs it is reported as such and the run goes on. Its failures are listed by kind at the end
and make the exit status 1, but do not stop the rounds below.

Rounds of ``--tasks`` tasks (each sleeps 1 ms and returns its input) run until
``--seconds`` have passed (at least one round). Rounds alternate between ``manycore.Pool``
(a third through ``apply_async``, a third through ``imap_unordered``, a third through
``map_async``) and ``manycore.ProcessPoolExecutor`` (half ``submit``, half ``map``), each
made with ``retries=1000``, while a thread SIGKILLs a random worker (pids from
``statistics()``) every ``--kill-every`` seconds on average.

After each round it checks that every task returned exactly once (the results, as a
multiset, are the inputs), that nothing failed and the counters agree (restarts and retries
were counted, no more than the kills), and, once the pool is closed, that no process,
thread, file descriptor or ``/dev/shm`` segment of manycore's is left. It prints one line
per round and exits 1 on the first failed check, 0 when every round passed.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from typing import Any, Optional, Sequence

import manycore
from manycore import _launch

__all__ = ["echo_after", "main"]

RETRIES = 1000
ROUND_DEADLINE_S = 600.0  # a round that takes longer than this is hung
SETTLE_S = 10.0  # how long leftovers get to go away after a pool is closed
SHM = "/dev/shm"
SHM_PREFIXES = ("manycore", "psm_")


def echo_after(x: Any, seconds: float = 0.001) -> Any:
    """``x``, after ``seconds`` asleep: long enough for a SIGKILL to land inside a task."""
    time.sleep(seconds)
    return x


class Killer(threading.Thread):
    """SIGKILLs a random worker of ``pool`` about every ``every`` seconds until stopped."""

    def __init__(self, pool: Any, every: float, rng: random.Random) -> None:
        super().__init__(name="soak-killer", daemon=True)
        self.pool = pool
        self.every = every
        self.rng = rng
        self.stop = threading.Event()
        self.kills = 0
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            while not self.stop.wait(self.every * self.rng.uniform(0.5, 1.5)):
                pids = [w.pid for w in self.pool.statistics().workers if w.pid is not None]
                if not pids:
                    continue
                try:
                    os.kill(self.rng.choice(pids), signal.SIGKILL)
                except ProcessLookupError:
                    continue
                self.kills += 1
        except BaseException as exc:
            self.error = exc


def _children() -> set[tuple[int, str]]:
    """(pid, start time) of every live process below this one, fork servers excluded."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X"):
            continue
        parents.setdefault(int(fields[1]), []).append((int(name), fields[19].decode()))
    servers = set(_launch.fork_server_pids())
    found: set[tuple[int, str]] = set()
    stack = [os.getpid()]
    while stack:
        for pid, start in parents.get(stack.pop(), ()):
            stack.append(pid)
            if pid not in servers:
                found.add((pid, start))
    return found


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _shm() -> set[str]:
    try:
        return {name for name in os.listdir(SHM) if name.startswith(SHM_PREFIXES)}
    except OSError:
        return set()


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


def _run_pool(pool: manycore.Pool, fn: Any, inputs: range) -> list[Any]:
    third = len(inputs) // 3
    applied = [pool.apply_async(fn, (i,)) for i in inputs[:third]]
    mapped = pool.map_async(fn, inputs[2 * third :])
    results = list(pool.imap_unordered(fn, inputs[third : 2 * third]))
    results += [r.get(timeout=ROUND_DEADLINE_S) for r in applied]
    results += mapped.get(timeout=ROUND_DEADLINE_S)
    return results


def _run_executor(executor: manycore.ProcessPoolExecutor, fn: Any, inputs: range) -> list[Any]:
    half = len(inputs) // 2
    futures = [executor.submit(fn, i) for i in inputs[:half]]
    results = list(executor.map(fn, inputs[half:], timeout=ROUND_DEADLINE_S))
    results += [f.result(timeout=ROUND_DEADLINE_S) for f in futures]
    return results


def run_round(number: int, args: argparse.Namespace, fn: Any, rng: random.Random) -> list[str]:
    """One round; returns the failed checks (empty when it passed) and prints a summary."""
    problems: list[str] = []
    inputs = range(number * args.tasks, (number + 1) * args.tasks)
    context = None if args.start_method == "default" else args.start_method
    use_executor = number % 2 == 1
    kind = "ProcessPoolExecutor" if use_executor else "Pool"

    threads_before, fds_before = _threads(), _fds()
    procs_before, shm_before = _children(), _shm()
    started = time.monotonic()
    pool: Any
    if use_executor:
        pool = manycore.ProcessPoolExecutor(args.workers, mp_context=context, retries=RETRIES)
    else:
        pool = manycore.Pool(args.workers, context=context, retries=RETRIES)
    killer = Killer(pool, args.kill_every, rng)
    results: list[Any] = []
    stats = None
    try:
        killer.start()
        results = _run_executor(pool, fn, inputs) if use_executor else _run_pool(pool, fn, inputs)
        killer.stop.set()
        killer.join(ROUND_DEADLINE_S)
        stats = pool.statistics()
    except BaseException as exc:
        problems.append(f"the round raised {type(exc).__name__}: {exc}")
    finally:
        killer.stop.set()
        killer.join(ROUND_DEADLINE_S)
        try:
            if use_executor:
                pool.shutdown(wait=True)
            else:
                pool.close()
                pool.join()
        except BaseException as exc:
            problems.append(f"closing the pool raised {type(exc).__name__}: {exc}")
    elapsed = time.monotonic() - started
    if killer.error is not None:
        problems.append(f"the killer thread failed: {killer.error!r}")

    if not problems:
        missing = Counter(inputs) - Counter(results)
        extra = Counter(results) - Counter(inputs)
        if missing:
            problems.append(f"{sum(missing.values())} results lost, e.g. {sorted(missing)[:10]}")
        if extra:
            problems.append(f"{sum(extra.values())} results duplicated, e.g. {sorted(extra)[:10]}")
    restarts = retried = 0
    if stats is not None:
        restarts = sum(w.restarts for w in stats.workers)
        retried = stats.tasks_retried
        items = sum(w.items_done for w in stats.workers)
        if stats.tasks_failed:
            problems.append(f"statistics: tasks_failed = {stats.tasks_failed}")
        if items != args.tasks:
            problems.append(f"statistics: items_done sums to {items}, not {args.tasks}")
        if stats.tasks_queued or stats.tasks_running or stats.jobs_pending:
            problems.append(f"statistics: work left over at the end: {stats}")
        if not restarts <= killer.kills or not retried <= killer.kills:
            problems.append(
                f"statistics: {restarts} restarts and {retried} retries for {killer.kills} kills"
            )
        if killer.kills and not restarts:
            problems.append(f"statistics: {killer.kills} kills but no restart counted")

    # What only the pool object holds goes with it; anything left after that is a leak.
    killer.pool = pool = None
    gc.collect()
    deadline = time.monotonic() + SETTLE_S
    while True:
        procs = _children() - procs_before
        threads = {t for t in _threads() - threads_before if t is not killer}
        fds = _fds() - fds_before
        shm = _shm() - shm_before
        if not (procs or threads or fds > 0 or shm) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if procs:
        problems.append(f"processes left: {sorted(pid for pid, _ in procs)}")
    if threads:
        problems.append(f"threads left: {sorted(t.name for t in threads)}")
    if fds > 0:
        problems.append(f"{fds} more file descriptors than before the round")
    if shm:
        problems.append(f"segments left in {SHM}: {sorted(shm)}")

    print(
        f"round {number + 1} ({kind}, {args.tasks:,} tasks): {elapsed:.1f} s, "
        f"{killer.kills} kills, {restarts} restarts, {retried} retries: "
        + ("ok" if not problems else "FAILED"),
        flush=True,
    )
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Kill workers at random while pools with retries work; check that every "
        "task returns exactly once and nothing is left behind.",
    )
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks per round (100000)")
    parser.add_argument(
        "--seconds", type=float, default=180.0, help="start rounds until this long has passed"
    )
    parser.add_argument(
        "--kill-every", type=float, default=0.3, metavar="S", help="mean seconds between kills"
    )
    parser.add_argument("--workers", type=int, default=2, help="pool size (2)")
    parser.add_argument(
        "--start-method",
        default="default",
        choices=["default", "fork", "forkserver", "spawn"],
        help="the pool's start method",
    )
    parser.add_argument("--seed", type=int, default=None, help="for the killer's choices")
    parser.add_argument(
        "--fault-methods",
        default="fork,spawn,default",
        help="start methods of the fault phase (comma-separated)",
    )
    parser.add_argument("--no-faults", action="store_true", help="skip the fault phase")
    parser.add_argument("--faults-only", action="store_true", help="only the fault phase")
    args = parser.parse_args(argv)
    if args.tasks < 6 or args.workers < 1 or args.kill_every <= 0:
        parser.error("--tasks must be at least 6, --workers at least 1, --kill-every > 0")

    # Imported by name so workers find it by reference, even when this file runs as __main__.
    from benchmarks.soak import echo_after as fn

    seed = args.seed if args.seed is not None else random.randrange(2**32)
    faults_failed = 0
    if not args.no_faults:
        from benchmarks import soak_faults

        methods = [m.strip() for m in args.fault_methods.split(",") if m.strip()]
        print(f"soak: the fault phase, start methods {methods}, seed {seed}", flush=True)
        found = soak_faults.run_queue_faults(methods, soak_faults.QUEUE_SECONDS, seed)
        found += soak_faults.run_task_faults(methods)
        faults_failed = soak_faults.report(found)
        if args.faults_only:
            return faults_failed
    print(
        f"soak: {args.tasks:,} tasks a round, {args.workers} workers "
        f"({args.start_method}), a kill every {args.kill_every:g} s on average, "
        f"for {args.seconds:g} s, seed {seed}",
        flush=True,
    )
    # A first pool starts what outlives pools on purpose (a fork server and its pipes),
    # so that the first round's leak checks compare like with like.
    context = None if args.start_method == "default" else args.start_method
    warm = manycore.Pool(1, context=context)
    warm.apply(fn, (0,))
    warm.close()
    warm.join()
    rng = random.Random(seed)
    started = time.monotonic()
    number = 0
    while True:
        problems = run_round(number, args, fn, rng)
        if problems:
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return 1
        number += 1
        if time.monotonic() - started >= args.seconds:
            break
    print(f"soak: {number} rounds passed in {time.monotonic() - started:.0f} s")
    if faults_failed:
        print("soak: the fault phase failed (see above)", file=sys.stderr)
    return faults_failed


if __name__ == "__main__":
    sys.exit(main())
