"""Task functions for tests/test_control.py (timeouts, cancels, retries, recycling, insight).

They live in an importable module so they travel by reference and every start method can
import them in a worker. Functions that keep state across runs (how many times they ran,
whether they crashed already) keep it in files under a directory the test gives them: a
worker that is killed cannot report anything else.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import threading
import time
from typing import Any

# --- bookkeeping in files ---------------------------------------------------------------------


def record_run(path: str) -> int:
    """Append this worker's pid to ``path`` (one line per run); return how many runs so far.

    O_APPEND writes of a short line are atomic, so concurrent runs never mix their lines.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return count_runs(path)


def count_runs(path: str) -> int:
    try:
        with open(path) as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def announce(path: str) -> None:
    """Write the worker's pid to ``path`` atomically: the test then knows the task started."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, path)


# --- tasks that run long ----------------------------------------------------------------------


def square(x: Any) -> Any:
    return x * x


def add(a: Any, b: Any) -> Any:
    return a + b


def getpid(_: Any = None) -> int:
    return os.getpid()


def getpid_slow(_: Any = None, delay: float = 0.05) -> int:
    time.sleep(delay)
    return os.getpid()


def nap(seconds: float, value: Any = None) -> Any:
    """time.sleep, which blocks in C code."""
    time.sleep(seconds)
    return value


def slow_if(x: int, slow: int, seconds: float = 30.0) -> int:
    """x * x, except that item ``slow`` sleeps ``seconds`` first."""
    if x == slow:
        time.sleep(seconds)
    return x * x


def slow_add_if(a: int, b: int, slow: int, seconds: float = 30.0) -> int:
    if a == slow:
        time.sleep(seconds)
    return a + b


def stubborn_sleep(seconds: float) -> str:
    """Ignore SIGTERM, then sleep: only SIGKILL stops it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)
    return "finished"


def stubborn_event_wait(seconds: float) -> str:
    """Ignore SIGTERM and block on a lock in C (threading.Event.wait) that nobody sets."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Event().wait(seconds)
    return "finished"


def libc_sleep(seconds: int) -> str:
    """Block inside libc's sleep(3) through ctypes, SIGTERM ignored: no Python code runs."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    libc = ctypes.CDLL(None)
    libc.sleep(ctypes.c_uint(seconds))
    return "finished"


def announce_then_sleep(path: str, seconds: float) -> int:
    announce(path)
    time.sleep(seconds)
    return os.getpid()


def run_then_sleep(path: str, seconds: float) -> int:
    """Count a run in ``path``, then sleep: for timeouts that may be retried."""
    record_run(path)
    time.sleep(seconds)
    return os.getpid()


def write_after(path: str, seconds: float) -> str:
    """Sleep, then leave a file behind: the side effect of a task that completed."""
    time.sleep(seconds)
    with open(path, "w") as f:
        f.write("done")
    return "done"


def write_now(path: str) -> str:
    """Leave a file behind at once: the side effect of a task that started at all."""
    with open(path, "w") as f:
        f.write("done")
    return "done"


# --- crashes and failures ---------------------------------------------------------------------


class FlakyError(Exception):
    """A user error that a test retries with ``retry_on``."""


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)  # not reached


def crash_once(path: str, value: Any = "ok") -> Any:
    """SIGKILL the worker on the first run (as counted in ``path``); return ``value`` after."""
    if record_run(path) == 1:
        kill_self()
    return value


def crash_always(path: str) -> Any:
    record_run(path)
    kill_self()


def crash_item_once(x: int, directory: str, bad: int) -> int:
    """x * x; item ``bad`` SIGKILLs its worker the first time it runs."""
    if x == bad and record_run(os.path.join(directory, f"item{x}")) == 1:
        kill_self()
    return x * x


def flaky(path: str, failures: int) -> str:
    """Raise FlakyError on the first ``failures`` runs, then succeed."""
    runs = record_run(path)
    if runs <= failures:
        raise FlakyError(f"run {runs} failed on purpose")
    return f"ok after {runs} runs"


def raise_value_error(x: Any = None) -> Any:
    raise ValueError(f"bad value: {x!r}")


def raise_if(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"bad value: {x!r}")
    return x * x


def fail_first_then_slow(x: int, seconds: float = 0.3) -> int:
    """Item 0 fails at once; every other item takes ``seconds``."""
    if x == 0:
        raise ValueError("item 0 fails")
    time.sleep(seconds)
    return x * x


def sigkill_with_args(label: str, number: int) -> None:
    """SIGKILL the worker: the error must name this function and preview its arguments."""
    kill_self()


def sigkill_after_growing(mib: int, seconds: float) -> None:
    """Hold ``mib`` MiB resident for ``seconds`` (long enough for the owner to sample it),
    then SIGKILL the worker, as the OOM killer would."""
    block = b"\x01" * (mib << 20)  # written, so resident
    time.sleep(seconds)
    kill_self()
    del block


def segfault_task(label: str) -> None:
    faulthandler.disable()  # no dump on the test's terminal
    ctypes.string_at(0)


# --- memory -----------------------------------------------------------------------------------

_KEPT: list[bytes] = []


def grow(mib: int) -> int:
    """Allocate ``mib`` MiB, touch every page, keep it in a module global; return the pid."""
    _KEPT.append(b"\x01" * (mib << 20))
    return os.getpid()


def rss_mib(_: Any = None) -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def announce_item(x: int, directory: str, seconds: float) -> int:
    """Write the worker's pid to ``directory/<x>``, then sleep: a map item the test can find."""
    announce(os.path.join(directory, str(x)))
    time.sleep(seconds)
    return x


def grow_if(x: int, big: int, mib: int) -> tuple[int, int]:
    """(x * x, pid); item ``big`` first grows the worker by ``mib`` MiB, kept."""
    if x == big:
        grow(mib)
    return x * x, os.getpid()
