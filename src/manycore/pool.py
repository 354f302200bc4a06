"""``manycore.pool``: what code imports from ``multiprocessing.pool``."""

from __future__ import annotations

from multiprocessing.pool import (  # type: ignore[attr-defined]  # typeshed lacks it
    MaybeEncodingError as MaybeEncodingError,
)
from multiprocessing.pool import ThreadPool as ThreadPool

from ._pool import ApplyResult as ApplyResult
from ._pool import AsyncResult as AsyncResult
from ._pool import MapResult as MapResult
from ._pool import Pool as Pool

__all__ = ["ApplyResult", "AsyncResult", "MapResult", "MaybeEncodingError", "Pool", "ThreadPool"]
