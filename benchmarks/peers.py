"""The peers, when installed: joblib (loky), mpire and pebble, opened the way their users do.

Each one that ``manycore._bench.peers.find_peers`` reports usable gets a ``PeerPool``: a
map-style call and a one-task-per-item call, under the names the figures print. Missing
peers are skipped (the report's notes say which), never an error. faster-fifo is
a queue, not a pool, and has no figure here yet.

How each is driven, and why:

* joblib: ``Parallel(n_jobs, backend="loky")(delayed(f)(x) for x in xs)`` for maps, a new
  ``Parallel`` per call as users write it (joblib reuses loky's executor between calls, so
  workers stay warm); per item, the loky executor itself (``get_reusable_executor``), whose
  ``submit`` is the ``concurrent.futures`` API;
* mpire: ``WorkerPool(n_jobs, keep_alive=True)`` (without ``keep_alive`` every map starts its
  workers afresh): ``map`` and ``apply_async``;
* pebble: ``ProcessPool(max_workers)``: ``map`` (chunksize 1 by default, like the stdlib's
  ``imap``, so it runs over fewer items) and ``schedule``.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from manycore._bench.peers import find_peers, stop_joblib_workers

from ._harness import Context, describe, opened

__all__ = ["COMPARED", "PeerPool", "open_peers"]

Fn = Callable[[Any], Any]


@dataclass
class PeerPool:
    """One peer's pool, started: what the figures call it and how to run work on it."""

    name: str  # the peer, as in PEERS
    map_label: str
    map: Callable[[Fn, Sequence[Any]], list[Any]]
    each_label: str
    each: Callable[[Fn, int], list[Any]]  # one task per item of range(n)
    each_is_future: bool  # each returns futures (compare with submit), else apply_async
    per_item_map: bool = False  # its map sends one item per message: time fewer items


@contextlib.contextmanager
def open_peers(ctx: Context, workers: int) -> Iterator[list[PeerPool]]:
    """Start a pool of every installed peer; close them all (under deadlines) at the end."""
    found = find_peers()
    with contextlib.ExitStack() as stack:
        pools = []
        for name, opener in _OPENERS.items():
            if not found[name].usable:
                continue
            try:
                pools.append(opener(ctx, stack, workers))
            except Exception as exc:
                ctx.note(f"{name} could not start, so it has no figure here: {describe(exc)}")
        yield pools


def _joblib(ctx: Context, stack: contextlib.ExitStack, workers: int) -> PeerPool:
    joblib: Any = importlib.import_module("joblib")
    loky: Any = importlib.import_module("joblib.externals.loky")
    if workers < 2:
        ctx.note("joblib.Parallel with n_jobs=1 runs every task in the caller's process.")
    # joblib.Parallel and get_reusable_executor share one loky executor, created on first
    # use; it is stopped when the suite ends.
    stack.enter_context(
        opened(
            ctx,
            "joblib's loky executor",
            _Closer(stop_joblib_workers, lambda: stop_joblib_workers(kill=True)),
        )
    )

    def run_map(fn: Fn, items: Sequence[Any]) -> list[Any]:
        call = joblib.delayed(fn)
        return list(joblib.Parallel(n_jobs=workers, backend="loky")(call(x) for x in items))

    def each(fn: Fn, n: int) -> list[Any]:
        executor = loky.get_reusable_executor(max_workers=workers)
        futures = [executor.submit(fn, i) for i in range(n)]
        return [f.result() for f in futures]

    return PeerPool("joblib", "joblib.Parallel (loky)", run_map, "loky executor.submit", each, True)


def _mpire(ctx: Context, stack: contextlib.ExitStack, workers: int) -> PeerPool:
    mpire: Any = importlib.import_module("mpire")
    pool = mpire.WorkerPool(n_jobs=workers, keep_alive=True)
    stack.enter_context(
        opened(ctx, "mpire.WorkerPool", _Closer(pool.stop_and_join, pool.terminate))
    )

    def run_map(fn: Fn, items: Sequence[Any]) -> list[Any]:
        return list(pool.map(fn, items))

    def each(fn: Fn, n: int) -> list[Any]:
        pending = [pool.apply_async(fn, args=(i,)) for i in range(n)]
        return [r.get() for r in pending]

    return PeerPool(
        "mpire", "mpire.WorkerPool.map", run_map, "mpire.WorkerPool.apply_async", each, False
    )


def _pebble(ctx: Context, stack: contextlib.ExitStack, workers: int) -> PeerPool:
    pebble: Any = importlib.import_module("pebble")
    pool = pebble.ProcessPool(max_workers=workers)

    def close() -> None:
        pool.close()
        pool.join()

    def stop() -> None:
        pool.stop()
        pool.join()

    stack.enter_context(opened(ctx, "pebble.ProcessPool", _Closer(close, stop)))

    def run_map(fn: Fn, items: Sequence[Any]) -> list[Any]:
        return list(pool.map(fn, items).result())

    def each(fn: Fn, n: int) -> list[Any]:
        futures = [pool.schedule(fn, args=(i,)) for i in range(n)]
        return [f.result() for f in futures]

    return PeerPool(
        "pebble",
        "pebble.ProcessPool.map",
        run_map,
        "pebble.ProcessPool.schedule",
        each,
        True,
        per_item_map=True,
    )


class _Closer:
    """The ``close()``/``join()``/``terminate()`` that ``opened`` calls, for a peer whose
    own calls have other names."""

    def __init__(self, close: Callable[[], None], terminate: Callable[[], None]) -> None:
        self.close = close
        self.terminate = terminate

    def join(self) -> None:
        pass  # close() already waited


_OPENERS: dict[str, Callable[[Context, contextlib.ExitStack, int], PeerPool]] = {
    "joblib": _joblib,
    "mpire": _mpire,
    "pebble": _pebble,
}

# The peers that have figures; the others in PEERS (faster-fifo) are only detected.
COMPARED = frozenset(_OPENERS)
