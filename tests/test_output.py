"""What workers and Process children print and log reaches the caller (manycore._output).

sys.stdout / sys.stderr are redirected in these tests, as in Jupyter or an IDE: then the
children's output must come through manycore and land in the caller's *current* streams,
before the task's result; log records are re-emitted in the caller with the worker's
identity, whatever the streams.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

import manycore
from manycore import _output
from manycore._process import Process
from tests import helpers, workloads_output
from tests.helpers import TIMEOUT

METHOD_NAMES = {None: "default", "fork": "fork", "spawn": "spawn", "forkserver": "forkserver"}


@contextlib.contextmanager
def redirected() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def collecting(name: str, level: int) -> Iterator[Collect]:
    logger = logging.getLogger(name)
    handler = Collect()
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # keep the records out of pytest's and the user's handlers
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


# ------------------------------------------------------------ print in pool workers


def test_pool_output_reaches_redirected_streams_before_the_result(
    start_method: Optional[str],
) -> None:
    with redirected() as (out, err), manycore.Pool(1, context=start_method) as pool:
        tag, pid = pool.apply_async(workloads_output.speak, ("p1",)).get(TIMEOUT)
        # Read at once: the output must have arrived before the result did.
        seen_out, seen_err = out.getvalue(), err.getvalue()
    assert tag == "p1"
    assert pid != os.getpid()
    assert seen_out == "out p1\nbytes p1 \N{SNOWMAN}\npartial p1"
    assert seen_err == "err p1\n"


def test_executor_output_reaches_redirected_streams_before_the_result(
    start_method: Optional[str],
) -> None:
    executor = manycore.ProcessPoolExecutor
    with redirected() as (out, err), executor(1, mp_context=start_method) as ex:
        tag, _ = ex.submit(workloads_output.speak, "e1").result(TIMEOUT)
        seen_out, seen_err = out.getvalue(), err.getvalue()
    assert tag == "e1"
    assert seen_out == "out e1\nbytes e1 \N{SNOWMAN}\npartial e1"
    assert seen_err == "err e1\n"


def test_output_goes_to_the_stream_current_at_delivery() -> None:
    """A pool made under one redirect writes into whatever sys.stdout is when output comes."""
    with redirected() as (first, _):
        pool = manycore.Pool(1)
    try:
        with redirected() as (second, _):
            pool.apply_async(workloads_output.speak, ("now",)).get(TIMEOUT)
            seen = second.getvalue()
    finally:
        pool.close()
        helpers.call_with_timeout(pool.join)
    assert "out now\n" in seen
    assert first.getvalue() == ""


def test_prints_from_worker_threads_are_whole_and_none_is_lost() -> None:
    with redirected() as (out, _), manycore.Pool(2) as pool:
        counts = pool.map(workloads_output.speak_from_threads, ["a", "b"])
        seen = out.getvalue()
    lines = seen.splitlines()
    assert len(lines) == sum(counts)
    expected = {
        f"{tag} thread {t} line {i} " + "x" * 40
        for tag in "ab"
        for t in range(workloads_output.THREADS)
        for i in range(workloads_output.LINES_PER_THREAD)
    }
    assert set(lines) == expected


def test_a_process_forked_by_a_task_does_not_write_into_the_workers_socket() -> None:
    with redirected() as (out, _), manycore.Pool(1, context="fork") as pool:
        assert pool.apply_async(workloads_output.fork_and_print, ("g",)).get(TIMEOUT) == 0
        # The worker's channel is intact: more tasks run and print.
        results = [pool.apply_async(workloads_output.speak, (str(i),)) for i in range(20)]
        assert [r.get(TIMEOUT)[0] for r in results] == [str(i) for i in range(20)]
    assert "grandchild g" not in out.getvalue()
    assert "out 19\n" in out.getvalue()


# ------------------------------------------------------------ choosing: MANYCORE_WORKER_OUTPUT


def test_auto_forwards_only_streams_that_are_not_descriptors_1_and_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = io.TextIOWrapper(io.FileIO(1, "w", closefd=False))
    monkeypatch.delenv(_output.ENV_VAR, raising=False)
    monkeypatch.setattr(sys, "stdout", plain)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert _output.forwarded_streams() == (False, True)
    monkeypatch.setenv(_output.ENV_VAR, "forward")
    assert _output.forwarded_streams() == (True, True)
    monkeypatch.setenv(_output.ENV_VAR, "inherit")
    assert _output.forwarded_streams() == (False, False)
    monkeypatch.setenv(_output.ENV_VAR, "sideways")
    with pytest.warns(RuntimeWarning, match="MANYCORE_WORKER_OUTPUT='sideways'"):
        assert _output.forwarded_streams() == (False, True)


def test_inherit_leaves_output_on_the_descriptors(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(_output.ENV_VAR, "inherit")
    with redirected() as (out, err), manycore.Pool(1, context="fork") as pool:
        pool.apply_async(workloads_output.speak, ("i",)).get(TIMEOUT)
        # The worker flushes its streams as it exits, into the inherited descriptors.
    assert out.getvalue() == err.getvalue() == ""
    captured = capfd.readouterr()
    assert "out i\n" in captured.out
    assert "err i\n" in captured.err


# ------------------------------------------------------------ logging in pool workers


def test_log_records_keep_level_name_message_and_worker_identity(
    start_method: Optional[str],
) -> None:
    name = "tests.output.records"
    with collecting(name, logging.INFO) as handler, manycore.Pool(1, context=start_method) as p:
        pid = p.apply_async(workloads_output.log_some, (name, "r")).get(TIMEOUT)
        records = list(handler.records)
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("INFO", "info r 1"),
        ("WARNING", "warning r"),
        ("ERROR", "failed r"),
        ("WARNING", "extra r"),
    ]
    for r in records:
        assert r.name == name
        assert r.levelno == getattr(logging, r.levelname)
        assert r.process == pid
        assert r.processName == "manycore-worker-0"
        assert r.worker == 0  # type: ignore[attr-defined]
        assert r.funcName == "log_some"
    failed = records[2]
    assert failed.exc_info is None
    assert failed.exc_text is not None
    assert "ZeroDivisionError" in failed.exc_text
    assert "ZeroDivisionError" in logging.Formatter().format(failed)
    extra = records[3]
    assert extra.color == "blue"  # type: ignore[attr-defined]
    assert extra.thing == "<Unpicklable>"  # type: ignore[attr-defined]


def test_worker_loggers_follow_the_callers_levels() -> None:
    name = "tests.output.levels"
    with collecting(name, logging.WARNING) as handler:
        with manycore.Pool(1) as pool:
            pool.apply_async(workloads_output.log_some, (name, "w")).get(TIMEOUT)
        at_warning = [r.levelname for r in handler.records]
    with collecting(name, logging.DEBUG) as handler:
        with manycore.Pool(1) as pool:
            pool.apply_async(workloads_output.log_some, (name, "d")).get(TIMEOUT)
        at_debug = [r.levelname for r in handler.records]
    assert at_warning == ["WARNING", "ERROR", "WARNING"]
    assert at_debug == ["DEBUG", "INFO", "WARNING", "ERROR", "WARNING"]


def test_root_handlers_inherited_by_fork_do_not_write_twice() -> None:
    """Under fork a worker inherits the caller's handlers; the record must be handled once,
    by the caller's handler in the caller."""
    name = "tests.output.once"
    root = logging.getLogger()
    handler = Collect()
    logger = logging.getLogger(name)
    old_level = logger.level
    root.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        with manycore.Pool(1, context="fork") as pool:
            pool.apply_async(workloads_output.log_some, (name, "once")).get(TIMEOUT)
            messages = [r.getMessage() for r in handler.records if r.name == name]
    finally:
        root.removeHandler(handler)
        logger.setLevel(old_level)
    assert messages == ["warning once", "failed once", "extra once"]


