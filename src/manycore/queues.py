"""``manycore.queues``: what code imports from ``multiprocessing.queues``.

The classes are manycore's shared-memory queues. Like the stdlib's, they take ``ctx`` by
keyword (``Queue(maxsize, ctx=...)``), so subclasses written for the stdlib's classes,
which pass a context, work; manycore's queues work with every start method and ignore it.
"""

from __future__ import annotations

from ._queue import JoinableQueue as JoinableQueue
from ._queue import Queue as Queue
from ._queue import SimpleQueue as SimpleQueue

__all__ = ["JoinableQueue", "Queue", "SimpleQueue"]
