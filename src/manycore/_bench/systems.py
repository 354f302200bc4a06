"""The systems ``manycore bench`` compares: serial code, the stdlib's pools, the peers that
are installed (joblib/loky, mpire, pebble) and manycore, each behind one small ``Runner``
interface (map, then close), so the bench runs them all the same way.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import importlib.util
import multiprocessing
import multiprocessing.pool
import sys
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .peers import PeerStatus, stop_joblib_workers

__all__ = ["ALWAYS", "MP_POOL", "SERIAL", "SYSTEMS", "Runner", "System", "systems"]


class Runner(Protocol):
    """One system under test, already started: runs a map and is closed at the end."""

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]: ...

    def close(self) -> None: ...

    def kill(self) -> None: ...


class _Serial:
    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(map(fn, items))

    def close(self) -> None:
        pass

    def kill(self) -> None:
        pass


class _PoolRunner:
    """A ``multiprocessing.Pool``-shaped pool (the stdlib's, its ThreadPool, manycore's)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        self._pool.close()
        self._pool.join()

    def kill(self) -> None:
        self._pool.terminate()
        self._pool.join()


class _ExecutorRunner:
    """A ``concurrent.futures.Executor`` (the stdlib's or manycore's process pool)."""

    def __init__(self, executor: Any) -> None:
        self._executor = executor

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(self._executor.map(fn, items))

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def kill(self) -> None:
        terminate = getattr(self._executor, "terminate_workers", None)  # Python 3.14+
        if terminate is not None:
            terminate()
            return
        # Before 3.14 the stdlib executor cannot stop a worker that is stuck in a task, and
        # would wait for it at interpreter exit: kill its processes (a private table).
        processes = list((getattr(self._executor, "_processes", None) or {}).values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
            process.join()


class _JoblibRunner:
    """``joblib.Parallel(n_jobs, backend="loky")``, called as users call it: a new
    ``Parallel`` per map. joblib keeps loky's executor alive between calls, which is what
    makes the second call warm."""

    def __init__(self, workers: int) -> None:
        self._joblib: Any = importlib.import_module("joblib")
        self._workers = workers

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        parallel = self._joblib.Parallel(n_jobs=self._workers, backend="loky")
        call = self._joblib.delayed(fn)
        return list(parallel(call(x) for x in items))

    def close(self) -> None:
        stop_joblib_workers()

    def kill(self) -> None:
        stop_joblib_workers(kill=True)


class _MpireRunner:
    """``mpire.WorkerPool(n_jobs, keep_alive=True)``: without ``keep_alive`` mpire starts
    its workers afresh for every map, and start-up is not what this table compares."""

    def __init__(self, workers: int) -> None:
        mpire: Any = importlib.import_module("mpire")
        self._pool = mpire.WorkerPool(n_jobs=workers, keep_alive=True)

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        self._pool.stop_and_join()

    def kill(self) -> None:
        self._pool.terminate()


class _PebbleRunner:
    """``pebble.ProcessPool(max_workers)``; its ``map`` returns a future of an iterator."""

    def __init__(self, workers: int) -> None:
        pebble: Any = importlib.import_module("pebble")
        self._pool = pebble.ProcessPool(max_workers=workers)

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(self._pool.map(fn, items).result())

    def close(self) -> None:
        self._pool.close()
        self._pool.join()

    def kill(self) -> None:
        self._pool.stop()
        self._pool.join()


def _open_manycore_pool(workers: int) -> Runner:
    import manycore

    return _PoolRunner(manycore.Pool(workers))


def _open_manycore_executor(workers: int) -> Runner:
    import manycore

    return _ExecutorRunner(manycore.ProcessPoolExecutor(workers))


@dataclass(frozen=True)
class System:
    key: str  # stable name, for --json
    label: str  # for the table
    short: str  # for progress lines
    open: Callable[[int], Runner]
    group: str  # "reference" (serial, threads), "stdlib", "peer" or "manycore"
    peer: str | None = None  # the peer (a name in PEERS) it needs installed
    # With this many workers or fewer it runs tasks in the caller's own process, so a task
    # that crashes would end the command: serial and threads always, joblib with n_jobs=1
    # (its sequential backend).
    in_caller_up_to: int = 0

    def in_caller(self, workers: int) -> bool:
        return workers <= self.in_caller_up_to


ALWAYS = sys.maxsize


SERIAL = "serial"
MP_POOL = "multiprocessing.Pool"

SYSTEMS: tuple[System, ...] = (
    System(
        SERIAL,
        "serial (for loop)",
        "serial",
        lambda n: _Serial(),
        "reference",
        in_caller_up_to=ALWAYS,
    ),
    System(
        "ThreadPool",
        "multiprocessing.pool.ThreadPool",
        "threads",
        lambda n: _PoolRunner(multiprocessing.pool.ThreadPool(n)),
        "reference",
        in_caller_up_to=ALWAYS,
    ),
    System(
        MP_POOL,
        MP_POOL,
        "mp.Pool",
        lambda n: _PoolRunner(multiprocessing.Pool(n)),
        "stdlib",
    ),
    System(
        "ProcessPoolExecutor",
        "concurrent.futures.ProcessPoolExecutor",
        "cf.PPE",
        lambda n: _ExecutorRunner(concurrent.futures.ProcessPoolExecutor(n)),
        "stdlib",
    ),
    System(
        "joblib",
        "joblib.Parallel (loky)",
        "joblib",
        _JoblibRunner,
        "peer",
        peer="joblib",
        in_caller_up_to=1,
    ),
    System("mpire", "mpire.WorkerPool", "mpire", _MpireRunner, "peer", peer="mpire"),
    System("pebble", "pebble.ProcessPool", "pebble", _PebbleRunner, "peer", peer="pebble"),
    System("manycore.Pool", "manycore.Pool", "mc.Pool", _open_manycore_pool, "manycore"),
    System(
        "manycore.ProcessPoolExecutor",
        "manycore.ProcessPoolExecutor",
        "mc.PPE",
        _open_manycore_executor,
        "manycore",
    ),
)


def systems(peers: dict[str, PeerStatus]) -> list[System]:
    """The systems this run measures: every one whose peer (if it needs one) is usable."""
    return [s for s in SYSTEMS if s.peer is None or peers[s.peer].usable]
