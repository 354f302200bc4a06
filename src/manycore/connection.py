"""``manycore.connection``: what code imports from ``multiprocessing.connection``."""

from __future__ import annotations

from ._connection import Client as Client
from ._connection import Connection as Connection
from ._connection import Listener as Listener
from ._connection import Pipe as Pipe
from ._connection import wait as wait

__all__ = ["Client", "Connection", "Listener", "Pipe", "wait"]
