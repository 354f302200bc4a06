"""Functions the Dask backend's tests run in Dask workers (importable by reference)."""

from __future__ import annotations

from typing import Any


def nbytes(buffer: Any) -> int:
    """The size of a buffer (bytes, bytearray, memoryview, PickleBuffer)."""
    return memoryview(buffer).nbytes


def exit_the_first_time(marker: str) -> str:
    """Kill the worker process the first time (``marker`` does not exist yet), then succeed."""
    import os

    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os._exit(9)
    return "second run"


def raise_the_first_time(marker: str) -> str:
    """Raise ConnectionError the first time, then succeed."""
    import os

    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        raise ConnectionError("flaky")
    return "second run"
