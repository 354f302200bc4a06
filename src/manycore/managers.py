"""``manycore.managers``: what code imports from ``multiprocessing.managers``.

The managers here start their server process with ``manycore.Process``, so the main module
is never re-run and the server starts under any start method. Everything else (proxies,
``Server``, ``Token``, ``MakeProxyType``, ...) is the stdlib's own: it runs in the manager's
server or talks to it over a socket, whichever way the server was started.
"""

from __future__ import annotations

from multiprocessing import managers as _std
from multiprocessing.managers import BaseListProxy as BaseListProxy
from multiprocessing.managers import BaseProxy as BaseProxy
from multiprocessing.managers import DictProxy as DictProxy
from multiprocessing.managers import ListProxy as ListProxy
from multiprocessing.managers import Namespace as Namespace
from multiprocessing.managers import RemoteError as RemoteError
from multiprocessing.managers import Server as Server
from multiprocessing.managers import SharedMemoryServer as SharedMemoryServer
from multiprocessing.managers import Token as Token
from multiprocessing.managers import ValueProxy as ValueProxy
from typing import Any

from ._managers import BaseManager as BaseManager
from ._managers import SharedMemoryManager as SharedMemoryManager
from ._managers import SyncManager as SyncManager

# Not in typeshed's stubs: the same objects, typed Any.
AcquirerProxy: Any = _std.AcquirerProxy  # type: ignore[attr-defined]
HAS_SHMEM: bool = _std.HAS_SHMEM  # type: ignore[attr-defined]
Array: Any = _std.Array  # type: ignore[attr-defined]
ArrayProxy: Any = _std.ArrayProxy  # type: ignore[attr-defined]
AutoProxy: Any = _std.AutoProxy  # type: ignore[attr-defined]
BarrierProxy: Any = _std.BarrierProxy  # type: ignore[attr-defined]
BasePoolProxy: Any = _std.BasePoolProxy  # type: ignore[attr-defined]
ConditionProxy: Any = _std.ConditionProxy  # type: ignore[attr-defined]
EventProxy: Any = _std.EventProxy  # type: ignore[attr-defined]
IteratorProxy: Any = _std.IteratorProxy  # type: ignore[attr-defined]
MakeProxyType: Any = _std.MakeProxyType  # type: ignore[attr-defined]
NamespaceProxy: Any = _std.NamespaceProxy  # type: ignore[attr-defined]
PoolProxy: Any = _std.PoolProxy  # type: ignore[attr-defined]
ProcessLocalSet: Any = _std.ProcessLocalSet  # type: ignore[attr-defined]
RebuildProxy: Any = _std.RebuildProxy  # type: ignore[attr-defined]
State: Any = _std.State  # type: ignore[attr-defined]
Value: Any = _std.Value  # type: ignore[attr-defined]
all_methods: Any = _std.all_methods  # type: ignore[attr-defined]
convert_to_error: Any = _std.convert_to_error  # type: ignore[attr-defined]
dispatch: Any = _std.dispatch  # type: ignore[attr-defined]
listener_client: Any = _std.listener_client  # type: ignore[attr-defined]
public_methods: Any = _std.public_methods  # type: ignore[attr-defined]
rebuild_as_list: Any = _std.rebuild_as_list  # type: ignore[attr-defined]
reduce_array: Any = _std.reduce_array  # type: ignore[attr-defined]

__all__ = ["BaseManager", "BaseProxy", "SharedMemoryManager", "SyncManager", "Token"]
