"""The Dask backend: the same Pool and Executor on a Dask cluster (real processes, loopback).

Most tests share one ``LocalCluster`` (2 worker processes) for the session: its processes and
threads exist before each test, so the leak check counts only what a test adds (a pool's
dispatcher thread, a client of its own, a cluster it starts). Tests that kill workers or
terminate a cluster start a pool that owns its cluster, so the shared one is never disturbed.
One test starts a cluster the way users do (``dask scheduler`` and two ``dask worker``
processes on 127.0.0.1) and connects by address and by scheduler file.

Dask is required here: without the ``dask`` extra this module fails to import, loudly, so CI
cannot silently skip it (``pip install -e '.[dask]'``).
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import pickle
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

import manycore
from manycore import _buffers, _payload
from manycore._dask import cluster as dask_cluster
from manycore._dask import scheduler as dask_scheduler
from tests import helpers, workloads, workloads_dask
from tests.helpers import TIMEOUT


def _import_dask() -> tuple[Any, Any]:
    """dask and distributed, imported only when the first test here runs.

    Not at collection: importing distributed changes process-wide pickling (it installs
    tblib's support for exceptions), which other test files must not see; conftest.py runs
    this file last.
    """
    try:
        import dask
        import distributed
    except ImportError as exc:  # pragma: no cover - CI installs the extra
        raise ImportError(
            f"tests/test_dask.py needs Dask ({exc}): install the extra with "
            "pip install -e '.[dask]'"
        ) from exc
    return dask, distributed


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A 2-process LocalCluster on 127.0.0.1 for the whole session, and a client to it."""
    dask, distributed = _import_dask()
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        )
    client = distributed.Client(cluster, set_as_default=False)
    # Dask starts a few process-wide helper threads on first use (the done-callback thread,
    # the offload thread); start them here, before any test counts threads.
    future = client.submit(workloads.square, 3, pure=False)
    future.add_done_callback(lambda _f: None)
    assert future.result(timeout=TIMEOUT) == 9
    client.scatter(b"warm-up", hash=False).release()
    yield client
    client.close()
    cluster.close()


@pytest.fixture(autouse=True)
def _shared_cluster_first(dask_client: Any) -> None:
    """Every test here runs after the shared cluster exists (see the module docstring)."""


@pytest.fixture
def pool(dask_client: Any) -> Iterator[manycore.Pool]:
    with manycore.Pool(backend="dask", address=dask_client) as p:
        yield p


def worker_pids(client: Any) -> set[int]:
    return set(client.run(os.getpid).values())


# ------------------------------------------------------------------ the optional extra


def test_importing_manycore_does_not_import_dask() -> None:
    code = (
        "import sys, manycore, manycore.pool, manycore.futures\n"
        "p = manycore.Pool(1); p.terminate()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    done = helpers.run_python(["-c", code])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_without_dask_the_error_says_how_to_install_it() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('dask', 'distributed'):\n"
        "            raise ImportError('No module named ' + repr(name))\n"
        "sys.meta_path.insert(0, Block())\n"
        "import manycore\n"
        "for make in (lambda: manycore.Pool(2, backend='dask'),\n"
        "             lambda: manycore.ProcessPoolExecutor(backend='dask')):\n"
        "    try:\n"
        "        make()\n"
        "    except ImportError as exc:\n"
        "        print(exc)\n"
    )
    done = helpers.run_python(["-c", code])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all("pip install 'manycore[dask]'" in line for line in lines)


