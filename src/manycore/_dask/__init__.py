"""The Dask backend: ``Pool``/``ProcessPoolExecutor(..., backend="dask", address=...)``.

A transport for the engine core, in three parts, none of which imports Dask until a Dask
pool is made:

    scheduler.py   DaskScheduler (the engine on a Dask cluster)
    worker.py      run_batch: what runs inside a Dask worker (needs only manycore there)
    cluster.py     importing Dask, starting a LocalCluster, connecting to one
"""

from __future__ import annotations

from .scheduler import DaskScheduler

__all__ = ["DaskScheduler"]
