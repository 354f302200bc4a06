"""``manycore.resource_tracker``: the stdlib's ``multiprocessing.resource_tracker``.

It tracks what the stdlib's objects create, ``manycore.shared_memory.SharedMemory`` among
them (the stdlib's own class), so ``unregister(shm._name, "shared_memory")`` works as it
does with the stdlib. manycore's own queues, locks and values have a tracker of their own.
"""

from __future__ import annotations

from multiprocessing import resource_tracker as _std
from multiprocessing.resource_tracker import ResourceTracker as ResourceTracker
from multiprocessing.resource_tracker import ensure_running as ensure_running
from multiprocessing.resource_tracker import getfd as getfd
from multiprocessing.resource_tracker import main as main
from multiprocessing.resource_tracker import register as register
from multiprocessing.resource_tracker import unregister as unregister

if hasattr(_std, "ReentrantCallError"):  # Python 3.11.x and later
    ReentrantCallError = _std.ReentrantCallError

__all__ = [
    "ensure_running",
    "register",
    "unregister",
]


def __getattr__(name: str) -> object:
    # The stdlib's private state (the tracker of this process, the cleanup functions by
    # resource type), which manycore shares: code and tests that use it reach it here.
    return getattr(_std, name)
