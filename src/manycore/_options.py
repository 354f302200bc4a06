"""What a pool is asked for, checked once: ``PoolConfig`` and the per-task ``TaskOptions``.

``Pool`` and ``ProcessPoolExecutor`` take the same settings under partly different names
(``processes``/``max_workers``, ``context``/``mp_context``, ``maxtasksperchild``/
``max_tasks_per_child``). Each face hands its arguments, by keyword, to
``PoolConfig.for_pool`` or ``PoolConfig.for_executor``; every check lives here, and an
error names the argument the user wrote. The result is frozen: the scheduler is built from
it (``_backend.make_scheduler``) and nothing changes it afterwards.

Per-task options: a pool has defaults; each call may override them. The result is one
immutable ``TaskOptions`` shared by every task of the call, or ``None`` when every option is
off, so that a pool with no options pays a single ``is None`` test per task and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

from ._cpu import cpu_count
from ._errors import WorkerLostError

__all__ = [
    "DEFAULT",
    "PoolConfig",
    "TaskOptions",
    "check_chunksize",
    "merge_options",
    "parse_memory",
]


class _Default:
    """The marker for "not given here: use the pool's default"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<the pool's default>"


DEFAULT: Any = _Default()


class TaskOptions(NamedTuple):
    timeout: Optional[float]  # seconds a task may run, from its start in the worker
    retries: int  # times a failed task is run again
    retry_on: tuple[type[BaseException], ...]  # the failures that are retried


def check_timeout(value: Any, name: str = "task_timeout") -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, not {value!r}")
    return float(value)


def check_retries(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"retries must be an int >= 0 (the times a task is re-run), not {value!r}")
    return value


def check_retry_on(value: Any) -> tuple[type[BaseException], ...]:
    if value is None:
        return (WorkerLostError,)
    classes = (value,) if isinstance(value, type) else tuple(value)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(
                f"retry_on must be an exception class or a tuple of them, not {value!r} "
                "(e.g. retry_on=(manycore.WorkerLostError, manycore.TaskTimeoutError))"
            )
    return classes


