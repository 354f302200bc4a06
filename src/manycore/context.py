"""``manycore.context``: what code imports from ``multiprocessing.context``.

``BaseContext`` is the class of every manycore context; ``get_context(method)`` returns
the ``ForkContext``, ``SpawnContext`` or ``ForkServerContext``, and ``get_context()`` the
one ``set_start_method`` chose, else the ``DefaultContext`` (manycore's own fork server).
The spawning-popen helpers are the stdlib's: manycore's objects pickle at any time, so
nothing of manycore needs them.
"""

from __future__ import annotations

from multiprocessing import AuthenticationError as AuthenticationError
from multiprocessing import BufferTooShort as BufferTooShort
from multiprocessing import ProcessError as ProcessError
from multiprocessing.context import assert_spawning as assert_spawning
from multiprocessing.context import get_spawning_popen as get_spawning_popen
from multiprocessing.context import set_spawning_popen as set_spawning_popen

from ._context import BaseContext as BaseContext
from ._context import DefaultContext as DefaultContext
from ._context import ForkContext as ForkContext
from ._context import ForkProcess as ForkProcess
from ._context import ForkServerContext as ForkServerContext
from ._context import ForkServerProcess as ForkServerProcess
from ._context import SpawnContext as SpawnContext
from ._context import SpawnProcess as SpawnProcess
from ._errors import TimeoutError as TimeoutError
from ._process import Process as Process

__all__: list[str] = []  # as the stdlib's: everything here is reached by name
