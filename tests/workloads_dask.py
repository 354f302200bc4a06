"""Functions the Dask backend's tests run in Dask workers (importable by reference)."""

from __future__ import annotations

from typing import Any


def nbytes(buffer: Any) -> int:
    """The size of a buffer (bytes, bytearray, memoryview, PickleBuffer)."""
    return memoryview(buffer).nbytes
