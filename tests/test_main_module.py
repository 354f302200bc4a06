"""Code from __main__ (a script, ``python -c``), lambdas and closures run in workers under every
start method, and the user's main module is never re-executed in a worker."""

from __future__ import annotations

import functools
import textwrap

import pytest

import manycore
from tests import helpers, workloads
from tests.helpers import TIMEOUT

# No `if __name__ == "__main__":` guard, on purpose.
MAIN = textwrap.dedent(
    """
    import sys
    import manycore

    print("BODY", flush=True)  # printed again if a worker re-ran this module
    method = None if sys.argv[1] == "default" else sys.argv[1]
    OFFSET = 10

    def cube(x):
        return x ** 3

    def uses_global(x):
        return x + OFFSET

    class Point:
        def __init__(self, x):
            self.x = x

        def double(self):
            return Point(self.x * 2)

    def make_adder(n):
        def adder(x):
            return x + n
        return adder

    def get_x(p):
        return p.x

    with manycore.Pool(2, context=method) as pool:
        print("cube", pool.map(cube, range(5)))
        print("lambda", pool.map(lambda x: x * 10, range(5)))
        print("closure", pool.map(make_adder(100), range(3)))
        print("global", pool.map(uses_global, range(3)))
        print("class-arg", pool.map(get_x, [Point(i) for i in range(3)]))
        print("class-result", [p.x for p in pool.map(Point, range(3))])
        print("method", pool.apply_async(Point(21).double).get(timeout=60).x)
        print("imap", list(pool.imap(cube, range(4))))
    with manycore.ProcessPoolExecutor(2, mp_context=method) as ex:
        print("executor", list(ex.map(cube, range(5), timeout=60)))
        print("submit", ex.submit(lambda: OFFSET * 2).result(timeout=60))
    print("DONE", flush=True)
    """
)

EXPECTED = [
    "BODY",
    "cube [0, 1, 8, 27, 64]",
    "lambda [0, 10, 20, 30, 40]",
    "closure [100, 101, 102]",
    "global [10, 11, 12]",
    "class-arg [0, 1, 2]",
    "class-result [0, 1, 2]",
    "method 42",
    "imap [0, 1, 8, 27]",
    "executor [0, 1, 8, 27, 64]",
    "submit 20",
    "DONE",
]


@pytest.mark.parametrize("how", ["script", "dash-c"])
def test_main_module_code_runs_in_workers(start_method, how, tmp_path):
    method = start_method or "default"
    if how == "script":
        script = tmp_path / "user_script.py"
        script.write_text(MAIN)
        args = [str(script), method]
    else:
        args = ["-c", MAIN, method]
    result = helpers.run_python(args, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == EXPECTED, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_lambdas_closures_and_local_classes(start_method):
    factor = 3

    def local(x):
        return x * factor

    class Box:
        def __init__(self, v):
            self.v = v

    with manycore.Pool(2, context=start_method) as pool:
        assert pool.map_async(lambda x: x + 1, range(10)).get(timeout=TIMEOUT) == list(range(1, 11))
        assert pool.map_async(local, range(5)).get(timeout=TIMEOUT) == [0, 3, 6, 9, 12]
        assert (
            pool.apply_async(functools.partial(workloads.add, 10), (5,)).get(timeout=TIMEOUT) == 15
        )
        assert pool.apply_async(lambda b: b.v * 2, (Box(21),)).get(timeout=TIMEOUT) == 42
        assert [b.v for b in pool.map_async(Box, range(3)).get(timeout=TIMEOUT)] == [0, 1, 2]
        assert helpers.drain(pool.imap(lambda s: s.upper(), ["a", "b"])) == ["A", "B"]
    with manycore.ProcessPoolExecutor(2, mp_context=start_method) as ex:
        assert ex.submit(lambda: factor).result(timeout=TIMEOUT) == 3
        assert list(ex.map(local, range(3), timeout=TIMEOUT)) == [0, 3, 6]


def test_rebound_global_is_a_snapshot_per_pool():
    """A function pickled by value carries a snapshot of its globals taken once per pool (the
    stdlib's fork copies the caller when the pool starts): a global rebound while the pool
    runs is not seen by it, and is seen by the next pool."""
    namespace = {"n": 1}
    exec("def bump(x):\n    return x + n\n", namespace)
    bump = namespace["bump"]
    with manycore.Pool(2) as pool:
        assert pool.map_async(bump, range(3)).get(timeout=TIMEOUT) == [1, 2, 3]
        namespace["n"] = 100
        assert pool.map_async(bump, range(3)).get(timeout=TIMEOUT) == [1, 2, 3]
        assert pool.apply_async(bump, (0,)).get(timeout=TIMEOUT) == 1
    with manycore.Pool(2) as pool:
        assert pool.map_async(bump, range(3)).get(timeout=TIMEOUT) == [100, 101, 102]
        assert pool.apply_async(bump, (0,)).get(timeout=TIMEOUT) == 100


def test_mutated_closure_state_is_a_snapshot_per_pool():
    """What a closure refers to may change in place between calls; as with the stdlib's
    workers, a pool sees the state of its start (its first call, here), the next pool the
    new state."""
    settings = {"scale": 1}

    def scaled(x):
        return x * settings["scale"]

    with manycore.ProcessPoolExecutor(2) as ex:
        assert list(ex.map(scaled, range(3), timeout=TIMEOUT)) == [0, 1, 2]
        settings["scale"] = 10
        assert ex.submit(scaled, 1).result(timeout=TIMEOUT) == 1
    with manycore.ProcessPoolExecutor(2) as ex:
        assert list(ex.map(scaled, range(3), timeout=TIMEOUT)) == [0, 10, 20]
        assert ex.submit(scaled, 1).result(timeout=TIMEOUT) == 10


NESTED_SCRIPT = """
import manycore
from manycore import _launch
from tests import workloads

with manycore.Pool(2) as pool:
    # a plain script has one thread here, so the fork server is forked from it: the path
    # pytest itself (which has threads) never takes
    assert _launch._server is not None and _launch._server.forked
    results = pool.map_async(workloads.nested_map, [5, 3], chunksize=1).get(timeout=60)
print([squares for squares, _ in results])
"""


def test_nested_pool_in_a_plain_script_with_a_forked_server():
    result = helpers.run_python(["-c", NESTED_SCRIPT], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[[0, 1, 4, 9, 16], [0, 1, 4]]"
