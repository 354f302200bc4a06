"""What a worker imports: its loop, the codec and the transport, not the pool (issue 16).

A spawned worker imports ``manycore._zygote`` (``spawned_main``) and ``manycore._worker``,
which import the ``manycore`` package first; when these imported the whole public surface,
the errors' stdlib bases, cloudpickle, asyncio and logging, a spawned pool's first result
waited for all of it in every worker. These tests pin what a worker must not load, both as
imported and in real workers after a task ran, so a new eager import fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests import helpers

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

# What a worker that runs plain functions and logs nothing must not load: the pool
# machinery, the launcher, the errors (their bases load concurrent.futures and
# multiprocessing.pool), the by-value pickler (cloudpickle), the event loop for coroutine
# calls, logging (and traceback), and what the owner's bookkeeping uses.
WORKER_NEVER = [
    *OWNER_ONLY,
    "manycore._launch",
    "manycore._errors",
    "manycore._byvalue",
    "manycore._coroutine_worker",
    "manycore._logforward",
    "cloudpickle",
    "asyncio",
    "concurrent.futures",
    "multiprocessing.pool",
    "multiprocessing.util",
    "logging",
    "traceback",
    "inspect",
    "secrets",
    "subprocess",
]

WORKER_IMPORT = "from manycore._zygote import spawned_main\nimport manycore._worker"


def _loaded_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(done.stdout.split())


@pytest.mark.parametrize("statement", [WORKER_IMPORT, "import manycore"])
def test_importing_the_worker_or_the_package_loads_no_pool_machinery(statement):
    loaded = _loaded_after(statement)
    assert not loaded & set(OWNER_ONLY)


def test_the_worker_imports_only_its_loop_the_codec_and_the_transport():
    loaded = _loaded_after(WORKER_IMPORT)
    assert sorted(loaded & set(WORKER_NEVER)) == []
    assert {"manycore._worker", "manycore._outcome", "manycore._serialize"} <= loaded


def test_public_names_still_import_on_first_use():
    loaded = _loaded_after(
        "import manycore\n"
        "from manycore import Pool, ProcessPoolExecutor, Process, get_context\n"
        "assert manycore.Pool is Pool and manycore.SharedMemoryWarning.__name__\n"
        "assert 'Pool' in dir(manycore) and 'get_context' in manycore.__all__\n"
        "assert issubclass(manycore.WorkerLostError, manycore.ManycoreError)\n"
        "assert manycore.get_logger().name == 'multiprocessing'"
    )
    assert {"manycore._pool", "manycore._executor", "manycore._context"} <= loaded


# Runs in a subprocess: argv is the start method. The functions come from __main__, as
# users write them, so they travel by value; what they return is the worker's own view.
WORKER_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    import manycore

    def loaded():
        import sys
        # Without "__main__": a result that names it is pickled by cloudpickle (in case it
        # is a __main__ object), which would load it for this test's sake.
        return sorted(name for name in sys.modules if name != "__main__")

    def log_at_once(tag):
        import logging  # the worker's first import of logging

        logging.getLogger("tests.startup").warning("from the worker: %s", tag)
        return tag

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    if __name__ == "__main__":
        collect = Collect()
        logger = logging.getLogger("tests.startup")
        logger.addHandler(collect)
        logger.setLevel(logging.INFO)
        with manycore.Pool(1, context=sys.argv[1]) as pool:
            first = pool.apply(loaded)
            second = pool.apply(loaded)  # after a whole task: nothing loaded late either
            tag = pool.apply(log_at_once, ("hello",))
        print(json.dumps({"first": first, "second": second, "tag": tag,
                          "messages": collect.messages}))
    """
)


@pytest.fixture(scope="module", params=["spawn", "forkserver"])
def worker_report(request, tmp_path_factory):
    script = tmp_path_factory.mktemp("startup") / "worker_modules.py"
    script.write_text(WORKER_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), request.param],
        capture_output=True,
        text=True,
        timeout=helpers.TIMEOUT,
        env=helpers.script_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_worker_that_ran_plain_tasks_loaded_nothing_it_does_not_need(worker_report):
    for seen in (worker_report["first"], worker_report["second"]):
        assert sorted(set(seen) & set(WORKER_NEVER)) == []


def test_a_task_that_imports_logging_and_logs_at_once_reaches_the_callers_handlers(
    worker_report,
):
    assert worker_report["tag"] == "hello"
    assert worker_report["messages"] == ["from the worker: hello"]