def test_options_that_mean_nothing_on_dask_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown backend 'ray'"):
        manycore.Pool(2, backend="ray")
    with pytest.raises(ValueError, match="needs backend='dask'"):
        manycore.ProcessPoolExecutor(2, address="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="start method"):
        manycore.Pool(2, context="spawn", backend="dask")
    with pytest.raises(ValueError, match="maxtasksperchild"):
        manycore.Pool(2, maxtasksperchild=3, backend="dask")
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        manycore.ProcessPoolExecutor(2, max_tasks_per_child=3, backend="dask")
    with pytest.raises(ValueError, match="max_memory_per_child"):
        manycore.Pool(2, max_memory_per_child="1GiB", backend="dask")


def test_task_timeouts_are_refused_on_dask(pool: manycore.Pool) -> None:
    with pytest.raises(ValueError, match="task_timeout is not supported with backend='dask'"):
        pool.apply_async(workloads.square, (2,), task_timeout=1)
    with pytest.raises(ValueError, match="task_timeout"):
        pool.map(workloads.square, range(3), task_timeout=1)
    assert pool.apply_async(workloads.square, (3,)).get(TIMEOUT) == 9  # nothing was lost


def test_retries_rerun_a_task_lost_with_its_worker(tmp_path: Path) -> None:
    with manycore.Pool(2, backend="dask", retries=1) as p:
        marker = str(tmp_path / "lost")
        result = p.apply_async(workloads_dask.exit_the_first_time, (marker,))
        # Without retries the same task fails with WorkerLostError (the test above).
        assert result.get(TIMEOUT) == "second run"
        assert p.statistics().tasks_done == 1


def test_retry_on_names_the_errors_retried(pool: manycore.Pool, tmp_path: Path) -> None:
    marker = str(tmp_path / "flaky")
    with pytest.raises(ConnectionError):
        pool.apply(workloads_dask.raise_the_first_time, (marker,))  # retries=0: no retry
    marker = str(tmp_path / "flaky2")
    value = pool.apply(
        workloads_dask.raise_the_first_time, (marker,), retries=2, retry_on=ConnectionError
    )
    assert value == "second run"


def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    dask, _ = _import_dask()
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):  # noqa: SIM117
        with pytest.raises(OSError, match="could not connect to the Dask scheduler"):
            manycore.Pool(backend="dask", address="tcp://127.0.0.1:9")
    with pytest.raises(TypeError, match="is not a Dask scheduler"):
        manycore.Pool(backend="dask", address=8786)


def test_a_script_without_a_main_guard_gets_a_clear_error(tmp_path: Path) -> None:
    # Dask's LocalCluster spawns workers that import the main script: documented, and the
    # error says what to do instead of a wall of nanny tracebacks only.
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import manycore\n"
        "pool = manycore.Pool(2, backend='dask')\n"
        "print(pool.map(abs, [-1]))\n"
        "pool.terminate()\n"
    )
    done = helpers.run_python([str(script)])
    assert done.returncode != 0
    assert "if __name__ == '__main__':" in done.stderr
    assert f"line 2 of {script}" in done.stderr  # found before any worker process started


# ------------------------------------------------------------------ correctness


def test_map_property(pool: manycore.Pool) -> None:
    @given(
        st.lists(st.integers(min_value=-(10**6), max_value=10**6), max_size=300),
        st.one_of(st.none(), st.integers(min_value=1, max_value=50)),
    )
    def check(items: list[int], chunksize: Optional[int]) -> None:
        expected = [x * x for x in items]
        assert pool.map_async(workloads.square, items, chunksize).get(TIMEOUT) == expected
        assert helpers.drain(pool.imap(workloads.square, items, chunksize)) == expected
        unordered = helpers.drain(pool.imap_unordered(workloads.square, items, chunksize))
        assert sorted(unordered) == sorted(expected)
        pairs = list(zip(items, items[1:]))
        got = pool.starmap_async(workloads.add, pairs, chunksize).get(TIMEOUT)
        assert got == [a + b for a, b in pairs]

    check()


def test_map_is_chunked_not_one_dask_task_per_item(pool: manycore.Pool) -> None:
    items = list(range(5000))
    assert pool.map_async(workloads.square, items).get(TIMEOUT) == [x * x for x in items]
    sizer = pool._scheduler.per_item  # the map's measured per-item time was kept
    assert sizer, "the map left no measurement behind"
    # The next map of the same function starts from that measurement: chunks of many items.
    job_sizer = manycore._chunking.ChunkSizer(2)
    job_sizer.per_item = next(iter(sizer.values()))
    assert job_sizer.next_size(len(items)) > 100


def test_a_raised_floor_keeps_tail_chunks_whole() -> None:
    sizer = manycore._chunking.ChunkSizer(1)
    sizer.per_item = 0.0015
    assert sizer.next_size(remaining=4) == 1  # the local floor: cut down to the share
    sizer.floor = 0.005
    assert sizer.next_size(remaining=4) == 3  # 5 ms of (scaled) work at least


