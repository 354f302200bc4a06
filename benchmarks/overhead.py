"""Per-item overhead of map-style calls on trivial tasks, with the chunking users get by default.

Figures (issue 2):

* ``map(x*x)`` over 200k ints, default chunking: ``manycore.Pool.map`` at least 1.0x the
  speed of ``multiprocessing.Pool.map``.
* ``imap`` and ``Executor.map`` with no chunksize: at least 30x the items/s of the stdlib's
  same call (``Pool.imap``, ``Executor.map``), whose default chunksize is 1; both sides run
  over the same items (20k), since per-item costs differ with the size of a run.

A reference row sets manycore's ``Executor.map`` beside the stdlib ``Pool.imap`` (the other
API). Reference rows set ``Pool.map`` beside
each installed peer's map (``peers``), measured in the same rounds; pebble's map, chunksize 1
by default, runs over as many items as the stdlib's ``imap``.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

import manycore

from . import workloads
from ._harness import Call, Context, Figure, Measurement, measure, opened
from .peers import open_peers

__all__ = ["run"]

SUITE = "overhead"


def _squares_of(n: int) -> Callable[[Any], bool]:
    expected = [x * x for x in range(n)]
    return lambda result: list(result) == expected


def k(n: int) -> str:
    """``20000`` -> ``"20k"``."""
    return f"{n // 1000}k" if n % 1000 == 0 else f"{n:,}"


def run(ctx: Context) -> list[Figure]:
    n_map = 200_000
    n_each = ctx.size(20_000, 5_000)  # imap / Executor.map with chunksize 1 on the stdlib side
    square = workloads.square
    w = ctx.workers

    with contextlib.ExitStack() as stack:
        mp_pool = stack.enter_context(opened(ctx, "multiprocessing.Pool", multiprocessing.Pool(w)))
        mc_pool = stack.enter_context(opened(ctx, "manycore.Pool", manycore.Pool(w)))
        mp_map = Call(
            Measurement("multiprocessing.Pool.map", n_map),
            lambda: mp_pool.map(square, range(n_map)),
            _squares_of(n_map),
        )
        mc_map = Call(
            Measurement("manycore.Pool.map", n_map),
            lambda: mc_pool.map(square, range(n_map)),
            _squares_of(n_map),
        )
        peers = stack.enter_context(open_peers(ctx, w))
        peer_maps = []
        for peer in peers:
            n = n_each if peer.per_item_map else n_map
            peer_maps.append(
                Call(
                    Measurement(f"{peer.map_label} ({k(n)})", n),
                    # bind this peer and size now, not when the call runs
                    functools.partial(peer.map, square, range(n)),
                    _squares_of(n),
                    warmup=functools.partial(peer.map, square, range(1000)),
                )
            )
        measure(ctx, f"map(x*x) over {n_map:,} ints", [mc_map, mp_map, *peer_maps])

        cf_exec = stack.enter_context(
            opened(ctx, "concurrent.futures.ProcessPoolExecutor", ProcessPoolExecutor(w))
        )
        mc_exec = stack.enter_context(
            opened(ctx, "manycore.ProcessPoolExecutor", manycore.ProcessPoolExecutor(w))
        )
        mp_imap = Call(
            Measurement(f"multiprocessing.Pool.imap ({n_each // 1000}k)", n_each),
            lambda: list(mp_pool.imap(square, range(n_each))),
            _squares_of(n_each),
            warmup=lambda: list(mp_pool.imap(square, range(1000))),
        )
        mc_imap = Call(
            Measurement(f"manycore.Pool.imap ({n_each // 1000}k)", n_each),
            lambda: list(mc_pool.imap(square, range(n_each))),
            _squares_of(n_each),
        )
        mc_exmap = Call(
            Measurement(f"manycore.ProcessPoolExecutor.map ({n_each // 1000}k)", n_each),
            lambda: list(mc_exec.map(square, range(n_each))),
            _squares_of(n_each),
        )
        cf_exmap = Call(
            Measurement(f"concurrent.futures.ProcessPoolExecutor.map ({n_each // 1000}k)", n_each),
            lambda: list(cf_exec.map(square, range(n_each))),
            _squares_of(n_each),
            warmup=lambda: list(cf_exec.map(square, range(500))),
        )
        measure(
            ctx, "imap / Executor.map with no chunksize", [mc_imap, mp_imap, mc_exmap, cf_exmap]
        )

    peer_figures = [
        Figure(
            SUITE,
            f"Pool.map(x*x), default chunking, {k(n_map)} vs {peer.map_label} "
            f"{k(call.measurement.items)}",
            mc_map.measurement,
            call.measurement,
            compare="speed",
            show="rate",
            baseline_kind="peer",
        )
        for peer, call in zip(peers, peer_maps)
    ]
    return [
        Figure(
            SUITE,
            f"Pool.map(x*x), {n_map // 1000}k ints, default chunking",
            mc_map.measurement,
            mp_map.measurement,
            compare="speed",
            target=1.0,
        ),
        *peer_figures,
        Figure(
            SUITE,
            f"Pool.imap(x*x), no chunksize, {k(n_each)} items",
            mc_imap.measurement,
            mp_imap.measurement,
            compare="speed",
            target=30.0,
            show="rate",
        ),
        Figure(
            SUITE,
            f"Executor.map(x*x), no chunksize, {k(n_each)} items",
            mc_exmap.measurement,
            cf_exmap.measurement,
            compare="speed",
            target=30.0,
            show="rate",
        ),
        Figure(
            SUITE,
            f"Executor.map(x*x), no chunksize, {k(n_each)} items, vs stdlib Pool.imap",
            mc_exmap.measurement,
            mp_imap.measurement,
            compare="speed",
            show="rate",
        ),
    ]
