"""The Dask backend, worker side: what runs inside a Dask worker for a manycore pool.

``run_batch`` is the one function the pool submits to Dask. It receives pickled blobs only
(functions and arguments pickled by the caller, with manycore's rules) and returns pickled
outcomes only, so Dask never pickles a user's object and every failure of a call (an
exception, an argument that cannot be rebuilt, a result that cannot be pickled) becomes an
outcome that the caller turns into the same error the local backend raises.

Guarantees: ``run_batch`` never raises for a call's own failure; a pool's initializer runs
once per worker process per pool (keyed by the pool's token) before its first call there,
and if it fails, every batch of that pool in that process reports the same failure.
This module imports nothing from Dask: a worker needs only manycore itself.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from .. import _messages as m
from .._outcome import CallRunner, run_initializer
from .._serialize import WorkerFunctionCache, dumps

__all__ = ["run_batch"]

_worker_lock = threading.Lock()  # a Dask worker may run several batches on its threads
_worker_fns = WorkerFunctionCache()
_initialized: dict[str, Optional[bytes]] = {}  # pool token -> None, or the init failure


def _rebuild(fn_blob: bytes) -> Callable[..., Any]:
    with _worker_lock:  # the function cache is not thread-safe
        return _worker_fns.get(fn_blob)


# Dask moves bytes only, and a Dask worker may be on another machine: results are pickled
# in-band (never handed over in this machine's shared memory).
_runner = CallRunner(
    _rebuild,
    dumps,
    "the Dask worker",
    "Their module must be importable on every worker (install it there, or send it by "
    "value with cloudpickle.register_pickle_by_value).",
)


def run_batch(
    token: str, init: int, calls: list[tuple[int, int, int]], *parts: bytes
) -> list[tuple[int, bytes, float]]:
    """In a Dask worker: run a batch's calls; return ``(status, payload, seconds)`` each.

    ``parts`` are pickled blobs (Dask resolves scattered ones before the call); each call
    is ``(kind, function part, payload part)``. Never raises for a call's own failure: every
    outcome is pickled here, so Dask only ever carries bytes.
    """
    if init >= 0:
        failure = _initialize(token, parts[init])
        if failure is not None:
            return [(m.INIT_FAILED, failure, 0.0)]
    outcomes = []
    clock = time.perf_counter
    run = _runner.run
    for kind, fn_part, payload_part in calls:
        start = clock()
        status, payload = run(kind, parts[fn_part], parts[payload_part])
        outcomes.append((status, payload, clock() - start))
    return outcomes


def _initialize(token: str, blob: bytes) -> Optional[bytes]:
    with _worker_lock:
        if token in _initialized:
            return _initialized[token]
        failure = run_initializer(blob)
        _initialized[token] = failure
        return failure
