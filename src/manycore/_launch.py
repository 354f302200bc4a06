"""Starting worker processes: the start methods, and the owner's side of the fork server.

A launcher turns three descriptors (the worker's socket end, the pool's lifeline read end
and the pool's board) into a running worker and returns a ``WorkerProcess`` handle, which
tells the scheduler the worker's exit status once it has died.

=============  ============================================  =========================
method         how                                           exit status from
=============  ============================================  =========================
default        fork server forked from the caller when the    the server, via a pipe
               caller has one OS thread, else spawned
"forkserver"   fork server started fresh (``python -c``)      the server, via a pipe
"fork"         ``os.fork()`` in the caller                    ``waitpid``
"spawn"        ``posix_spawn`` of ``python -c``               ``waitpid``
=============  ============================================  =========================

The fork server also starts ``Process`` children (``launch_process``, request ``P``): the
same fork, with the descriptors ``_process`` needs instead of a worker's.

The default start method (``None``) is manycore's fork server unless
``set_default_start_method`` chose another; pools and ``Process`` both honour it.

Descriptor hygiene: the fork server's control socket is registered with ``_fds.internal_fd``,
so no process forked from the owner keeps it (see ``_fds``).
"""

from __future__ import annotations

import atexit
import errno
import gc
import multiprocessing
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Optional, Union

from ._fds import (
    flush_stdio,
    forget_internal_fd,
    internal_fd,
    neutralize_inherited,
    os_thread_count,
)
from ._zygote import REPLY, STATUS

__all__ = [
    "Launcher",
    "WorkerProcess",
    "default_start_method",
    "describe_status",
    "fork_server_pid",
    "fork_server_pids",
    "resolve_start_method",
    "set_default_start_method",
]

StartMethod = Union[str, None, Any]  # a name, None, or a multiprocessing context
START_METHODS = ("fork", "forkserver", "spawn")


def _after_fork_in_child() -> None:
    global _server, _fresh_server, _server_lock
    # The servers belong to the parent; a child that needs one starts its own. The lock is
    # made anew: the fork server itself is forked while its creator holds it, and every
    # worker it forks would otherwise inherit it held (a nested pool would wait forever).
    _server = _fresh_server = None
    _server_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _child_env() -> dict[str, str]:
    """The environment for a fresh interpreter: manycore importable from where we got it."""
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [here] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _spawn_python(code: str, fds: list[int]) -> int:
    """Start ``python -c code`` with ``fds`` at descriptors 3, 4, ...; return its pid."""
    targets = range(3, 3 + len(fds))
    actions: list[tuple[int, ...]]
    if not any(fd in targets for fd in fds):
        actions = [(os.POSIX_SPAWN_DUP2, fd, 3 + i) for i, fd in enumerate(fds)]
    else:
        # A source that is also a target (3, 4, ...) would be overwritten before it is
        # copied, or left close-on-exec by a dup2 onto itself: first move every source
        # above all sources and targets, then from there to its target.
        base = max([*fds, targets.stop]) + 1
        actions = [(os.POSIX_SPAWN_DUP2, fd, base + i) for i, fd in enumerate(fds)]
        actions += [(os.POSIX_SPAWN_DUP2, base + i, 3 + i) for i in range(len(fds))]
        actions += [(os.POSIX_SPAWN_CLOSE, base + i) for i in range(len(fds))]
    argv = [sys.executable, "-c", code]
    return os.posix_spawn(sys.executable, argv, _child_env(), file_actions=actions)


# ---------------------------------------------------------------- worker handles


