"""Functions from ``__main__`` behave as the stdlib's do: one namespace per worker, what an
initializer or a task sets there is seen by later calls, and their tracebacks name the
user's file and line (issue 15).

Each test runs a small program as a script, once with ``multiprocessing`` and once with
``manycore`` imported in its place, under the same start method, and compares the output.
"""

from __future__ import annotations

import pickle
import sys
import textwrap

import pytest

from tests import helpers

METHODS = ["default", "fork", "forkserver", "spawn"]

# argv: library ("stdlib" or "manycore"), start method ("default" for none)
PREAMBLE = """
import pickle
import sys
if sys.argv[1] == "stdlib":
    import multiprocessing
    import concurrent.futures as futures
else:
    import manycore as multiprocessing
    import manycore.futures as futures
ctx = multiprocessing.get_context(None if sys.argv[2] == "default" else sys.argv[2])
"""

INITIALIZER = """
state = None
calls = 0
registry = {}

def init(value):
    global state
    state = value

def task(x):
    global calls
    calls += 1
    registry[x] = state
    return (state, x)

def count(_):
    return (calls, sorted(registry))

def doubled(x):
    return task(x)[0] * 2

class Reader:
    def read(self):
        return state

def use_reader(_):
    return Reader().read()

def set_and_read():
    global state
    state = "set by the target"
    return read_state()

def read_state():
    return state

def run_target(q):
    q.put(set_and_read())

if __name__ == "__main__":
    with ctx.Pool(2, initializer=init, initargs=(42,)) as pool:
        print("map", pool.map(task, range(4)))
        print("apply", pool.apply_async(task, (9,)).get(timeout=60))
        print("helper", pool.map(doubled, range(2)))
        print("method", pool.map(use_reader, range(2)))
    with ctx.Pool(1, initializer=init, initargs=("one",)) as pool:
        for x in range(3):
            pool.apply_async(task, (x,)).get(timeout=60)
        print("later calls", pool.apply_async(count, (0,)).get(timeout=60))
    with futures.ProcessPoolExecutor(2, mp_context=ctx, initializer=init, initargs=(7,)) as ex:
        print("executor", list(ex.map(task, range(3), timeout=60)))
        print("submit", ex.submit(task, 5).result(timeout=60))
    q = ctx.Queue()
    p = ctx.Process(target=run_target, args=(q,))
    p.start()
    print("process", q.get(timeout=60))
    p.join(60)
    print("exitcode", p.exitcode)
"""


