"""Queues and pipes between processes: manycore beside multiprocessing and faster-fifo.

Figures (issues 3 and 16), each side in its own fresh processes (started by ``fork`` for
every side alike), producer and consumer both child processes. Every consumer reads every
item inside the timed region and the run is checked by a checksum of the contents, not by
a count: a small tuple's number, a bytes object's length and last byte, an array's sum.

* ``Queue``, 1 producer -> 1 consumer, 200k small tuples: at least 3x
  ``multiprocessing.Queue``'s messages/s; 4 producers -> 4 consumers as a reference;
* ``Queue`` with 1 MiB messages: at least 8x ``multiprocessing.Queue``'s MB/s;
* ``Pipe``, one process sends and another receives 100k small tuples, duplex and
  ``duplex=False``: at least 1.2x ``multiprocessing.Pipe``; 1 MiB messages at least 1.0x.

Figures (issue 4, when NumPy is installed): ``Queue`` and ``Pipe`` moving 64 MiB float64
arrays, at least 10x their stdlib counterparts' MB/s. manycore copies each array once, into
shared memory, and the consumer gets a view of it; the consumer sums each array, so the
figure includes touching every page (the stdlib's consumer has the bytes copied in by
then, ours maps them on first touch).

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
JOIN_S = 120.0
ARRAY_BYTES = 64 * MIB
FASTER_FIFO_BYTES = 64 * MIB  # faster-fifo's buffer: room for a few 1 MiB messages in flight


# --- run in the child processes (fork: nothing here needs to be importable) -----------------


def _item(kind: str, i: int, big: Any) -> Any:
    """The ``i``-th item: a small tuple that differs per item, or the one big object."""
    return (i, 6.5, "small") if kind == "small" else big


def _checksum(kind: str, item: Any) -> float:
    """What the consumer reads of each item, so that every item is really received: the
    small tuple's number, a bytes object's length and last byte, an array's sum (every
    element: the stdlib's consumer has the bytes copied in, ours maps them on first touch)."""
    if kind == "small":
        return float(item[0])
    if kind == "bytes":
        return float(len(item) + item[-1])
    return float(item.sum())


