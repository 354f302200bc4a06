"""``manycore.Process``: the stdlib's Process API, started by manycore's start methods.

``Process`` subclasses ``multiprocessing.process.BaseProcess`` and only supplies the
``_Popen`` (the stdlib's extension point), so ``join``/``is_alive``/``exitcode``/``daemon``/
``close``/``active_children``/``current_process``/``parent_process`` behave exactly as in
the stdlib, in the parent and in the child.

Who runs where::

    parent: Process.start() ──► _Popen ──► _launch (the start method's launcher)
              ├─ "fork": the child is a fork of the caller and runs the object as is
              ├─ "spawn": a fresh interpreter runs the entry point ``spawn_main``
              └─ None / "forkserver": the fork server forks a child that runs
                 ``server_child_main`` (the server is told the entry point by name)
    spawn and server children read a payload from a pipe, adopt the parent's sys.path,
    working directory, argv and authkey, unpickle the process object, then run
    ``process._bootstrap()`` and ``os._exit(code)``. The main module is never imported.

Descriptors of one child, as the parent holds them:

* ``sentinel``: readable once the child has exited (the launcher's handle holds it, see
  ``_launch``).
* the payload pipe's write end, kept open for the child's life: EOF on the read end tells
  the child its parent is gone (``parent_process().is_alive()``).
* the report pipe's read end: if the target raised, the child writes the exception and its
  traceback here before it exits; ``Process.exception`` reads it.

Payload wire format (spawn and server children): two little-endian 8-byte lengths, then a
plain pickle of the preparation data (a dict of builtins), then the pickled process object
(``multiprocessing``'s reducers plus cloudpickle for what only the caller knows: lambdas,
closures, functions and classes from ``__main__``). Descriptors the object refers to
(stdlib Connections, through ``DupFd``) travel beside it, after the payload and report
pipes, as the entry point's arguments; the child finds them by index.

Guarantees: a child never re-executes the main module; an exception that escapes the
target is printed in the child (as the stdlib does) and is ``Process.exception`` in the
parent once the child has exited; after ``start()``, each argument (and each item one level
into a list, tuple or dict argument) whose class has ``_manycore_handed_to`` is told which
process received it.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.context
import multiprocessing.process
import multiprocessing.util
import os
import pickle
import signal
import struct
import sys
import threading
from typing import Any, Callable, Optional

from . import _launch, _output
from ._errors import (
    ArgumentPicklingError,
    ArgumentUnpicklingError,
    format_remote,
)
from ._fds import close_internal, internal_fd
from ._outcome import exception_parts, rebuild_exception
from ._reducers import reducing_dumps

__all__ = [
    "Process",
    "active_children",
    "current_process",
    "parent_process",
    "server_child_main",
    "spawn_main",
]

PROTOCOL = 5
LENGTHS = struct.Struct("<QQ")
# A report must fit in the report pipe: the child writes it without blocking just before
# it exits, and the parent reads it only after that. Linux pipes hold 64 KiB.
REPORT_LIMIT = 60_000
# The entry points of children that start from a pickle (see _launch): their arguments
# are the payload pipe's read end, the report pipe's write end, then inherited descriptors.
SERVER_ENTRY = f"{__name__}:server_child_main"
SPAWN_ENTRY = f"{__name__}:spawn_main"

current_process = multiprocessing.current_process
parent_process = multiprocessing.parent_process
active_children = multiprocessing.active_children

# Descriptors this child inherited for its process object, by index (see _DupFd).
_inherited_fds: list[int] = []


class _DupFd:
    """A descriptor the parent sends to a child, pickled as its index among those sent."""

    def __init__(self, index: int) -> None:
        self.index = index

    def detach(self) -> int:
        return _inherited_fds[self.index]


# ---------------------------------------------------------------- pickling


def _pickle(obj: Any, before_each: Optional[Callable[[], None]] = None) -> bytes:
    """Pickle with multiprocessing's reducers (Connections, sockets, methods); fall back to
    cloudpickle, with the same reducers, for objects only the caller knows. ``before_each``
    runs before each attempt (descriptors collected by a failed attempt are dropped)."""
    return reducing_dumps(obj, before_each)


def _preparation_data() -> dict[str, Any]:
    original_dir = getattr(multiprocessing.process, "ORIGINAL_DIR", None)
    sys_path = [(original_dir or p) if p == "" else p for p in sys.path]
    util = multiprocessing.util
    return {
        "sys_path": sys_path,
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "authkey": bytes(current_process().authkey),
        "log_to_stderr": util._log_to_stderr,  # type: ignore[attr-defined]
        "log_level": None if util._logger is None else util._logger.getEffectiveLevel(),  # type: ignore[attr-defined]
        "start_method": _launch.default_start_method(),
    }


def _resource_tracker_fd(start: bool) -> Optional[int]:
    """The descriptor of the stdlib's resource tracker, for a child that starts from a pickle.

    The tracker unlinks what its processes registered (the stdlib's ``SharedMemory``) once
    all of them have exited. A child that shares the parent's tracker, as the stdlib's spawn
    and forkserver children do, leaves a segment it made alive for the parent; with a tracker
    of its own, the segment is unlinked when the child exits. ``start``: start the tracker if
    it is not running (as the stdlib's spawn and forkserver methods do); manycore's default
    method passes it only when it runs already, so a first pool costs no tracker process
    (the stdlib's fork children do not share one they did not inherit either).
    """
    import multiprocessing.resource_tracker

    tracker: Any = multiprocessing.resource_tracker._resource_tracker
    fd = multiprocessing.resource_tracker.getfd() if start else tracker._fd
    return None if fd is None else int(fd)


def _adopt_resource_tracker(fd: int) -> None:
    """Use the parent's resource tracker (``fd``) instead of starting one of our own."""
    import multiprocessing.resource_tracker

    tracker: Any = multiprocessing.resource_tracker._resource_tracker
    tracker._fd = fd
    tracker._pid = None  # not our child: we write to it, we do not wait for it


def _adopt(prep: dict[str, Any]) -> None:
    wanted = list(prep["sys_path"])
    seen = set(wanted)
    sys.path[:] = wanted + [p for p in sys.path if p not in seen]
    try:
        if os.getcwd() != prep["cwd"]:
            os.chdir(prep["cwd"])
    except OSError:
        pass
    sys.argv[:] = prep["argv"]
    current_process().authkey = prep["authkey"]
    # A child forked from a fork server that was itself forked from the parent after
    # log_to_stderr() already has its handler: a second one printed each record twice.
    if prep["log_to_stderr"] and not multiprocessing.util._log_to_stderr:  # type: ignore[attr-defined]
        multiprocessing.util.log_to_stderr()
    if prep["log_level"] is not None:
        multiprocessing.util.get_logger().setLevel(prep["log_level"])
    # The parent's set_start_method() holds in the child too, as the stdlib's spawn passes it.
    _launch.set_default_start_method(prep.get("start_method"))


# ---------------------------------------------------------------- the parent's side


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except BrokenPipeError:
        pass  # the child died before reading: its exit status tells the story


class _Popen:
    """What ``BaseProcess`` drives: ``pid``, ``returncode``, ``sentinel``, ``poll``, ``wait``,
    ``terminate``, ``kill``, ``close``; plus the spawning-popen protocol
    (``duplicate_for_child``, ``DupFd``) that stdlib objects use while being pickled.

    The child itself is started, watched and reaped by the launcher's ``Child`` handle; this
    class adds the payload, the report of an escaping exception and the output pipes."""

    def __init__(self, process_obj: Process, launcher: _launch.Launcher) -> None:
        self.method = launcher.name
        self.returncode: Optional[int] = None
        self._owned: list[int] = []  # descriptors to close with the handle
        self._report_fd: Optional[int] = None
        self._report = b""
        self._exception: Optional[BaseException] = None
        self._fds: list[int] = []
        self._lock = threading.Lock()  # the exit is finished (report read) once
        # Where the parent's sys.stdout/stderr are not descriptors 1/2 (Jupyter, a
        # redirect), the child's go through pipes to them (see _output).
        self._output = _output.ProcessOutput.create()
        try:
            self._child = self._start(process_obj, launcher)
        except BaseException:
            if self._output is not None:
                self._output.abandon()
            raise
        if self._output is not None:
            self._output.started()
        self.pid = self._child.pid
        self.sentinel = self._child.sentinel
        for fd in self._owned:
            internal_fd(fd)
        self._finalizer = multiprocessing.util.Finalize(
            self, _release, (self._child, list(self._owned))
        )

    def _start(self, process_obj: Process, launcher: _launch.Launcher) -> _launch.Child:
        """Start the child by ``launcher``; set the descriptors this handle owns.

        Two pipes: the parent keeps the write end of ``down`` (the payload goes through it,
        and its EOF tells the child the parent is gone) and the read end of ``report``.
        """
        payload = b"" if launcher.forks_caller else self._payload(process_obj, launcher)
        down_r, down_w = os.pipe()
        report_r, report_w = os.pipe()
        entry: _launch.Entry
        fds: list[int] = []
        if launcher.forks_caller:  # the child is a copy of this process: run the object
            write_fds = {} if self._output is None else self._output.write_fds

            def in_child() -> int:
                for fd in (down_w, report_r):
                    os.close(fd)
                _output.redirect_child(write_fds)
                internal_fd(report_w)  # this child's own children must not hold it
                _forget_inherited_exit_handlers()
                return _run(process_obj, down_r, report_w)

            entry = in_child
        else:
            entry = SPAWN_ENTRY if launcher.fresh_interpreter else SERVER_ENTRY
            if not launcher.fresh_interpreter:
                _serve_exit_hook()
            fds = [down_r, report_w, *self._fds]
        try:
            child = launcher.start_child(entry, fds, sentinel=True)
        except BaseException:
            _close_fds([down_w, report_r])
            raise
        finally:
            _close_fds([down_r, report_w])
        self._report_fd = report_r
        self._owned = [down_w, report_r]
        if payload:
            _write_all(down_w, payload)
        return child

    # -- the spawning-popen protocol (stdlib reducers call these while we pickle)

    def duplicate_for_child(self, fd: int) -> int:
        self._fds.append(fd)
        return len(self._fds) - 1

    def DupFd(self, index: int) -> _DupFd:
        return _DupFd(index)

    def _payload(self, process_obj: Process, launcher: _launch.Launcher) -> bytes:
        """The payload for a child that starts from a pickle; fills ``self._fds``."""
        prep = _preparation_data()
        tracker = _resource_tracker_fd(start=launcher.name != "default")
        multiprocessing.context.set_spawning_popen(self)  # type: ignore[arg-type]
        try:
            try:
                body = _pickle(process_obj, self._fds.clear)
            except Exception as exc:
                raise _pickling_error(process_obj, exc) from exc
        finally:
            multiprocessing.context.set_spawning_popen(None)
        if tracker is not None:
            prep["resource_tracker"] = len(self._fds)
            self._fds.append(tracker)
        if self._output is not None:  # the pipes travel after the object's descriptors
            prep["output"] = {}
            for stream, fd in self._output.write_fds.items():
                prep["output"][stream] = len(self._fds)
                self._fds.append(fd)
        header = pickle.dumps(prep, PROTOCOL)
        return LENGTHS.pack(len(header), len(body)) + header + body

    # -- status

    def _finish(self, returncode: int) -> None:
        self.returncode = returncode
        if self._output is not None:
            self._output.finish()  # what the child printed is written before join() returns
        fd, self._report_fd = self._report_fd, None
        if fd is not None:
            chunks = []
            try:
                os.set_blocking(fd, False)
                while True:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
            except OSError:  # BlockingIOError: a grandchild still holds the write end
                pass
            self._report = b"".join(chunks)

    @property
    def exception(self) -> Optional[BaseException]:
        if self._report:
            self._exception = _decode_report(self._report)
            self._report = b""
        return self._exception

    def poll(self, flag: int = os.WNOHANG) -> Optional[int]:
        if self.returncode is None:
            # Block (flag 0) without holding the lock: another thread may poll meanwhile.
            self._child.wait(None) if flag == 0 else self._child.poll()
            returncode = self._child.returncode
            if returncode is not None:
                with self._lock:
                    if self.returncode is None:
                        self._finish(returncode)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        if self.returncode is None:
            if timeout is not None and self._child.wait(timeout) is None:
                return None
            return self.poll(os.WNOHANG if timeout == 0.0 else 0)
        return self.returncode

    def _send_signal(self, sig: int) -> None:
        if self.poll() is None:
            self._child.kill(sig)

    def terminate(self) -> None:
        self._send_signal(signal.SIGTERM)

    def interrupt(self) -> None:  # Process.interrupt(), Python 3.14
        self._send_signal(signal.SIGINT)

    def kill(self) -> None:
        self._send_signal(signal.SIGKILL)

    def close(self) -> None:
        self._report_fd = None
        self._finalizer()


def _release(child: _launch.Child, fds: list[int]) -> None:
    child.close()
    _close_fds(fds)


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        close_internal(fd)


_hooked = False


def _serve_exit_hook() -> None:
    """Join (and terminate daemonic) children at exit before the fork servers close: a
    server child reports its exit through its server. multiprocessing's exit function does
    exactly that and runs once; here it runs before ``_launch`` closes the servers."""
    global _hooked
    if not _hooked:
        _hooked = True
        _launch.before_servers_close.append(multiprocessing.util._exit_function)  # type: ignore[attr-defined]


def _join_children_first() -> None:
    """Make multiprocessing's exit function (terminate daemonic children, join the others,
    then run the remaining finalizers) the first exit handler to run.

    atexit runs handlers last in, first out, and the handlers that free shared memory
    (``weakref.finalize``'s) were registered when the first segment was made, after
    multiprocessing's: a parent whose script ended right after ``start()`` freed what its
    children were given before they had opened it (#5). Moved to the end at every start.
    """
    exit_function = multiprocessing.util._exit_function  # type: ignore[attr-defined]
    atexit.unregister(exit_function)
    atexit.register(exit_function)


def _pickling_error(process_obj: Process, exc: Exception) -> ArgumentPicklingError:
    what = "the process object"
    for label, value in _parts(process_obj):
        try:
            _pickle(value)
        except Exception:
            what = f"{label} (a {type(value).__name__})"
            break
    return ArgumentPicklingError.for_cause(
        exc,
        f"cannot send {what} to the new process: {str(exc).rstrip('.')}. This start method "
        "pickles the target and its arguments (lambdas, closures and __main__ functions are "
        "fine); pass picklable objects, or start it by fork, which passes them by "
        'inheritance: manycore.get_context("fork").Process (the default method does this '
        "by itself).",
        argument=what,
    )


def _default_method(process_obj: Process) -> bool:
    """Whether ``process_obj`` starts by manycore's default method (no method chosen)."""
    return process_obj._start_method is None and _launch.default_start_method() is None


def _parts(process_obj: Process) -> list[tuple[str, Any]]:
    parts: list[tuple[str, Any]] = [("the target", getattr(process_obj, "_target", None))]
    parts += [(f"argument {i}", a) for i, a in enumerate(getattr(process_obj, "_args", ()))]
    kwargs = getattr(process_obj, "_kwargs", {})
    parts += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    return parts


# ---------------------------------------------------------------- the child's side


def _forget_inherited_exit_handlers() -> None:
    """In a forked child: the parent's atexit handlers are not this process's to run (as
    the stdlib's fork and forkserver children do since Python 3.13)."""
    atexit._clear()
    atexit.register(multiprocessing.util._exit_function)  # type: ignore[attr-defined]


def _run(process_obj: Process, parent_sentinel: int, report_fd: int) -> int:
    """Run ``process_obj`` here as the stdlib does; report an escaping exception.

    At the end, multiprocessing's exit function (finalizers: a queue's feeder thread is
    flushed; children joined) and then this process's atexit handlers run, whatever the
    Python version: up to 3.12 ``_bootstrap`` calls the former itself, from 3.13 the
    stdlib's own entry points do.
    """
    raised: list[BaseException] = []
    run = process_obj.run

    def run_and_record() -> None:
        try:
            run()
        except SystemExit:
            raise
        except BaseException as exc:
            raised.append(exc)
            raise

    process_obj.run = run_and_record  # type: ignore[method-assign]
    if process_obj._start_method is not None:
        # A child of get_context(method) has that method as its default, as the stdlib's
        # _bootstrap makes it: get_start_method() there names how it was started.
        _launch.set_default_start_method(process_obj._start_method)
    code = 1
    try:
        code = process_obj._bootstrap(parent_sentinel=parent_sentinel)  # type: ignore[attr-defined]
        multiprocessing.util._exit_function()  # type: ignore[attr-defined]  # once only
    finally:
        if raised:
            _report(report_fd, raised[0])
        atexit._run_exitfuncs()
    return int(code)


def _report(fd: int, exc: BaseException) -> None:
    """Write ``exc`` for the parent, as ``_outcome.exception_parts`` encodes it: one that
    cannot be pickled, or whose report would not fit the pipe, is replaced by a
    ``ResultPicklingError`` that says so and carries (the ends of) the traceback text."""
    # The tuple around the parts costs a few dozen bytes of pickle: keep well inside the pipe.
    data = pickle.dumps(exception_parts(exc, "the process", limit=REPORT_LIMIT - 256), PROTOCOL)
    try:
        os.set_blocking(fd, False)
        os.write(fd, data)
    except OSError:
        pass


def _decode_report(data: bytes) -> BaseException:
    exc_blob, summary, tb = pickle.loads(data)
    return rebuild_exception(exc_blob, summary, tb, "the process")


def _read_exactly(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("the parent process went away before sending the process object")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _child_main(data_fd: int, report_fd: int, fds: list[int]) -> int:
    """Read the payload on ``data_fd`` (kept as the parent sentinel), then run the process."""
    try:
        header_len, body_len = LENGTHS.unpack(_read_exactly(data_fd, LENGTHS.size))
        prep = pickle.loads(_read_exactly(data_fd, header_len))
        body = _read_exactly(data_fd, body_len)
    except (EOFError, OSError):
        return 1
    _output.redirect_child({stream: fds[i] for stream, i in prep.get("output", {}).items()})
    _adopt(prep)
    if "resource_tracker" in prep:
        _adopt_resource_tracker(fds[prep["resource_tracker"]])
    _inherited_fds[:] = fds
    me: Any = current_process()
    me._inheriting = True
    try:
        process_obj = pickle.loads(body)
    except BaseException as exc:
        error = ArgumentUnpicklingError(
            f"the new process could not rebuild its process object (target and arguments): "
            f"{exc!r}. Their classes and modules must be importable in the child (check "
            "sys.path and that the module does not fail on import).",
            remote=format_remote(exc),
        )
        sys.stderr.write(f"{error}\n{format_remote(exc)}")
        _report(report_fd, error)
        return 1
    finally:
        del me._inheriting
    return _run(process_obj, data_fd, report_fd)


def server_child_main(data_fd: int, report_fd: int, *fds: int) -> int:
    """Entry point of a Process child forked by the fork server; returns its exit code."""
    _forget_inherited_exit_handlers()
    # A Process child takes Ctrl-C like any program (the server and its children ignore it).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd in (data_fd, report_fd):
        internal_fd(fd)
    return _child_main(data_fd, report_fd, list(fds))


def spawn_main(data_fd: int, report_fd: int, *fds: int) -> int:
    """Entry point of a spawned Process child (a fresh interpreter); returns its exit code."""
    for fd in (data_fd, report_fd):
        internal_fd(fd)
    return _child_main(data_fd, report_fd, list(fds))


# ---------------------------------------------------------------- Process


def _handed(args: Any, kwargs: Any) -> list[Any]:
    """Arguments (and items one level into containers) that want ``_manycore_handed_to``."""
    found: list[Any] = []
    top = [*args, *kwargs.values()]
    for obj in top:
        items: Any = ()
        if isinstance(obj, dict):
            items = obj.values()
        elif isinstance(obj, (list, tuple)):
            items = obj
        for item in [obj, *items]:
            if hasattr(type(item), "_manycore_handed_to"):
                found.append(item)
    return found


class Process(multiprocessing.process.BaseProcess):
    """A process running ``target(*args, **kwargs)`` (or ``run()``), as ``multiprocessing``'s.

    Beyond the stdlib: ``target`` may be a lambda, a closure or a function from ``__main__``
    under every start method, the main module is never re-executed in the child, and an
    exception that escapes the target is ``exception`` after ``join()``.

    ``_start_method`` (a class attribute): ``"fork"``, ``"spawn"``, ``"forkserver"``, or
    None for the default in effect at ``start()`` (manycore's fork server unless
    ``manycore.set_start_method`` chose another).
    """

    _start_method: Optional[str] = None
    _exception: Optional[BaseException] = None

    @staticmethod
    def _Popen(process_obj: Process) -> _Popen:
        launcher = _launch.resolve_start_method(process_obj._start_method)
        try:
            return _Popen(process_obj, launcher)
        except ArgumentPicklingError:
            # Under the default method, what cannot be pickled (a lock or a Manager the
            # target refers to or is given, a ctypes class of __main__) is passed by
            # inheritance, as the stdlib's default on Linux (fork) does: programs written
            # against it run unchanged (issue 15 #6). A method the user chose is kept.
            fork = _launch.LAUNCHERS.get("fork")
            if launcher.forks_caller or fork is None or not _default_method(process_obj):
                raise
            return _Popen(process_obj, fork)

    def start(self) -> None:
        """Start the child.

        Raises:
            ArgumentPicklingError: the start method pickles the target and arguments, and
                one of them cannot be pickled; no process was started.
            AssertionError: as the stdlib: started twice, or from a daemonic process.
        """
        handed = _handed(getattr(self, "_args", ()), getattr(self, "_kwargs", {}))
        _join_children_first()
        super().start()
        for obj in handed:
            obj._manycore_handed_to(self)

    @property
    def exception(self) -> Optional[BaseException]:
        """The exception that escaped the target in the child, with the child's traceback as
        its ``__cause__``; None while the process runs, or if it returned or called
        ``sys.exit()``."""
        popen = self._popen  # type: ignore[attr-defined]
        if popen is not None and popen.poll() is not None:
            self._exception = popen.exception
        return self._exception

    def close(self) -> None:
        popen = self._popen  # type: ignore[attr-defined]
        if popen is not None and popen.poll() is not None:
            self._exception = popen.exception
        super().close()
