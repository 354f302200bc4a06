"""``manycore.reduction``: the stdlib's ``multiprocessing.reduction``, re-exported.

manycore pickles what it sends to a child with a pickler whose dispatch table starts with
``ForkingPickler``'s registered reducers, so ``register(type, reduce)`` here is seen by
``manycore.Process`` arguments as by the stdlib's. ``send_handle``/``recv_handle`` and
``DupFd`` pass descriptors over a Unix socket and work between any processes.
"""

from __future__ import annotations

from multiprocessing.reduction import ACKNOWLEDGE as ACKNOWLEDGE
from multiprocessing.reduction import HAVE_SEND_HANDLE as HAVE_SEND_HANDLE
from multiprocessing.reduction import AbstractReducer as AbstractReducer
from multiprocessing.reduction import DupFd as DupFd
from multiprocessing.reduction import ForkingPickler as ForkingPickler
from multiprocessing.reduction import dump as dump
from multiprocessing.reduction import recv_handle as recv_handle
from multiprocessing.reduction import recvfds as recvfds
from multiprocessing.reduction import register as register
from multiprocessing.reduction import send_handle as send_handle
from multiprocessing.reduction import sendfds as sendfds

__all__ = [
    "DupFd",
    "ForkingPickler",
    "dump",
    "recv_handle",
    "recvfds",
    "register",
    "send_handle",
    "sendfds",
]
