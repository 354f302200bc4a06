"""Managers whose server process is a ``manycore.Process``.

The stdlib's managers work as they are; what they need from a start method is a context
with a ``Process`` class (``BaseManager.start`` asks for nothing else). Giving them
manycore's means the manager's server starts under every start method without
re-executing the main module, and its proxies can be passed to ``manycore.Process``
children (and unpickle there with the parent's authkey) under every start method.

``Manager()`` returns a started ``SyncManager``; use it as a context manager (or call
``shutdown()``) to stop its server, or it is stopped at interpreter exit, as in the stdlib.
"""

from __future__ import annotations

from multiprocessing import managers as _std
from multiprocessing.managers import BaseProxy as BaseProxy
from multiprocessing.managers import DictProxy as DictProxy
from multiprocessing.managers import ListProxy as ListProxy
from multiprocessing.managers import Namespace as Namespace
from multiprocessing.managers import RemoteError as RemoteError
from multiprocessing.managers import Token as Token
from multiprocessing.managers import ValueProxy as ValueProxy
from typing import Any, Optional

from ._process import Process
from ._threadpool import ManagerPool

# Not in typeshed's stubs:
AutoProxy: Any = _std.AutoProxy  # type: ignore[attr-defined]
NamespaceProxy: Any = _std.NamespaceProxy  # type: ignore[attr-defined]
public_methods: Any = _std.public_methods  # type: ignore[attr-defined]

# The stdlib's names (its __all__ plus what subclasses of managers and proxies use), so
# code that imports from multiprocessing.managers can import from manycore.managers.
__all__ = [
    "AutoProxy",
    "BaseManager",
    "BaseProxy",
    "DictProxy",
    "ListProxy",
    "Manager",
    "Namespace",
    "NamespaceProxy",
    "RemoteError",
    "SharedMemoryManager",
    "SyncManager",
    "Token",
    "ValueProxy",
    "public_methods",
]


class _ProcessContext:
    """The part of a context that managers use: ``Process`` (the current default method)."""

    Process = Process


_CONTEXT: Any = _ProcessContext()


class BaseManager(_std.BaseManager):
    """``multiprocessing.managers.BaseManager`` whose server is a ``manycore.Process``.

    ``ctx``: a context (``manycore.get_context(method)``) to choose the start method; by
    default the server starts by the default start method.
    """

    def __init__(
        self,
        address: Any = None,
        authkey: Optional[bytes] = None,
        serializer: str = "pickle",
        ctx: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address, authkey, serializer, ctx if ctx is not None else _CONTEXT, **kwargs
        )


class SyncManager(BaseManager, _std.SyncManager):
    """``multiprocessing.managers.SyncManager`` (dict, list, Lock, Queue, Namespace, ...)
    whose server is a ``manycore.Process``."""


# The manager's Pool: the stdlib's, whose timed-out waits raise manycore.TimeoutError (the
# error travels back to the caller pickled, as the server raised it).
SyncManager.register("Pool", ManagerPool, _std.PoolProxy)  # type: ignore[attr-defined]


class SharedMemoryManager(BaseManager, _std.SharedMemoryManager):
    """``multiprocessing.managers.SharedMemoryManager`` whose server is a ``manycore.Process``."""


def Manager(ctx: Any = None) -> SyncManager:
    """A started ``SyncManager``: shared dicts, lists, locks, queues, namespaces by proxy.

    Raises:
        EOFError: the manager's server process died before it reported its address.
    """
    manager = SyncManager(ctx=ctx)
    manager.start()
    return manager
