"""``manycore.forkserver``: the stdlib's ``multiprocessing.forkserver``, re-exported.

These functions drive the stdlib's fork server. manycore's fork servers are its own (see
docs/design.md, "Start methods"): each imports the module of what it starts the first time
it starts it, so ``set_forkserver_preload`` is accepted and has nothing to do for them.
"""

from __future__ import annotations

from multiprocessing.forkserver import MAXFDS_TO_SEND as MAXFDS_TO_SEND
from multiprocessing.forkserver import SIGNED_STRUCT as SIGNED_STRUCT
from multiprocessing.forkserver import ForkServer as ForkServer
from multiprocessing.forkserver import connect_to_new_process as connect_to_new_process
from multiprocessing.forkserver import ensure_running as ensure_running
from multiprocessing.forkserver import get_inherited_fds as get_inherited_fds
from multiprocessing.forkserver import main as main
from multiprocessing.forkserver import read_signed as read_signed
from multiprocessing.forkserver import set_forkserver_preload as set_forkserver_preload
from multiprocessing.forkserver import write_signed as write_signed

__all__ = [
    "connect_to_new_process",
    "ensure_running",
    "get_inherited_fds",
    "set_forkserver_preload",
]
