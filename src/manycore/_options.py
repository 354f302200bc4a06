"""Per-task options (``task_timeout``, ``retries``, ``retry_on``) and their checks.

A pool has defaults; each call may override them. The result is one immutable
``TaskOptions`` shared by every task of the call, or ``None`` when every option is off, so
that a pool with no options pays a single ``is None`` test per task and nothing else.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Optional

from ._errors import WorkerLostError

__all__ = ["DEFAULT", "TaskOptions", "merge_options", "parse_memory"]


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
