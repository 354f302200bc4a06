"""manycore: true parallelism on every core, with the ``multiprocessing`` API.

``import manycore as multiprocessing`` and existing code runs unchanged: processes, queues,
pipes, locks, shared values and pools, under every start method, from scripts, ``python -c``
and notebooks, with workers that never hang the caller, arguments that travel by value when
they must (lambdas, closures, ``__main__`` functions), and far less overhead per task.
See docs/design.md.

The names below are the default context's: they use the start method chosen with
``set_start_method`` (manycore's fork server until then). ``get_context(method)`` returns an
object with the same names bound to another start method.
"""

from __future__ import annotations

import importlib
from multiprocessing import AuthenticationError as AuthenticationError
from multiprocessing import BufferTooShort as BufferTooShort
from multiprocessing import ProcessError as ProcessError
from multiprocessing import active_children as active_children
from multiprocessing import current_process as current_process
from multiprocessing import parent_process as parent_process
from multiprocessing import set_executable as set_executable
from multiprocessing import set_forkserver_preload as set_forkserver_preload
from typing import TYPE_CHECKING, Any

# Submodules that ``import multiprocessing`` loads too, so code reaches them as attributes
# (``context`` loads on first use, below, with the names that need the pool machinery).
from . import process as process
from . import reduction as reduction
from ._cpu import cpu_count as cpu_count

if TYPE_CHECKING:
    from multiprocessing.util import SUBDEBUG as SUBDEBUG
    from multiprocessing.util import SUBWARNING as SUBWARNING
    from multiprocessing.util import get_logger as get_logger
    from multiprocessing.util import log_to_stderr as log_to_stderr

    from . import context as context
    from ._buffers import SharedMemoryWarning as SharedMemoryWarning
    from ._connection import Pipe as Pipe
    from ._context import get_all_start_methods as get_all_start_methods
    from ._context import get_context as get_context
    from ._context import get_start_method as get_start_method
    from ._context import set_start_method as set_start_method
    from ._errors import ArgumentPicklingError as ArgumentPicklingError
    from ._errors import ArgumentUnpicklingError as ArgumentUnpicklingError
    from ._errors import InitializerError as InitializerError
    from ._errors import ManycoreError as ManycoreError
    from ._errors import PoolBrokenError as PoolBrokenError
    from ._errors import PoolClosedError as PoolClosedError
    from ._errors import RemoteTraceback as RemoteTraceback
    from ._errors import ResultPicklingError as ResultPicklingError
    from ._errors import ResultUnpicklingError as ResultUnpicklingError
    from ._errors import SerializationError as SerializationError
    from ._errors import TaskTimeoutError as TaskTimeoutError
    from ._errors import TimeoutError as TimeoutError
    from ._errors import WorkerLostError as WorkerLostError
    from ._executor import ProcessPoolExecutor as ProcessPoolExecutor
    from ._managers import Manager as Manager
    from ._pool import AsyncResult as AsyncResult
    from ._pool import Pool as Pool
    from ._process import Process as Process
    from ._queue import JoinableQueue as JoinableQueue
    from ._queue import Queue as Queue
    from ._queue import SimpleQueue as SimpleQueue
    from ._queue._layout import QueueBrokenError as QueueBrokenError
    from ._sharedarray import SharedArray as SharedArray
    from ._sharedarray import shared_array as shared_array
    from ._sharedctypes import Array as Array
    from ._sharedctypes import RawArray as RawArray
    from ._sharedctypes import RawValue as RawValue
    from ._sharedctypes import Value as Value
    from ._stats import PoolStatistics as PoolStatistics
    from ._stats import WorkerStack as WorkerStack
    from ._stats import WorkerStatistics as WorkerStatistics
    from ._synchronize import Barrier as Barrier
    from ._synchronize import BoundedSemaphore as BoundedSemaphore
    from ._synchronize import Condition as Condition
    from ._synchronize import Event as Event
    from ._synchronize import Lock as Lock
    from ._synchronize import RLock as RLock
    from ._synchronize import Semaphore as Semaphore

__version__ = "0.1.0"  # the one source: pyproject.toml and `manycore info` read it

# The stdlib's name for the module of its pickling helpers (a context's ``reducer``).
reducer = reduction

