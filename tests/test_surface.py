"""The public surface, pinned: what ``import manycore as multiprocessing`` code can reach.

Two kinds of checks. Against the stdlib, name by name, computed when the test runs (so it
is right on every supported Python): each public name a ``multiprocessing`` (or
``concurrent.futures``) module defines, or lists in ``__all__``, exists in the manycore
module of the same place, unless ``LEFT_OUT`` lists it with the reason. And manycore's own
``__all__`` lists, pinned: a name added or removed there is an API change (update this
file, the docs and the changelog together).
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import multiprocessing
import os
import stat
import subprocess
import sys
import types
from pathlib import Path
from typing import Optional

import pytest

import manycore
from tests import helpers

# Each manycore module and the stdlib module it stands in for.
COUNTERPARTS = {
    "manycore": "multiprocessing",
    "manycore.connection": "multiprocessing.connection",
    "manycore.context": "multiprocessing.context",
    "manycore.dummy": "multiprocessing.dummy",
    "manycore.dummy.connection": "multiprocessing.dummy.connection",
    "manycore.forkserver": "multiprocessing.forkserver",
    "manycore.heap": "multiprocessing.heap",
    "manycore.managers": "multiprocessing.managers",
    "manycore.pool": "multiprocessing.pool",
    "manycore.process": "multiprocessing.process",
    "manycore.queues": "multiprocessing.queues",
    "manycore.reduction": "multiprocessing.reduction",
    "manycore.resource_sharer": "multiprocessing.resource_sharer",
    "manycore.resource_tracker": "multiprocessing.resource_tracker",
    "manycore.shared_memory": "multiprocessing.shared_memory",
    "manycore.sharedctypes": "multiprocessing.sharedctypes",
    "manycore.spawn": "multiprocessing.spawn",
    "manycore.synchronize": "multiprocessing.synchronize",
    "manycore.util": "multiprocessing.util",
    "manycore.futures": "concurrent.futures",
    "manycore.futures.process": "concurrent.futures.process",
}

# The stdlib's public names that manycore leaves out on purpose, and why. Internals of the
# stdlib's own machinery, which manycore replaces, and nothing a program imports.
_POOL_LOOP = "the stdlib pool's worker loop and states; manycore's pool runs its own engine"
_WIRE = "the stdlib connection's wire protocol; manycore's Connection frames its own"
_CTYPES_CODEGEN = "how the stdlib builds and pickles its heap ctypes; manycore's use shared memory"
LEFT_OUT: dict[str, dict[str, str]] = {
    "concurrent.futures.process": {
        "EXTRA_QUEUED_CALLS": "how many calls the stdlib executor queues beyond its workers; "
        "manycore's scheduler sends batches by its own rule (_engine.IN_FLIGHT_BATCHES)",
    },
    "multiprocessing.dummy": {
        "dict": "the builtin, bound to a name by the stdlib module",
        "list": "the builtin, bound to a name by the stdlib module",
    },
    "multiprocessing.pool": {
        name: _POOL_LOOP
        for name in (
            "INIT",
            "RUN",
            "CLOSE",
            "TERMINATE",
            "job_counter",
            "mapstar",
            "starmapstar",
            "worker",
            "ExceptionWithTraceback",
            "rebuild_exc",
        )
    },
    "multiprocessing.connection": {
        name: _WIRE
        for name in (
            "BUFSIZE",
            "CONNECTION_TIMEOUT",
            "MESSAGE_LENGTH",
            "CHALLENGE",
            "WELCOME",
            "FAILURE",
            "PipeListener",
            "PipeClient",
            "reduce_connection",
            "rebuild_connection",
            "reduce_pipe_connection",
            "rebuild_pipe_connection",
        )
    },
    "multiprocessing.sharedctypes": {
        name: _CTYPES_CODEGEN
        for name in (
            "class_cache",
            "make_property",
            "prop_cache",
            "template",
            "reduce_ctype",
            "rebuild_ctype",
        )
    },
    "multiprocessing.resource_tracker": {
        "cleanup_noop": "Python 3.13's placeholder cleanup function inside the stdlib's tracker",
    },
    "multiprocessing.managers": {
        "view_types": "Python 3.9's list of dict views it registers for pickling, at import",
        "view_type": "Python 3.9's loop variable over view_types",
    },
}


def _defined_names(module: types.ModuleType) -> set[str]:
    """The public names ``module`` defines at its top level (in any branch of an ``if`` or
    ``try`` there) or lists in ``__all__``; not what it imports from elsewhere."""
    names = {n for n in getattr(module, "__all__", ()) if not n.startswith("_")}

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)

    visit(ast.parse(inspect.getsource(module)).body)
    return {
        n
        for n in names
        if not n.startswith("_")
        and hasattr(module, n)
        and not isinstance(getattr(module, n), types.ModuleType)
    }


@pytest.mark.parametrize("ours", sorted(COUNTERPARTS))
def test_every_stdlib_name_is_offered_or_explained(ours: str) -> None:
    theirs = COUNTERPARTS[ours]
    stdlib = importlib.import_module(theirs)
    mine = importlib.import_module(ours)
    left_out = LEFT_OUT.get(theirs, {})
    missing = sorted(n for n in _defined_names(stdlib) - set(left_out) if not hasattr(mine, n))
    assert not missing, f"{theirs} names that {ours} lacks: {missing}"
    # `from X import *` gives at least the stdlib's names.
    star = {n for n in getattr(stdlib, "__all__", ()) if not n.startswith("_")} - set(left_out)
    assert not star - set(getattr(mine, "__all__", ())), sorted(star - set(mine.__all__))


def test_submodules_are_attributes_of_the_package() -> None:
    # `import multiprocessing` makes these attributes; code uses them without importing.
    code = "import manycore\nprint(manycore.context.BaseContext, manycore.process.BaseProcess,"
    code += " manycore.reduction.ForkingPickler, manycore.reducer is manycore.reduction)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=helpers.script_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("True")


def test_runtime_subscripting_of_async_result() -> None:
    # Annotations that are evaluated (pydantic, typing.get_type_hints) subscript it.
    from manycore.pool import ApplyResult, AsyncResult, IMapIterator, MapResult

    for cls in (AsyncResult, ApplyResult, MapResult, IMapIterator):
        assert cls[int] is not None  # type: ignore[index,misc]


def test_reducers_registered_with_reduction_pickle_process_arguments(
    start_method: Optional[str],
) -> None:
    # manycore.reduction is the stdlib's module: what is registered there is how a Process
    # argument travels, as with the stdlib's processes (under fork it is not pickled at all).
    from tests.workloads_surface import Token, reduce_token, report_token

    manycore.reduction.register(Token, reduce_token)
    try:
        queue: manycore.SimpleQueue[int] = manycore.SimpleQueue()
        ctx = manycore.get_context(start_method)
        p = ctx.Process(target=report_token, args=(queue, Token(41)))
        p.start()
        p.join(helpers.TIMEOUT)
        assert p.exitcode == 0
        assert queue.get(timeout=helpers.TIMEOUT) == (41 if start_method == "fork" else 42)
    finally:
        del manycore.reduction.ForkingPickler._extra_reducers[Token]  # type: ignore[attr-defined]


TOP = [
    "ArgumentPicklingError",
    "ArgumentUnpicklingError",
    "Array",
    "AsyncResult",
    "AuthenticationError",
    "Barrier",
    "BoundedSemaphore",
    "BufferTooShort",
    "Condition",
    "Event",
    "InitializerError",
    "JoinableQueue",
    "Lock",
    "Manager",
    "ManycoreError",
    "Pipe",
    "Pool",
    "PoolBrokenError",
    "PoolClosedError",
    "PoolStatistics",
    "Process",
    "ProcessError",
    "ProcessPoolExecutor",
    "Queue",
    "QueueBrokenError",
    "RLock",
    "RawArray",
    "RawValue",
    "RemoteTraceback",
    "ResultPicklingError",
    "ResultUnpicklingError",
    "Semaphore",
    "SerializationError",
    "SharedArray",
    "SharedMemoryWarning",
    "SimpleQueue",
    "TaskTimeoutError",
    "TimeoutError",
    "Value",
    "WorkerLostError",
    "WorkerStack",
    "WorkerStatistics",
    "active_children",
    "allow_connection_pickling",
    "cpu_count",
    "current_process",
    "freeze_support",
    "get_all_start_methods",
    "get_context",
    "get_logger",
    "get_start_method",
    "log_to_stderr",
    "parent_process",
    "reducer",
    "set_executable",
    "set_forkserver_preload",
    "set_start_method",
    "shared_array",
]


def test_top_level_all_is_pinned() -> None:
    assert sorted(manycore.__all__) == sorted(TOP)
    for name in TOP:
        assert getattr(manycore, name) is not None, name


@pytest.mark.parametrize("method", [None, "fork", "forkserver", "spawn"])
def test_contexts_offer_the_stdlibs_names(method: Optional[str]) -> None:
    stdlib = multiprocessing.get_context(method)
    ctx = manycore.get_context(method)
    missing = [n for n in dir(stdlib) if not n.startswith("_") and not hasattr(ctx, n)]
    assert not missing, f"get_context({method!r}) lacks {missing}"
    assert isinstance(ctx, manycore.context.BaseContext)
    if method is not None:
        assert ctx.get_start_method() == method
        assert ctx.Process._start_method == method
        # As the stdlib's: the class and the Process class are named for the method.
        assert type(ctx).__name__.lower().startswith(method)
        assert ctx.Process.__name__.lower().startswith(method)


@pytest.mark.parametrize("method", [None, "fork", "forkserver", "spawn"])
def test_a_contexts_own_context_is_itself(method: Optional[str]) -> None:
    ctx = manycore.get_context(method)
    if method is None:
        assert ctx.get_context() is manycore.get_context()
    else:
        assert ctx.get_context() is ctx
        assert manycore.get_context("spawn").get_context(method) is ctx


def test_the_default_context_is_the_chosen_methods() -> None:
    old = manycore.get_start_method(allow_none=True)
    # As the stdlib's: allow_none=True reports that none was chosen yet.
    assert manycore.get_context().get_start_method(allow_none=True) == old
    try:
        for method in ("fork", "spawn", "forkserver"):
            manycore.set_start_method(method, force=True)
            ctx = manycore.get_context()
            assert ctx is manycore.get_context(method)
            assert type(ctx).__name__.lower().startswith(method)
    finally:
        manycore.set_start_method(old, force=True)
    assert manycore.get_start_method(allow_none=True) == old


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_concrete_context_refuses_another_method(method: str) -> None:
    # ValueError, as the stdlib's concrete contexts raise.
    with pytest.raises(ValueError, match=r"always uses.*manycore.set_start_method"):
        manycore.get_context(method).set_start_method("spawn", force=True)
    with pytest.raises(ValueError):
        multiprocessing.get_context(method).set_start_method("spawn", force=True)


def test_the_default_method_is_listed_first() -> None:
    code = "import manycore as m\nprint(m.get_all_start_methods(), m.get_start_method())"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=helpers.script_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    methods, default = done.stdout.rsplit(" ", 1)
    assert eval(methods)[0] == default.strip() == "forkserver"
    assert sorted(eval(methods)) == ["fork", "forkserver", "spawn"]


@pytest.mark.parametrize("factory", ["Value", "Array"])
def test_a_lock_that_is_not_one_raises_attribute_error(factory: str) -> None:
    # The stdlib raises AttributeError here (no ``acquire``), and code catches that.
    make = getattr(manycore, factory)
    with pytest.raises(AttributeError, match=r"lock must be True, False or a lock object"):
        make("i", 5, lock="navalue")
    with pytest.raises(AttributeError, match="acquire"):
        getattr(multiprocessing, factory)("i", 5, lock="navalue")


def test_set_executable_chooses_the_interpreter_of_spawn(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$$" >> {marker}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    manycore.set_executable(str(wrapper))
    try:
        p = manycore.get_context("spawn").Process(target=os.getpid)
        p.start()
        p.join(helpers.TIMEOUT)
        assert p.exitcode == 0
    finally:
        manycore.set_executable(sys.executable)
    assert marker.read_text().split() == [str(p.pid)]


def test_one_version_everywhere() -> None:
    assert manycore.__version__ == importlib.metadata.version("manycore")
    info = subprocess.run(
        [sys.executable, "-m", "manycore", "info"],
        capture_output=True,
        text=True,
        timeout=60,
        env=helpers.script_env(),
        check=False,
    )
    assert info.returncode == 0, info.stderr
    assert f"manycore            {manycore.__version__}" in info.stdout


def test_unknown_start_method_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"fork.*spawn|spawn.*fork"):
        manycore.get_context("thread")


def test_import_stays_light() -> None:
    code = (
        "import sys, manycore\n"
        "heavy = {'numpy', 'dask', 'distributed', 'multiprocessing.managers'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=helpers.script_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
