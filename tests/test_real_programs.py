"""Small programs of the shapes real programs have, run with ``import multiprocessing`` and
with ``import manycore as multiprocessing``: the output must be the same (issue 15, "Real
programs").

Each program is a script that takes the library (``mp`` or ``mc``) and the start method
(``default`` or a name) as its arguments. The reference is the stdlib's own output: under
the same start method where the output names the method (process names), else under
``fork``, which is what existing code on Linux was written against (the stdlib's spawn and
forkserver lose lines of the Lock example themselves).
"""

from __future__ import annotations

import atexit
import functools
import re
import shutil
import tempfile
import zlib
from pathlib import Path

import pytest

from tests import helpers

METHODS = ["default", "fork", "forkserver", "spawn"]

HEADER = """
import sys
if sys.argv[1] == "mc":
    import manycore as mp
    from manycore import ProcessPoolExecutor
else:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
METHOD = None if sys.argv[2] == "default" else sys.argv[2]
ctx = mp if METHOD is None else mp.get_context(METHOD)
"""

# Programs whose output names the start method (process names): the reference is the
# stdlib under the same method.
NAMED = """
import logging

def report(queue):
    me = mp.current_process()
    queue.put((me.name, me._identity))

def name_of_a_child(_):
    return ctx.Process(target=abs, args=(1,)).name

def log_in_child():
    mp.get_logger().warning("hello from the child")

if __name__ == "__main__":
    # Pattern 3 (#3): pool workers are named and numbered as the stdlib's, replacements too.
    print("== identity")
    queue = ctx.Queue()
    pool = ctx.Pool(2, initializer=report, initargs=(queue,))
    pool.map(abs, range(4))
    print(sorted(queue.get(timeout=60) for _ in range(2)))
    pool.close()
    pool.join()
    process = ctx.Process(target=report, args=(queue,))
    process.start()
    process.join(60)
    print(process.name, queue.get(timeout=60))
    with ProcessPoolExecutor(
        1, mp_context=None if METHOD is None else ctx, initializer=report, initargs=(queue,)
    ) as ex:
        ex.submit(abs, 1).result(timeout=60)
        print(queue.get(timeout=60))
    # Pattern 4 (#4): a child's log records appear once (on stderr).
    logger = mp.log_to_stderr()
    logger.setLevel(logging.INFO)
    process = ctx.Process(target=log_in_child)
    process.start()
    process.join(60)
    logger.warning("parent done")
    logger.setLevel(logging.WARNING)
    # Last: the stdlib may start one more replacement than the two it needs.
    pool = ctx.Pool(1, initializer=report, initargs=(queue,), maxtasksperchild=1)
    print([pool.apply(name_of_a_child, (i,)) for i in range(2)])
    print([queue.get(timeout=60) for _ in range(2)])
    pool.close()
    pool.join()
"""

# Programs whose output does not depend on the method: the reference is the stdlib's fork.
SHAPES = """
import time

def task(x):
    if x == 50:
        raise ValueError(x)
    return x * 2

def recurse(wconn, id):
    wconn.send(id)
    if len(id) < 2:
        for i in range(2):
            p = ctx.Process(target=recurse, args=(wconn, id + [i]))
            p.start()
            p.join(60)

def report_parent(wconn):
    parent = mp.parent_process()
    wconn.send("alive" if parent.is_alive() else "not alive")
    parent.join(timeout=60)
    wconn.send("alive" if parent.is_alive() else "not alive")

def start_grandchild(wconn):
    ctx.Process(target=report_parent, args=(wconn,)).start()
    time.sleep(60)

def print_with(lock, i):
    lock.acquire()
    try:
        print("hello world", i, flush=True)
    finally:
        lock.release()

if __name__ == "__main__":
    # Pattern 2 (#2): an error in imap/imap_unordered fails its item alone. The stdlib gives
    # that with its one-item chunks; manycore also with bigger ones (its default chunks grow).
    print("== imap")
    sizes = [None, 7] if sys.argv[1] == "mc" else [None, None]
    with ctx.Pool(3) as pool:
        for name in ("imap", "imap_unordered"):
            for size in sizes:
                kwargs = {} if size is None else {"chunksize": size}
                iterator = getattr(pool, name)(task, range(100), **kwargs)
                values, errors = [], []
                while True:
                    try:
                        values.append(iterator.next(timeout=60))
                    except StopIteration:
                        break
                    except ValueError as exc:
                        errors.append((len(values), repr(exc)))
                if name == "imap_unordered":
                    values.sort()
                    errors = [e for _, e in errors]
                print(name, len(values), values == [x * 2 for x in range(100) if x != 50], errors)
    # CPython's test_recursion: a process that starts a process that starts a process.
    print("== family")
    rconn, wconn = mp.Pipe(duplex=False)
    recurse(wconn, [])
    time.sleep(0.2)
    result = []
    while rconn.poll():
        result.append(rconn.recv())
    print(sorted(result))
    # CPython's test_parent_process: a grandchild sees its parent terminated.
    rconn, wconn = mp.Pipe(duplex=False)
    p = ctx.Process(target=start_grandchild, args=(wconn,))
    p.start()
    assert rconn.poll(60)
    print(rconn.recv())
    p.terminate()
    p.join(60)
    assert rconn.poll(60)
    print(rconn.recv())
    # Pattern 5 (#5): the documentation's Lock example; the parent exits without joining.
    print("== lock", flush=True)
    lock = ctx.Lock()
    for num in range(10):
        ctx.Process(target=print_with, args=(lock, num)).start()
"""


