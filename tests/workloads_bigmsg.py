"""What the big-message tests (tests/test_big_messages.py) run in child processes.

Importable under every start method (spawn included). Both sides build the same sample
items with ``samples()``, so a child checks what it received against its own copy instead of
trusting the parent's, and reports the first difference as text (``mismatch``).
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any, Optional

import numpy as np

KIB = 1 << 10
MIB = 1 << 20


def samples() -> list[tuple[str, Any]]:
    """``(label, value)`` pairs covering the kinds of big (and not so big) items.

    No memoryview: a Pipe sends one in band as bytes, and one received from a Queue cannot
    be put again; tests/test_big_messages.py covers both on their own.
    """
    structured = np.zeros(100_000, dtype=[("a", "<i4"), ("b", "<f8")])
    structured["a"] = np.arange(100_000)
    structured["b"] = np.arange(100_000) * 0.5
    nested: Any = (
        "tag",
        b"\x01" * (96 * KIB),
        {"ba": bytearray(b"\x02" * (80 * KIB)), "n": 3},
    )
    return [
        ("c_order", np.arange(MIB // 4, dtype=np.float64)),  # 2 MiB
        ("fortran", np.asfortranarray(np.arange(512 * 512, dtype=np.float64).reshape(512, 512))),
        ("strided", np.arange(MIB // 4, dtype=np.float64)[::2]),  # not contiguous: in band
        ("int32_3d", np.arange(64 * 64 * 64, dtype=np.int32).reshape(64, 64, 64)),
        ("scalar", np.float64(2.5)),
        ("zero_d", np.array(7.25)),
        ("structured", structured),
        ("object", np.array([str(i) * 3 for i in range(20_000)], dtype=object)),
        ("arrays_in_dict", {"x": np.ones(40_000), "y": [np.full(50_000, 3, dtype=np.int16)]}),
        ("nested_bytes", nested),
        ("bytearray_top", bytearray(b"\x03" * (256 * KIB))),
        ("bytes_3mib", bytes(range(256)) * (3 * MIB // 256)),
        # A big buffer beside a pickle bigger than a quarter of a queue's ring (2.7 MiB).
        (
            "mixed",
            (np.arange(MIB // 8), np.array([str(i) * 3 for i in range(150_000)], dtype=object)),
        ),
    ]


def mismatch(expected: Any, got: Any, where: str = "item") -> Optional[str]:
    """The first difference between ``expected`` and ``got`` (type, dtype, shape, layout,
    contents), as text; None when they are the same."""
    if type(got) is not type(expected):
        return f"{where}: type {type(got).__name__}, expected {type(expected).__name__}"
    if isinstance(expected, np.ndarray):
        if got.dtype != expected.dtype or got.shape != expected.shape:
            return f"{where}: {got.dtype}{got.shape}, expected {expected.dtype}{expected.shape}"
        fortran = expected.flags.f_contiguous and not expected.flags.c_contiguous
        if fortran and not got.flags.f_contiguous:
            return f"{where}: lost its Fortran order"
        if expected.dtype.hasobject:
            same = expected.tolist() == got.tolist()
        else:
            same = expected.tobytes() == got.tobytes()
        return None if same else f"{where}: contents differ"
    if isinstance(expected, np.generic):
        return None if got == expected else f"{where}: {got!r} != {expected!r}"
    if isinstance(expected, (tuple, list)):
        if len(got) != len(expected):
            return f"{where}: length {len(got)}, expected {len(expected)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            problem = mismatch(e, g, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(expected, dict):
        if set(got) != set(expected):
            return f"{where}: keys {sorted(got)}, expected {sorted(expected)}"
        for key in expected:
            problem = mismatch(expected[key], got[key], f"{where}[{key!r}]")
            if problem:
                return problem
        return None
    if isinstance(expected, memoryview):
        if (got.format, got.shape) != (expected.format, expected.shape):
            return f"{where}: memoryview {got.format}{got.shape}"
        return None if got.tobytes() == expected.tobytes() else f"{where}: contents differ"
    return None if got == expected else f"{where}: contents differ"


def read_only_arrays(obj: Any, where: str = "item") -> list[str]:
    """Where in ``obj`` a NumPy array is not writable."""
    if isinstance(obj, np.ndarray):
        return [] if obj.flags.writeable else [where]
    if isinstance(obj, (tuple, list)):
        return [p for i, x in enumerate(obj) for p in read_only_arrays(x, f"{where}[{i}]")]
    if isinstance(obj, dict):
        return [p for k, x in obj.items() for p in read_only_arrays(x, f"{where}[{k!r}]")]
    return []


def big_array(seed: int, n: int = MIB // 8) -> Any:
    """A float64 array of ``n`` items (1 MiB by default) whose contents depend on ``seed``."""
    return np.arange(n, dtype=np.float64) + seed * 1000.0


# --- queues -----------------------------------------------------------------------------------


def queue_echo(q_in: Any, q_out: Any, timeout: float) -> None:
    """Get ``(label, value)`` items until None; check each against this process's own
    ``samples()`` and put ``(label, problem, read-only arrays, value)`` on ``q_out``."""
    expected = dict(samples())
    while True:
        item = q_in.get(timeout=timeout)
        if item is None:
            return
        label, value = item
        q_out.put((label, mismatch(expected[label], value), read_only_arrays(value), value))


def hold_one(q: Any, ready: Any, timeout: float) -> None:
    """Get one item, report ``(pid, its first element)`` on ``ready``, and keep it until
    killed."""
    value = q.get(timeout=timeout)
    ready.put((os.getpid(), float(value[0])))
    time.sleep(timeout)
    del value


def put_arrays_and_exit(q: Any, seeds: list[int]) -> None:
    """Put ``big_array(seed)`` for each seed, then return at once (the process exits)."""
    for seed in seeds:
        q.put((seed, big_array(seed)))


def tagged(tag: int, i: int, n: int) -> Any:
    """An int64 array of ``n`` items, all ``tag * 100_000 + i``."""
    return np.full(n, tag * 100_000 + i, dtype=np.int64)


def produce_tagged(q: Any, tag: int, count: int, n: int) -> None:
    """Put ``(tag, i, tagged(tag, i, n))`` for i in range(count)."""
    for i in range(count):
        q.put((tag, i, tagged(tag, i, n)))


def consume_checking(q: Any, out: Any, timeout: float, batch: int, window: int) -> None:
    """Get items until None (``batch`` at a time with get_many when > 1), keeping the last
    ``window`` of them alive and checking all kept ones after every get: an array whose
    memory was refilled under it shows up as a wrong value. Put ``(seen, bad)`` on ``out``:
    the ``(tag, i)`` of every item received, and those whose contents were wrong."""
    held: list[tuple[int, int, Any]] = []
    seen: list[tuple[int, int]] = []
    bad: list[tuple[int, int]] = []
    while True:
        items = q.get_many(batch, timeout=timeout) if batch > 1 else [q.get(timeout=timeout)]
        done = items[-1] is None
        for _ in range(items.count(None) - 1):  # another consumer's stop signal
            q.put(None)
        for item in items:
            if item is None:
                continue
            seen.append((item[0], item[1]))
            held.append(item)
        del items
        held = held[-window:]
        for tag, i, a in held:
            if (tag, i) not in bad and not (a == tag * 100_000 + i).all():
                bad.append((tag, i))
        if done:
            break
    out.put((seen, bad))


# --- pipes ------------------------------------------------------------------------------------


def pipe_echo(rx: Any, tx: Any, timeout: float) -> None:
    """Like ``queue_echo`` over connections: receive on ``rx`` until None, answer on ``tx``."""
    expected = dict(samples())
    while rx.poll(timeout):
        item = rx.recv()
        if item is None:
            break
        label, value = item
        tx.send((label, mismatch(expected[label], value), read_only_arrays(value), value))
        del item, value
    rx.close()
    tx.close()


def send_and_exit(conn: Any, n: int) -> None:
    """Send ``big_array(7, n)`` and return at once (the process exits)."""
    conn.send(big_array(7, n))
    conn.close()


def send_arrays_counting_kept(conn: Any, count: int, timeout: float) -> None:
    """Send ``big_array(i)`` for i in range(count), each after the reader acknowledged the
    previous one; then send how many memfds this end keeps, and the most it ever kept."""
    most = 0
    for i in range(count):
        conn.send(big_array(i))
        outbox = conn._outbox
        most = max(most, len(outbox.kept) if outbox is not None else 0)
        if not conn.poll(timeout) or conn.recv() != ("ack", i):
            raise RuntimeError(f"no acknowledgement for message {i}")
    outbox = conn._outbox
    conn.send(("kept", len(outbox.kept) if outbox is not None else 0, most))
    conn.close()


def drop_and_exit(held: Any) -> None:
    """Run in a forked child that inherited ``held`` (a received array): drop it, collect."""
    del held
    gc.collect()


def sum_keeping_previous(q: Any, results: Any, timeout: float) -> None:
    """The commonest consumer loop: each item is dropped only when the next one arrives.
    Put "ready" on ``results`` first, then the sum of the first element of every array got
    until None."""
    results.put("ready")
    total = 0.0
    item = None
    while True:
        item = q.get(timeout=timeout)  # the previous item goes only now
        if item is None:
            break
        total += float(item[0])
    results.put(total)


def send_arrays_then_kept(conn: Any, count: int, n: int) -> None:
    """Send ``big_array(i, n)`` for i in range(count) without waiting; then how many
    memfds this end keeps."""
    for i in range(count):
        conn.send(big_array(i, n))
    outbox = conn._outbox
    conn.send(("kept", len(outbox.kept) if outbox is not None else 0))
    conn.close()
