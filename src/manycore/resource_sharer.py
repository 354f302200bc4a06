"""``manycore.resource_sharer``: the stdlib's ``multiprocessing.resource_sharer``.

The stdlib's connections and sockets pickle through it when they are sent to a process
that is already running (over a manycore ``Pipe`` or ``Queue`` too): the sender keeps the
descriptor and serves it to the receiver from a background thread. ``stop()`` ends that
thread.
"""

from __future__ import annotations

import multiprocessing.resource_sharer as _std
from multiprocessing.resource_sharer import DupFd as DupFd
from multiprocessing.resource_sharer import stop as stop

__all__ = ["DupFd", "stop"]


def __getattr__(name: str) -> object:
    # The stdlib's private state (its one sharer, ``_resource_sharer``) is reached here.
    return getattr(_std, name)