def merge_options(
    defaults: Optional[TaskOptions],
    task_timeout: Any = DEFAULT,
    retries: Any = DEFAULT,
    retry_on: Any = DEFAULT,
) -> Optional[TaskOptions]:
    """The options of one call: its own where given, the pool's elsewhere; None if all off."""
    if task_timeout is DEFAULT and retries is DEFAULT and retry_on is DEFAULT:
        return defaults
    base = defaults or TaskOptions(None, 0, (WorkerLostError,))
    options = TaskOptions(
        base.timeout if task_timeout is DEFAULT else check_timeout(task_timeout),
        base.retries if retries is DEFAULT else check_retries(retries),
        base.retry_on if retry_on is DEFAULT else check_retry_on(retry_on),
    )
    if options.timeout is None and options.retries == 0:
        return None
    return options


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_memory(value: Any, name: str = "max_memory_per_child") -> Optional[int]:
    """Bytes from an int or a string such as ``"512MiB"`` or ``"2GB"``; None stays None."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", value)
        if found and found.group(2).lower() in _UNITS:
            amount = int(float(found.group(1)) * _UNITS[found.group(2).lower()])
            if amount > 0:
                return amount
    raise ValueError(
        f"{name} must be a positive number of bytes or a size such as '512MiB' or '2GB', "
        f"not {value!r}"
    )


def check_chunksize(chunksize: Optional[int]) -> None:
    """Refuse a ``chunksize`` that is neither None nor a positive int."""
    if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
        raise ValueError(f"chunksize must be a positive int or None, not {chunksize!r}")


# A bad worker count is reported in the words of the face's stdlib counterpart
# (multiprocessing.Pool, concurrent.futures.ProcessPoolExecutor), keyed by the argument name.
_BAD_WORKERS = {
    "processes": "Number of processes must be at least 1, not {!r}",
    "max_workers": "max_workers must be greater than 0, not {!r}",
}


@dataclass(frozen=True, init=False)
class PoolConfig:
    """A pool's or an executor's settings, checked, in one read-only object.

    Build it with ``for_pool`` or ``for_executor``, which take each face's own argument
    names; the fields use one vocabulary for both.

    Raises (from the constructors):
        ValueError: a worker count below 1, a bad task quota, memory limit or task
            option, an unknown backend, an ``address`` without ``backend="dask"``, or a
            setting the Dask backend cannot honour (a start method, a task quota, a memory
            limit). An unknown start method is refused when the scheduler is built.
        TypeError: ``initializer`` is not callable, or ``retry_on`` holds a non-exception.
    """

    __slots__ = (
        "address",
        "backend",
        "context",
        "initargs",
        "initializer",
        "max_memory_per_child",
        "max_tasks_per_child",
        "options",
        "requested_workers",
        "workers",
    )

    workers: int  # how many workers to run locally (the cpu count when none was asked)
    requested_workers: Optional[int]  # as given: None lets a Dask cluster decide its size
    initializer: Optional[Callable[..., object]]
    initargs: tuple[Any, ...]
    max_tasks_per_child: Optional[int]  # None: workers are never replaced for a count
    max_memory_per_child: Optional[int]  # bytes; None: no limit
    context: Any  # the start method as given; _launch.resolve_start_method reads it
    backend: str  # "local" or "dask"
    address: Any  # where the Dask cluster is; None with the local backend
    options: Optional[TaskOptions]  # the pool's per-task defaults; None when all are off

    def __init__(
        self,
        *,
        workers: Optional[int],
        initializer: Optional[Callable[..., object]],
        initargs: Iterable[Any],
        max_tasks_per_child: Optional[int],
        max_memory_per_child: Any,
        context: Any,
        backend: str,
        address: Any,
        task_timeout: Any,
        retries: Any,
        retry_on: Any,
        workers_name: str,
        quota_name: str,
    ) -> None:
        # The checks run in this order so that, of several mistakes, the same one is
        # reported as before the checks were gathered here.
        requested = workers
        if workers is None:
            workers = cpu_count()
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(_BAD_WORKERS[workers_name].format(workers))
        if max_tasks_per_child is not None and (
            not isinstance(max_tasks_per_child, int) or max_tasks_per_child < 1
        ):
            raise ValueError(
                f"{quota_name} must be a positive int or None, not {max_tasks_per_child!r}"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be a callable, not {initializer!r}")
        options = merge_options(None, task_timeout, retries, retry_on)
        max_memory = parse_memory(max_memory_per_child)
        initargs = tuple(initargs)
        if backend != "local" or address is not None:
            _check_dask(backend, address, context, max_tasks_per_child, max_memory)
        # Frozen: the fields are written once, here, past the dataclass's guard.
        for name, value in (
            ("workers", workers),
            ("requested_workers", requested),
            ("initializer", initializer),
            ("initargs", initargs),
            ("max_tasks_per_child", max_tasks_per_child),
            ("max_memory_per_child", max_memory),
            ("context", context),
            ("backend", backend),
            ("address", address),
            ("options", options),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def for_pool(
        cls,
        *,
        processes: Optional[int],
        initializer: Optional[Callable[..., object]],
        initargs: Iterable[Any],
        maxtasksperchild: Optional[int],
        max_tasks_per_child: Optional[int],
        context: Any,
        backend: str,
        address: Any,
        task_timeout: Any,
        retries: Any,
        retry_on: Any,
        max_memory_per_child: Any,
    ) -> PoolConfig:
        """The config of ``Pool(...)``, which also takes ``max_tasks_per_child``."""
        quota, quota_name = maxtasksperchild, "maxtasksperchild"
        if max_tasks_per_child is not None:
            if maxtasksperchild is not None and maxtasksperchild != max_tasks_per_child:
                raise ValueError("give maxtasksperchild or max_tasks_per_child, not both")
            quota, quota_name = max_tasks_per_child, "max_tasks_per_child"
        return cls(
            workers=processes,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_child=quota,
            max_memory_per_child=max_memory_per_child,
            context=context,
            backend=backend,
            address=address,
            task_timeout=task_timeout,
            retries=retries,
            retry_on=retry_on,
            workers_name="processes",
            quota_name=quota_name,
        )

    @classmethod
    def for_executor(
        cls,
        *,
        max_workers: Optional[int],
        mp_context: Any,
        initializer: Optional[Callable[..., object]],
        initargs: Iterable[Any],
        max_tasks_per_child: Optional[int],
        backend: str,
        address: Any,
        task_timeout: Any,
        retries: Any,
        retry_on: Any,
        max_memory_per_child: Any,
    ) -> PoolConfig:
        """The config of ``ProcessPoolExecutor(...)``."""
        return cls(
            workers=max_workers,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_child=max_tasks_per_child,
            max_memory_per_child=max_memory_per_child,
            context=mp_context,
            backend=backend,
            address=address,
            task_timeout=task_timeout,
            retries=retries,
            retry_on=retry_on,
            workers_name="max_workers",
            quota_name="max_tasks_per_child",
        )


def _check_dask(
    backend: str,
    address: Any,
    context: Any,
    max_tasks: Optional[int],
    max_memory: Optional[int],
) -> None:
    """Refuse a backend other than the two, and what the Dask backend cannot honour."""
    if backend != "dask":
        if backend == "local":
            raise ValueError(
                f"address={address!r} needs backend='dask': the local backend runs worker "
                "processes on this machine and connects to nothing"
            )
        raise ValueError(f"unknown backend {backend!r}: use 'local' (the default) or 'dask'")
    if context is not None:
        raise ValueError(
            "a start method (context=/mp_context=) has no meaning with backend='dask': Dask "
            "workers are started by the cluster; leave it out"
        )
    if max_tasks is not None:
        raise ValueError(
            "maxtasksperchild/max_tasks_per_child is not supported with backend='dask': "
            "Dask workers are not replaced per task; leave it out (or use the local backend)"
        )
    if max_memory is not None:
        raise ValueError(
            "max_memory_per_child is not supported with backend='dask': set the Dask "
            "workers' memory limits (`dask worker --memory-limit`) instead"
        )
