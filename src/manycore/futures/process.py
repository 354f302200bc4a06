"""``manycore.futures.process``: stands in for ``concurrent.futures.process``.

``BrokenProcessPool`` is the stdlib's class; manycore's ``WorkerLostError`` and
``PoolBrokenError`` (and the unpickling errors) are subclasses of it.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool as BrokenProcessPool

from .._errors import RemoteTraceback
from .._executor import ProcessPoolExecutor as ProcessPoolExecutor

# The stdlib's name for the class of a worker's traceback (a re-raised exception's
# ``__cause__``, with the text in ``.tb``), which code checks with isinstance: here,
# manycore's class, which has the same ``tb``.
_RemoteTraceback = RemoteTraceback

__all__ = ["BrokenProcessPool", "ProcessPoolExecutor"]


def __getattr__(name: str) -> object:
    # The stdlib module's other names (its private helpers, such as _check_system_limits)
    # are reached through here, for code and tests that import them from this module.
    # They belong to the stdlib's executor: manycore's executor does not use them.
    import concurrent.futures.process

    return getattr(concurrent.futures.process, name)
