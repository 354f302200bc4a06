"""``manycore.shared_memory``: what code imports from ``multiprocessing.shared_memory``.

``SharedMemory`` and ``ShareableList`` are the stdlib's own classes (they register what they
make with the stdlib's resource tracker, ``manycore.resource_tracker``).
"""

from __future__ import annotations

import multiprocessing.shared_memory as _std
from multiprocessing.shared_memory import ShareableList as ShareableList
from multiprocessing.shared_memory import SharedMemory as SharedMemory

__all__ = ["ShareableList", "SharedMemory"]


def __getattr__(name: str) -> object:
    # The stdlib's private constants (the name prefix, whether POSIX shared memory is used)
    # are read here, as from ``multiprocessing.shared_memory``.
    return getattr(_std, name)
