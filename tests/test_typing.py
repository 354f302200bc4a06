"""manycore's types keep the checks the stdlib's stubs give: one mypy run over a small
program written twice, once with ``multiprocessing``/``concurrent.futures`` and once with
``manycore``, must report the same errors on the same lines and reveal the same types."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers

pytest.importorskip("mypy")

PROGRAM = """\
from __future__ import annotations

import concurrent.futures
import ctypes
import multiprocessing as mp
import multiprocessing.queues
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.pool import AsyncResult


def square(x: int) -> int:
    return x * x


def add(x: int, y: int) -> int:
    return x + y


def main() -> None:
    xs = [1, 2, 3]
    with mp.Pool(2) as pool:
        reveal_type(pool.map(square, xs))  # MAP
        pool.map(square, ["a"])  # BAD-MAP
        reveal_type(pool.apply(square, (1,)))
        reveal_type(pool.apply_async(square, (1,)))
        reveal_type(pool.apply_async(square, (1,)).get())
        reveal_type(pool.map_async(square, xs).get())
        reveal_type(pool.starmap(add, [(1, 2)]))
        for item in pool.imap(square, xs):
            reveal_type(item)
        for item in pool.imap_unordered(square, xs):
            reveal_type(item)
        result: AsyncResult[int] = pool.apply_async(square, (2,))
        reveal_type(result)
    with ProcessPoolExecutor(2) as ex:
        fut = ex.submit(square, 3)
        reveal_type(fut)
        reveal_type(fut.result())
        ex.submit(square, "x")  # BAD-SUBMIT
        ex.submit(add, 1)
        reveal_type(list(ex.map(square, xs)))
        reveal_type(concurrent.futures.wait([fut]))
    q = mp.Queue()
    reveal_type(q.get())
    jq = mp.JoinableQueue()
    reveal_type(jq.get())
    sq = mp.SimpleQueue()
    reveal_type(sq.get())
    typed: multiprocessing.queues.Queue[int] = mp.Queue()
    typed.put("x")
    reveal_type(typed.get())
    v = mp.Value("i", 5)
    reveal_type(v.value)
    a = mp.Array("d", 3)
    reveal_type(a[0])
    vd = mp.Value(ctypes.c_double, 1.0)
    reveal_type(vd.value)
    ai = mp.Array(ctypes.c_int, 3)
    reveal_type(ai[0])
"""

# The same program on manycore: only the imports change.
MANYCORE = {
    "import multiprocessing as mp\n": "import manycore as mp\n",
    "import multiprocessing.queues\n": "import manycore.queues\n",
    "multiprocessing.queues.Queue[int]": "manycore.queues.Queue[int]",
    "from concurrent.futures import ProcessPoolExecutor\n": (
        "from manycore import ProcessPoolExecutor\n"
    ),
    "from multiprocessing.pool import AsyncResult\n": "from manycore.pool import AsyncResult\n",
}

_LINE = re.compile(r"^(?P<file>[\w.]+):(?P<line>\d+): (?P<kind>error|note): (?P<text>.*)$")
# Where the two differ only in a class's module or the stdlib's other name for it.
_QUALIFIED = re.compile(r"\b(?:[a-z_][a-z_0-9]*\.)+(?=[A-Z])")
_SAME_CLASS = {"ApplyResult": "AsyncResult", '"Executor"': '"ProcessPoolExecutor"'}


def _normal(text: str) -> str:
    # Older mypy releases (the last that run on Python 3.9) spell builtins in full.
    text = text.replace("builtins.", "")
    text = _QUALIFIED.sub("", text)
    for theirs, ours in _SAME_CLASS.items():
        text = text.replace(theirs, ours)
    return text


def _report(output: str, name: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for line in output.splitlines():
        match = _LINE.match(line)
        if match and match["file"] == name:
            found.setdefault(int(match["line"]), []).append(_normal(match["text"]))
    return found


def test_manycore_types_check_as_the_stdlibs(tmp_path: Path) -> None:
    ours = PROGRAM
    for theirs, mine in MANYCORE.items():
        assert theirs in ours
        ours = ours.replace(theirs, mine)
    (tmp_path / "with_stdlib.py").write_text(PROGRAM)
    (tmp_path / "with_manycore.py").write_text(ours)
    (tmp_path / "mypy.ini").write_text(
        "[mypy]\nstrict = True\n[mypy-cloudpickle.*]\nignore_missing_imports = True\n"
    )
    env = dict(helpers.script_env(), MYPYPATH=str(helpers.ROOT / "src"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            "mypy.ini",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--python-version",
            f"{sys.version_info[0]}.{sys.version_info[1]}",
            "--hide-error-context",
            "--no-color-output",
            "--no-error-summary",
            "with_stdlib.py",
            "with_manycore.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in env.items() if k != "MYPY_FORCE_COLOR"},
        check=False,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 1: errors were found
    stdlib = _report(done.stdout, "with_stdlib.py")
    manycore = _report(done.stdout, "with_manycore.py")
    assert manycore == stdlib, done.stdout

    lines = PROGRAM.splitlines()

    def at(marker: str) -> list[str]:
        return manycore.get(1 + next(i for i, s in enumerate(lines) if marker in s), [])

    # What the checks are for, spelled out (the stdlib's stubs give the same).
    assert at("# MAP") == ['Revealed type is "list[int]"']
    assert any("[arg-type]" in text for text in at("# BAD-MAP"))
    assert any("[arg-type]" in text for text in at("# BAD-SUBMIT"))
    assert os.path.exists(tmp_path / "cache")
