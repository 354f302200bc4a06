"""The public surface, pinned: what ``import manycore as multiprocessing`` code can reach.

A name added or removed here is an API change: update this file, the docs and the changelog
together.
"""

from __future__ import annotations

import importlib
import multiprocessing
import subprocess
import sys

import pytest

import manycore
from tests import helpers

TOP = [
    "ArgumentPicklingError",
    "ArgumentUnpicklingError",
    "Array",
    "AsyncResult",
    "AuthenticationError",
    "Barrier",
    "BoundedSemaphore",
    "BufferTooShort",
    "Condition",
    "Event",
    "InitializerError",
    "JoinableQueue",
    "Lock",
    "Manager",
    "ManycoreError",
    "Pipe",
    "Pool",
    "PoolBrokenError",
    "PoolClosedError",
    "PoolStatistics",
    "Process",
    "ProcessError",
    "ProcessPoolExecutor",
    "Queue",
    "RLock",
    "RawArray",
    "RawValue",
    "RemoteTraceback",
    "ResultPicklingError",
    "ResultUnpicklingError",
    "Semaphore",
    "SerializationError",
    "SharedArray",
    "SharedMemoryWarning",
    "SimpleQueue",
    "TaskTimeoutError",
    "TimeoutError",
    "Value",
    "WorkerLostError",
    "WorkerStack",
    "WorkerStatistics",
    "active_children",
    "allow_connection_pickling",
    "cpu_count",
    "current_process",
    "freeze_support",
    "get_all_start_methods",
    "get_context",
    "get_logger",
    "get_start_method",
    "log_to_stderr",
    "parent_process",
    "set_start_method",
    "shared_array",
]

SUBMODULES = {
    "manycore.pool": [
        "ApplyResult",
        "AsyncResult",
        "MapResult",
        "MaybeEncodingError",
        "Pool",
        "ThreadPool",
    ],
    "manycore.connection": ["Client", "Connection", "Listener", "Pipe", "wait"],
    "manycore.shared_memory": ["ShareableList", "SharedMemory"],
    "manycore.managers": [
        "AutoProxy",
        "BaseManager",
        "BaseProxy",
        "DictProxy",
        "ListProxy",
        "Namespace",
        "NamespaceProxy",
        "RemoteError",
        "SharedMemoryManager",
        "SyncManager",
        "Token",
        "ValueProxy",
        "public_methods",
    ],
    "manycore.futures": [
        "ALL_COMPLETED",
        "FIRST_COMPLETED",
        "FIRST_EXCEPTION",
        "BrokenExecutor",
        "CancelledError",
        "Executor",
        "Future",
        "InvalidStateError",
        "ProcessPoolExecutor",
        "ThreadPoolExecutor",
        "TimeoutError",
        "as_completed",
        "wait",
    ],
    "manycore.futures.process": ["BrokenProcessPool", "ProcessPoolExecutor"],
}

# The stdlib's top-level names manycore leaves out on purpose, and why.
LEFT_OUT = {
    "reducer": "the stdlib's pickling internals; manycore pickles with cloudpickle's help",
    "set_executable": "Windows-era knob; manycore starts children with sys.executable",
    "set_forkserver_preload": "manycore's fork server is forked from the caller when safe",
}


def test_top_level_all_is_pinned() -> None:
    assert sorted(manycore.__all__) == sorted(TOP)
    for name in TOP:
        assert getattr(manycore, name) is not None, name


def test_every_stdlib_name_is_offered_or_explained() -> None:
    missing = set(multiprocessing.__all__) - set(manycore.__all__) - set(LEFT_OUT)
    assert not missing, f"multiprocessing names manycore lacks: {sorted(missing)}"


@pytest.mark.parametrize("module", sorted(SUBMODULES))
def test_submodule_all_is_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(SUBMODULES[module])
    for name in mod.__all__:
        assert getattr(mod, name) is not None, f"{module}.{name}"


CONTEXT_NAMES = sorted(
    set(TOP)
    - {"AsyncResult", "ProcessPoolExecutor", "RemoteTraceback", "cpu_count"}
    - {"SharedArray", "SharedMemoryWarning", "shared_array"}
    - {"PoolStatistics", "WorkerStatistics", "WorkerStack"}
    - {
        n
        for n in TOP
        if n.endswith("Error") and n not in ("TimeoutError", "ProcessError", "AuthenticationError")
    }
)


@pytest.mark.parametrize("method", [None, "fork", "forkserver", "spawn"])
def test_contexts_offer_the_same_names(method: str | None) -> None:
    ctx = manycore.get_context(method)
    for name in CONTEXT_NAMES:
        assert hasattr(ctx, name), f"get_context({method!r}) lacks {name}"
    if method is not None:
        assert ctx.get_start_method() == method
        assert ctx.Process._start_method == method


def test_unknown_start_method_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"fork.*spawn|spawn.*fork"):
        manycore.get_context("thread")


def test_import_stays_light() -> None:
    code = (
        "import sys, manycore\n"
        "heavy = {'numpy', 'dask', 'distributed', 'multiprocessing.managers'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=helpers.script_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
