"""Fixtures for every test: the start-method matrix, the leak check, Hypothesis settings."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from typing import Iterator, Optional

import pytest
from hypothesis import HealthCheck, settings

from tests import helpers

# Processes this run starts by exec carry the token, so the leak check finds them even when
# they were orphaned (reparented away from this process).
os.environ[helpers.TOKEN_VAR] = f"{os.getpid()}-{uuid.uuid4().hex}"

settings.register_profile(
    "manycore",
    deadline=None,
    max_examples=20,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "manycore"))

START_METHODS = [None, "fork", "forkserver", "spawn"]


@pytest.fixture(params=START_METHODS, ids=["default", "fork", "forkserver", "spawn"])
def start_method(request: pytest.FixtureRequest) -> Optional[str]:
    """The value a test passes as ``context=`` / ``mp_context=``: None means the default."""
    return request.param


# How long processes and threads get to finish after a test before they count as leaked.
LEAK_GRACE = 3.0
SHM = "/dev/shm"


def _fork_servers() -> set[int]:
    """The helper processes that live on purpose for as long as their owner lives: the
    default fork server and, once the "forkserver" start method was used, that one; and the
    stdlib's resource tracker, which spawn and forkserver children share with this process
    (started by the first of them, as the stdlib's spawn starts it)."""
    import multiprocessing.resource_tracker

    tracker = multiprocessing.resource_tracker._resource_tracker._pid  # type: ignore[attr-defined]
    helpers_ = set() if tracker is None else {tracker}
    try:
        from manycore import _launch
    except ImportError:
        return helpers_
    every = getattr(_launch, "fork_server_pids", None)
    if every is not None:
        return helpers_ | set(every())
    pid = _launch.fork_server_pid()
    return helpers_ if pid is None else helpers_ | {pid}


def _owned() -> set[helpers.Proc]:
    return helpers.descendants() | helpers.tagged()


# /dev/shm is shared by the whole machine: count only the names this test run's processes
# can create (manycore's own, and the stdlib's shared memory and semaphores it may use), so a
# developer's other jobs (a benchmark with joblib running beside the suite, say) are not
# reported as our leaks.
OURS = ("manycore", "psm_", "sem.mp-", "mp-")


def _shm() -> set[str]:
    try:
        return {name for name in os.listdir(SHM) if name.startswith(OURS)}
    except OSError:
        return set()


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a process, a thread or a shared-memory segment behind."""
    threads_before = set(threading.enumerate())
    procs_before = _owned()
    shm_before = _shm()
    yield
    deadline = time.monotonic() + LEAK_GRACE
    while True:
        servers = _fork_servers()
        procs = {p for p in _owned() - procs_before if p.pid not in servers}
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        shm = _shm() - shm_before
        if not (procs or threads or shm) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    problems = []
    if procs:
        listing = ", ".join(f"{p.pid} ({helpers.cmdline(p.pid)})" for p in sorted(procs))
        problems.append(f"processes left running: {listing}")
        for p in procs:  # don't let one leak fail every later test
            if helpers.alive(p):
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except OSError:
                    pass
    if threads:
        problems.append(f"threads left running: {[t.name for t in threads]}")
    if shm:
        shm -= helpers.held_by_others(shm)
    if shm:
        problems.append(f"shared-memory segments left in {SHM}: {sorted(shm)}")
    if problems:
        pytest.fail("leak after test: " + "; ".join(problems), pytrace=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the Dask backend's tests last.

    Importing ``distributed`` changes process-wide state that other tests observe: it
    registers pickling support for exceptions (tblib), so an exception that plain pickle
    cannot rebuild suddenly can be, and its session cluster keeps threads and processes.
    Forked workers inherit all of it. Those tests' own fixtures account for it.
    """
    items.sort(key=lambda item: item.path.name == "test_dask.py")