class WorkerProcess:
    """A started worker, as the scheduler sees it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status: int | None = None  # raw wait status once known

    def poll(self) -> int | None:
        """The raw wait status if the process has been reaped, else None. Never blocks."""
        raise NotImplementedError

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the raw wait status; None if still unknown."""
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            status = self.poll()
            if status is not None or time.monotonic() >= deadline:
                return status
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` unless the process is known to be gone (its pid may be reused)."""
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Release what the handle holds once the status is known or no longer wanted."""


class ChildProcess(WorkerProcess):
    """A worker that is our own child (fork, spawn): ``waitpid`` gives its status."""

    def poll(self) -> int | None:
        if self.status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.status = -1  # reaped by someone else: unknown
                return self.status
            if pid:
                self.status = status
        return self.status


class ServerChild(WorkerProcess):
    """A worker forked by the fork server; the server writes its status into a pipe."""

    def __init__(self, pid: int, status_fd: int) -> None:
        super().__init__(pid)
        self._fd: int | None = status_fd

    def poll(self) -> int | None:
        if self.status is None and self._fd is not None:
            ready, _, _ = select.select([self._fd], [], [], 0)
            if ready:
                data = os.read(self._fd, STATUS.size)
                # EOF without data: the server died before reaping this worker.
                self.status = STATUS.unpack(data)[0] if len(data) == STATUS.size else -1
                self.close()
        return self.status

    def wait(self, timeout: float) -> int | None:
        if self.status is None and self._fd is not None:
            select.select([self._fd], [], [], timeout)
        return self.poll()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def describe_status(status: int | None) -> tuple[int | None, int | None, str]:
    """(exitcode, signal number, words) for a raw wait status."""
    if status is None or status < 0:
        return None, None, "exit status unknown"
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        sig = -code
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return None, sig, f"killed by {name}"
    return code, None, f"exited with code {code}"


# ---------------------------------------------------------------- launchers


class Launcher:
    """Starts workers by one start method."""

    name = "?"

    def start(self, chan_fd: int, lifeline_fd: int, board_fd: int) -> WorkerProcess:
        raise NotImplementedError


class ForkLauncher(Launcher):
    name = "fork"

    def start(self, chan_fd: int, lifeline_fd: int, board_fd: int) -> WorkerProcess:
        flush_stdio()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                from ._worker import run_worker

                code = run_worker(chan_fd, lifeline_fd, board_fd)
            finally:
                os._exit(code)
        return ChildProcess(pid)


class SpawnLauncher(Launcher):
    name = "spawn"
    CODE = "from manycore._worker import spawn_main; spawn_main(3, 4, 5)"

    def start(self, chan_fd: int, lifeline_fd: int, board_fd: int) -> WorkerProcess:
        return ChildProcess(_spawn_python(self.CODE, [chan_fd, lifeline_fd, board_fd]))


class ServerLauncher(Launcher):
    """Workers forked by this process's fork server (started fresh if ``fresh``)."""

    def __init__(self, fresh: bool) -> None:
        self.fresh = fresh
        self.name = "forkserver" if fresh else "default"

    def start(self, chan_fd: int, lifeline_fd: int, board_fd: int) -> WorkerProcess:
        return _get_server(self.fresh).launch(chan_fd, lifeline_fd, board_fd)


_default_method: Optional[str] = None  # set_default_start_method(); None: the fork server


def set_default_start_method(method: Optional[str]) -> None:
    """Make ``method`` what ``None`` means for pools and processes (None: manycore's default).

    Raises:
        ValueError: an unknown start method name.
    """
    global _default_method
    if method is not None and method not in START_METHODS:
        raise ValueError(
            f"unknown start method {method!r}: use one of {', '.join(START_METHODS)}, or None "
            "for manycore's default fork server"
        )
    _default_method = method


def default_start_method() -> Optional[str]:
    """The start method ``None`` stands for now: a name, or None for the default server."""
    return _default_method


def resolve_start_method(method: StartMethod) -> Launcher:
    """A launcher for ``context=`` / ``mp_context=``; ``None`` follows the default.

    Raises:
        ValueError: an unknown start method name.
    """
    if method is None:
        method = _default_method
        if method is None:
            return ServerLauncher(fresh=False)
    if not isinstance(method, str):
        get = getattr(method, "get_start_method", None)
        if get is None:
            raise ValueError(
                f"context={method!r} is not a start method: pass 'fork', 'spawn', "
                "'forkserver', a multiprocessing context, or None for manycore's default"
            )
        method = get()
    if method == "fork":
        return ForkLauncher()
    if method == "spawn":
        return SpawnLauncher()
    if method == "forkserver":
        return ServerLauncher(fresh=True)
    raise ValueError(
        f"unknown start method {method!r}: use one of {', '.join(START_METHODS)}, or None "
        f"for manycore's default (available here: {multiprocessing.get_all_start_methods()})"
    )


# ---------------------------------------------------------------- the fork server client


class ForkServer:
    """The owner's handle on one fork server process."""

    def __init__(self, fresh: bool) -> None:
        ours, theirs = socket.socketpair()
        self.forked = not fresh and os_thread_count() == 1
        if self.forked:
            flush_stdio()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    control = theirs.detach()
                    neutralize_inherited(keep=[control])
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    # Never examine the caller's objects again: fewer pages copied in
                    # every worker, and no stray finalizer runs on inherited objects.
                    gc.freeze()
                    from ._zygote import serve

                    serve(control)
                finally:
                    os._exit(code)
        else:
            pid = _spawn_python("from manycore._zygote import serve; serve(3)", [theirs.fileno()])
        theirs.close()
        self.pid = pid
        self.sock = ours
        internal_fd(ours.fileno())
        self.lock = threading.Lock()

    def launch(self, chan_fd: int, lifeline_fd: int, board_fd: int) -> ServerChild:
        pid, status_r = self._request(b"L", [chan_fd, lifeline_fd, board_fd])
        return ServerChild(pid, status_r)

    def launch_process(self, fds: list[int]) -> tuple[int, int]:
        """Fork a ``Process`` child that gets ``fds`` (see ``_process``); (pid, status fd).

        The status fd becomes readable when the child has been reaped: it then holds the
        raw wait status (4 bytes), followed by EOF.
        """
        return self._request(b"P", fds)

    def _request(self, kind: bytes, fds: list[int]) -> tuple[int, int]:
        status_r, status_w = os.pipe()
        try:
            with self.lock:
                socket.send_fds(self.sock, [kind], [*fds, status_w])
                reply = _recv_exactly(self.sock, REPLY.size)
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        (pid,) = REPLY.unpack(reply)
        if pid < 0:
            os.close(status_r)
            raise OSError(-pid, f"the fork server could not fork a child: {os.strerror(-pid)}")
        return pid, status_r

    def alive(self) -> bool:
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        return pid == 0

    def close(self) -> None:
        """Close the control socket (the server exits on EOF) and reap the server."""
        forget_internal_fd(self.sock.fileno())
        self.sock.close()
        proc = ChildProcess(self.pid)
        if proc.wait(1.0) is None:  # it should exit at once; never let exit hang on it
            proc.kill(signal.SIGKILL)
            proc.wait(1.0)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError(errno.EPIPE, "the fork server exited")
        data += chunk
    return data


_server: ForkServer | None = None
_fresh_server: ForkServer | None = None
_server_lock = threading.Lock()


def get_server(fresh: bool) -> ForkServer:
    """This process's fork server (the default one, or the fresh one if ``fresh``)."""
    return _get_server(fresh)


def _get_server(fresh: bool) -> ForkServer:
    global _server, _fresh_server
    with _server_lock:
        current = _fresh_server if fresh else _server
        if current is None or not current.alive():
            if current is not None:
                current.close()
            current = ForkServer(fresh)
            if fresh:
                _fresh_server = current
            else:
                _server = current
        return current


def fork_server_pid() -> int | None:
    """Pid of this process's default fork server, if started (it lives as long as we do)."""
    return _server.pid if _server is not None else None


def fork_server_pids() -> list[int]:
    """Pids of every fork server of this process (default and "forkserver")."""
    return [s.pid for s in (_server, _fresh_server) if s is not None]


# Run at exit before the servers close. ``_process`` adds multiprocessing's own exit
# function: children forked by a server report their exit through it, so they must be
# joined (and daemonic ones terminated) while it still runs.
before_servers_close: list[Callable[[], None]] = []


@atexit.register
def _close_servers() -> None:
    """At exit, close the control sockets: each server sees EOF and exits on its own."""
    global _server, _fresh_server
    for hook in before_servers_close:
        try:
            hook()
        except Exception:  # pragma: no cover - never let exit fail on a hook
            pass
    for server in (_server, _fresh_server):
        if server is not None:
            server.close()
    _server = _fresh_server = None