def test_dask_maps_are_never_cut_below_the_dask_floor(pool: manycore.Pool) -> None:
    results = pool.imap(workloads.square, range(100))
    floor = dask_scheduler.DASK_FLOOR_SECONDS / dask_scheduler.CHUNK_SCALE
    assert results._job.sizer.floor == floor
    assert helpers.drain(results) == [x * x for x in range(100)]


def test_apply_and_callbacks(pool: manycore.Pool) -> None:
    seen: list[Any] = []
    results = [pool.apply_async(workloads.add, (i, i), callback=seen.append) for i in range(50)]
    assert [r.get(TIMEOUT) for r in results] == [2 * i for i in range(50)]
    assert sorted(seen) == [2 * i for i in range(50)]
    assert pool.apply(workloads.identity, kwds={"x": "kw"}) == "kw"


def test_identical_calls_really_run_again(pool: manycore.Pool) -> None:
    # pure=False: Dask must not reuse the first result for an identical second call.
    first = pool.apply_async(uuid.uuid4).get(TIMEOUT)
    second = pool.apply_async(uuid.uuid4).get(TIMEOUT)
    assert first != second


def test_closures_and_lambdas_travel_by_value(pool: manycore.Pool) -> None:
    offset = 7
    assert pool.map(lambda x: x + offset, range(20)) == [x + 7 for x in range(20)]


def test_a_large_function_is_scattered_once(pool: manycore.Pool) -> None:
    blob = os.urandom(dask_scheduler.SCATTER_BYTES * 3)

    def byte_at(i: int) -> int:
        return blob[i]

    got = pool.map_async(byte_at, range(200), chunksize=10).get(TIMEOUT)
    assert got == list(blob[:200])
    scattered = pool._scheduler._scattered  # type: ignore[attr-defined]
    sizes = [len(b) for b, _future in scattered.values()]
    assert sizes and max(sizes) >= len(blob), "the function's blob was not scattered"
    # One scatter for the 20 chunks of the map, not one per chunk.
    assert sum(1 for s in sizes if s >= len(blob)) == 1


def test_a_large_argument_is_scattered(pool: manycore.Pool) -> None:
    data = os.urandom(dask_scheduler.SCATTER_BYTES * 2)
    assert pool.apply_async(len, (data,)).get(TIMEOUT) == len(data)


def test_executor_on_dask(dask_client: Any) -> None:
    with manycore.ProcessPoolExecutor(backend="dask", address=dask_client) as ex:
        futures = [ex.submit(workloads.square, i) for i in range(40)]
        done = concurrent.futures.wait(futures, timeout=TIMEOUT)
        assert not done.not_done
        assert [f.result() for f in futures] == [i * i for i in range(40)]
        assert list(ex.map(workloads.add, range(30), range(30), timeout=TIMEOUT)) == [
            2 * i for i in range(30)
        ]
        failing = ex.submit(workloads.raise_custom, 4)
        with pytest.raises(workloads.CustomError):
            failing.result(TIMEOUT)


def test_executor_shutdown_cancels_queued_futures(dask_client: Any) -> None:
    ex = manycore.ProcessPoolExecutor(backend="dask", address=dask_client)
    futures = [ex.submit(workloads.sleep_then, 0.2, i) for i in range(20)]
    helpers.call_with_timeout(ex.shutdown, True, timeout=TIMEOUT)
    ex.shutdown(wait=True, cancel_futures=True)  # a second call is harmless
    assert all(f.done() for f in futures)
    ex2 = manycore.ProcessPoolExecutor(backend="dask", address=dask_client)
    futures = [ex2.submit(workloads.sleep_then, 0.2, i) for i in range(20)]
    helpers.call_with_timeout(lambda: ex2.shutdown(wait=True, cancel_futures=True))
    cancelled = [f for f in futures if f.cancelled()]
    finished = [f for f in futures if not f.cancelled()]
    assert cancelled, "nothing was cancelled"
    assert all(f.result() == futures.index(f) for f in finished)
    with pytest.raises(RuntimeError):
        ex2.submit(workloads.square, 1)


# ------------------------------------------------------------------ errors