@functools.cache
def _run(program: str, lib: str, method: str) -> tuple[dict[str, list[str]], str]:
    """(stdout by section, stderr) of ``program`` run with ``lib`` under ``method``."""
    path = _SCRIPTS / f"program_{zlib.crc32(program.encode()):08x}.py"
    if not path.exists():
        path.write_text(HEADER + program)
    result = helpers.run_python([str(path), lib, method])
    assert result.returncode == 0, result.stderr
    sections: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in result.stdout.splitlines():
        if line.startswith("== "):
            lines = sections.setdefault(line[3:], [])
        else:
            lines.append(line)
    return sections, result.stderr


_SCRIPTS = Path(tempfile.mkdtemp(prefix="manycore-programs-"))
atexit.register(shutil.rmtree, _SCRIPTS, True)


@pytest.mark.parametrize("method", METHODS)
def test_pool_workers_are_named_and_numbered(method):
    ours, theirs = _run(NAMED, "mc", method), _run(NAMED, "mp", method)
    ours_lines, theirs_lines = ours[0]["identity"], theirs[0]["identity"]
    # The first pools and the process are numbered exactly as the stdlib numbers them.
    assert ours_lines[:3] == theirs_lines[:3]
    # The last pool replaces its worker after each task: which numbers the replacements
    # get depends on when each side starts them (a replacement may be started and dropped
    # as the pool closes), so the names are compared with their numbers masked, and ours
    # must be fresh ones, rising.
    assert _masked(ours_lines[3:]) == _masked(theirs_lines[3:])
    numbers = [int(n) for n in re.findall(r"-(\d+):1", ours_lines[3])]
    assert len(numbers) == 2 and numbers[0] < numbers[1], ours_lines[3]


def _masked(lines: list[str]) -> list[str]:
    return [re.sub(r"-\d+", "-N", re.sub(r"\(\d+,\)", "(N,)", line)) for line in lines]


@pytest.mark.parametrize("method", METHODS)
def test_a_childs_log_records_appear_once(method):
    ours, theirs = _run(NAMED, "mc", method), _run(NAMED, "mp", method)
    # The stdlib's fork server logs the directory it makes for its socket; manycore's has none.
    expected = [line for line in theirs[1].splitlines() if "temp directory" not in line]
    assert ours[1].splitlines() == expected
    assert ours[1].count("hello from the child") == 1


@pytest.mark.parametrize("method", METHODS)
def test_imap_errors_fail_their_item_alone(method):
    ours, theirs = _run(SHAPES, "mc", method), _run(SHAPES, "mp", "fork")
    assert ours[0]["imap"] == theirs[0]["imap"]
    assert "imap 99 True [(50, 'ValueError(50)')]" in ours[0]["imap"]


@pytest.mark.parametrize("method", METHODS)
def test_grandchildren_and_their_parents(method):
    ours, theirs = _run(SHAPES, "mc", method), _run(SHAPES, "mp", "fork")
    assert ours[0]["family"] == theirs[0]["family"]
    assert ours[0]["family"][1:] == ["alive", "not alive"]


@pytest.mark.parametrize("method", METHODS)
def test_children_of_a_parent_that_does_not_join_get_their_lock(method):
    ours, theirs = _run(SHAPES, "mc", method), _run(SHAPES, "mp", "fork")
    assert sorted(ours[0]["lock"]) == sorted(theirs[0]["lock"])
    assert len(ours[0]["lock"]) == 10
    assert ours[1] == ""
