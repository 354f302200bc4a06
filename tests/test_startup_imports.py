"""What a worker imports: its loop, the codec and the transport, not the pool (issue 16).

A spawned worker imports ``manycore._worker``, which imports the ``manycore`` package first;
when the package imported its whole public surface, a spawned pool's first result waited
for the scheduler, executor, jobs and contexts in every worker.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

OWNER_ONLY = [
    "manycore._backend",
    "manycore._context",
    "manycore._engine",
    "manycore._executor",
    "manycore._jobs",
    "manycore._pool",
    "manycore._process",
    "manycore._scheduler",
]


def _loaded_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(done.stdout.split())


@pytest.mark.parametrize("statement", ["import manycore._worker", "import manycore"])
def test_importing_the_worker_or_the_package_loads_no_pool_machinery(statement):
    loaded = _loaded_after(statement)
    assert not loaded & set(OWNER_ONLY)


def test_public_names_still_import_on_first_use():
    loaded = _loaded_after(
        "import manycore\n"
        "from manycore import Pool, ProcessPoolExecutor, Process, get_context\n"
        "assert manycore.Pool is Pool and manycore.SharedMemoryWarning.__name__\n"
        "assert 'Pool' in dir(manycore) and 'get_context' in manycore.__all__"
    )
    assert {"manycore._pool", "manycore._executor", "manycore._context"} <= loaded
