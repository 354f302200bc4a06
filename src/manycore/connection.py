"""``manycore.connection``: what code imports from ``multiprocessing.connection``.

``Pipe``, ``Connection`` and ``wait`` are manycore's. ``Listener`` and ``Client`` are the
stdlib's, and so is what describes and serves them: the address ``families`` and
``default_family``, ``arbitrary_address``/``address_type``, the socket classes behind them,
the ``XmlListener``/``XmlClient`` pair and the authentication handshake
(``deliver_challenge``/``answer_challenge``). The stdlib's private helpers are reached
through this module as well, as from ``multiprocessing.connection``.
"""

from __future__ import annotations

import multiprocessing.connection as _std
from multiprocessing.connection import Client as Client
from multiprocessing.connection import ConnectionWrapper as ConnectionWrapper  # type: ignore[attr-defined]
from multiprocessing.connection import Listener as Listener
from multiprocessing.connection import SocketClient as SocketClient  # type: ignore[attr-defined]
from multiprocessing.connection import SocketListener as SocketListener  # type: ignore[attr-defined]
from multiprocessing.connection import XmlClient as XmlClient  # type: ignore[attr-defined]
from multiprocessing.connection import XmlListener as XmlListener  # type: ignore[attr-defined]
from multiprocessing.connection import address_type as address_type  # type: ignore[attr-defined]
from multiprocessing.connection import answer_challenge as answer_challenge
from multiprocessing.connection import arbitrary_address as arbitrary_address  # type: ignore[attr-defined]
from multiprocessing.connection import default_family as default_family  # type: ignore[attr-defined]
from multiprocessing.connection import deliver_challenge as deliver_challenge
from multiprocessing.connection import families as families  # type: ignore[attr-defined]

from ._connection import Connection as Connection
from ._connection import Pipe as Pipe
from ._connection import wait as wait

__all__ = ["Client", "Connection", "Listener", "Pipe", "wait"]


def __getattr__(name: str) -> object:
    # The stdlib's private helpers (those its Listener and Client use) are reached here.
    return getattr(_std, name)
