"""Functions the queue and pipe tests run in child processes (importable under spawn)."""

from __future__ import annotations

import os
from typing import Any


def produce(q: Any, tag: Any, count: int) -> None:
    """Put ``(tag, 0) .. (tag, count - 1)`` on ``q``, one by one."""
    for i in range(count):
        q.put((tag, i))


def produce_many(q: Any, tag: Any, count: int, batch: int) -> None:
    """Like produce, in batches of ``batch`` with put_many."""
    for start in range(0, count, batch):
        q.put_many([(tag, i) for i in range(start, min(count, start + batch))])


def produce_items(q: Any, items: list[Any]) -> None:
    """Put each of ``items`` on ``q`` and exit at once (no close, no join_thread)."""
    for item in items:
        q.put(item)


def consume(q: Any, out: Any, count: int, timeout: float) -> None:
    """Get ``count`` items from ``q`` and put them, as one list, on ``out``."""
    out.put([q.get(timeout=timeout) for _ in range(count)])


def consume_until_none(q: Any, out: Any, timeout: float) -> None:
    """Get items until ``None``; put the list of what came on ``out``."""
    got = []
    while True:
        item = q.get(timeout=timeout)
        if item is None:
            break
        got.append(item)
    out.put(got)


def work_and_task_done(q: Any, results: Any, count: int, timeout: float) -> None:
    """Take ``count`` numbers from a JoinableQueue, put their squares on ``results``."""
    for _ in range(count):
        n = q.get(timeout=timeout)
        results.put(n * n)
        q.task_done()


def echo_upper(conn: Any) -> None:
    """Receive a string, send it back upper-cased, then close."""
    conn.send(conn.recv().upper())
    conn.close()


def answer_on_piped_connection(pipe: Any, text: str) -> None:
    """Receive a connection through ``pipe``, send ``text`` on it, then close it."""
    conn = pipe.recv()
    conn.send(text)
    conn.close()


def send_on(conn: Any, text: str) -> None:
    """Send ``text`` on ``conn`` (a task argument)."""
    conn.send(text)


def answer_on_queued_connection(q: Any, text: str, timeout: float) -> None:
    """Take a 1-tuple holding a connection from ``q``, send ``text`` on it, then close it."""
    (conn,) = q.get(timeout=timeout)
    conn.send(text)
    conn.close()


def send_n(conn: Any, obj: Any, count: int) -> None:
    """Send ``obj`` ``count`` times."""
    for _ in range(count):
        conn.send(obj)


def die_without_reply(conn: Any) -> None:
    """Exit at once, holding ``conn``, without sending anything."""
    os._exit(3)


def send_then_die(conn: Any, obj: Any) -> None:
    """Send one object, then exit at once."""
    conn.send(obj)
    os._exit(0)


_INIT_QUEUE: Any = None


def init_queue(q: Any) -> None:
    """Pool initializer: keep the queue from initargs for the tasks."""
    global _INIT_QUEUE
    _INIT_QUEUE = q


def put_on_init_queue(x: Any) -> Any:
    """Put ``x`` on the queue the initializer kept; return it."""
    _INIT_QUEUE.put(x)
    return x


def forward(inbox: Any, count: int, timeout: float) -> None:
    """Get a queue from ``inbox``, then put ``0 .. count - 1`` on it."""
    target = inbox.get(timeout=timeout)
    for i in range(count):
        target.put(i)


def payload(tag: int, i: int, size: int) -> bytes:
    """A recognisable payload of ``size`` bytes for item ``i`` of producer ``tag``."""
    return bytes([(tag * 31 + i) % 251]) * size


def produce_sized(q: Any, tag: int, sizes: list[int]) -> None:
    """Put ``(tag, i, payload)`` for each size, big and small mixed."""
    for i, size in enumerate(sizes):
        q.put((tag, i, payload(tag, i, size)))


class Registered:
    """A class a test registers a reducer for with multiprocessing.reduction.register."""

    def __init__(self, value: int) -> None:
        self.value = value


def reduce_registered(obj: Registered) -> Any:
    return tuple, (("reduced", obj.value),)
