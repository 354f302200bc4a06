"""``manycore.shared_memory``: what code imports from ``multiprocessing.shared_memory``."""

from __future__ import annotations

from multiprocessing.shared_memory import ShareableList as ShareableList
from multiprocessing.shared_memory import SharedMemory as SharedMemory

__all__ = ["ShareableList", "SharedMemory"]
