"""``manycore.spawn``: the stdlib's ``multiprocessing.spawn``, re-exported.

``set_executable`` chooses the interpreter that manycore's spawn method starts too.
manycore never re-runs the main module in a child, so the functions that prepare one
(``prepare``, ``import_main_path``) only matter to the stdlib's own processes.
"""

from __future__ import annotations

from multiprocessing.spawn import WINEXE as WINEXE
from multiprocessing.spawn import WINSERVICE as WINSERVICE
from multiprocessing.spawn import freeze_support as freeze_support
from multiprocessing.spawn import get_command_line as get_command_line
from multiprocessing.spawn import get_executable as get_executable
from multiprocessing.spawn import get_preparation_data as get_preparation_data
from multiprocessing.spawn import import_main_path as import_main_path
from multiprocessing.spawn import is_forking as is_forking
from multiprocessing.spawn import old_main_modules as old_main_modules
from multiprocessing.spawn import prepare as prepare
from multiprocessing.spawn import set_executable as set_executable
from multiprocessing.spawn import spawn_main as spawn_main

__all__ = [
    "freeze_support",
    "get_command_line",
    "get_executable",
    "get_preparation_data",
    "import_main_path",
    "set_executable",
]
