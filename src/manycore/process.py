"""``manycore.process``: what code imports from ``multiprocessing.process``.

``manycore.Process`` subclasses the stdlib's ``BaseProcess``, so the stdlib's functions
below see manycore's processes: ``active_children()`` lists them, ``current_process()``
in a child is its ``Process``, ``parent_process()`` its parent.
"""

from __future__ import annotations

from multiprocessing.process import ORIGINAL_DIR as ORIGINAL_DIR  # type: ignore[attr-defined]
from multiprocessing.process import (  # type: ignore[attr-defined]  # not in typeshed
    AuthenticationString as AuthenticationString,
)
from multiprocessing.process import BaseProcess as BaseProcess
from multiprocessing.process import active_children as active_children
from multiprocessing.process import current_process as current_process
from multiprocessing.process import parent_process as parent_process

__all__ = ["BaseProcess", "active_children", "current_process", "parent_process"]


def __getattr__(name: str) -> object:
    # The stdlib's private helpers and state (such as the registry of live processes, which
    # manycore's processes join) are reached through here, for code and tests that use them.
    import multiprocessing.process

    return getattr(multiprocessing.process, name)
