"""manycore's Process: the stdlib API under every start method, targets that only the caller
knows (lambdas, closures, __main__ code), the child's exception in the parent, stdlib objects
in the arguments, and a main module that is never re-executed."""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.connection
import multiprocessing.resource_tracker
import os
import select
import signal
import sys
import textwrap
import threading
import time
from typing import Any, Optional

import pytest

from manycore import _launch
from manycore._errors import (
    ArgumentPicklingError,
    ArgumentUnpicklingError,
    RemoteTraceback,
    ResultPicklingError,
)
from manycore._process import Process
from tests import helpers
from tests.helpers import TIMEOUT

METHOD_NAMES = {None: "default", "fork": "fork", "spawn": "spawn", "forkserver": "forkserver"}


def process_class(method: Optional[str]) -> type[Process]:
    """What ``manycore.get_context(method).Process`` is: Process with a start method set."""
    return type(f"Process_{METHOD_NAMES[method]}", (Process,), {"_start_method": method})


@pytest.fixture(scope="module", autouse=True)
def resource_tracker() -> None:
    """Stdlib queues made by a spawn context start the stdlib's resource tracker, a process
    that lives as long as this one: start it before any test's leak check counts processes."""
    multiprocessing.resource_tracker.ensure_running()


def joined(*processes: Process) -> None:
    for p in processes:
        p.join(TIMEOUT)
        assert p.exitcode is not None, f"{p} did not exit within {TIMEOUT} s"


def receive(conn: Any) -> Any:
    assert conn.poll(TIMEOUT), "nothing arrived from the child"
    return conn.recv()


# --- functions the children run (importable, so they also travel by reference) --------------


def send_value(conn: Any, value: Any) -> None:
    conn.send(value)
    conn.close()


def report_identity(conn: Any) -> None:
    me = multiprocessing.current_process()
    parent = multiprocessing.parent_process()
    conn.send(
        {
            "pid": os.getpid(),
            "name": me.name,
            "daemon": me.daemon,
            "authkey": bytes(me.authkey),
            "parent_pid": parent.pid if parent is not None else None,
            "parent_alive": parent.is_alive() if parent is not None else None,
            "is_process": isinstance(me, Process),
            "main_module": sys.modules["__main__"].__dict__.get("__file__"),
        }
    )
    conn.close()


def exit_with(code: Any) -> None:
    sys.exit(code)


def raise_value_error(text: str) -> None:
    raise ValueError(text)


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("has a lock")
        self.lock = threading.Lock()


def raise_unpicklable() -> None:
    raise Unpicklable()


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def start_grandchild() -> None:
    child = Process(target=time.sleep, args=(0,))
    child.start()  # a daemonic process may not have children: AssertionError
    child.join(TIMEOUT)


def echo_upper(conn: Any, queue: Any) -> None:
    text = conn.recv()
    conn.send(text.upper())
    queue.put(("from-child", len(text)))
    conn.close()


def explode_unless_in(pid: int) -> None:
    if os.getpid() != pid:
        raise RuntimeError("cannot be rebuilt here")


class RebuildsOnlyInTheParent:
    def __reduce__(self) -> Any:
        return explode_unless_in, (os.getpid(),)


class Doubler(Process):
    def __init__(self, value: int, conn: Any) -> None:
        super().__init__(name="doubler")
        self.value = value
        self.conn = conn

    def run(self) -> None:
        self.conn.send(self.value * 2)


def sleep_then_send(conn: Any, delay: float) -> None:
    time.sleep(delay)
    conn.send("done")
    conn.close()


