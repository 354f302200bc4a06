"""Queues and pipes between processes: manycore beside multiprocessing and faster-fifo.

Figures (issue 3), each side in its own fresh processes (started by ``fork`` for every
side alike), producer and consumer both child processes, every item checked:

* ``Queue``, 1 producer -> 1 consumer, 200k small tuples: at least 3x
  ``multiprocessing.Queue``'s messages/s; 4 producers -> 4 consumers as a reference;
* ``Queue`` with 1 MiB messages: at least 8x ``multiprocessing.Queue``'s MB/s;
* ``Pipe``, a child sends and the parent receives: at least 1.0x ``multiprocessing.Pipe``
  for small messages and for 1 MiB messages.

Figures (issue 4, when NumPy is installed): ``Queue`` and ``Pipe`` moving 64 MiB float64
arrays, at least 10x their stdlib counterparts' MB/s. manycore copies each array once, into
shared memory, and the consumer gets a view of it; the consumers here count what they get
and do not read the data, so the figure is the cost of delivery (the stdlib's consumer has
the bytes copied in by then, ours maps them on first touch).

References: the same queue runs with faster-fifo (when installed; its buffer is sized to
hold the messages), and manycore's ``put_many``/``get_many`` in batches of 100 beside the
stdlib's one-by-one calls (the stdlib has no batch call).

Run alone: ``python -m benchmarks --only queues`` (``--quick`` for fewer items).
"""

from __future__ import annotations

import importlib
import multiprocessing
from typing import Any, Callable

import manycore._connection as mc_connection
import manycore._queue as mc_queues

from ._harness import Call, Context, Figure, Measurement, measure

__all__ = ["run"]

SUITE = "queues"
MIB = 1 << 20
SMALL = (12345, 6.5, "small")
JOIN_S = 120.0
ARRAY_BYTES = 64 * MIB
FASTER_FIFO_BYTES = 64 * MIB  # faster-fifo's buffer: room for a few 1 MiB messages in flight


# --- run in the child processes (fork: nothing here needs to be importable) -----------------


def _produce(q: Any, n: int, item: Any, batch: int) -> None:
    if batch:
        for start in range(0, n, batch):
            q.put_many([item] * min(batch, n - start))
    else:
        for _ in range(n):
            q.put(item)


def _consume(q: Any, results: Any, batch: int) -> None:
    """Get until ``None``; report how many items came."""
    count = 0
    if batch:
        while True:
            got = q.get_many(batch, timeout=JOIN_S)
            if got[-1] is None:
                count += len(got) - 1
                break
            count += len(got)
    else:
        while q.get(timeout=JOIN_S) is not None:
            count += 1
    results.put(count)


def _send(conn: Any, n: int, item: Any) -> None:
    for _ in range(n):
        conn.send(item)
    conn.close()


# --- the timed calls ---------------------------------------------------------------------------


