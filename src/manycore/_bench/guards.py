"""What keeps one misbehaving pool from spoiling a whole benchmark run.

``deadline`` turns a hang into a ``BenchTimeout``, so a pool that never answers (the stdlib
``Pool`` after a worker dies) shows up as an error in the table instead of a stuck terminal.
``ignore_fork_warnings`` silences the warning Python 3.12+ gives on each fork from a
process with threads: the stdlib pools are measured with their default start method.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from typing import Iterator

__all__ = ["BenchTimeout", "deadline", "ignore_fork_warnings"]


class BenchTimeout(Exception):
    """A measured call took longer than its deadline (the pool under test likely hung)."""


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Raise ``BenchTimeout`` in the main thread if the block runs longer than ``seconds``.

    A SIGALRM handler raises the exception; lock and condition waits are interruptible by
    signals on POSIX, exactly as Ctrl-C interrupts them, so this also ends a call that is
    blocked waiting for a pool that will never answer. Off the main thread, or where there
    is no SIGALRM, the block runs unguarded.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise BenchTimeout(f"{what} did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def ignore_fork_warnings() -> Iterator[None]:
    """Silence Python 3.12+'s warning about fork() in a multi-threaded process.

    The stdlib pools are measured as users run them, with their default start method; once
    another pool's threads exist, 3.12+ warns on each fork. The warning is about the very
    hazard manycore's default avoids, not about the measurement.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r".*use of fork\(\) may lead to deadlocks",
            category=DeprecationWarning,
        )
        yield
