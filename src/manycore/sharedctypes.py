"""``manycore.sharedctypes``: what code imports from ``multiprocessing.sharedctypes``.

The objects live in named shared memory, so they can be passed to a process of any start
method; ``synchronized`` and ``copy`` work on them as the stdlib's do on its own.
"""

from __future__ import annotations

from multiprocessing.sharedctypes import SynchronizedBase as SynchronizedBase

from ._sharedctypes import Array as Array
from ._sharedctypes import RawArray as RawArray
from ._sharedctypes import RawValue as RawValue
from ._sharedctypes import Synchronized as Synchronized
from ._sharedctypes import SynchronizedArray as SynchronizedArray
from ._sharedctypes import SynchronizedString as SynchronizedString
from ._sharedctypes import Value as Value
from ._sharedctypes import copy as copy
from ._sharedctypes import synchronized as synchronized
from ._sharedctypes import typecode_to_type as typecode_to_type

__all__ = ["Array", "RawArray", "RawValue", "Value", "copy", "synchronized"]