def test_exceptions_keep_their_type_and_the_worker_traceback(pool: manycore.Pool) -> None:
    with pytest.raises(workloads.CustomError) as info:
        pool.apply_async(workloads.raise_custom, (5,)).get(TIMEOUT)
    cause = info.value.__cause__
    assert isinstance(cause, manycore.RemoteTraceback)
    assert "raise_custom" in cause.tb
    with pytest.raises(ValueError, match="bad value: 3"):
        pool.starmap_async(workloads.raise_if, [(1, 3), (3, 3)], chunksize=1).get(TIMEOUT)
    iterator = pool.imap(functools.partial(workloads.raise_if, bad=3), [1, 2, 3, 4], 1)
    assert helpers.take(iterator, 2) == [1, 4]
    with pytest.raises(ValueError, match="bad value: 3"):
        iterator.next(timeout=TIMEOUT)


def test_pickling_errors(pool: manycore.Pool) -> None:
    with pytest.raises(manycore.ArgumentPicklingError, match="argument 0"):
        pool.apply_async(workloads.identity, (workloads.Unpicklable(),))
    with pytest.raises(manycore.ResultPicklingError):
        pool.apply_async(workloads.return_unpicklable).get(TIMEOUT)
    with pytest.raises(manycore.ResultUnpicklingError):
        pool.apply_async(workloads.return_fails_to_unpickle).get(TIMEOUT)
    assert pool.apply_async(workloads.square, (3,)).get(TIMEOUT) == 9


def test_initializer(dask_client: Any) -> None:
    token = uuid.uuid4().hex
    with manycore.Pool(
        backend="dask", address=dask_client, initializer=workloads.init_state, initargs=(token,)
    ) as p:
        assert set(p.map_async(workloads.get_state, range(20), chunksize=1).get(TIMEOUT)) == {token}
    with manycore.Pool(backend="dask", address=dask_client, initializer=workloads.init_raise) as p:
        with pytest.raises(manycore.InitializerError, match="initializer failed on purpose"):
            p.apply_async(workloads.square, (2,)).get(TIMEOUT)
        later = p.apply_async(workloads.square, (2,))  # a broken Pool fails through results
        with pytest.raises(manycore.InitializerError):
            later.get(TIMEOUT)


# ------------------------------------------------------------------ dying workers, lifetime


def test_a_task_that_kills_its_worker_fails_and_the_pool_goes_on() -> None:
    with manycore.Pool(2, backend="dask") as p:
        client = p._scheduler._client  # type: ignore[attr-defined]
        before = worker_pids(client)
        # Innocent tasks queued beside the killer are re-run, not blamed.
        bystanders = [p.apply_async(workloads.sleep_then, (0.05, i)) for i in range(6)]
        killer = p.apply_async(workloads.crash_exit, (3,))
        with pytest.raises(manycore.WorkerLostError, match="died") as info:
            killer.get(TIMEOUT)
        assert isinstance(info.value, concurrent.futures.process.BrokenProcessPool)
        assert [b.get(TIMEOUT) for b in bystanders] == list(range(6))
        assert p.map_async(workloads.square, range(50)).get(TIMEOUT) == [x * x for x in range(50)]
        with pytest.raises(manycore.WorkerLostError):
            p.starmap_async(workloads.exit_if, [(i, 7) for i in range(10)]).get(TIMEOUT)
        assert p.apply_async(workloads.square, (6,)).get(TIMEOUT) == 36
        assert before - worker_pids(client), "no worker was replaced"


def test_terminate_stops_running_tasks_and_leaves_no_process() -> None:
    p = manycore.Pool(2, backend="dask")
    client = p._scheduler._client  # type: ignore[attr-defined]
    pids = helpers.procs(worker_pids(client))
    assert len(pids) == 2
    running = p.apply_async(workloads.sleep_then, (60, "late"))
    time.sleep(0.3)
    helpers.call_with_timeout(p.terminate, timeout=30)
    with pytest.raises(manycore.PoolClosedError):
        running.get(TIMEOUT)
    assert not helpers.wait_gone(pids, 10), "worker processes outlived terminate()"
    with pytest.raises(manycore.PoolClosedError):
        p.apply_async(workloads.square, (1,))


