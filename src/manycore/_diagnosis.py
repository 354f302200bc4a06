"""What the local scheduler tells people about its workers: why one was lost, why the pool
could not start any, and what a busy one is doing.

These are messages, built only when something went wrong or someone asked (``stacks()``),
never on the path of a task. A message says what happened, the likely cause and the fix: a
worker SIGKILLed while its memory was a large share of the machine's was most likely the
kernel's OOM killer, and the message says so, with the figures.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence

from ._errors import InitializerError, PoolBrokenError, WorkerLostError
from ._launch import describe_status
from ._outcome import Described
from ._stats import WorkerStack
from ._worker import STACK_SIGNAL

__all__ = [
    "dump_stacks",
    "lost_error",
    "lost_outcome_error",
    "share_of",
    "size",
    "startup_error",
]


def lost_error(
    index: int, pid: int, rss: int, status: int | None, task: Described, called: bool = True
) -> WorkerLostError:
    """The error of ``task``, whose worker (seat ``index``, ``pid``; its resident memory was
    last seen at ``rss`` bytes) ended with ``status`` while running it (``called``), or while
    rebuilding its function and arguments: the likely cause (the OOM killer, a crash in C
    code, an argument whose unpickling crashes) and what to do."""
    exitcode, sig, words = describe_status(status)
    described = task.describe()
    cause = ""
    memory = ""
    if rss:
        share = share_of(rss)
        memory = f" Its last known resident memory was {size(rss)}"
        if share:
            shown = f"{share:.0%}" if share >= 0.01 else "under 1%"
            memory += f" ({shown} of this machine's {size(_TOTAL_MEMORY)})"
        memory += "."
    if sig == signal.SIGKILL:
        likely = "most likely" if share_of(rss) >= 0.1 else "possibly"
        cause = (
            f"{memory} manycore did not send that SIGKILL: it was {likely} the kernel's OOM "
            "killer, which does this when memory runs out (check `dmesg` or the container's "
            "memory limit). Lower the number of workers or the memory each task uses, or set "
            "max_memory_per_child."
        )
    elif sig == signal.SIGSEGV and not called:
        cause = (
            " It crashed while unpickling the task's function or arguments, before its code "
            "started: an argument whose unpickling crashes (its class's __reduce__ or "
            f"__setstate__) is the likely cause.{memory}"
        )
    elif sig == signal.SIGSEGV:
        cause = (
            " A segmentation fault is a crash in C code (an extension module, ctypes): the "
            f"Python code did not cause it directly.{memory}"
        )
    elif memory:
        cause = memory
    return WorkerLostError(
        f"worker {index} (pid {pid}) {words} while "
        f"{'running' if called else 'rebuilding the function and arguments of'} {described}."
        f"{cause} The pool replaced the worker; other tasks are unaffected.",
        pid=pid,
        exitcode=exitcode,
        signal=sig,
        task=described,
    )


def lost_outcome_error(
    index: int, pid: int, status: int | None, task: Described, stopped: str = ""
) -> WorkerLostError:
    """The error of ``task``, which worker ``index`` (``pid``) ran, or may have run, before it
    ended with ``status`` (``stopped``: why the pool stopped it), and whose outcome was lost
    with the worker: it is not run again unless its retries allow, since its effects may
    have happened (at most once)."""
    exitcode, sig, words = describe_status(status)
    described = task.describe()
    why = f" (the pool {stopped.replace('stopped: ', 'stopped it: ', 1)})" if stopped else ""
    return WorkerLostError(
        f"worker {index} (pid {pid}) {words}{why} after it had started {described}; the outcome "
        "was lost with the worker. The task is not run again, since its effects may have "
        "happened already (with retries=0 a task runs at most once; set retries to run it "
        "again). The pool replaced the worker; other tasks are unaffected.",
        pid=pid,
        exitcode=exitcode,
        signal=sig,
        task=described,
    )


def _machine_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


_TOTAL_MEMORY = _machine_memory()


def share_of(rss: int) -> float:
    """``rss`` as a share of this machine's memory (0.0 when unknown)."""
    return rss / _TOTAL_MEMORY if _TOTAL_MEMORY else 0.0


def size(count: int) -> str:
    """``1.5 GiB``: a byte count for people."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def startup_error(
    failures: int, pid: int, status: int | None, initializer: bool
) -> PoolBrokenError:
    """The error that breaks a pool whose last ``failures`` workers died before they were
    ready, the last one ``pid`` with ``status``; an ``InitializerError`` if the pool has an
    ``initializer`` (it is then the likely cause)."""
    _, _, words = describe_status(status)
    what = f"{failures} workers in a row died before they were ready"
    last = f"the last one, pid {pid}, {words}"
    if initializer:
        return InitializerError(
            f"{what}, while running the pool's initializer ({last}); no worker can start, "
            "so every task fails. Fix the initializer."
        )
    return PoolBrokenError(
        f"{what} ({last}); the pool cannot start workers. Check what the worker imports "
        "and the machine's limits (memory, processes)."
    )


def dump_stacks(
    busy: Sequence[tuple[int, int, int, Described, float]], timeout: float
) -> tuple[WorkerStack, ...]:
    """Ask each busy worker's faulthandler for its stacks; read what each wrote."""
    asked = []
    for index, pid, fd, task, running_for in busy:
        path = f"/proc/{pid}/fd/{fd}"
        try:
            before = os.stat(path).st_size if fd >= 0 else -1
            if before >= 0:
                os.kill(pid, STACK_SIGNAL)
        except OSError:
            before = -1
        asked.append((index, pid, path, before, task, running_for))
    deadline = time.monotonic() + timeout
    stacks = []
    for index, pid, path, before, task, running_for in asked:
        text = ""
        if before >= 0:
            text = _read_dump(path, before, deadline)
        stacks.append(WorkerStack(index, pid, task.describe(), running_for, text))
    return tuple(stacks)


def _read_dump(path: str, offset: int, deadline: float) -> str:
    """What was appended to ``path`` after ``offset``, once it stops growing."""
    last = offset
    steady = 0
    while time.monotonic() < deadline:
        try:
            size = os.stat(path).st_size
        except OSError:
            return ""
        if size > offset and size == last:
            steady += 1
            if steady >= 2:
                break
        else:
            steady = 0
        last = size
        time.sleep(0.01)
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            return file.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return ""
