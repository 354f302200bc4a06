"""What both faces share: the scheduler a ``PoolConfig`` asks for, the function cache, and
the task of a single call.

``Pool`` and ``ProcessPoolExecutor`` take these from here, so neither face imports the
other. Who runs it: the caller's thread, once per pool (``make_scheduler``) and once per
call (``function_cache``, ``call_task``).

Guarantees:

* **Dask is imported only when a Dask pool is made.** The local backend never imports the
  Dask module; without Dask installed, ``backend="dask"`` raises ``ImportError`` naming
  ``pip install 'manycore[dask]'`` (from the Dask module).
* **A scheduler that cannot honour the pool's task options is not left running**: it is
  terminated and joined before the error reaches the caller.
"""

from __future__ import annotations

from typing import Any, Callable

from ._engine import Engine, Sink, Task
from ._launch import resolve_start_method
from ._messages import CORO
from ._options import PoolConfig, TaskOptions
from ._outcome import is_coroutine_function
from ._scheduler import Scheduler
from ._serialize import FunctionCache

__all__ = ["call_task", "function_cache", "make_scheduler"]

# One cache for every pool and executor of the process: a function that pickles by
# reference is pickled once for all of them (see FunctionCache).
function_cache = FunctionCache()


def make_scheduler(
    config: PoolConfig, worker_title: str = "PoolWorker", on_demand: bool = False
) -> Engine:
    """The scheduler behind a Pool or an executor: local worker processes, or Dask.

    ``worker_title`` names local workers as the stdlib's do: ``"PoolWorker"`` for a Pool
    (``ForkPoolWorker-3``), ``"Process"`` for an executor (``ForkProcess-3``).
    ``on_demand``: start local workers as work arrives (the stdlib executor's way), not all
    at once (its Pool's).

    Raises:
        ValueError: an unknown start method, or task options the backend cannot honour
            (a task timeout with Dask).
        ImportError: ``backend="dask"`` without Dask installed.
        OSError: the Dask scheduler at ``config.address`` could not be reached.
    """
    if config.backend == "local":  # the config has refused an address with it
        return Scheduler(
            launcher=resolve_start_method(config.context),
            workers=config.workers,
            initializer=config.initializer,
            initargs=config.initargs,
            max_tasks_per_child=config.max_tasks_per_child,
            max_memory_per_child=config.max_memory_per_child,
            worker_title=worker_title,
            on_demand=on_demand,
        )
    # Imported only here: importing manycore never imports Dask.
    from ._dask import DaskScheduler

    scheduler = DaskScheduler(
        address=config.address,
        processes=config.requested_workers,
        initializer=config.initializer,
        initargs=config.initargs,
    )
    try:
        scheduler.check_options(config.options)
    except BaseException:
        scheduler.terminate()
        scheduler.join()
        raise
    return scheduler


def call_task(
    *,
    kind: int,
    fn: Callable[..., Any],
    fn_blob: bytes,
    payload: bytes,
    sink: Sink,
    options: TaskOptions | None,
) -> Task:
    """The task of one ``apply_async``/``submit`` call: chunk 0 of its call, one item.

    The faces call this function by keyword rather than ``Task(kind=..., ...)``: CPython
    hands a class's keyword arguments to ``__init__`` through a dict, about 0.3 us more per
    call (a tenth of what ``submit`` costs its caller), while a function takes them as they
    are. The positional order is written once, here.
    """
    if is_coroutine_function(fn):
        kind |= CORO
    return Task(kind, fn, fn_blob, payload, sink, 0, 1, options)
