"""manycore's Manager: a SyncManager whose server is a manycore Process, and proxies passed to
manycore Processes under every start method."""

from __future__ import annotations

import multiprocessing
import multiprocessing.resource_tracker
from typing import Any, Optional

import pytest

from manycore._managers import BaseManager, Manager, SharedMemoryManager, SyncManager
from manycore._process import Process
from tests.helpers import TIMEOUT

NAMES = {None: "default", "fork": "fork", "spawn": "spawn", "forkserver": "forkserver"}


class MethodContext:
    """What a manycore context offers managers: a Process class with its start method."""

    def __init__(self, method: Optional[str]) -> None:
        self.Process = type(f"Process_{NAMES[method]}", (Process,), {"_start_method": method})


@pytest.fixture(scope="module", autouse=True)
def resource_tracker() -> None:
    """SharedMemoryManager starts the stdlib's resource tracker, a process that lives as long
    as this one: start it before any test's leak check counts processes."""
    multiprocessing.resource_tracker.ensure_running()


def joined(*processes: Any) -> None:
    for p in processes:
        p.join(TIMEOUT)
        assert p.exitcode is not None, f"{p} did not exit within {TIMEOUT} s"


def count_and_append(shared: Any, items: Any, lock: Any, i: int) -> None:
    for _ in range(25):
        with lock:
            shared["count"] = shared.get("count", 0) + 1
    items.append(i)


def use_the_rest(namespace: Any, queue: Any, event: Any, value: Any) -> None:
    namespace.greeting = "hi from " + multiprocessing.current_process().name
    queue.put([1, 2, 3])
    value.value += 5
    event.set()


def test_dict_list_lock_shared_by_four_processes(start_method):
    ctx = MethodContext(start_method)
    with SyncManager(ctx=ctx) as manager:
        shared, items, lock = manager.dict(), manager.list(), manager.Lock()
        processes = [
            ctx.Process(target=count_and_append, args=(shared, items, lock, i)) for i in range(4)
        ]
        for p in processes:
            p.start()
        joined(*processes)
        assert [p.exitcode for p in processes] == [0, 0, 0, 0], [p.exception for p in processes]
        assert shared["count"] == 100
        assert sorted(items) == [0, 1, 2, 3]
        server = manager._process
        assert isinstance(server, ctx.Process) and server.is_alive()
    server.join(TIMEOUT)
    assert server.exitcode == 0


def test_namespace_queue_event_value_with_the_default_manager():
    with Manager() as manager:
        namespace, queue = manager.Namespace(), manager.Queue()
        event, value = manager.Event(), manager.Value("i", 10)
        p = Process(target=use_the_rest, args=(namespace, queue, event, value), name="worker")
        p.start()
        assert event.wait(TIMEOUT)
        assert queue.get(timeout=TIMEOUT) == [1, 2, 3]
        joined(p)
        assert p.exitcode == 0, p.exception
        assert namespace.greeting == "hi from worker"
        assert value.value == 15


def test_a_proxy_fails_clearly_after_shutdown():
    manager = Manager()
    shared = manager.dict(a=1)
    assert shared["a"] == 1
    manager.shutdown()
    server = manager._process
    server.join(TIMEOUT)
    assert server.exitcode == 0
    with pytest.raises((EOFError, ConnectionError, OSError)):
        shared["a"] = 2


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def bump(self, by: int) -> int:
        self.n += by
        return self.n


class CounterManager(BaseManager):
    pass


CounterManager.register("Counter", Counter)


def bump_counter(counter: Any) -> None:
    counter.bump(10)


@pytest.mark.parametrize("method", ["spawn", None])
def test_a_custom_manager(method):
    ctx = MethodContext(method)
    with CounterManager(ctx=ctx) as manager:
        counter = manager.Counter()
        p = ctx.Process(target=bump_counter, args=(counter,))
        p.start()
        joined(p)
        assert p.exitcode == 0, p.exception
        assert counter.bump(1) == 11


def add_to_shareable(items: Any) -> None:
    for i in range(len(items)):
        items[i] += 100


@pytest.mark.parametrize("method", ["spawn", None])
def test_shared_memory_manager(method):
    ctx = MethodContext(method)
    with SharedMemoryManager(ctx=ctx) as smm:
        items = smm.ShareableList([1, 2, 3])
        p = ctx.Process(target=add_to_shareable, args=(items,))
        p.start()
        joined(p)
        assert p.exitcode == 0, p.exception
        assert list(items) == [101, 102, 103]
        items.shm.close()
    assert isinstance(smm._process, ctx.Process)


def store_double(shared: Any, key: int) -> int:
    shared[key] = key * 2
    return key


def test_a_proxy_passed_to_pool_workers(start_method: Optional[str]) -> None:
    """Pool workers carry the owner's authkey, so a proxy sent as a task argument connects
    even from workers that did not inherit it (spawn, a fresh fork server)."""
    import manycore

    with Manager() as manager:
        shared = manager.dict()
        with manycore.Pool(2, context=start_method) as pool:
            done = pool.starmap_async(store_double, [(shared, k) for k in range(6)])
            assert sorted(done.get(timeout=TIMEOUT)) == list(range(6))
        assert dict(shared) == {k: k * 2 for k in range(6)}


def test_a_timed_out_wait_on_the_managers_pool_is_manycores_timeout() -> None:
    """The manager's Pool lives in its server; a wait that runs out of time there reaches
    the caller as manycore.TimeoutError, which `except manycore.TimeoutError` catches."""
    import time

    import manycore

    with Manager() as manager:
        pool = manager.Pool(1)
        try:
            result = pool.apply_async(time.sleep, (0.5,))
            with pytest.raises(manycore.TimeoutError):
                result.get(timeout=0.01)
            assert result.get(timeout=TIMEOUT) is None
            items = pool.imap(time.sleep, [0.0, 0.5])
            assert items.__next__(TIMEOUT) is None
            with pytest.raises(manycore.TimeoutError):
                items.__next__(0.01)
            assert items.__next__(TIMEOUT) is None
        finally:
            pool.terminate()