# Names whose modules load on first use (PEP 562), so that `import manycore`, and every
# spawned worker (whose import of manycore._worker imports this package first), does not
# pay for pools, processes, queues, shared memory and managers it may never touch: a
# worker needs its loop, the codec and the transport (issue 16: the whole package took a
# spawned worker 120-140 ms). The errors wait too: their stdlib bases
# (``concurrent.futures``, ``multiprocessing.pool``) cost a worker more than its loop.
_LAZY = {
    "ArgumentPicklingError": "._errors",
    "ArgumentUnpicklingError": "._errors",
    "InitializerError": "._errors",
    "ManycoreError": "._errors",
    "PoolBrokenError": "._errors",
    "PoolClosedError": "._errors",
    "RemoteTraceback": "._errors",
    "ResultPicklingError": "._errors",
    "ResultUnpicklingError": "._errors",
    "SerializationError": "._errors",
    "TaskTimeoutError": "._errors",
    "TimeoutError": "._errors",
    "WorkerLostError": "._errors",
    "SUBDEBUG": "multiprocessing.util",
    "SUBWARNING": "multiprocessing.util",
    "get_logger": "multiprocessing.util",
    "log_to_stderr": "multiprocessing.util",
    "SharedMemoryWarning": "._buffers",
    "get_all_start_methods": "._context",
    "get_context": "._context",
    "get_start_method": "._context",
    "set_start_method": "._context",
    "ProcessPoolExecutor": "._executor",
    "AsyncResult": "._pool",
    "Pool": "._pool",
    "Process": "._process",
    "PoolStatistics": "._stats",
    "QueueBrokenError": "._queue._layout",
    "WorkerStack": "._stats",
    "WorkerStatistics": "._stats",
    "Pipe": "._connection",
    "Manager": "._managers",
    "JoinableQueue": "._queue",
    "Queue": "._queue",
    "SimpleQueue": "._queue",
    "Array": "._sharedctypes",
    "RawArray": "._sharedctypes",
    "RawValue": "._sharedctypes",
    "Value": "._sharedctypes",
    "SharedArray": "._sharedarray",
    "shared_array": "._sharedarray",
    "Barrier": "._synchronize",
    "BoundedSemaphore": "._synchronize",
    "Condition": "._synchronize",
    "Event": "._synchronize",
    "Lock": "._synchronize",
    "RLock": "._synchronize",
    "Semaphore": "._synchronize",
}


def __getattr__(name: str) -> Any:
    if name == "context":  # the submodule, as `import multiprocessing` offers it
        return importlib.import_module(".context", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'manycore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    # TYPE_CHECKING is typing's flag, not a name of the package (as test.support's
    # check__all__ would otherwise count it).
    return sorted((set(globals()) - {"TYPE_CHECKING"}) | set(_LAZY) | {"context"})


def freeze_support() -> None:
    """Nothing to do: manycore never re-runs the main module in a child process."""


def allow_connection_pickling() -> None:
    """Nothing to do: manycore's connections and queues always pickle."""


__all__ = [
    "ArgumentPicklingError",
    "ArgumentUnpicklingError",
    "Array",
    "AsyncResult",
    "AuthenticationError",
    "Barrier",
    "BoundedSemaphore",
    "BufferTooShort",
    "Condition",
    "Event",
    "InitializerError",
    "JoinableQueue",
    "Lock",
    "Manager",
    "ManycoreError",
    "Pipe",
    "Pool",
    "PoolBrokenError",
    "PoolClosedError",
    "PoolStatistics",
    "Process",
    "ProcessError",
    "ProcessPoolExecutor",
    "Queue",
    "QueueBrokenError",
    "RLock",
    "RawArray",
    "RawValue",
    "RemoteTraceback",
    "ResultPicklingError",
    "ResultUnpicklingError",
    "Semaphore",
    "SerializationError",
    "SharedArray",
    "SharedMemoryWarning",
    "SimpleQueue",
    "TaskTimeoutError",
    "TimeoutError",
    "Value",
    "WorkerLostError",
    "WorkerStack",
    "WorkerStatistics",
    "active_children",
    "allow_connection_pickling",
    "cpu_count",
    "current_process",
    "freeze_support",
    "get_all_start_methods",
    "get_context",
    "get_logger",
    "get_start_method",
    "log_to_stderr",
    "parent_process",
    "reducer",
    "set_executable",
    "set_forkserver_preload",
    "set_start_method",
    "shared_array",
]
