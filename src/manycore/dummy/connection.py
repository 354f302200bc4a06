"""``manycore.dummy.connection``: the stdlib's thread-backed connections, re-exported.

They are queues between threads of one process, so they work beside manycore unchanged.
"""

from __future__ import annotations

from multiprocessing.dummy.connection import Client as Client
from multiprocessing.dummy.connection import Connection as Connection
from multiprocessing.dummy.connection import Listener as Listener
from multiprocessing.dummy.connection import Pipe as Pipe
from multiprocessing.dummy.connection import families as families

__all__ = ["Client", "Listener", "Pipe"]
