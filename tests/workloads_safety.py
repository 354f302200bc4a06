"""Functions and objects for tests/test_caller_safety.py: arguments and results whose
unpickling crashes, exits or takes long, and tasks that leave a forked child behind."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time
from typing import Any


class SegfaultsWhenUnpickled:
    """Pickles fine; rebuilding it segfaults the process that does it."""

    def __reduce__(self) -> Any:
        return (faulthandler._sigsegv, ())


class ExitsWhenUnpickled:
    """Pickles fine; rebuilding it raises SystemExit("boom")."""

    def __reduce__(self) -> Any:
        return (sys.exit, ("boom",))


# What _slowly did in this process: ("start" | "end", the thread's name), in order.
REBUILDS: list[tuple[str, str]] = []


def _slowly(seconds: float, value: Any) -> Any:
    import threading

    name = threading.current_thread().name
    REBUILDS.append(("start", name))
    time.sleep(seconds)
    REBUILDS.append(("end", name))
    return value


class SlowToUnpickle:
    """Pickles fine; rebuilding it takes ``seconds`` and gives ``value``."""

    def __init__(self, seconds: float, value: Any) -> None:
        self.seconds = seconds
        self.value = value

    def __reduce__(self) -> Any:
        return (_slowly, (self.seconds, self.value))


def return_exits_when_unpickled(_: Any = None) -> Any:
    return ExitsWhenUnpickled()


def return_slow_to_unpickle(seconds: float, value: Any) -> Any:
    return SlowToUnpickle(seconds, value)


def sleep_then(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def fork_then_die(pid_file: str, child_sleeps: float) -> None:
    """Fork a child that sleeps ``child_sleeps`` seconds (its pid goes to ``pid_file``), then
    SIGKILL this worker: only the worker dies, and the child keeps its descriptors open."""
    child = os.fork()
    if child == 0:
        try:
            time.sleep(child_sleeps)
        finally:
            os._exit(0)
    with open(pid_file + ".tmp", "w") as file:
        file.write(str(child))
    os.rename(pid_file + ".tmp", pid_file)
    os.kill(os.getpid(), signal.SIGKILL)


def count_then_die(path: str, die: bool) -> int:
    """Append a line to ``path`` (one per run of this call), then SIGKILL the worker if
    ``die``; else return the worker's pid."""
    with open(path, "a") as file:
        file.write("x\n")
    if die:
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def count_run(path: str, value: int) -> int:
    """Append ``value`` to ``path`` (a record that this call ran), return it."""
    with open(path, "a") as file:
        file.write(f"{value}\n")
    return value


def count_then_die_star(item: tuple[str, bool]) -> int:
    return count_then_die(*item)