class Handed:
    """An argument that wants to know the process it was handed to (see Process.start)."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def _manycore_handed_to(self, process: Any) -> None:
        self.pids.append(process.pid)

    def __getstate__(self) -> dict[str, Any]:
        return {"pids": []}


# --- tests -----------------------------------------------------------------------------------


def test_targets_only_the_caller_knows(start_method):
    cls = process_class(start_method)
    offset = 100

    def closure(conn: Any, x: int) -> None:
        conn.send(x + offset)

    class Local:
        def __init__(self, v: int) -> None:
            self.v = v

        def send(self, conn: Any) -> None:
            conn.send(self.v * 3)

    targets: list[tuple[Any, tuple[Any, ...], Any]] = [
        (send_value, ("module function",), "module function"),
        (lambda conn, x: conn.send(x * 10), (4,), 40),
        (closure, (5,), 105),
        (Local(7).send, (), 21),
    ]
    pipes, processes = [], []
    for target, args, _ in targets:
        reader, writer = multiprocessing.Pipe(duplex=False)
        p = cls(target=target, args=(writer, *args))
        p.start()
        writer.close()
        pipes.append(reader)
        processes.append(p)
    try:
        got = [receive(r) for r in pipes]
    finally:
        joined(*processes)
    assert got == [expected for _, _, expected in targets]
    assert [p.exitcode for p in processes] == [0] * len(targets)
    assert [p.exception for p in processes] == [None] * len(targets)


def test_exit_codes_and_the_childs_exception(start_method):
    cls = process_class(start_method)
    cases = {
        "return": (cls(target=time.sleep, args=(0,)), 0),
        "exit-3": (cls(target=exit_with, args=(3,)), 3),
        "exit-none": (cls(target=exit_with, args=(None,)), 0),
        "raise": (cls(target=raise_value_error, args=("boom 42",)), 1),
        "unpicklable": (cls(target=raise_unpicklable), 1),
        "sigkill": (cls(target=kill_self), -signal.SIGKILL),
    }
    for p, _ in cases.values():
        p.start()
    joined(*(p for p, _ in cases.values()))
    assert {k: p.exitcode for k, (p, _) in cases.items()} == {k: c for k, (_, c) in cases.items()}
    for name in ("return", "exit-3", "exit-none", "sigkill"):
        assert cases[name][0].exception is None, name
    exc = cases["raise"][0].exception
    assert isinstance(exc, ValueError) and str(exc) == "boom 42"
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert "raise_value_error" in exc.__cause__.tb and "boom 42" in exc.__cause__.tb
    odd = cases["unpicklable"][0].exception
    assert isinstance(odd, ResultPicklingError)
    assert "Unpicklable: has a lock" in str(odd) and "cannot be pickled" in str(odd)
    assert "raise_unpicklable" in odd.__cause__.tb
    # close() keeps what is known
    p = cases["raise"][0]
    p.close()
    assert p.exception is exc
    with pytest.raises(ValueError):
        p.is_alive()


def test_join_timeout_terminate_kill_and_sentinel(start_method):
    cls = process_class(start_method)
    sleepers = [cls(target=time.sleep, args=(60,)) for _ in range(2)]
    for p in sleepers:
        p.start()
    try:
        started = time.monotonic()
        sleepers[0].join(0.2)
        assert time.monotonic() - started < TIMEOUT
        assert sleepers[0].is_alive() and sleepers[0].exitcode is None
        assert set(sleepers) <= set(multiprocessing.active_children())
        assert not multiprocessing.connection.wait([p.sentinel for p in sleepers], 0.05)
        sleepers[0].terminate()
        sleepers[1].kill()
        ready = set()
        deadline = time.monotonic() + TIMEOUT
        while len(ready) < 2 and time.monotonic() < deadline:
            ready.update(multiprocessing.connection.wait([p.sentinel for p in sleepers], 1.0))
        assert ready == {p.sentinel for p in sleepers}
    finally:
        for p in sleepers:
            p.kill()
        joined(*sleepers)
    assert [p.exitcode for p in sleepers] == [-signal.SIGTERM, -signal.SIGKILL]
    assert not any(p.is_alive() for p in sleepers)
    assert not set(sleepers) & set(multiprocessing.active_children())
    for p in sleepers:
        p.close()
        p.close()  # twice is fine, as in the stdlib


def test_identity_in_the_child(start_method):
    cls = process_class(start_method)
    reader, writer = multiprocessing.Pipe(duplex=False)
    p = cls(target=report_identity, args=(writer,), name="the-child", daemon=True)
    p.start()
    writer.close()
    try:
        info = receive(reader)
    finally:
        joined(p)
    assert info == {
        "pid": p.pid,
        "name": "the-child",
        "daemon": True,
        "authkey": bytes(multiprocessing.current_process().authkey),
        "parent_pid": os.getpid(),
        "parent_alive": True,
        "is_process": True,
        "main_module": info["main_module"],
    }
    # the main module (pytest's) was not imported again in the child
    if start_method == "spawn":
        assert info["main_module"] is None


def test_a_daemon_cannot_start_children(start_method):
    p = process_class(start_method)(target=start_grandchild, daemon=True)
    p.start()
    joined(p)
    assert p.exitcode == 1
    assert isinstance(p.exception, AssertionError)
    assert "daemonic" in str(p.exception)


def test_stdlib_connection_and_queue_in_the_arguments(start_method):
    parent_end, child_end = multiprocessing.Pipe()
    queue = multiprocessing.get_context("spawn").Queue()
    p = process_class(start_method)(target=echo_upper, args=(child_end, queue))
    p.start()
    child_end.close()
    try:
        parent_end.send("hello from parent")
        assert receive(parent_end) == "HELLO FROM PARENT"
        assert queue.get(timeout=TIMEOUT) == ("from-child", 17)
    finally:
        joined(p)
        queue.close()
        queue.join_thread()
        parent_end.close()
    assert p.exitcode == 0
    del queue
    gc.collect()  # unlinks the queue's named semaphores


def test_subclass_with_run(start_method):
    cls = type("DoublerFor", (Doubler,), {"_start_method": start_method})
    reader, writer = multiprocessing.Pipe(duplex=False)
    p = cls(21, writer)
    assert p.name == "doubler"
    p.start()
    writer.close()
    try:
        assert receive(reader) == 42
    finally:
        joined(p)
    assert p.exitcode == 0


def test_arguments_are_told_which_process_received_them(start_method):
    a, b, c = Handed(), Handed(), Handed()
    p = process_class(start_method)(target=time.sleep, args=(0, a, [b]), kwargs={})
    q = process_class(start_method)(target=lambda **kw: None, kwargs={"x": {"k": c}})
    p.start()
    q.start()
    joined(p, q)
    assert a.pids == [p.pid] and b.pids == [p.pid] and c.pids == [q.pid]


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_an_unpicklable_argument_fails_start_and_names_it(method):
    # (the default method starts such a process by fork: test_main_functions)
    p = process_class(method)(target=send_value, args=(None, threading.Lock()))
    with pytest.raises(ArgumentPicklingError, match=r"argument 1 \(a lock\)"):
        p.start()
    assert p.pid is None
    assert multiprocessing.active_children() == []


def test_a_huge_exception_arrives_cut_down():
    p = Process(target=raise_value_error, args=("x" * 200_000,))
    p.start()
    joined(p)
    assert p.exitcode == 1
    exc = p.exception
    assert isinstance(exc, ResultPicklingError)
    text, tb = str(exc), exc.__cause__.tb
    assert len(text) < 30_000 and len(tb) < 40_000
    assert "too large" in text and "ValueError: xxx" in text
    assert "raise_value_error" in tb and "ValueError: xxx" in tb


def orphan(path: str, conn: Any) -> None:
    parent = multiprocessing.parent_process()
    conn.send(parent is not None and parent.is_alive())
    conn.close()
    assert parent is not None
    parent.join(TIMEOUT)  # waits on the parent sentinel
    with open(path, "w") as f:
        f.write(f"parent alive: {parent.is_alive()}")


ORPHAN = """
import multiprocessing, os, sys
from tests import test_process
cls = test_process.process_class(None if sys.argv[1] == "default" else sys.argv[1])
reader, writer = multiprocessing.Pipe(duplex=False)
p = cls(target=test_process.orphan, args=(sys.argv[2], writer))
p.start()
assert reader.poll(60) and reader.recv() is True
print(p.pid, flush=True)
os._exit(0)  # no join, no exit handlers: the child must see its parent go
"""


@pytest.mark.parametrize("method", [None, "forkserver"], ids=["default", "forkserver"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_processes_start_after_the_fork_server_died(method, sig):
    # A killed fork server is replaced at the next start; a child it had forked runs on,
    # and its join() returns (exit code 255 when its status died with the server).
    cls = process_class(method)
    first_parent, first_child = multiprocessing.Pipe()
    first = cls(target=sleep_then_send, args=(first_child, 0.5))
    first.start()
    first_child.close()
    server = _launch.get_server(fresh=method == "forkserver")
    os.kill(server.pid, sig)
    assert helpers.wait_until(lambda: not server.alive(), TIMEOUT)
    second_parent, second_child = multiprocessing.Pipe()
    second = cls(target=sleep_then_send, args=(second_child, 0.0))
    second.start()
    second_child.close()
    try:
        assert receive(second_parent) == "done"
        assert receive(first_parent) == "done"
    finally:
        joined(second, first)
        first_parent.close()
        second_parent.close()
    assert second.exitcode == 0
    assert first.exitcode in (0, 255)
    assert _launch.get_server(fresh=method == "forkserver").pid != server.pid


def write_own_pid(fd: int) -> int:
    """A launcher entry point (``module:function``): write this process's pid to ``fd``."""
    os.write(fd, str(os.getpid()).encode())
    return 0