def test_close_finishes_work_then_closes_its_own_cluster() -> None:
    p = manycore.Pool(2, backend="dask")
    pids = helpers.procs(worker_pids(p._scheduler._client))  # type: ignore[attr-defined]
    results = [p.apply_async(workloads.sleep_then, (0.1, i)) for i in range(6)]
    p.close()
    helpers.call_with_timeout(p.join, timeout=30)
    assert [r.get(0) for r in results] == list(range(6))
    assert not helpers.wait_gone(pids, 10)


def test_the_cluster_a_pool_starts_refuses_other_local_users() -> None:
    """Loopback is open to every local user, and a Dask scheduler or worker runs the code its
    clients send: the cluster a pool starts itself must refuse a peer without its
    credentials, in plain TCP or in TLS with credentials of its own."""
    _, distributed = _import_dask()
    with manycore.Pool(1, backend="dask") as p:
        assert p.apply(workloads.square, (4,)) == 16
        cluster = p._scheduler._cluster  # type: ignore[attr-defined]
        ports = [cluster.scheduler_address.rsplit(":", 1)[1]]
        ports += [a.rsplit(":", 1)[1] for a in cluster.scheduler_info["workers"]]
        stranger = distributed.security.Security.temporary()  # a CA of its own
        for port in ports:
            for how in (
                {"address": f"tcp://127.0.0.1:{port}"},
                {"address": f"tls://127.0.0.1:{port}", "security": stranger},
            ):
                # (through the pool's own helper, which stops a failed client's IO thread)
                with pytest.raises(OSError):
                    client = dask_cluster._client(distributed, how["address"], timeout=5, **how)
                    client.close()  # it connected: the test fails on the raises above
        # The scheduler's plain-HTTP endpoint shows nothing but its health.
        http = f"http://127.0.0.1:{cluster.scheduler.http_server.port}"
        with urllib.request.urlopen(f"{http}/health", timeout=TIMEOUT) as answer:
            assert answer.status == 200
        for page in ("/info/main/workers.html", "/info/logs/", "/json/counts.json"):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(f"{http}{page}", timeout=TIMEOUT).close()


def test_a_pool_never_closes_a_cluster_it_did_not_start(dask_client: Any) -> None:
    address = dask_client.scheduler.address
    for make in (
        lambda: manycore.Pool(backend="dask", address=address),
        lambda: manycore.Pool(backend="dask", address=dask_client),
    ):
        p = make()
        assert p.apply_async(workloads.square, (4,)).get(TIMEOUT) == 16
        helpers.call_with_timeout(p.terminate, timeout=30)
    assert dask_client.submit(workloads.square, 5, pure=False).result(TIMEOUT) == 25
    assert len(dask_client.nthreads()) == 2


def test_a_cluster_object_is_used_and_left_running(dask_client: Any) -> None:
    cluster = dask_client.cluster
    with manycore.ProcessPoolExecutor(backend="dask", address=cluster) as ex:
        assert ex._max_workers == 2
        assert list(ex.map(workloads.square, range(10), timeout=TIMEOUT)) == [
            x * x for x in range(10)
        ]
    assert cluster.status.name == "running"


def test_the_shared_cluster_is_not_counted_as_a_leak(dask_client: Any) -> None:
    # Its worker processes are this test process's descendants, started before this test:
    # the leak check's snapshot includes them, so they are not reported; if a test started
    # them, they would be (the owned-cluster tests above check their workers end).
    workers = helpers.procs(worker_pids(dask_client))
    assert len(workers) == 2
    assert workers <= helpers.descendants()


def test_a_pool_dropped_without_close_lets_go(dask_client: Any) -> None:
    p = manycore.Pool(backend="dask", address=dask_client)
    result = p.apply_async(workloads.square, (8,))
    del p  # the finalizer closes it once the work is done
    assert result.get(TIMEOUT) == 64


