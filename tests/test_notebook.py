"""Output in Jupyter: a real notebook run by nbclient in a real ipykernel.

In a kernel, sys.stdout and sys.stderr are the kernel's streams (they send text to the
notebook), not descriptors 1 and 2, so what children print must come through manycore to
appear in the cell. The notebook runs once (about 5 s) in a kernel of this interpreter,
through a kernelspec written to a temporary directory (nothing is installed for the user);
each test checks one cell's outputs.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import ipykernel  # noqa: F401  # required (the dev extra): a missing kernel is an error, not a skip
import nbclient
import nbformat
import pytest

from tests import helpers

KERNEL = "manycore-test-python"

CELLS = {
    # The seed's first example, as written there (but a shorter sleep).
    "process": """
        import manycore as multiprocessing
        import os
        import time

        def worker_function(name):
            print(f"Worker '{name}' started. Process ID: {os.getpid()}")
            time.sleep(0.2)
            print(f"Worker '{name}' finished.")

        print(f"Main process ID: {os.getpid()}")
        p = multiprocessing.Process(target=worker_function, args=('Alice',))
        p.start()
        print("Main program continues to run while worker is executing...")
        p.join()
        print("Worker process has finished. Main program exiting.")
    """,
    "pool": """
        import manycore

        def shout(x):
            print(f"task {x} says hello")
            return x * x

        with manycore.Pool(2) as pool:
            print("result:", pool.map(shout, range(4)))
    """,
    # A pool made in one cell and used in a later one: the scheduler thread that writes the
    # output was started in the first cell, but the text belongs to the cell that runs.
    "pool_made": """
        later_pool = manycore.Pool(1)
        print("made")
    """,
    "pool_used": """
        print("result:", later_pool.map(shout, [5]))
        later_pool.close()
        later_pool.join()
    """,
    "logging": """
        import logging

        logging.basicConfig(
            level=logging.INFO,
            format="%(levelname)s|%(name)s|%(processName)s|%(message)s",
            force=True,
        )

        def log_it(x):
            logging.getLogger("nbworker").info("worker says %d", x)
            logging.getLogger("nbworker").debug("not shown %d", x)
            return x

        with manycore.Pool(2) as pool:
            print("result:", pool.map(log_it, range(3)))
    """,
    "progress": """
        with manycore.Pool(2) as pool:
            print("items:", len(pool.map(abs, range(1000), progress=True)))
    """,
    # The asyncio pool in a kernel whose event loop is already running: top-level await.
    "asyncio": """
        import asyncio
        import manycore.aio

        async def twice(x):
            await asyncio.sleep(0.01)
            return 2 * x

        async with manycore.aio.Pool(2) as apool:
            print("aio map:", await apool.map(twice, range(4)))
            print("aio apply:", await apool.apply(shout, 3))
            print("aio for:", [r async for r in apool.imap(shout, [1, 2])])
    """,
}


def _kernelspec(directory: Path) -> None:
    spec = directory / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [
                    sys.executable,
                    "-m",
                    "ipykernel_launcher",
                    "-f",
                    "{connection_file}",
                    # ipykernel >= 6 also copies what reaches descriptors 1 and 2 into the
                    # notebook, late and out of order; older kernels and other frontends
                    # do not. Off, so that what the cells show came through manycore.
                    "--IPKernelApp.capture_fd_output=False",
                ],
                "display_name": "manycore tests",
                "language": "python",
                # The kernel starts in another directory: a relative PYTHONPATH (``src``)
                # would not reach it, and it would import an installed manycore instead.
                "env": {"PYTHONPATH": os.pathsep.join(_import_path())},
            }
        )
    )


def _import_path() -> list[str]:
    """This process's PYTHONPATH made absolute, led by the folder its manycore comes from."""
    import manycore

    here = str(Path(manycore.__file__).resolve().parent.parent)
    given = os.environ.get("PYTHONPATH", "")
    return [here] + [str(Path(p).resolve()) for p in given.split(os.pathsep) if p]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Run the notebook; for each cell, its stdout and stderr text (the kernel is gone)."""
    home = tmp_path_factory.mktemp("jupyter")
    _kernelspec(home)
    before = helpers.tagged()
    threads_before = set(threading.enumerate())
    saved = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(home)  # read when the kernelspec is looked up
    try:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in CELLS.values()]
        client = nbclient.NotebookClient(
            nb,
            kernel_name=KERNEL,
            timeout=int(helpers.TIMEOUT),
            startup_timeout=int(helpers.TIMEOUT),
            resources={"metadata": {"path": str(home)}},
        )
        client.execute()
    finally:
        if saved is None:
            del os.environ["JUPYTER_PATH"]
        else:
            os.environ["JUPYTER_PATH"] = saved
    # The kernel and everything it started (workers, fork servers) must be gone.
    left = helpers.wait_gone(helpers.tagged() - before, helpers.TIMEOUT)
    assert not left, f"the kernel left processes: {left}"
    threads = [t.name for t in threading.enumerate() if t not in threads_before]
    assert not threads, f"running the notebook left threads: {threads}"
    result: dict[str, dict[str, str]] = {}
    for name, cell in zip(CELLS, nb.cells):
        texts: dict[str, Any] = {"stdout": "", "stderr": ""}
        for out in cell.outputs:
            if out.get("output_type") == "stream":
                texts[out["name"]] += out["text"]
        result[name] = texts
    return result


def test_process_prints_appear_in_the_cell(outputs: dict[str, dict[str, str]]) -> None:
    out = outputs["process"]["stdout"]
    assert "Worker 'Alice' started. Process ID: " in out
    # join() returns after the child's output was written: its last line comes first.
    finished = out.index("Worker 'Alice' finished.\n")
    assert finished < out.index("Worker process has finished. Main program exiting.")


def test_pool_task_prints_appear_in_the_cell_before_the_result(
    outputs: dict[str, dict[str, str]],
) -> None:
    out = outputs["pool"]["stdout"]
    result = out.index("result: [0, 1, 4, 9]")
    for x in range(4):
        assert out.index(f"task {x} says hello\n") < result


def test_output_lands_in_the_cell_that_uses_a_pool_made_earlier(
    outputs: dict[str, dict[str, str]],
) -> None:
    assert outputs["pool_made"]["stdout"] == "made\n"
    assert outputs["pool_used"]["stdout"] == "task 5 says hello\nresult: [25]\n"


def test_worker_log_records_appear_with_level_name_and_worker(
    outputs: dict[str, dict[str, str]],
) -> None:
    err = outputs["logging"]["stderr"]
    lines = [line.split("|") for line in err.splitlines() if line.startswith("INFO|")]
    assert sorted(message for _, _, _, message in lines) == [
        f"worker says {x}" for x in range(3)
    ], err
    for _, name, process, _ in lines:
        assert name == "nbworker"
        assert process.startswith("manycore-worker-")
    assert "not shown" not in err


def test_progress_bar_renders_in_the_cell(outputs: dict[str, dict[str, str]]) -> None:
    cell = outputs["progress"]
    assert "items: 1000" in cell["stdout"]
    assert "100%" in cell["stderr"]


def test_the_asyncio_pool_runs_in_the_kernel_loop(outputs: dict[str, dict[str, str]]) -> None:
    out = outputs["asyncio"]["stdout"]
    assert "aio map: [0, 2, 4, 6]\n" in out, outputs["asyncio"]
    assert out.index("task 3 says hello") < out.index("aio apply: 9")
    assert "aio for: [1, 4]" in out
