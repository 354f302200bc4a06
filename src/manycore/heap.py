"""``manycore.heap``: the stdlib's ``multiprocessing.heap``, re-exported.

manycore's shared values live in named shared memory instead (see ``manycore.sharedctypes``);
this module is here for code that imports ``BufferWrapper`` from it.
"""

from __future__ import annotations

from multiprocessing.heap import Arena as Arena
from multiprocessing.heap import BufferWrapper as BufferWrapper
from multiprocessing.heap import Heap as Heap
from multiprocessing.heap import rebuild_arena as rebuild_arena
from multiprocessing.heap import reduce_arena as reduce_arena

__all__ = [
    "BufferWrapper",
]
