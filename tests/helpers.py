"""Process and thread helpers shared by the tests: /proc scans and timeouts on blocking calls.

Linux only: processes are found through ``/proc`` (psutil is not a dependency).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

ROOT = Path(__file__).resolve().parent.parent

# Every process this test run starts by exec (spawned workers, a fresh fork server, the scripts
# the tests run) inherits this variable, so it can be found even after it has been orphaned.
TOKEN_VAR = "MANYCORE_TESTS_RUN"

# Generous limits for blocking calls: a hang fails the test within these, long before the
# pytest-timeout backstop, while a slow 2-core CI machine never trips them.
TIMEOUT = 60.0


class Proc(NamedTuple):
    """A process, identified by pid and start time so a recycled pid is not mistaken for it."""

    pid: int
    starttime: int


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, starttime) of a process from /proc, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is field 3 of proc(5) (state), fields[1] the ppid, fields[19] the start time.
    return int(fields[1]), fields[0].decode(), int(fields[19])


def all_pids() -> list[int]:
    """Every process id on the machine (from /proc)."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def proc(pid: int) -> Proc | None:
    """The running process with this pid, or None if there is none (zombies count as gone)."""
    st = _stat(pid)
    if st is None or st[1] in ("Z", "X", "x"):
        return None
    return Proc(pid, st[2])


def procs(pids: Iterable[int]) -> set[Proc]:
    """The processes among ``pids`` that are running now."""
    return {p for p in (proc(pid) for pid in pids) if p is not None}


def alive(p: Proc) -> bool:
    st = _stat(p.pid)
    return st is not None and st[1] not in ("Z", "X", "x") and st[2] == p.starttime


def descendants(root: int | None = None) -> set[Proc]:
    """Every running process below ``root`` (default: this process) in the process tree."""
    root = os.getpid() if root is None else root
    children: dict[int, list[tuple[int, str, int]]] = {}
    for pid in all_pids():
        st = _stat(pid)
        if st is not None:
            children.setdefault(st[0], []).append((pid, st[1], st[2]))
    found: set[Proc] = set()
    stack = [root]
    while stack:
        for pid, state, start in children.get(stack.pop(), ()):
            stack.append(pid)
            if state not in ("Z", "X", "x"):
                found.add(Proc(pid, start))
    return found


def tagged() -> set[Proc]:
    """Running processes (other than this one) that carry this test run's token."""
    token = os.environ.get(TOKEN_VAR)
    if not token:
        return set()
    needle = f"{TOKEN_VAR}={token}".encode() + b"\0"
    me = os.getpid()
    found: set[Proc] = set()
    for pid in all_pids():
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env:
            p = proc(pid)
            if p is not None:
                found.add(p)
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def wait_gone(processes: Iterable[Proc], timeout: float) -> set[Proc]:
    """Wait up to ``timeout`` seconds for the processes to end; return those still running."""
    remaining = set(processes)
    deadline = time.monotonic() + timeout
    while True:
        remaining = {p for p in remaining if alive(p)}
        if not remaining or time.monotonic() >= deadline:
            return remaining
        time.sleep(0.02)


def call_with_timeout(fn: Callable[..., Any], *args: Any, timeout: float = TIMEOUT) -> Any:
    """Run a blocking call that takes no timeout of its own (``join``, ``shutdown``) in a
    thread; fail if it has not returned within ``timeout`` seconds."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="test-call-with-timeout", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"{fn!r} did not return within {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def drain(iterator: Any, timeout: float = TIMEOUT) -> list[Any]:
    """All items of a ``Pool.imap``-style iterator, within ``timeout`` seconds: each awaited
    with ``next(timeout)`` where the iterator has it (as the stdlib's ``IMapIterator`` does),
    else consumed on a helper thread."""
    if not hasattr(iterator, "next"):
        return call_with_timeout(list, iterator, timeout=timeout)
    items = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            items.append(iterator.next(timeout=max(0.0, deadline - time.monotonic())))
        except StopIteration:
            return items


def take(iterator: Any, n: int, timeout: float = TIMEOUT) -> list[Any]:
    """The first ``n`` items of a ``Pool.imap``-style iterator, within ``timeout`` seconds."""
    if not hasattr(iterator, "next"):
        return call_with_timeout(lambda: [next(iterator) for _ in range(n)], timeout=timeout)
    deadline = time.monotonic() + timeout
    return [iterator.next(timeout=max(0.0, deadline - time.monotonic())) for _ in range(n)]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def script_env() -> dict[str, str]:
    """Environment for a Python subprocess that can import ``manycore`` and ``tests``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("PYTHONSTARTUP", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_python(
    args: list[str], timeout: float = TIMEOUT, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` to completion with a timeout; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=script_env(),
        cwd=str(ROOT),
        check=False,
        **kwargs,
    )


@contextmanager
def python_running(code: str) -> Iterator[subprocess.Popen[bytes]]:
    """``python -c code`` with its stdout piped, killed and reaped when the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=str(ROOT), env=script_env()
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def shm_left(names: Iterable[str], timeout: float, directory: str = "/dev/shm") -> list[str]:
    """The ``names`` still in ``directory`` after waiting up to ``timeout`` for all to go."""
    names = list(names)

    def left() -> list[str]:
        return [n for n in names if os.path.lexists(os.path.join(directory, n))]

    wait_until(lambda: not left(), timeout)
    return left()


def held_by_others(names: Iterable[str], directory: str = "/dev/shm") -> set[str]:
    """Those of ``names`` that a live process outside this test run has mapped or open.

    They are another job's (a second test run or a benchmark on the same machine creates
    names of the same shapes), not a leak of ours: a leaked name is one nobody holds.
    """
    ours = {p.pid for p in descendants() | tagged()} | {os.getpid()}
    paths = {f"{directory}/{name}": name for name in names}
    held: set[str] = set()
    for pid in all_pids():
        if pid in ours:
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                maps = f.read()
            fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # gone, or not ours to read
            continue
        for path, name in paths.items():
            if path in maps or path in fds:
                held.add(name)
    return held


def read_line(stream: Any, timeout: float = TIMEOUT) -> str:
    """One line from a subprocess pipe, waiting at most ``timeout`` seconds for it."""
    line = b""
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"no complete line within {timeout} s (got {line!r})")
            chunk = os.read(fd, 1)
            if not chunk:
                raise AssertionError(f"stream closed before a complete line (got {line!r})")
            line += chunk
    return line.decode()


def start_process(start_method: str | None, target: Callable[..., Any], *args: Any) -> Any:
    """A started ``manycore.Process`` under ``start_method`` (None: the default)."""
    from manycore import get_context

    process = get_context(start_method).Process(target=target, args=args)
    process.start()
    return process


def join_ok(process: Any) -> None:
    """Join ``process`` (within TIMEOUT) and check that it exited with status 0."""
    process.join(TIMEOUT)
    assert process.exitcode == 0, f"child exit code {process.exitcode}"


def every_worker(
    run: Callable[[], Iterable[int]], count: int, timeout: float = TIMEOUT
) -> set[int]:
    """The pids ``run()`` (a map of ``getpid_slow``) returns, over as many runs as it takes
    for ``count`` different workers to take a share (a loaded machine can let one worker
    take a whole map), for at most ``timeout`` seconds."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < count and time.monotonic() < deadline:
        pids.update(run())
    assert len(pids) >= count, f"only {len(pids)} of {count} workers ever took an item"
    return pids
