"""``manycore.synchronize``: what code imports from ``multiprocessing.synchronize``.

manycore's locks subclass the stdlib's classes of the same names, so ``isinstance`` checks
written against ``multiprocessing.synchronize`` hold for them.
"""

from __future__ import annotations

from multiprocessing.synchronize import SemLock as SemLock

from ._synchronize import RECURSIVE_MUTEX as RECURSIVE_MUTEX
from ._synchronize import SEM_VALUE_MAX as SEM_VALUE_MAX
from ._synchronize import SEMAPHORE as SEMAPHORE
from ._synchronize import Barrier as Barrier
from ._synchronize import BoundedSemaphore as BoundedSemaphore
from ._synchronize import Condition as Condition
from ._synchronize import Event as Event
from ._synchronize import Lock as Lock
from ._synchronize import RLock as RLock
from ._synchronize import Semaphore as Semaphore

__all__ = ["BoundedSemaphore", "Condition", "Event", "Lock", "RLock", "Semaphore"]
