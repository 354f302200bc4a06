"""``manycore.connection``: what code imports from ``multiprocessing.connection``."""

from __future__ import annotations

# The stdlib's authentication handshake, which its Listener and Client (re-exported below)
# use; it works on any connection with send_bytes and recv_bytes.
from multiprocessing.connection import answer_challenge as answer_challenge
from multiprocessing.connection import deliver_challenge as deliver_challenge

from ._connection import Client as Client
from ._connection import Connection as Connection
from ._connection import Listener as Listener
from ._connection import Pipe as Pipe
from ._connection import wait as wait

__all__ = ["Client", "Connection", "Listener", "Pipe", "wait"]


def __getattr__(name: str) -> object:
    # The stdlib's private helpers and constants of the handshake that its Listener and
    # Client use (CHALLENGE, WELCOME, ...) are reached through here, for code and tests.
    import multiprocessing.connection

    return getattr(multiprocessing.connection, name)
