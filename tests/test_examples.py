"""Every script in examples/ runs and prints what it should: as a script, under each start
method, and as a notebook cell would run it (the source given to ``python -c``, spawn).

These are the programs a newcomer copies first, so their output is checked line by line:
the shared counter reaches 40000, the shared array ends at [30, 40, 50, 60], the pipe's reply
comes back upper-cased, and every item produced is consumed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import helpers

EXAMPLES = helpers.ROOT / "examples"

# Run the example as __main__ after choosing the start method, as a user's script would.
UNDER_METHOD = (
    "import runpy, sys, manycore; manycore.set_start_method(sys.argv[1]); "
    "runpy.run_path(sys.argv[2], run_name='__main__')"
)
# A notebook has no file: the cell's code is compiled from a string in __main__.
AS_CELL = "import manycore\nmanycore.set_start_method('spawn')\n"

EXPECTED = {
    "process_basics.py": [
        "child 'Ada' running as pid",
        "child 'Ada' done",
        "child exit code: 0",
    ],
    "queue_producer_consumer.py": [
        *(f"consumed item-{n}" for n in range(5)),
        "finished: producer exit 0, consumer exit 0",
    ],
    "pipe_and_shared_memory.py": [
        "got 'hello from the parent'",
        "[parent] reply: 'HELLO FROM THE PARENT'",
        "counter: 20",
        "cells: [30, 40, 50, 60]",
    ],
    "shared_counter.py": ["total: 40000"],
    "asyncio_pool.py": [
        "apply: 144",
        f"map: {[x * x for x in range(10)]}",
        f"coroutines: {list(range(16))}",
        "async for: [0, 1, 4, 9, 16]",
        "too slow: the awaiting task gave up and the call was cancelled",
    ],
    "shared_array.py": [
        "row sums from the workers: [10.0, 20.0, 30.0, 40.0]",
        "column sums in the parent: [0, 10, 20, 30, 40]",
        "image * 2, a private array: [0, 8, 16, 24, 32]",
    ],
    "pool_map.py": [
        f"map: {[x * x for x in range(20)]}",
        "apply: 144",
        "map_async: [0, 1, 4, 9, 16]",
        "apply_async: 49",
        f"imap with chunksize: {[x * x for x in range(10)]}",
        "the worker's error reached the caller: ZeroDivisionError: division by zero",
    ],
}

# Printed by the example's top level: a child that re-ran the main module would print it again.
ONCE = {
    "asyncio_pool.py": "apply: ",
    "process_basics.py": "parent pid",
    "pool_map.py": "map: ",
    "shared_counter.py": "total: ",
    "shared_array.py": "row sums",
}

MODES = ["script", "fork", "forkserver", "spawn", "notebook-cell"]


def test_every_example_is_checked() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


def _run(path: Path, mode: str) -> str:
    if mode == "script":
        args = [str(path)]
    elif mode == "notebook-cell":
        args = ["-c", AS_CELL + path.read_text()]
    else:
        args = ["-c", UNDER_METHOD, mode, str(path)]
    done = helpers.run_python(args, timeout=120)
    assert done.returncode == 0, f"{path.name} ({mode}) failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_output(name: str, mode: str) -> None:
    out = _run(EXAMPLES / name, mode)
    for line in EXPECTED[name]:
        assert line in out, f"{name} ({mode}): {line!r} missing from:\n{out}"
    if name in ONCE:
        assert out.count(ONCE[name]) == 1, f"{name} ({mode}) ran its top level twice:\n{out}"