# ------------------------------------------------------------------ a cluster started by hand


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = helpers.script_env()
    env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "0"
    # As if on another machine: this machine's shared-memory segments are out of reach.
    elsewhere = log.parent / "not-this-machines-shm"
    elsewhere.mkdir(exist_ok=True)
    env["MANYCORE_SHM_DIR"] = str(elsewhere)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "dask"), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(helpers.ROOT),
            start_new_session=True,
        )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop each command's process group, and wait until the whole group is gone.

    A ``dask worker`` runs its worker in a spawned process, with the stdlib's resource
    tracker beside it, which unlinks the nanny's named semaphores once both are gone. A
    group killed before that, or a check for leaks made while the tracker still works,
    finds those ``sem.mp-*`` names in /dev/shm (seen once under a full ``make test``, with
    a 15 s limit here). So the limit is generous: a loaded machine may take a while to
    close a worker, and a group is killed only if it does not end by then.
    """
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    for proc in procs:
        if not helpers.wait_until(lambda pgid=proc.pid: not _group_members(pgid), TIMEOUT):
            os.killpg(proc.pid, signal.SIGKILL)


def _group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    members = []
    for pid in helpers.all_pids():
        try:
            if os.getpgid(pid) == pgid and helpers.proc(pid) is not None:
                members.append(pid)
        except OSError:  # gone
            continue
    return members


def test_a_cluster_started_from_the_command_line(tmp_path: Path) -> None:
    scheduler_file = tmp_path / "scheduler.json"
    procs = [
        _start(
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(scheduler_file),
            ],
            tmp_path / "scheduler.log",
        )
    ]
    try:
        assert helpers.wait_until(scheduler_file.exists, TIMEOUT), (
            tmp_path / "scheduler.log"
        ).read_text()
        for i in range(2):
            procs.append(
                _start(
                    [
                        "worker",
                        "--scheduler-file",
                        str(scheduler_file),
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                    ],
                    tmp_path / f"worker{i}.log",
                )
            )
        with manycore.Pool(backend="dask", address=str(scheduler_file)) as p:
            client = p._scheduler._client  # type: ignore[attr-defined]
            client.wait_for_workers(2, timeout=TIMEOUT)
            address = client.scheduler.address
            assert address.startswith("tcp://127.0.0.1:")
            items = list(range(2000))
            assert p.map_async(workloads.square, items).get(TIMEOUT) == [x * x for x in items]
            run = lambda: p.map_async(workloads.getpid_slow, range(8), 1).get(TIMEOUT)  # noqa: E731
            assert len(helpers.every_worker(run, 2)) == 2
        with manycore.ProcessPoolExecutor(backend="dask", address=address) as ex:
            assert ex._max_workers == 2
            assert list(ex.map(workloads.square, range(100), timeout=TIMEOUT)) == [
                x * x for x in range(100)
            ]
            with pytest.raises(workloads.CustomError):
                ex.submit(workloads.raise_custom, 1).result(TIMEOUT)
            # A buffer the local backend would put in this machine's shared memory: the
            # workers cannot reach that, so it must travel by value.
            big = pickle.PickleBuffer(bytearray(os.urandom(3 << 20)))
            if _buffers.shm_threshold() is not None:
                locally = _payload.dumps_args(workloads_dask.nbytes, (big,), None)
                assert type(locally) is not bytes, "not the shared-memory path: test nothing"
                del locally  # frees its segment
            assert ex.submit(workloads_dask.nbytes, big).result(TIMEOUT) == 3 << 20
            with pytest.raises(manycore.WorkerLostError):
                ex.submit(workloads.crash_exit, 3).result(TIMEOUT)
            assert ex.submit(workloads.square, 9).result(TIMEOUT) == 81
    finally:
        _stop(procs)


def test_pools_are_not_picklable(pool: manycore.Pool) -> None:
    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)
    assert "start_method=dask" in repr(pool)


def test_the_asyncio_pool_on_dask(dask_client: Any) -> None:
    """``manycore.aio.Pool(backend="dask")``: awaited calls and maps, coroutine tasks (each
    runs to its end on a Dask worker), async for, and an error."""
    import asyncio

    import manycore.aio
    from tests import workloads_aio

    async def body() -> None:
        async with manycore.aio.Pool(backend="dask", address=dask_client) as pool:
            assert await pool.apply(workloads.square, 6) == 36
            assert await pool.apply(workloads_aio.add, 1, 2, scale=2) == 6
            assert await pool.map(workloads_aio.double, range(20)) == [2 * x for x in range(20)]
            got = [r async for r in pool.imap(workloads.square, range(50))]
            assert got == [x * x for x in range(50)]
            with pytest.raises(ValueError, match="bad value 4"):
                await pool.apply(workloads_aio.raise_value_error, 4)

    asyncio.run(asyncio.wait_for(body(), TIMEOUT))