def _queue_run(
    make: Callable[[], Any], producers: int, consumers: int, n: int, item: Any, batch: int = 0
) -> Callable[[], int]:
    """A call that moves ``n`` copies of ``item`` from producers to consumers; returns how
    many arrived. The queue is made afresh (and its processes started) in every call."""
    ctx = multiprocessing.get_context("fork")

    def call() -> int:
        q = make()
        results = ctx.SimpleQueue()
        share = [n // producers + (i < n % producers) for i in range(producers)]
        readers = [ctx.Process(target=_consume, args=(q, results, batch)) for _ in range(consumers)]
        writers = [ctx.Process(target=_produce, args=(q, k, item, batch)) for k in share]
        for p in readers + writers:
            p.start()
        for p in writers:
            p.join(JOIN_S)
        for _ in range(consumers):
            q.put(None)
        total = sum(int(results.get()) for _ in range(consumers))
        for p in readers:
            p.join(JOIN_S)
        if any(p.exitcode != 0 for p in readers + writers):
            raise RuntimeError("a producer or consumer process failed")
        return total

    return call


def _pipe_run(make: Callable[[], Any], n: int, item: Any) -> Callable[[], int]:
    """A call where a child sends ``n`` copies of ``item`` and the parent receives them."""
    ctx = multiprocessing.get_context("fork")

    def call() -> int:
        reader, writer = make()
        p = ctx.Process(target=_send, args=(writer, n, item))
        p.start()
        writer.close()
        count = 0
        for _ in range(n):
            reader.recv()
            count += 1
        reader.close()
        p.join(JOIN_S)
        return count if p.exitcode == 0 else -1

    return call


def _equals(want: int) -> Callable[[Any], bool]:
    return lambda got: bool(got == want)


def _faster_fifo() -> Any:
    try:
        faster_fifo = importlib.import_module("faster_fifo")  # optional, and has no type stubs
    except ImportError:
        return None
    return lambda: faster_fifo.Queue(max_size_bytes=FASTER_FIFO_BYTES)


def _numpy() -> Any:
    try:
        return importlib.import_module("numpy")
    except ImportError:
        return None


def run(ctx: Context) -> list[Figure]:
    ff = _faster_fifo()
    if ff is None:
        ctx.note("queues: faster-fifo is not installed; its reference rows are left out")
    figures: list[Figure] = []

    def trio(
        title: str,
        name: str,
        args: tuple[Any, ...],
        items: int,
        target: float | None,
        ff_too: bool = True,
    ) -> None:
        calls = [
            Call(
                Measurement(f"manycore.Queue {title}", items),
                _queue_run(mc_queues.Queue, *args),
                _equals(args[2]),
            ),
            Call(
                Measurement(f"multiprocessing.Queue {title}", items),
                _queue_run(multiprocessing.Queue, *args),
                _equals(args[2]),
            ),
        ]
        if ff is not None and ff_too:
            calls.append(
                Call(
                    Measurement(f"faster_fifo.Queue {title}", items),
                    _queue_run(ff, *args),
                    _equals(args[2]),
                )
            )
        measure(ctx, f"queue {title}", calls)
        figures.append(
            Figure(
                SUITE,
                name,
                calls[0].measurement,
                calls[1].measurement,
                compare="speed",
                target=target,
                show="rate",
            )
        )
        if len(calls) == 3:
            figures.append(
                Figure(
                    SUITE,
                    f"{name} vs faster-fifo",
                    calls[0].measurement,
                    calls[2].measurement,
                    compare="speed",
                    show="rate",
                    baseline_kind="peer",
                )
            )

    n = ctx.size(200_000, 50_000)
    trio(
        "1->1 small",
        f"Queue 1 producer -> 1 consumer, {n // 1000}k small tuples (msg/s)",
        (1, 1, n, SMALL),
        n,
        3.0,
    )
    trio(
        "4->4 small",
        f"Queue 4 producers -> 4 consumers, {n // 1000}k small tuples (msg/s)",
        (4, 4, n, SMALL),
        n,
        None,
    )
    big = ctx.size(500, 250)
    megabytes = big * MIB // 1_000_000  # items = MB, so items/s reads as MB/s
    trio(
        "1->1 1 MiB",
        f"Queue 1 -> 1, {big} messages of 1 MiB (MB/s)",
        (1, 1, big, b"x" * MIB),
        megabytes,
        8.0,
    )
    numpy = _numpy()
    arrays = ctx.size(16, 6)
    if numpy is None:
        ctx.note("queues: NumPy is not installed; the 64 MiB array rows are left out")
    else:
        # faster-fifo is left out: its buffer would have to hold a whole 64 MiB message.
        trio(
            "1->1 64 MiB array",
            f"Queue 1 -> 1, {arrays} float64 arrays of 64 MiB (MB/s)",
            (1, 1, arrays, numpy.ones(ARRAY_BYTES // 8)),
            arrays * ARRAY_BYTES // 1_000_000,
            10.0,
            ff_too=False,
        )

    # Reference: batches (manycore only has them) against the stdlib's one-by-one calls.
    batched = [
        Call(
            Measurement("manycore.Queue put_many/get_many(100)", n),
            _queue_run(mc_queues.Queue, 1, 1, n, SMALL, 100),
            _equals(n),
        ),
        Call(
            Measurement("multiprocessing.Queue put/get", n),
            _queue_run(multiprocessing.Queue, 1, 1, n, SMALL),
            _equals(n),
        ),
    ]
    measure(ctx, "queue batches", batched)
    figures.append(
        Figure(
            SUITE,
            f"Queue 1 -> 1 in batches of 100, {n // 1000}k small tuples (msg/s; stdlib one by one)",
            batched[0].measurement,
            batched[1].measurement,
            compare="speed",
            show="rate",
        )
    )

    pipe_cases: list[tuple[str, int, Any, Any, float]] = [
        ("small", ctx.size(100_000, 30_000), SMALL, None, 1.0),
        ("1 MiB", ctx.size(400, 100), b"x" * MIB, MIB, 1.0),
    ]
    if numpy is not None:
        pipe_cases.append(("64 MiB array", arrays, numpy.ones(ARRAY_BYTES // 8), ARRAY_BYTES, 10.0))
    for title, count, item, units, target in pipe_cases:
        items = count if units is None else count * units // 1_000_000
        pipes = [
            Call(
                Measurement(f"manycore.Pipe {title}", items),
                _pipe_run(mc_connection.Pipe, count, item),
                _equals(count),
            ),
            Call(
                Measurement(f"multiprocessing.Pipe {title}", items),
                _pipe_run(multiprocessing.Pipe, count, item),
                _equals(count),
            ),
        ]
        measure(ctx, f"pipe {title}", pipes)
        unit = "msg/s" if units is None else "MB/s"
        figures.append(
            Figure(
                SUITE,
                f"Pipe, child -> parent, {count} {title} messages ({unit})",
                pipes[0].measurement,
                pipes[1].measurement,
                compare="speed",
                target=target,
                show="rate",
            )
        )
    return figures
