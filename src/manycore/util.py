"""``manycore.util``: the stdlib's ``multiprocessing.util``, re-exported.

manycore's processes are ``multiprocessing.process.BaseProcess`` subclasses that run the
stdlib's bootstrap, so what this module keeps per process works for them as it does for the
stdlib's: ``register_after_fork`` callbacks run in forked children, ``Finalize`` callbacks
run at a child's exit, and the logger of ``get_logger``/``log_to_stderr`` is the one
manycore's children write to.
"""

from __future__ import annotations

from multiprocessing.util import DEBUG as DEBUG
from multiprocessing.util import DEFAULT_LOGGING_FORMAT as DEFAULT_LOGGING_FORMAT
from multiprocessing.util import INFO as INFO
from multiprocessing.util import LOGGER_NAME as LOGGER_NAME
from multiprocessing.util import MAXFD as MAXFD
from multiprocessing.util import NOTSET as NOTSET
from multiprocessing.util import SUBDEBUG as SUBDEBUG
from multiprocessing.util import SUBWARNING as SUBWARNING
from multiprocessing.util import Finalize as Finalize
from multiprocessing.util import ForkAwareLocal as ForkAwareLocal
from multiprocessing.util import ForkAwareThreadLock as ForkAwareThreadLock
from multiprocessing.util import abstract_sockets_supported as abstract_sockets_supported
from multiprocessing.util import close_all_fds_except as close_all_fds_except
from multiprocessing.util import close_fds as close_fds  # type: ignore[attr-defined]
from multiprocessing.util import debug as debug
from multiprocessing.util import get_logger as get_logger
from multiprocessing.util import get_temp_dir as get_temp_dir
from multiprocessing.util import info as info
from multiprocessing.util import is_abstract_socket_namespace as is_abstract_socket_namespace
from multiprocessing.util import is_exiting as is_exiting
from multiprocessing.util import log_to_stderr as log_to_stderr
from multiprocessing.util import register_after_fork as register_after_fork
from multiprocessing.util import spawnv_passfds as spawnv_passfds
from multiprocessing.util import sub_debug as sub_debug
from multiprocessing.util import sub_warning as sub_warning

__all__ = [
    "SUBDEBUG",
    "SUBWARNING",
    "Finalize",
    "ForkAwareLocal",
    "ForkAwareThreadLock",
    "close_all_fds_except",
    "debug",
    "get_logger",
    "get_temp_dir",
    "info",
    "is_exiting",
    "log_to_stderr",
    "register_after_fork",
    "sub_debug",
    "sub_warning",
]


def __getattr__(name: str) -> object:
    # The stdlib's private helpers and state (such as the registry of live processes, which
    # manycore's processes join) are reached through here, for code and tests that use them.
    import multiprocessing.util

    return getattr(multiprocessing.util, name)
