"""Fault injection for ``make soak``: a fault at every point a task passes, and queue
producers and consumers killed mid-operation.

``python -m benchmarks.soak_faults [--start-methods fork,spawn,default] [--queue-seconds 4]``
(``make soak`` runs it first, through ``benchmarks.soak``).

**Task faults.** A task passes five points: its argument is pickled in the caller, unpickled
in a worker, the call runs, its result is pickled in the worker and unpickled in the caller.
At each point one task of a batch meets one fault: an exception, ``SystemExit``,
``os._exit(3)``, SIGKILL or SIGSEGV (the last three only in a worker: in the caller they end
the caller, as any code of the user's that the caller runs would). Each (point, fault, start
method) runs in a caller process of its own, so a caller that dies is reported, not
shared; inside it, the batch goes through ``Pool.apply_async``, ``Pool.map``,
``ProcessPoolExecutor.submit`` and ``ProcessPoolExecutor.map``, with ``retries=0``.

Checked: the caller survives (its exit status); every call and every task ends within
``TASK_TIMEOUT`` (a wait that runs out is reported as a hang); the healthy tasks of the batch
return their own result; the faulty one ends in an error; no task's code ran twice (each
call leaves a marker file; ``retries=0`` is at most once); the pool still runs a task
afterwards and closes within the timeout; no process, thread, descriptor or ``/dev/shm``
entry of manycore's is left once it is closed.

**Queue faults.** Producer and consumer processes put and get items (small ones and
200 KiB ones, which travel in segments) on a ``Queue`` while one of them is SIGKILLed
every ``KILL_EVERY`` seconds on average and replaced; many kills land while the victim holds
the queue's lock. Checked: no ``put`` or ``get`` returns later than its timeout plus
``LATE_S``; no item arrives twice; every item whose ``put`` returned arrives, except at most
one per killed consumer (the item it had taken when it died); a damaged queue is reported by
``QueueBrokenError`` (counted, not a failure) rather than a hang; nothing is left behind.

Prints one line per scenario and a summary of the failure kinds; exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import gc
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from typing import Any, Callable, Optional, Sequence

__all__ = ["main", "run_queue_faults", "run_task_faults"]

POINTS = ("pickle-arg", "unpickle-arg", "call", "pickle-result", "unpickle-result")
CALLER_POINTS = ("pickle-arg", "unpickle-result")  # these run in the caller
FAULTS = ("exception", "systemexit", "exit", "sigkill", "sigsegv")
LETHAL = ("exit", "sigkill", "sigsegv")  # end the process they run in
APIS = ("apply_async", "pool.map", "submit", "executor.map")
TASK_TIMEOUT = 20.0  # seconds any one wait in a scenario may take before it counts as a hang
CALLER_TIMEOUT = 150.0  # a caller process that runs longer than this is hung as a whole
SETTLE_S = 10.0  # how long leftovers get to go away after a pool is closed
BATCH = 6  # healthy tasks beside the faulty one
FAULTY = 1000  # the faulty task's number
SHM = "/dev/shm"
SHM_PREFIXES = ("manycore", "psm_", "sem.manycore", "sem.mp-manycore")

QUEUE_PRODUCERS = 2
QUEUE_CONSUMERS = 2
KILL_EVERY = 0.05
QUEUE_SECONDS = 4.0  # of kills per start method
OP_TIMEOUT = 2.0  # each put and get in the queue scenario
LATE_S = 1.5  # how far past its timeout a put or get may return before it counts as hung
BIG = 200 << 10


# ------------------------------------------------------------------ the faults


def do_fault(fault: str) -> Any:
    """Meet ``fault`` in the process that runs this."""
    if fault == "exception":
        raise RuntimeError("injected fault")
    if fault == "systemexit":
        raise SystemExit("injected SystemExit")
    if fault == "exit":
        os._exit(3)
    if fault == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "sigsegv":
        faulthandler._sigsegv()  # type: ignore[attr-defined]
    raise ValueError(f"unknown fault {fault!r}")


class Payload:
    """An object that meets ``fault`` when pickled (``on="pickle"``) or when unpickled
    (``on="unpickle"``), and otherwise travels as itself."""

    def __init__(self, value: Any, fault: str = "", on: str = "") -> None:
        self.value, self.fault, self.on = value, fault, on

    def __reduce__(self) -> Any:
        if self.on == "pickle":
            do_fault(self.fault)
        if self.on == "unpickle":
            return (_unpickle_fault, (self.fault,))
        return (Payload, (self.value,))


def _unpickle_fault(fault: str) -> Any:
    return do_fault(fault)


def task(number: int, arg: Any, marks: str, point: str, fault: str) -> Any:
    """A task of the batch: leaves a marker (to count runs), then meets its fault if it is
    the faulty one and the point is the call or its result."""
    fd = os.open(os.path.join(marks, f"{number}.{uuid.uuid4().hex}"), os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    if number == FAULTY:
        if point == "call":
            do_fault(fault)
        if point == "pickle-result":
            return Payload(number, fault, "pickle")
        if point == "unpickle-result":
            return Payload(number, fault, "unpickle")
    return Payload(number)


def _task_star(args: tuple[Any, ...]) -> Any:
    return task(*args)


# ------------------------------------------------------------------ leftovers


def _children() -> set[int]:
    """Every live process below this one, fork servers excluded (the kill rounds' walk)."""
    from benchmarks.soak import _children as with_start_times

    return {pid for pid, _ in with_start_times()}


def _shm() -> set[str]:
    try:
        return {n for n in os.listdir(SHM) if n.startswith(SHM_PREFIXES)}
    except OSError:
        return set()


def _snapshot() -> tuple[set[int], set[str], int, set[str]]:
    threads = {f"{t.name}:{t.ident}" for t in threading.enumerate() if t.is_alive()}
    return _children(), threads, len(os.listdir("/proc/self/fd")), _shm()


def _leftovers(before: tuple[set[int], set[str], int, set[str]]) -> list[str]:
    gc.collect()
    deadline = time.monotonic() + SETTLE_S
    while True:
        now = _snapshot()
        procs, threads = now[0] - before[0], now[1] - before[1]
        fds, shm = now[2] - before[2], now[3] - before[3]
        if not (procs or threads or fds > 0 or shm) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    found = []
    if procs:
        found.append(f"leak: processes left {sorted(procs)}")
    if threads:
        found.append(f"leak: threads left {sorted(threads)}")
    if fds > 0:
        found.append(f"leak: {fds} more descriptors")
    if shm:
        found.append(f"leak: /dev/shm entries left {sorted(shm)[:5]}")
    return found


def _in_time(fn: Callable[[], Any], timeout: float = TASK_TIMEOUT) -> tuple[str, Any]:
    """``("ok", value)``, ``("error", exception)`` or ``("hang", None)``: ``fn()`` run in a
    thread, so a call that ignores its own timeout is caught too."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["ok"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name="soak-faults-call", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return "hang", None
    return ("ok", box["ok"]) if "ok" in box else ("error", box["error"])


# ------------------------------------------------------------------ task faults


def _one_api(api: str, point: str, fault: str, method: Optional[str], marks: str) -> list[str]:
    """Run the batch through ``api``; the problems found."""
    import manycore

    problems: list[str] = []
    numbers = [*range(BATCH // 2), FAULTY, *range(BATCH // 2, BATCH)]

    def arg(n: int) -> Any:
        if n != FAULTY:
            return Payload(n)
        if point == "pickle-arg":
            return Payload(n, fault, "pickle")
        if point == "unpickle-arg":
            return Payload(n, fault, "unpickle")
        return Payload(n)

    calls = [(n, arg(n), marks, point, fault) for n in numbers]
    is_pool = api in ("apply_async", "pool.map")
    made = _in_time(
        (lambda: manycore.Pool(2, context=method, retries=0))
        if is_pool
        else (lambda: manycore.ProcessPoolExecutor(2, mp_context=method, retries=0))
    )
    if made[0] != "ok":
        return [f"broken pool: {api}: making the pool: {made[0]} {made[1]!r}"]
    pool = made[1]
    outcomes: dict[int, tuple[str, Any]] = {}
    try:
        if api in ("apply_async", "submit"):
            handles: dict[int, Any] = {}
            for call in calls:
                how = (
                    (lambda c=call: pool.apply_async(task, c))
                    if api == "apply_async"
                    else (lambda c=call: pool.submit(task, *c))
                )
                state, value = _in_time(how)
                if state == "ok":
                    handles[call[0]] = value
                else:
                    outcomes[call[0]] = (state, value)
            for n, handle in handles.items():
                get: Callable[[float], Any] = handle.get if api == "apply_async" else handle.result
                outcomes[n] = _in_time(functools.partial(get, TASK_TIMEOUT), TASK_TIMEOUT + 5)
        else:
            if api == "pool.map":
                state, value = _in_time(
                    lambda: pool.map_async(_task_star, calls, chunksize=1).get(TASK_TIMEOUT),
                    TASK_TIMEOUT + 5,
                )
            else:
                state, value = _in_time(
                    lambda: list(pool.map(task, *zip(*calls), timeout=TASK_TIMEOUT)),
                    TASK_TIMEOUT + 5,
                )
            if state == "hang" or (state == "error" and isinstance(value, TimeoutError)):
                problems.append(f"hang: {api}: the map did not end within {TASK_TIMEOUT} s")
            elif state == "ok":
                problems.append(f"no error: {api}: the map returned although one task met {fault}")
        for n, (state, value) in outcomes.items():
            if state == "hang" or (state == "error" and isinstance(value, TimeoutError)):
                problems.append(f"hang: {api}: task {n} did not end within {TASK_TIMEOUT} s")
            elif n == FAULTY and state == "ok":
                problems.append(f"no error: {api}: the faulty task returned {value!r}")
            elif n != FAULTY and state == "error":
                problems.append(f"healthy task failed: {api}: task {n}: {value!r}")
            elif n != FAULTY and getattr(value, "value", None) != n:
                problems.append(f"wrong result: {api}: task {n} returned {value!r}")
        after = _in_time(
            lambda: (
                pool.apply_async(task, (7, Payload(7), marks, "", "")).get(TASK_TIMEOUT)
                if is_pool
                else pool.submit(task, 7, Payload(7), marks, "", "").result(TASK_TIMEOUT)
            ),
            TASK_TIMEOUT + 5,
        )
        if after[0] != "ok" or getattr(after[1], "value", None) != 7:
            problems.append(
                f"broken pool: {api}: no task runs after the fault: {after[0]} {after[1]!r}"
            )
    finally:
        closed = _in_time(
            (lambda: (pool.close(), pool.join())) if is_pool else (lambda: pool.shutdown(True)),
            TASK_TIMEOUT + 5,
        )
        if closed[0] != "ok":
            problems.append(f"close failed: {api}: {closed[0]} {closed[1]!r}")
    runs = Counter(name.split(".")[0] for name in os.listdir(marks))
    twice = sorted(n for n, count in runs.items() if count > 1 and n != "7")
    if twice:
        problems.append(f"ran twice: {api}: with retries=0, tasks {twice}")
    for name in os.listdir(marks):
        os.unlink(os.path.join(marks, name))
    return problems


def caller(point: str, fault: str, method: Optional[str]) -> int:
    """The caller process of one scenario: prints a JSON list of problems."""
    import manycore

    warm = manycore.Pool(1, context=method)  # what outlives pools on purpose starts here
    warm.apply(os.getpid)
    warm.close()
    warm.join()
    before = _snapshot()
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="soak-faults-") as marks:
        for api in APIS:
            problems += _one_api(api, point, fault, method, marks)
    problems += _leftovers(before)
    print("SOAK-RESULT " + json.dumps(problems), flush=True)
    return 0


def run_task_faults(methods: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Every (point, fault, method) in a caller process of its own; (name, problems)."""
    found = []
    for method in methods:
        for point in POINTS:
            for fault in FAULTS:
                name = f"{point}/{fault}/{method}"
                if point in CALLER_POINTS and fault in LETHAL:
                    continue  # it would end the caller: the user's code runs there
                found.append((name, _run_caller(["--caller", point, fault, method])))
                print(f"  {name}: {'ok' if not found[-1][1] else 'FAILED'}", flush=True)
    return found


def _run_caller(args: list[str]) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.soak_faults", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CALLER_TIMEOUT)
    except subprocess.TimeoutExpired:
        return [f"hang: the caller process did not finish within {CALLER_TIMEOUT} s"]
    if done.returncode < 0:
        return [f"caller died: killed by {signal.Signals(-done.returncode).name}"]
    for line in done.stdout.splitlines():
        if line.startswith("SOAK-QUEUE "):
            print(f"    {line[len('SOAK-QUEUE ') :]}", flush=True)
    for line in done.stdout.splitlines():
        if line.startswith("SOAK-RESULT "):
            problems: list[str] = json.loads(line[len("SOAK-RESULT ") :])
            return problems
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return [f"caller died: exit status {done.returncode}: {' | '.join(tail)}"]


# ------------------------------------------------------------------ queue faults


def producer(q: Any, log: str, first: int) -> None:
    """Put numbered items (every fourth a big one) until killed; log each put that returned."""
    fd = os.open(log, os.O_CREAT | os.O_WRONLY | os.O_APPEND)
    n = first
    while True:
        item = (n, b"x" * BIG) if n % 4 == 0 else (n, None)
        started = time.monotonic()
        try:
            q.put(item, timeout=OP_TIMEOUT)
        except Exception as exc:  # Full: the lock stayed held past the timeout
            os.write(fd, f"error {type(exc).__name__}\n".encode())
            if type(exc).__name__ == "QueueBrokenError":
                return
            continue
        late = time.monotonic() - started - OP_TIMEOUT
        os.write(
            fd, f"put {n}\n".encode() + (f"late {late:.2f}\n".encode() if late > LATE_S else b"")
        )
        n += 1


def consumer(q: Any, log: str) -> None:
    """Get items until killed; log each item got."""
    import queue

    fd = os.open(log, os.O_CREAT | os.O_WRONLY | os.O_APPEND)
    while True:
        started = time.monotonic()
        try:
            n, _ = q.get(timeout=OP_TIMEOUT)
        except queue.Empty:
            n = None
        except Exception as exc:
            os.write(fd, f"error {type(exc).__name__}\n".encode())
            if type(exc).__name__ == "QueueBrokenError":
                return
            continue
        late = time.monotonic() - started - OP_TIMEOUT
        line = (f"got {n}\n" if n is not None else "") + (
            f"late {late:.2f}\n" if late > LATE_S else ""
        )
        if line:
            os.write(fd, line.encode())


def queue_caller(method: Optional[str], seconds: float, seed: int) -> int:
    """The caller process of the queue scenario: prints a JSON list of problems."""
    import manycore

    # Start what outlives queues and processes on purpose (the shm tracker, a fork server).
    first: manycore.queues.Queue[int] = manycore.Queue()
    first.put(0)
    warm = manycore.get_context(method).Process(target=os.getpid)
    warm.start()
    warm.join(TASK_TIMEOUT)
    warm.close()
    gc.collect()
    before = _snapshot()
    with tempfile.TemporaryDirectory(prefix="soak-queue-") as logs:
        problems, summary = _queue_scenario(method, seconds, random.Random(seed), logs)
    problems += _leftovers(before)  # the queue went with _queue_scenario's frame
    print("SOAK-RESULT " + json.dumps(problems), flush=True)
    print("SOAK-QUEUE " + json.dumps(summary), flush=True)
    return 0


def _queue_scenario(
    method: Optional[str], seconds: float, rng: random.Random, logs: str
) -> tuple[list[str], dict[str, Any]]:
    import queue

    import manycore

    ctx = manycore.get_context(method)
    problems: list[str] = []
    kills: Counter[str] = Counter()
    broken = 0
    q: manycore.queues.Queue[int] = manycore.Queue()
    procs: dict[str, Any] = {}
    serial = 0

    def start(role: str) -> None:
        nonlocal serial
        serial += 1
        log = os.path.join(logs, f"{role}-{serial}")
        if role == "producer":
            p = ctx.Process(target=producer, args=(q, log, serial * 10_000_000))
        else:
            p = ctx.Process(target=consumer, args=(q, log))
        p.start()
        procs[log] = p

    for _ in range(QUEUE_PRODUCERS):
        start("producer")
    for _ in range(QUEUE_CONSUMERS):
        start("consumer")
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        time.sleep(rng.uniform(0.5, 1.5) * KILL_EVERY)
        live = [log for log, p in procs.items() if p.exitcode is None]
        if not live:
            break
        victim = rng.choice(live)
        try:
            os.kill(procs[victim].pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        role = os.path.basename(victim).split("-")[0]
        kills[role] += 1
        procs[victim].join(TASK_TIMEOUT)
        procs.pop(victim).close()
        start(role)
    for p in procs.values():  # stop the rest the same way
        if p.exitcode is None:
            os.kill(p.pid, signal.SIGKILL)
        p.join(TASK_TIMEOUT)
        p.close()
    drained: list[int] = []
    while True:
        state, value = _in_time(lambda: q.get(timeout=1.0), 1.0 + LATE_S + 5)
        if state == "hang":
            problems.append("hang: the final drain's get(timeout=1) did not return")
            break
        if state == "error":
            if type(value).__name__ == "QueueBrokenError":
                broken += 1
            elif not isinstance(value, queue.Empty):
                problems.append(f"error: the final drain raised {value!r}")
            break
        drained.append(value[0])
    put: list[int] = []
    got: list[int] = list(drained)
    for name in os.listdir(logs):
        role = name.split("-")[0]
        with open(os.path.join(logs, name)) as f:
            for line in f:
                word, _, rest = line.strip().partition(" ")
                if word == "put":
                    put.append(int(rest))
                elif word == "got":
                    got.append(int(rest))
                elif word == "late":
                    problems.append(f"hang: a {role} call returned {rest} s past its timeout")
                elif word == "error" and rest == "QueueBrokenError":
                    broken += 1
                elif word == "error" and rest != "Full":
                    problems.append(f"error: a {role} call raised {rest}")
    twice = [n for n, c in Counter(got).items() if c > 1]
    if twice:
        problems.append(f"duplicated: {len(twice)} items arrived twice, e.g. {twice[:5]}")
    missing = set(put) - set(got)
    if len(missing) > kills["consumer"] and not broken:
        problems.append(
            f"lost: {len(missing)} items put were never got, more than the "
            f"{kills['consumer']} consumers killed (e.g. {sorted(missing)[:5]})"
        )
    summary = {"kills": dict(kills), "put": len(put), "got": len(got), "broken": broken}
    return problems, summary


def run_queue_faults(
    methods: Sequence[str], seconds: float, seed: int
) -> list[tuple[str, list[str]]]:
    found = []
    for method in methods:
        name = f"queue/kill-mid-operation/{method}"
        found.append((name, _run_caller(["--queue", method, str(seconds), str(seed)])))
        print(f"  {name}: {'ok' if not found[-1][1] else 'FAILED'}", flush=True)
    return found


# ------------------------------------------------------------------ driver


def report(found: list[tuple[str, list[str]]]) -> int:
    failed = [(name, problems) for name, problems in found if problems]
    kinds = Counter(p.split(":")[0] for _, problems in failed for p in problems)
    for name, problems in failed:
        for problem in problems:
            print(f"    {name}: {problem}", file=sys.stderr)
    print(
        f"soak faults: {len(found) - len(failed)} of {len(found)} scenarios passed"
        + (f"; failure kinds: {dict(kinds)}" if kinds else ""),
        flush=True,
    )
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak_faults")
    parser.add_argument("--start-methods", default="fork,spawn,default")
    parser.add_argument("--queue-seconds", type=float, default=QUEUE_SECONDS)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--caller", nargs=3, metavar=("POINT", "FAULT", "METHOD"))
    parser.add_argument("--queue", nargs=3, metavar=("METHOD", "SECONDS", "SEED"))
    args = parser.parse_args(argv)
    if args.caller:
        point, fault, method = args.caller
        return caller(point, fault, None if method == "default" else method)
    if args.queue:
        method, seconds, seed = args.queue
        return queue_caller(None if method == "default" else method, float(seconds), int(seed))
    methods = [m.strip() for m in args.start_methods.split(",") if m.strip()]
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"soak faults: start methods {methods}, seed {seed}", flush=True)
    found = run_queue_faults(methods, args.queue_seconds, seed)
    found += run_task_faults(methods)
    return report(found)


if __name__ == "__main__":
    sys.exit(main())
