"""Functions the asyncio tests run in workers: coroutine functions and a few plain ones.

Importable by reference, so every start method can run them.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

_running = 0  # coroutines of at_once() running in this worker now
_most = 0  # the most that ever ran at once here


async def double(x: Any) -> Any:
    await asyncio.sleep(0)
    return 2 * x


async def add(a: Any, b: Any, *, scale: int = 1) -> Any:
    await asyncio.sleep(0)
    return (a + b) * scale


async def nap(x: Any, seconds: float = 0.05) -> Any:
    await asyncio.sleep(seconds)
    return x


async def at_once(seconds: float) -> tuple[int, int]:
    """(pid, the most at_once calls this worker ran together so far)."""
    global _running, _most
    _running += 1
    _most = max(_most, _running)
    try:
        await asyncio.sleep(seconds)
    finally:
        _running -= 1
    return os.getpid(), _most


async def raise_value_error(x: Any) -> Any:
    await asyncio.sleep(0)
    raise ValueError(f"bad value {x}")


async def mark_then_sleep(path: str, seconds: float) -> int:
    """Write 'started' to ``path``, sleep; on cancellation write 'cancelled' and re-raise."""
    Path(path).write_text("started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        Path(path).write_text(f"cancelled {os.getpid()}")
        raise
    Path(path).write_text("finished")
    return os.getpid()


async def touch(directory: str, x: int) -> int:
    """Create ``directory/x``, then sleep a little: a record that item x started."""
    Path(directory, str(x)).touch()
    await asyncio.sleep(0.05)
    return x


def touch_plain(directory: str, x: int) -> int:
    Path(directory, str(x)).touch()
    time.sleep(0.05)
    return x


async def crash() -> None:
    await asyncio.sleep(0.05)
    os._exit(7)


async def getpid() -> int:
    await asyncio.sleep(0)
    return os.getpid()


async def grow(megabytes: int) -> int:
    """Keep ``megabytes`` of memory alive in this worker; return the pid."""
    _hoard.append(bytearray(megabytes * 1024 * 1024))
    await asyncio.sleep(0)
    return os.getpid()


_hoard: list[bytearray] = []


async def total(array: Any) -> float:
    await asyncio.sleep(0)
    return float(array.sum())


async def getpid_of(_: Any) -> int:
    await asyncio.sleep(0.01)
    return os.getpid()
