"""Ctrl-C and SIGKILL of the caller, each in a subprocess that uses a pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests import helpers

# No `if __name__ == "__main__":` guard, on purpose: manycore never re-runs __main__.
SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import manycore

    method = None if sys.argv[1] == "default" else sys.argv[1]

    def pid(_):
        time.sleep(0.05)
        return os.getpid()

    def nap(seconds):
        time.sleep(seconds)
        return seconds

    pool = manycore.Pool(2, context=method)
    pids = sorted(set(pool.map(pid, range(8), chunksize=1)))
    print("PIDS", *pids, flush=True)
    result = pool.map_async(nap, [30.0] * 4, chunksize=1)
    print("MAPPING", flush=True)
    if sys.argv[2] == "async":
        result.get(timeout=60)
    else:
        pool.map(nap, [30.0] * 4, chunksize=1)
    print("FINISHED", flush=True)
    """
)


def start(method: str | None, mode: str = "sync") -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, method or "default", mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=helpers.script_env(),
        cwd=str(helpers.ROOT),
        start_new_session=True,  # its own process group, like a job in a terminal
    )


def wait_for_workers(proc: subprocess.Popen[bytes]) -> tuple[list[int], set[helpers.Proc]]:
    """The worker pids the script printed, and every process below the script, once its long
    map is running."""
    line = helpers.read_line(proc.stdout, timeout=60)
    assert line.startswith("PIDS "), line
    pids = [int(p) for p in line.split()[1:]]
    assert helpers.read_line(proc.stdout, timeout=30).strip() == "MAPPING"
    time.sleep(0.5)  # let the workers pick up the long tasks
    tree = helpers.descendants(proc.pid)
    assert {p.pid for p in tree} >= set(pids), (pids, tree)
    return pids, tree


def finish(proc: subprocess.Popen[bytes], timeout: float) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"the script did not exit within {timeout} s; stderr:\n{err.decode()}")
    return out.decode(), err.decode()


def test_ctrl_c_during_map(start_method):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it."""
    with start(start_method) as proc:
        try:
            _, tree = wait_for_workers(proc)
            os.killpg(proc.pid, signal.SIGINT)
            # the tasks would take 30 s: a prompt exit means the wait was interrupted
            out, err = finish(proc, timeout=10)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "FINISHED" not in out
    assert "KeyboardInterrupt" in err, err
    assert err.count("Traceback") == 1, f"worker tracebacks were printed:\n{err}"
    assert helpers.wait_gone(tree, 5) == set(), "processes outlived the script"


def test_sigint_to_the_caller_only_during_get():
    """SIGINT to the caller alone (``kill -INT pid``), waiting in ``AsyncResult.get``."""
    with start(None, "async") as proc:
        try:
            _, tree = wait_for_workers(proc)
            os.kill(proc.pid, signal.SIGINT)
            out, err = finish(proc, timeout=10)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert "FINISHED" not in out
    assert "KeyboardInterrupt" in err, err
    assert err.count("Traceback") == 1, err
    assert helpers.wait_gone(tree, 5) == set(), "processes outlived the script"


def test_caller_sigkill_leaves_no_orphans(start_method):
    with start(start_method) as proc:
        try:
            pids, tree = wait_for_workers(proc)
            workers = helpers.procs(pids)
            assert len(workers) == len(pids)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    # the workers (busy with 30 s tasks) and the fork server notice and exit by themselves
    assert helpers.wait_gone(workers, 5) == set(), "workers outlived their killed owner"
    assert helpers.wait_gone(tree, 5) == set(), "processes outlived their killed owner"
