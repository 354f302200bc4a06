"""One task per item: the cost of ``apply_async`` and ``submit`` themselves.

Figures (issue 2), 20k items of ``x*x``, every result collected:

* ``manycore.Pool.apply_async`` at least 3x the items/s of ``multiprocessing.Pool``'s;
* ``manycore.ProcessPoolExecutor.submit`` at least 10x the items/s of
  ``concurrent.futures.ProcessPoolExecutor``'s.

A timed call submits every item first, then waits for every result, as code that fans out
work and gathers it does.

Reference figures set the same calls beside each installed peer's (``peers``), measured in
the same rounds: mpire's ``apply_async`` beside ``Pool.apply_async``; the loky executor's
``submit`` (joblib's backend) and pebble's ``schedule``, which return futures, beside
``ProcessPoolExecutor.submit``.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import manycore

from . import workloads
from ._harness import Call, Context, Figure, Measurement, measure, opened
from .peers import open_peers

__all__ = ["run"]

SUITE = "submit"


def _apply_each(pool: Any, n: int) -> list[Any]:
    pending = [pool.apply_async(workloads.square, (i,)) for i in range(n)]
    return [r.get() for r in pending]


def _submit_each(executor: Any, n: int) -> list[Any]:
    futures = [executor.submit(workloads.square, i) for i in range(n)]
    return [f.result() for f in futures]


def run(ctx: Context) -> list[Figure]:
    n = ctx.size(20_000, 5_000)
    warm = min(n, 2_000)
    expected = [i * i for i in range(n)]
    w = ctx.workers

    def right(result: Any) -> bool:
        return bool(result == expected)

    with contextlib.ExitStack() as stack:
        mp_pool = stack.enter_context(opened(ctx, "multiprocessing.Pool", multiprocessing.Pool(w)))
        mc_pool = stack.enter_context(opened(ctx, "manycore.Pool", manycore.Pool(w)))
        cf_exec = stack.enter_context(
            opened(ctx, "concurrent.futures.ProcessPoolExecutor", ProcessPoolExecutor(w))
        )
        mc_exec = stack.enter_context(
            opened(ctx, "manycore.ProcessPoolExecutor", manycore.ProcessPoolExecutor(w))
        )
        calls = [
            Call(
                Measurement("manycore.Pool.apply_async", n),
                lambda: _apply_each(mc_pool, n),
                right,
                warmup=lambda: _apply_each(mc_pool, warm),
            ),
            Call(
                Measurement("multiprocessing.Pool.apply_async", n),
                lambda: _apply_each(mp_pool, n),
                right,
                warmup=lambda: _apply_each(mp_pool, warm),
            ),
            Call(
                Measurement("manycore.ProcessPoolExecutor.submit", n),
                lambda: _submit_each(mc_exec, n),
                right,
                warmup=lambda: _submit_each(mc_exec, warm),
            ),
            Call(
                Measurement("concurrent.futures.ProcessPoolExecutor.submit", n),
                lambda: _submit_each(cf_exec, n),
                right,
                warmup=lambda: _submit_each(cf_exec, warm),
            ),
        ]
        peers = stack.enter_context(open_peers(ctx, w))
        peer_calls = [
            Call(
                Measurement(peer.each_label, n),
                # bind this peer now, not when the call runs
                functools.partial(peer.each, workloads.square, n),
                right,
                warmup=functools.partial(peer.each, workloads.square, warm),
            )
            for peer in peers
        ]
        measure(ctx, f"one apply_async / submit per item, {n:,} items", calls + peer_calls)

    mc_apply, mp_apply, mc_submit, cf_submit = (c.measurement for c in calls)
    peer_figures = [
        Figure(
            SUITE,
            f"{'Executor.submit' if peer.each_is_future else 'Pool.apply_async'} per item, "
            f"{n // 1000}k items, vs {peer.each_label}",
            mc_submit if peer.each_is_future else mc_apply,
            call.measurement,
            compare="speed",
            show="rate",
            baseline_kind="peer",
        )
        for peer, call in zip(peers, peer_calls)
    ]
    return [
        Figure(
            SUITE,
            f"Pool.apply_async per item, {n // 1000}k items",
            mc_apply,
            mp_apply,
            compare="speed",
            target=3.0,
            show="rate",
        ),
        Figure(
            SUITE,
            f"Executor.submit per item, {n // 1000}k items",
            mc_submit,
            cf_submit,
            compare="speed",
            target=10.0,
            show="rate",
        ),
        *peer_figures,
    ]
