"""``manycore.futures.process``: stands in for ``concurrent.futures.process``.

``BrokenProcessPool`` is the stdlib's class; manycore's ``WorkerLostError`` and
``PoolBrokenError`` (and the unpickling errors) are subclasses of it.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool as BrokenProcessPool

from .._executor import ProcessPoolExecutor as ProcessPoolExecutor

__all__ = ["BrokenProcessPool", "ProcessPoolExecutor"]
