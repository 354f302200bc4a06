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
from typing import Any, Optional

from . import _messages as m
from ._errors import (
    ArgumentUnpicklingError,
    ResultPicklingError,
    describe_call,
    format_remote,
)
from ._payload import loads
from ._serialize import WorkerFunctionCache, dumps
from ._worker import run_initializer

__all__ = ["INIT_FAILED", "run_batch"]

INIT_FAILED = -1  # a batch outcome status: the pool's initializer failed in that worker

_worker_lock = threading.Lock()  # a Dask worker may run several batches on its threads
_worker_fns = WorkerFunctionCache()
_initialized: dict[str, Optional[bytes]] = {}  # pool token -> None, or the init failure


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
            return [(INIT_FAILED, failure, 0.0)]
    outcomes = []
    clock = time.perf_counter
    for kind, fn_part, payload_part in calls:
        start = clock()
        status, payload = _run_call(kind, parts[fn_part], parts[payload_part])
        outcomes.append((status, payload, clock() - start))
    return outcomes


def _initialize(token: str, blob: bytes) -> Optional[bytes]:
    with _worker_lock:
        if token in _initialized:
            return _initialized[token]
        failure = run_initializer(blob)
        _initialized[token] = failure
        return failure


def _run_call(kind: int, fn_blob: bytes, payload_blob: bytes) -> tuple[int, bytes]:
    try:
        with _worker_lock:
            fn = _worker_fns.get(fn_blob)
        payload = loads(payload_blob)
    except BaseException as exc:
        error = ArgumentUnpicklingError(
            f"the Dask worker could not rebuild the task's function or arguments: {exc!r}. "
            "Their module must be importable on every worker (install it there, or send it "
            "by value with cloudpickle.register_pickle_by_value).",
            remote=format_remote(exc),
        )
        return m.FAILED, dumps(error)
    values: list[Any] = []
    try:
        if kind == m.CALL:
            value = fn(*payload)
        elif kind == m.CALL_KW:
            value = fn(*payload[0], **payload[1])
        elif kind == m.MAP:
            for item in payload:
                values.append(fn(item))
            value = values
        else:
            for args in payload:
                values.append(fn(*args))
            value = values
    except BaseException as exc:
        mapped = kind == m.MAP or kind == m.STARMAP
        return m.RAISED, _dump_raised(exc, values if mapped else None, fn)
    try:
        return m.OK, dumps(value)
    except Exception as exc:
        error = ResultPicklingError(
            f"the result of {describe_call(fn)} cannot be pickled to send it back: {exc!r}. "
            "Return plain data (convert the object, or save it to a file and return the path)."
        )
        return m.FAILED, dumps(error)


def _dump_raised(exc: BaseException, partial: list[Any] | None, fn: Any) -> bytes:
    tb = format_remote(exc)
    try:
        summary = f"{type(exc).__qualname__}: {exc}"
    except Exception:
        summary = type(exc).__qualname__
    try:
        exc_blob = dumps(exc)
    except Exception:
        exc_blob = dumps(
            ResultPicklingError(
                f"{describe_call(fn)} raised {summary}, and that exception cannot be pickled "
                "to send it back; the worker's traceback is attached.",
                remote=tb,
            )
        )
    if partial is not None:
        try:
            return dumps((exc_blob, summary, tb, partial))
        except Exception:
            pass
    return dumps((exc_blob, summary, tb, None))
