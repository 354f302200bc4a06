"""manycore's pools for asyncio code: ``async with manycore.aio.Pool() as pool``.

See docs/asyncio.md. ``aio.Pool`` runs on the same engine as ``manycore.Pool`` and takes the
same options, plus ``concurrency`` (coroutines per worker).
"""

from ._aio import Pool as Pool
from ._aio import PoolOptions as PoolOptions

__all__ = ["Pool", "PoolOptions"]
