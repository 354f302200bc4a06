"""``manycore.managers``: what code imports from ``multiprocessing.managers``.

The managers here start their server process with ``manycore.Process``, so the main module
is never re-run and the server starts under any start method.
"""

from __future__ import annotations

from ._managers import AutoProxy as AutoProxy
from ._managers import BaseManager as BaseManager
from ._managers import BaseProxy as BaseProxy
from ._managers import DictProxy as DictProxy
from ._managers import ListProxy as ListProxy
from ._managers import Namespace as Namespace
from ._managers import NamespaceProxy as NamespaceProxy
from ._managers import RemoteError as RemoteError
from ._managers import SharedMemoryManager as SharedMemoryManager
from ._managers import SyncManager as SyncManager
from ._managers import Token as Token
from ._managers import ValueProxy as ValueProxy
from ._managers import public_methods as public_methods

__all__ = [
    "AutoProxy",
    "BaseManager",
    "BaseProxy",
    "DictProxy",
    "ListProxy",
    "Namespace",
    "NamespaceProxy",
    "RemoteError",
    "SharedMemoryManager",
    "SyncManager",
    "Token",
    "ValueProxy",
    "public_methods",
]
