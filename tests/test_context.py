"""Contexts and start methods as a child sees them, and the stdlib's thread pools as
``manycore.dummy`` and ``manycore.pool`` hand them out (their waits time out with
``manycore.TimeoutError``)."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any, Optional

import pytest

import manycore
import manycore.dummy
import manycore.pool
from tests.helpers import TIMEOUT

METHODS = ["fork", "forkserver", "spawn"]


def send_start_method(conn: Any) -> None:
    conn.send(manycore.get_start_method())


def start_method_in_child(ctx: Any) -> str:
    reader, writer = ctx.Pipe(duplex=False)
    p = ctx.Process(target=send_start_method, args=(writer,))
    p.start()
    writer.close()
    try:
        assert reader.poll(TIMEOUT), "nothing arrived from the child"
        return str(reader.recv())
    finally:
        reader.close()
        p.join(TIMEOUT)
        assert p.exitcode == 0


@pytest.mark.parametrize("method", METHODS)
def test_a_child_of_a_context_reports_its_start_method(method: str) -> None:
    ctx = manycore.get_context(method)
    assert start_method_in_child(ctx) == method


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("child_method", [None, "spawn"])
def test_a_child_keeps_the_default_its_parent_set(method: str, child_method: Optional[str]):
    # A process of the default context inherits the parent's set_start_method(); one of a
    # context reports that context's method, whatever the parent's default.
    old = manycore.get_start_method(allow_none=True)
    manycore.set_start_method(method, force=True)
    try:
        ctx = manycore.get_context(child_method) if child_method else manycore
        assert start_method_in_child(ctx) == (child_method or method)
    finally:
        manycore.set_start_method(old, force=True)


def test_the_default_context_in_a_child_is_the_fork_server_when_nothing_was_set() -> None:
    assert manycore.get_start_method(allow_none=True) is None
    assert start_method_in_child(manycore) == "forkserver"


# --- thread pools -------------------------------------------------------------------------


def raise_the_stdlib_timeout() -> None:
    raise multiprocessing.TimeoutError("raised by the task itself")


THREAD_POOLS = {
    "dummy.Pool": lambda: manycore.dummy.Pool(2),
    "pool.ThreadPool": lambda: manycore.pool.ThreadPool(2),
}


@pytest.mark.parametrize("make", THREAD_POOLS.values(), ids=THREAD_POOLS.keys())
def test_thread_pool_waits_time_out_with_manycores_error(make: Any) -> None:
    release = threading.Event()
    pool = make()
    try:
        results = [
            pool.apply_async(release.wait, (TIMEOUT,)),
            pool.map_async(release.wait, [TIMEOUT]),
            pool.starmap_async(release.wait, [(TIMEOUT,)]),
        ]
        for result in results:
            with pytest.raises(manycore.TimeoutError):
                result.get(timeout=0.01)
        release.set()
        assert [r.get(timeout=TIMEOUT) for r in results] == [True, [True], [True]]
        for imap in (pool.imap, pool.imap_unordered):
            held = threading.Event()
            iterator = imap(held.wait, [TIMEOUT])
            with pytest.raises(manycore.TimeoutError):
                iterator.next(timeout=0.01)
            held.set()
            assert list(iterator) == [True]
            with pytest.raises(StopIteration):
                iterator.next(timeout=0.01)
        # A task's own TimeoutError is the task's error, not a timed-out wait.
        own = pool.apply_async(raise_the_stdlib_timeout)
        with pytest.raises(multiprocessing.TimeoutError, match="raised by the task itself"):
            own.get(timeout=TIMEOUT)
        assert own.ready()
    finally:
        release.set()
        pool.close()
        pool.join()


def test_the_thread_pools_state_names() -> None:
    pool = manycore.pool.ThreadPool(1)
    assert pool._state == manycore.pool.RUN  # type: ignore[attr-defined]
    pool.close()
    assert pool._state == manycore.pool.CLOSE  # type: ignore[attr-defined]
    pool.join()