def _run(program: str, library: str, method: str, tmp_path) -> list[str]:
    script = tmp_path / f"user_program_{library}.py"
    script.write_text(textwrap.dedent(PREAMBLE + program))
    result = helpers.run_python([str(script), library, method], timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("method", METHODS)
def test_initializer_globals_reach_the_tasks_as_with_the_stdlib(method, tmp_path):
    expected = _run(INITIALIZER, "stdlib", method, tmp_path)
    assert expected[0] == "map [(42, 0), (42, 1), (42, 2), (42, 3)]"  # the program's premise
    assert _run(INITIALIZER, "manycore", method, tmp_path) == expected


TRACEBACK = """
def bad(x):
    y = x + 1
    raise ValueError(f"bad {y}")

if __name__ == "__main__":
    import os
    with ctx.Pool(1) as pool:
        try:
            pool.apply(bad, (1,))
        except ValueError as exc:
            text = str(exc.__cause__)
    name = os.path.basename(__file__)
    line = bad.__code__.co_firstlineno + 2
    print("file and line", f'{name}", line {line}, in bad' in text)
    print("source line", 'raise ValueError(f"bad {y}")' in text)
    print("dynamic", "<dynamic-code>" in text)
"""


@pytest.mark.parametrize("method", ["default", "spawn"])
def test_worker_traceback_names_the_script_line_and_source(method, tmp_path):
    expected = _run(TRACEBACK, "stdlib", method, tmp_path)
    assert expected == ["file and line True", "source line True", "dynamic False"]
    assert _run(TRACEBACK, "manycore", method, tmp_path) == expected


DASH_C = """
import manycore

def bad(x):
    raise ValueError(x)

with manycore.Pool(1) as pool:
    try:
        pool.apply(bad, (1,))
    except ValueError as exc:
        print('File "<string>", line 5, in bad' in str(exc.__cause__))
"""


def test_worker_traceback_of_python_dash_c_names_its_line():
    result = helpers.run_python(["-c", DASH_C], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]


def test_traceback_of_a_cell_shows_its_source(start_method):
    """A function from a notebook cell: its file is not on disk, its lines are in
    ``linecache`` (as IPython puts them); they travel with the function."""
    import linecache

    import manycore

    filename = "/nonexistent/ipykernel_0/cell_17.py"
    source = "def bad_cell(x):\n    raise KeyError(x)  # the cell's own line\n"
    lines = source.splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    namespace = {"__name__": "__main__"}
    try:
        exec(compile(source, filename, "exec"), namespace)
        with manycore.Pool(1, context=start_method) as pool, pytest.raises(KeyError) as info:
            pool.apply_async(namespace["bad_cell"], (3,)).get(timeout=helpers.TIMEOUT)
    finally:
        linecache.cache.pop(filename, None)
    text = str(info.value.__cause__)
    assert f'File "{filename}", line 2, in bad_cell' in text
    assert "raise KeyError(x)  # the cell's own line" in text


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("the fork start method is Linux's")


UNPICKLABLE = """
import ctypes

lock = multiprocessing.Lock()

class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int)]

def with_global_lock(q):
    with lock:
        q.put("global lock")

def use_manager(m, q):
    q.put(("manager object", m.list([1, 2])[:]))

def with_proxy(ns, q):
    q.put(("proxy", ns.value))

def with_struct_array(arr, q):
    q.put(("array", [(p.x, p.y) for p in arr]))

def run(target, *args):
    p = ctx.Process(target=target, args=args)
    p.start()
    p.join(60)
    return p.exitcode

if __name__ == "__main__":
    q = ctx.Queue()
    run(with_global_lock, q)
    print(q.get(timeout=60))
    with ctx.Manager() as manager:
        ns = manager.Namespace()
        ns.value = 5
        run(with_proxy, ns, q)
        print(q.get(timeout=60))
        print("exit", run(use_manager, manager, q))
        print(q.get(timeout=60))
    arr = ctx.Array(Point, [(1, 2), (3, 4)])
    print("exit", run(with_struct_array, arr, q))
    print(q.get(timeout=60))
"""


@pytest.mark.skipif(
    __import__("multiprocessing").get_start_method() != "fork",
    reason="the stdlib's default is not fork here: these programs fail with it too",
)
def test_default_method_runs_what_the_stdlib_fork_default_runs(tmp_path):
    """A Process whose target or arguments cannot be pickled (a lock the target refers to, a
    Manager, a ctypes class of __main__ in an Array) runs under the default method, as with
    the stdlib's default on Linux (fork), by falling back to fork (issue 15 #6)."""
    expected = _run(UNPICKLABLE, "stdlib", "default", tmp_path)
    assert expected[-1] == "('array', [(1, 2), (3, 4)])"
    assert _run(UNPICKLABLE, "manycore", "default", tmp_path) == expected


def test_a_chosen_method_that_cannot_pickle_names_fork_as_the_way_out():
    import threading

    import manycore

    lock = threading.Lock()
    process = manycore.get_context("spawn").Process(target=print, args=(lock,))
    with pytest.raises(manycore.ArgumentPicklingError, match=r'get_context\("fork"\)'):
        process.start()
    with manycore.Pool(1) as pool, pytest.raises(pickle.PicklingError, match="lambda"):
        pool.apply_async(lambda: lock.locked())  # by value only: it has no name to go by


POOL_UNPICKLABLE = """
import ctypes
import threading

class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int)]

arr = None
def init(a):
    global arr
    arr = a

def read(i):
    return (arr[i].x, arr[i].y)

tlock = threading.Lock()
def locked(i):
    with tlock:
        return i

if __name__ == "__main__":
    a = ctx.Array(Point, [(1, 2), (3, 4)])
    try:
        with ctx.Pool(2, initializer=init, initargs=(a,)) as pool:
            print(pool.map(read, [0, 1]))
    except Exception as exc:
        print(type(exc).__name__, 'context="fork"' in str(exc))
    with ctx.Pool(2) as pool:
        try:
            print(pool.map(locked, [0, 1]))
        except Exception as exc:
            print(type(exc).__name__, 'context="fork"' in str(exc))
"""


def test_pool_functions_that_cannot_be_pickled_by_value_go_by_name(tmp_path):
    """A pool's function or initializer that cannot be pickled by value (a global lock, a
    ctypes class of __main__) goes by name as with the stdlib: a fork pool runs it; a pool
    whose workers were not forked from the caller fails with an error naming fork."""
    expected = _run(POOL_UNPICKLABLE, "stdlib", "fork", tmp_path)
    assert expected == ["[(1, 2), (3, 4)]", "[0, 1]"]
    assert _run(POOL_UNPICKLABLE, "manycore", "fork", tmp_path) == expected
    assert _run(POOL_UNPICKLABLE, "manycore", "spawn", tmp_path) == [
        "InitializerError True",
        "ArgumentUnpicklingError True",
    ]


def test_worker_state_wins_and_redefined_helpers_arrive(start_method):
    """The merge rule of a worker's namespace: a value the worker set (a counter bumped by
    tasks) is kept when a new function arrives carrying the caller's value; a helper that an
    earlier function brought is replaced by its redefinition (a notebook cell run again)."""
    import manycore

    cell = {"__name__": "__main__"}  # functions from it pickle as __main__'s do
    exec(
        "counter = 0\n"
        "def bump():\n    global counter\n    counter += 1\n    return counter\n"
        "def helper():\n    return 'old'\n"
        "def task():\n    return helper(), counter\n",
        cell,
    )
    with manycore.Pool(1, context=start_method) as pool:
        assert [pool.apply_async(cell["bump"]).get(timeout=helpers.TIMEOUT) for _ in "ab"] == [
            1,
            2,
        ]
        assert pool.apply_async(cell["task"]).get(timeout=helpers.TIMEOUT) == ("old", 2)
        exec("def helper():\n    return 'new'\ndef task():\n    return helper(), counter\n", cell)
        assert pool.apply_async(cell["task"]).get(timeout=helpers.TIMEOUT) == ("new", 2)