@pytest.mark.parametrize("method", [None, "forkserver"], ids=["default", "forkserver"])
def test_children_a_fork_server_starts_without_waiting_each_run_with_their_own_pid(method):
    # A pool sends all its workers' start requests before it reads the server's replies:
    # each child must still get its own descriptors, and each handle its own pid.
    launcher = _launch.resolve_start_method(method)
    pipes = [os.pipe() for _ in range(4)]
    children = [launcher.start_child_later(f"{__name__}:write_own_pid", [w]) for _, w in pipes]
    for _, w in pipes:
        os.close(w)
    try:
        for child, (r, _) in zip(children, pipes):
            assert select.select([r], [], [], TIMEOUT)[0], "the child wrote nothing"
            assert int(os.read(r, 32)) == child.pid > 0
            assert child.wait(TIMEOUT) is not None
            assert child.returncode == 0
    finally:
        for child, (r, _) in zip(children, pipes):
            child.close()
            os.close(r)


def test_a_child_the_fork_server_could_not_start_is_reported_and_never_signalled():
    launcher = _launch.resolve_start_method(None)
    r, w = os.pipe()
    try:
        child = launcher.start_child_later("tests.no_such_module:run", [w])
        assert child.pid == 0
        with pytest.raises(OSError, match=r"no entry point 'tests\.no_such_module:run'"):
            child.confirm_started()
        child.kill()  # must not signal pid 0, which is this test's own process group
        assert child.wait(TIMEOUT) is not None  # the server closed its status pipe
        child.close()
        with pytest.raises(OSError, match="no entry point"):
            launcher.start_child("tests.no_such_module:run", [w])
    finally:
        os.close(w)
        os.close(r)
    # the server goes on serving
    test_children_a_fork_server_starts_without_waiting_each_run_with_their_own_pid(None)