def _expected(kind: str, n: int, big: Any) -> float:
    """The sum of ``_checksum`` over the ``n`` items of a run."""
    if kind == "small":
        return float(n * (n - 1) // 2)
    return n * _checksum(kind, big)


def _produce(q: Any, start: int, n: int, kind: str, big: Any, batch: int) -> None:
    if batch:
        for first in range(start, start + n, batch):
            last = min(first + batch, start + n)
            q.put_many([_item(kind, i, big) for i in range(first, last)])
    else:
        for i in range(start, start + n):
            q.put(_item(kind, i, big))


def _consume(q: Any, results: Any, kind: str, batch: int) -> None:
    """Get until ``None``; report the checksum of what came."""
    total = 0.0
    if batch:
        while True:
            got = q.get_many(batch, timeout=JOIN_S)
            done = got[-1] is None
            for item in got[:-1] if done else got:
                total += _checksum(kind, item)
            if done:
                break
    else:
        while True:
            item = q.get(timeout=JOIN_S)
            if item is None:
                break
            total += _checksum(kind, item)
    results.put(total)


def _send(conn: Any, n: int, kind: str, big: Any) -> None:
    for i in range(n):
        conn.send(_item(kind, i, big))
    conn.close()


def _receive(conn: Any, n: int, kind: str, results: Any) -> None:
    total = 0.0
    for _ in range(n):
        total += _checksum(kind, conn.recv())
    conn.close()
    results.put(total)


# --- the timed calls ---------------------------------------------------------------------------


def _queue_run(
    make: Callable[[], Any],
    producers: int,
    consumers: int,
    n: int,
    kind: str,
    big: Any = None,
    batch: int = 0,
) -> Callable[[], float]:
    """A call that moves ``n`` items from producers to consumers; returns the checksum of
    what arrived. The queue is made afresh (and its processes started) in every call."""
    ctx = multiprocessing.get_context("fork")

    def call() -> float:
        q = make()
        results = ctx.SimpleQueue()
        share = [n // producers + (i < n % producers) for i in range(producers)]
        starts = [sum(share[:i]) for i in range(producers)]
        readers = [
            ctx.Process(target=_consume, args=(q, results, kind, batch)) for _ in range(consumers)
        ]
        writers = [
            ctx.Process(target=_produce, args=(q, s, k, kind, big, batch))
            for s, k in zip(starts, share)
        ]
        for p in readers + writers:
            p.start()
        for p in writers:
            p.join(JOIN_S)
        for _ in range(consumers):
            q.put(None)
        total = sum(float(results.get()) for _ in range(consumers))
        for p in readers:
            p.join(JOIN_S)
        if any(p.exitcode != 0 for p in readers + writers):
            raise RuntimeError("a producer or consumer process failed")
        return total

    return call


def _pipe_run(
    make: Callable[[bool], Any], duplex: bool, n: int, kind: str, big: Any = None
) -> Callable[[], float]:
    """A call where one child process sends ``n`` items through a pipe and another receives
    and reads them; returns the receiver's checksum."""
    ctx = multiprocessing.get_context("fork")

    def call() -> float:
        reader, writer = make(duplex)
        results = ctx.SimpleQueue()
        consumer = ctx.Process(target=_receive, args=(reader, n, kind, results))
        producer = ctx.Process(target=_send, args=(writer, n, kind, big))
        consumer.start()
        producer.start()
        reader.close()
        writer.close()
        total = float(results.get())
        for p in (producer, consumer):
            p.join(JOIN_S)
        if producer.exitcode != 0 or consumer.exitcode != 0:
            raise RuntimeError("the sending or the receiving process failed")
        return total

    return call


def _equals(want: float) -> Callable[[Any], bool]:
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
        shape: tuple[int, int, int, str, Any],
        items: int,
        target: float | None,
        ff_too: bool = True,
    ) -> None:
        producers, consumers, count, kind, big = shape
        want = _equals(_expected(kind, count, big))
        calls = [
            Call(
                Measurement(f"manycore.Queue {title}", items),
                _queue_run(mc_queues.Queue, producers, consumers, count, kind, big),
                want,
            ),
            Call(
                Measurement(f"multiprocessing.Queue {title}", items),
                _queue_run(multiprocessing.Queue, producers, consumers, count, kind, big),
                want,
            ),
        ]
        if ff is not None and ff_too:
            calls.append(
                Call(
                    Measurement(f"faster_fifo.Queue {title}", items),
                    _queue_run(ff, producers, consumers, count, kind, big),
                    want,
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
        (1, 1, n, "small", None),
        n,
        3.0,
    )
    trio(
        "4->4 small",
        f"Queue 4 producers -> 4 consumers, {n // 1000}k small tuples (msg/s)",
        (4, 4, n, "small", None),
        n,
        None,
    )
    big = ctx.size(500, 250)
    megabytes = big * MIB // 1_000_000  # items = MB, so items/s reads as MB/s
    trio(
        "1->1 1 MiB",
        f"Queue 1 -> 1, {big} messages of 1 MiB (MB/s)",
        (1, 1, big, "bytes", b"x" * MIB),
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
            f"Queue 1 -> 1, {arrays} float64 arrays of 64 MiB, each summed (MB/s)",
            (1, 1, arrays, "array", numpy.ones(ARRAY_BYTES // 8)),
            arrays * ARRAY_BYTES // 1_000_000,
            10.0,
            ff_too=False,
        )

    # Reference: batches (manycore only has them) against the stdlib's one-by-one calls.
    small_sum = _equals(_expected("small", n, None))
    batched = [
        Call(
            Measurement("manycore.Queue put_many/get_many(100)", n),
            _queue_run(mc_queues.Queue, 1, 1, n, "small", None, 100),
            small_sum,
        ),
        Call(
            Measurement("multiprocessing.Queue put/get", n),
            _queue_run(multiprocessing.Queue, 1, 1, n, "small", None),
            small_sum,
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

    small = ctx.size(100_000, 30_000)
    pipe_cases: list[tuple[str, bool, int, str, Any, Any, float]] = [
        ("small", True, small, "small", None, None, 1.2),
        ("small, duplex=False", False, small, "small", None, None, 1.2),
        ("1 MiB", True, ctx.size(400, 100), "bytes", b"x" * MIB, MIB, 1.0),
    ]
    if numpy is not None:
        pipe_cases.append(
            (
                "64 MiB array, each summed",
                True,
                arrays,
                "array",
                numpy.ones(ARRAY_BYTES // 8),
                ARRAY_BYTES,
                10.0,
            )
        )
    for title, duplex, count, kind, item, units, target in pipe_cases:
        items = count if units is None else count * units // 1_000_000
        want = _equals(_expected(kind, count, item))
        pipes = [
            Call(
                Measurement(f"manycore.Pipe {title}", items),
                _pipe_run(mc_connection.Pipe, duplex, count, kind, item),
                want,
            ),
            Call(
                Measurement(f"multiprocessing.Pipe {title}", items),
                _pipe_run(multiprocessing.Pipe, duplex, count, kind, item),
                want,
            ),
        ]
        measure(ctx, f"pipe {title}", pipes)
        unit = "msg/s" if units is None else "MB/s"
        figures.append(
            Figure(
                SUITE,
                f"Pipe, process -> process, {count} {title} messages ({unit})",
                pipes[0].measurement,
                pipes[1].measurement,
                compare="speed",
                target=target,
                show="rate",
            )
        )
    return figures