# ------------------------------------------------------------ Process children


def process_class(method: Optional[str]) -> type[Process]:
    return type(f"Process_{METHOD_NAMES[method]}", (Process,), {"_start_method": method})


def output_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "manycore-process-output"]


def test_process_output_reaches_redirected_streams(start_method: Optional[str]) -> None:
    with redirected() as (out, err):
        p = process_class(start_method)(target=workloads_output.child_speaks, args=("c",))
        p.start()
        p.join(TIMEOUT)
        seen_out, seen_err = out.getvalue(), err.getvalue()
    assert p.exitcode == 0
    assert seen_out == "child out c\nchild fd c\n"
    assert seen_err == "child err c\n"
    assert output_threads() == []


def test_process_join_does_not_wait_for_a_grandchild_holding_stdout(tmp_path: Path) -> None:
    path = str(tmp_path / "pid")
    with redirected() as (out, _):
        p = process_class("fork")(target=workloads_output.child_leaves_grandchild, args=(path,))
        p.start()
        p.join(TIMEOUT)
        seen = out.getvalue()
        threads = output_threads()
    with open(path) as f:
        grandchild = int(f.read())
    os.kill(grandchild, signal.SIGKILL)
    assert helpers.wait_until(lambda: helpers.proc(grandchild) is None, TIMEOUT)
    assert p.exitcode == 0
    assert seen == "before the grandchild\nafter the grandchild\n"
    assert threads == []


def test_process_output_is_not_forwarded_when_inherited(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(_output.ENV_VAR, "inherit")
    with redirected() as (out, _):
        p = process_class("fork")(target=workloads_output.child_speaks, args=("n",))
        p.start()
        p.join(TIMEOUT)
    assert p.exitcode == 0
    assert out.getvalue() == ""
    assert "child fd n\n" in capfd.readouterr().out