def test_the_child_sees_its_parent_exit(start_method, tmp_path):
    path = tmp_path / "orphan.txt"
    result = helpers.run_python(["-c", ORPHAN, METHOD_NAMES[start_method], str(path)])
    assert result.returncode == 0, result.stderr
    assert helpers.wait_until(path.exists, TIMEOUT), result.stderr
    assert helpers.wait_until(lambda: path.read_text() == "parent alive: False", 5.0)
    child = helpers.proc(int(result.stdout.split()[0]))
    assert child is None or not helpers.wait_gone([child], TIMEOUT)


@pytest.mark.parametrize("method", ["spawn", "forkserver", None])
def test_an_argument_the_child_cannot_rebuild(method):
    p = process_class(method)(target=send_value, args=(None, RebuildsOnlyInTheParent()))
    p.start()
    joined(p)
    assert p.exitcode == 1
    assert isinstance(p.exception, ArgumentUnpicklingError)
    assert "could not rebuild its process object" in str(p.exception)
    assert "cannot be rebuilt here" in p.exception.__cause__.tb


def test_set_default_start_method():
    try:
        _launch.set_default_start_method("spawn")
        assert _launch.resolve_start_method(None).name == "spawn"
        p = Process(target=time.sleep, args=(0,))
        p.start()
        assert p._popen.method == "spawn"
        joined(p)
        assert p.exitcode == 0
        with pytest.raises(ValueError, match="unknown start method"):
            _launch.set_default_start_method("thread")
    finally:
        _launch.set_default_start_method(None)
    assert _launch.resolve_start_method(None).name == "default"


