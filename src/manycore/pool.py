"""``manycore.pool``: what code imports from ``multiprocessing.pool``.

``TimeoutError`` is manycore's, which is also ``multiprocessing.TimeoutError``;
``RemoteTraceback`` is the class of the worker traceback attached as ``__cause__`` of an
error a task raised. ``ApplyResult`` is ``AsyncResult``; ``IMapIterator`` (and
``IMapUnorderedIterator``) is what ``imap`` (``imap_unordered``) returns. ``ThreadPool`` is
the stdlib's (its workers are threads, so it needs nothing of manycore), with timed-out
waits raising manycore's ``TimeoutError``; ``RUN``, ``CLOSE`` and ``TERMINATE`` are the
values of its state.
"""

from __future__ import annotations

from multiprocessing.pool import CLOSE as CLOSE
from multiprocessing.pool import RUN as RUN
from multiprocessing.pool import TERMINATE as TERMINATE
from multiprocessing.pool import (  # type: ignore[attr-defined]  # typeshed lacks it
    MaybeEncodingError as MaybeEncodingError,
)

from ._errors import RemoteTraceback as RemoteTraceback
from ._errors import TimeoutError as TimeoutError
from ._pool import ApplyResult as ApplyResult
from ._pool import AsyncResult as AsyncResult
from ._pool import IMapIterator as IMapIterator
from ._pool import IMapUnorderedIterator as IMapUnorderedIterator
from ._pool import MapResult as MapResult
from ._pool import Pool as Pool
from ._threadpool import ThreadPool as ThreadPool

__all__ = ["Pool", "ThreadPool"]
