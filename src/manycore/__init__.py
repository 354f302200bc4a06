"""manycore: true parallelism on every core, with the ``multiprocessing`` API.

``import manycore as multiprocessing`` and existing pool code runs unchanged, with workers
that never hang the caller, arguments that travel by value when they must (lambdas,
closures, ``__main__`` functions), and far less overhead per task. See docs/design.md.
"""

from __future__ import annotations

from ._cpu import cpu_count as cpu_count
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
from ._errors import TimeoutError as TimeoutError
from ._errors import WorkerLostError as WorkerLostError
from ._executor import ProcessPoolExecutor as ProcessPoolExecutor
from ._pool import AsyncResult as AsyncResult
from ._pool import Pool as Pool

__version__ = "0.1.0"

__all__ = [
    "ArgumentPicklingError",
    "ArgumentUnpicklingError",
    "AsyncResult",
    "InitializerError",
    "ManycoreError",
    "Pool",
    "PoolBrokenError",
    "PoolClosedError",
    "ProcessPoolExecutor",
    "RemoteTraceback",
    "ResultPicklingError",
    "ResultUnpicklingError",
    "SerializationError",
    "TimeoutError",
    "WorkerLostError",
    "cpu_count",
]