# --- the main module: a script with no __main__ guard, and python -c ------------------------

MAIN = textwrap.dedent(
    """
    import atexit
    atexit.register(lambda: print("LAST", flush=True))  # runs after every later exit handler
    import multiprocessing, os, sys, time
    from manycore._process import Process

    print("BODY", flush=True)  # printed again if a child re-ran this module
    method = None if sys.argv[1] == "default" else sys.argv[1]
    cls = type("P", (Process,), {"_start_method": method})
    SCALE = 10

    def scaled(conn, x):
        conn.send(x * SCALE)

    def make_adder(n):
        def adder(conn, x):
            conn.send(x + n)
        return adder

    def fail():
        raise KeyError("missing")

    results = []
    for target, arg in [(scaled, 4), (make_adder(100), 1), (lambda c, x: c.send(-x), 3)]:
        r, w = multiprocessing.Pipe(duplex=False)
        p = cls(target=target, args=(w, arg))
        p.start()
        w.close()
        assert r.poll(60)
        results.append(r.recv())
        p.join(60)
    print("results", results, flush=True)
    p = cls(target=fail)
    p.start()
    p.join(60)
    print("failed", p.exitcode, repr(p.exception), flush=True)
    # left running at exit: the daemon is terminated, the other joined (as in the stdlib)
    d = cls(target=time.sleep, args=(60,), daemon=True)
    d.start()
    late = cls(target=lambda: (time.sleep(0.3), print("LATE", flush=True)))
    late.start()
    print("daemon", d.pid, flush=True)
    print("DONE", flush=True)
    """
)


@pytest.mark.parametrize("how", ["script", "dash-c"])
def test_main_module_code_without_a_guard(start_method, how, tmp_path):
    method = METHOD_NAMES[start_method]
    if how == "script":
        script = tmp_path / "user_script.py"
        script.write_text(MAIN)
        args = [str(script), method]
    else:
        args = ["-c", MAIN, method]
    result = helpers.run_python(args, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    daemon_pid = int(next(line for line in lines if line.startswith("daemon")).split()[1])
    assert [line for line in lines if not line.startswith("daemon")] == [
        "BODY",
        "results [40, 101, -3]",
        "failed 1 KeyError('missing')",
        "DONE",
        "LATE",  # the parent waited for it at exit
        "LAST",
    ], result.stderr
    assert "KeyError: 'missing'" in result.stderr  # printed by the child, as the stdlib does
    daemon = helpers.proc(daemon_pid)  # terminated at exit, not left sleeping
    assert daemon is None or not helpers.wait_gone([daemon], 5.0)
