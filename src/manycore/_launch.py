"""Starting children: one layer for every start method, pool workers and ``Process`` alike.

A launcher starts a child by one start method and returns a ``Child`` handle: ``pid``,
``poll``, ``wait``, ``kill``, ``close``, and a ``sentinel`` descriptor when the caller asks
for one. The launcher does not know what the child runs: the caller names an entry point,
a ``"module:function"`` string that the child resolves with importlib and calls with its
descriptors (``function(*fds) -> exit code``). Pool workers (``_worker.run_worker``) and
``Process`` children (``_process``) are two such entry points; nothing here imports them.

=============  ============================================  =========================
method         how                                           exit status from
=============  ============================================  =========================
default        fork server forked from the caller when the    the server, via a pipe
               caller has one OS thread, else spawned
"forkserver"   fork server started fresh (``python -c``)      the server, via a pipe
"fork"         ``os.fork()`` in the caller                    ``waitpid``
"spawn"        ``posix_spawn`` of ``python -c``               ``waitpid``
=============  ============================================  =========================

``LAUNCHERS`` is the one table of start methods: ``resolve_start_method`` (pools),
``Process`` and the contexts all read it. Under "fork" the entry may also be a callable
(the child is a copy of the caller, so ``Process`` runs its object as it is).

Descriptors of a child, as its handle holds them: with ``sentinel=True``, ``sentinel`` is
readable once the child has exited (fork/spawn: a pipe whose write end only the child
holds; fork server: the pipe the server writes the status into when it reaps the child),
and stays open until ``close()``. Without it (pool workers), the status pipe of a server
child is closed as soon as the status is read, and a direct child is polled by ``waitpid``.

The default start method (``None``) is manycore's fork server unless
``set_default_start_method`` chose another; pools and ``Process`` both honour it.

Guarantees: ``poll`` never blocks; a handle reads the exit status once (thread-safe) and
then keeps it; ``kill`` never signals a child whose status is known (its pid may be
reused); a forked or spawned child never keeps the owner's internal descriptors (``_fds``).
"""

from __future__ import annotations

import atexit
import errno
import gc
import multiprocessing
import multiprocessing.spawn
import os
import select
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Callable, Optional, Union

from ._fds import (
    child_unblocks_async_signals,
    flush_stdio,
    forget_internal_fd,
    internal_fd,
    neutralize_inherited,
    os_thread_count,
    spawn_sigmask,
    unblock_async_signals,
)
from ._zygote import REPLY, STATUS, encode_request, resolve_entry, serve, spawned_main

__all__ = [
    "LAUNCHERS",
    "START_METHODS",
    "Child",
    "Launcher",
    "default_start_method",
    "describe_status",
    "fork_server_pid",
    "fork_server_pids",
    "resolve_start_method",
    "set_default_start_method",
    "spawned_main",
]

StartMethod = Union[str, None, Any]  # a name, None, or a multiprocessing context
# What a child runs: a "module:function" string; under "fork" also a callable.
Entry = Union[str, Callable[..., int]]

UNKNOWN = -1  # the raw status of a child whose status was lost (reaped elsewhere)


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


def _spawn_python(code: str, fds: Sequence[int]) -> int:
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
    # The interpreter set_executable() chose (sys.executable unless it was called).
    executable = os.fsdecode(multiprocessing.spawn.get_executable())
    argv = [executable, "-c", code]
    mask = spawn_sigmask()
    if mask is None:
        return os.posix_spawn(executable, argv, _child_env(), file_actions=actions)
    # (an empty set is a mask too: it unblocks everything)
    return os.posix_spawn(executable, argv, _child_env(), file_actions=actions, setsigmask=mask)


def _readable(fd: int, timeout: Optional[float]) -> bool:
    """Whether ``fd`` is readable (data or EOF) within ``timeout`` seconds (None: wait)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0.0, timeout) * 1000))


# ---------------------------------------------------------------- handles


class Child:
    """A started child, by any method: what the scheduler and ``Process`` hold."""

    # Why the child did not start, where that is known only after the start returned (a
    # fork server's reply, see ``Launcher.start_child_later``).
    start_error: OSError | None = None

    def __init__(self, pid: int, sentinel: int = -1) -> None:
        self.pid = pid
        self.status: int | None = None  # raw wait status once known (UNKNOWN: lost)
        self.sentinel = sentinel  # readable once the child has exited; -1: none
        self._lock = threading.Lock()  # one reader of the exit status at a time
        if sentinel >= 0:
            internal_fd(sentinel)

    def poll(self) -> int | None:
        """The raw wait status if the child has been reaped, else None. Never blocks."""
        raise NotImplementedError

    def confirm_started(self) -> None:
        """Raise ``start_error``, if the child could not be started (waits for the answer)."""

    def _collect(self) -> int | None:
        """The sentinel is readable: the status (a direct child may take a moment)."""
        return self.poll()

    def wait(self, timeout: Optional[float]) -> int | None:
        """Wait up to ``timeout`` seconds (None: for ever) for the raw wait status; None if
        still unknown then."""
        if self.status is not None:
            return self.status
        if self.sentinel >= 0:
            return self._collect() if _readable(self.sentinel, timeout) else None
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while True:
            status = self.poll()
            if status is not None or (deadline is not None and time.monotonic() >= deadline):
                return status
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    @property
    def returncode(self) -> int | None:
        """The exit code as ``multiprocessing`` reports it (``-N``: killed by signal N);
        None while the child runs, or if its status was taken by someone else."""
        if self.status is None or self.status == UNKNOWN:
            return None
        return os.waitstatus_to_exitcode(self.status)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` unless the process is known to be gone (its pid may be reused)."""
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def exit_fd(self) -> int:
        """A descriptor that becomes readable once the child has exited and that no other
        process holds open (a pidfd, or the fork server's status pipe); -1 where there is
        none (a kernel before 5.3): then only ``poll`` tells.

        EOF on a pipe or socket shared with the child does not tell: a process the child
        forked inherits its end and keeps it open after the child is gone (issue 13).
        """
        return -1

    def close(self) -> None:
        """Release the handle's descriptor; the status, if known, stays readable."""
        fd, self.sentinel = self.sentinel, -1
        if fd >= 0:
            forget_internal_fd(fd)  # before the number can be reused
            try:
                os.close(fd)
            except OSError:  # closed already (a user closed ``Process.sentinel``)
                pass


class OwnChild(Child):
    """A child of this process (fork, spawn): ``waitpid`` gives its status."""

    _pidfd = -1

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def exit_fd(self) -> int:
        # Its pid cannot name another process until this process reaps it.
        if self._pidfd < 0 and self.status is None and hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(self.pid)
            except OSError:  # a kernel without pidfds (before 5.3), or a seccomp filter
                return -1
            internal_fd(self._pidfd)
        return self._pidfd

    def close(self) -> None:
        fd, self._pidfd = self._pidfd, -1
        if fd >= 0:
            forget_internal_fd(fd)
            os.close(fd)
        super().close()

    def _collect(self) -> int | None:
        # The sentinel closes as the child exits, a moment before it can be reaped.
        return self._reap(0)

    def _reap(self, flag: int) -> int | None:
        if self.status is None:
            with self._lock:
                if self.status is None:
                    try:
                        pid, status = os.waitpid(self.pid, flag)
                    except OSError:  # reaped by someone else: unknown
                        self.status = UNKNOWN
                    else:
                        if pid:
                            self.status = status
        return self.status


class ServerChild(Child):
    """A child forked by a fork server, which writes its status into a pipe when it reaps it.

    ``keep``: the pipe is the caller's sentinel and stays open until ``close()``; otherwise
    it is closed as soon as the status has been read.
    """

    def __init__(self, server: ForkServer, status_fd: int, keep: bool) -> None:
        self._server = server
        self._replied = False  # the server's reply is read when first needed
        super().__init__(0, status_fd if keep else -1)
        self._fd = status_fd
        self._keep = keep
        self._watched = False  # exit_fd() handed the pipe out: keep it until close()

    @property
    def pid(self) -> int:
        """The pid the server replied with, read on first use (the owner goes on
        meanwhile); 0 if the server could not fork the child (``start_error`` says why),
        and then ``kill`` signals nothing."""
        if not self._replied:
            self._server.resolve(self)
        return self._pid

    @pid.setter
    def pid(self, value: int) -> None:
        self._pid = value

    def replied(self, pid: int, error: OSError | None) -> None:
        """The server's reply to this child's request (``ForkServer.resolve``)."""
        self.pid, self.start_error, self._replied = max(pid, 0), error, True

    def confirm_started(self) -> None:
        if self.pid == 0 and self.start_error is not None:
            raise self.start_error

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.pid > 0:  # never os.kill(0): that is our own process group
            super().kill(sig)

    def poll(self) -> int | None:
        if self.status is None:
            with self._lock:
                if self.status is None and self._fd >= 0 and _readable(self._fd, 0):
                    try:
                        data = os.read(self._fd, STATUS.size)
                    except OSError:
                        data = b""
                    # EOF without data: the server died before reaping this child.
                    self.status = STATUS.unpack(data)[0] if len(data) == STATUS.size else UNKNOWN
                    if not self._keep and not self._watched:
                        os.close(self._fd)
                        self._fd = -1
        return self.status

    def wait(self, timeout: Optional[float]) -> int | None:
        if self.status is None and self._fd >= 0:
            _readable(self._fd, timeout)
        return self.poll()

    def exit_fd(self) -> int:
        # The server writes the status when it has reaped the child; only it holds the
        # write end. Once watched, it stays open until close(), so a poll() that reads the
        # status never closes a descriptor someone still polls.
        self._watched = True
        return self._fd

    @property
    def returncode(self) -> int | None:
        if self.status == UNKNOWN:
            return 255  # its status is lost, as the stdlib's forkserver reports it
        return super().returncode

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, -1
            if fd >= 0 and not self._keep:
                os.close(fd)
        super().close()


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
    """Starts children by one start method.

    ``forks_caller``: the child is a copy of the caller at start, so the entry may be a
    callable and sees the caller's objects as they are; otherwise what the child needs
    beyond its descriptors must be sent to it (pickled). ``fresh_interpreter``: the child
    starts from nothing (spawn); a fork server's children are forks of the server.
    """

    name = "?"
    forks_caller = False
    fresh_interpreter = False

    def start_child(self, entry: Entry, fds: Sequence[int], *, sentinel: bool = False) -> Child:
        """Start a child that runs ``entry(*fds)`` and exits with the code it returns.

        ``fds`` are the caller's; the child gets copies (the caller closes its own).

        Raises:
            OSError: the child could not be started.
            TypeError: a callable entry for a method that does not fork the caller.
        """
        raise NotImplementedError

    def start_child_later(self, entry: Entry, fds: Sequence[int]) -> Child:
        """As ``start_child`` without a sentinel, but where the method allows, without
        waiting for the child to exist: a fork server's reply is read when the handle's
        ``pid`` is first needed, so a pool's workers fork while the pool goes on. A child
        that the server could not fork then looks like one that exited at once, and
        ``confirm_started`` raises why (``start_error``)."""
        return self.start_child(entry, fds)


def _entry_name(entry: Entry, method: str) -> str:
    if not isinstance(entry, str):
        raise TypeError(
            f"the {method!r} start method runs an entry point named 'module:function', "
            f"not {entry!r}"
        )
    return entry


class ForkLauncher(Launcher):
    name = "fork"
    forks_caller = True

    def start_child(self, entry: Entry, fds: Sequence[int], *, sentinel: bool = False) -> Child:
        run = resolve_entry(entry) if isinstance(entry, str) else entry
        sentinel_r = sentinel_w = -1
        if sentinel:
            sentinel_r, sentinel_w = os.pipe()
        unblock = child_unblocks_async_signals()
        flush_stdio()
        try:
            pid = os.fork()
        except BaseException:
            for fd in (sentinel_r, sentinel_w):
                if fd >= 0:
                    os.close(fd)
            raise
        if pid == 0:
            code = 1
            try:
                if unblock:
                    unblock_async_signals()
                if sentinel:
                    os.close(sentinel_r)
                    internal_fd(sentinel_w)  # this child's own children must not hold it
                code = run(*fds)
            finally:
                os._exit(code)
        if sentinel:
            os.close(sentinel_w)
        return OwnChild(pid, sentinel_r)


class SpawnLauncher(Launcher):
    name = "spawn"
    fresh_interpreter = True

    def start_child(self, entry: Entry, fds: Sequence[int], *, sentinel: bool = False) -> Child:
        name = _entry_name(entry, self.name)
        code = (
            "from manycore._zygote import spawned_main; "
            f"spawned_main({name!r}, {len(fds)}, {sentinel})"
        )
        if not sentinel:
            return OwnChild(_spawn_python(code, fds))
        sentinel_r, sentinel_w = os.pipe()
        try:
            pid = _spawn_python(code, [sentinel_w, *fds])
        except BaseException:
            os.close(sentinel_r)
            raise
        finally:
            os.close(sentinel_w)
        return OwnChild(pid, sentinel_r)


class ServerLauncher(Launcher):
    """Children forked by this process's fork server (started fresh if ``fresh``)."""

    def __init__(self, fresh: bool) -> None:
        self.fresh = fresh
        self.name = "forkserver" if fresh else "default"

    def start_child(self, entry: Entry, fds: Sequence[int], *, sentinel: bool = False) -> Child:
        child = self._request(entry, fds, keep=sentinel)
        try:
            child.confirm_started()
        except OSError:
            child.close()
            raise
        return child

    def start_child_later(self, entry: Entry, fds: Sequence[int]) -> Child:
        return self._request(entry, fds, keep=False)

    def _request(self, entry: Entry, fds: Sequence[int], keep: bool) -> ServerChild:
        return get_server(self.fresh).request(_entry_name(entry, self.name), fds, keep=keep)


# The one table of start methods, manycore's default first (the order
# ``get_all_start_methods`` reports). ``None`` is the default launcher.
LAUNCHERS: dict[str, Launcher] = {
    "forkserver": ServerLauncher(fresh=True),
    "fork": ForkLauncher(),
    "spawn": SpawnLauncher(),
}
START_METHODS = tuple(LAUNCHERS)
_DEFAULT = ServerLauncher(fresh=False)

_default_method: Optional[str] = None  # set_default_start_method(); None: the fork server


def _unknown(method: object) -> str:
    return (
        f"unknown start method {method!r}: use one of {', '.join(START_METHODS)}, or None "
        "for manycore's default fork server"
    )


def set_default_start_method(method: Optional[str]) -> None:
    """Make ``method`` what ``None`` means for pools and processes (None: manycore's default).

    Raises:
        ValueError: an unknown start method name.
    """
    global _default_method
    if method is not None and method not in LAUNCHERS:
        raise ValueError(_unknown(method))
    _default_method = method


def default_start_method() -> Optional[str]:
    """The start method ``None`` stands for now: a name, or None for the default server."""
    return _default_method


def resolve_start_method(method: StartMethod) -> Launcher:
    """The launcher for ``context=`` / ``mp_context=`` / a ``Process``'s start method;
    ``None`` follows the default.

    Raises:
        ValueError: an unknown start method name.
    """
    if method is None:
        method = _default_method
        if method is None:
            return _DEFAULT
    if not isinstance(method, str):
        get = getattr(method, "get_start_method", None)
        if get is None:
            raise ValueError(
                f"context={method!r} is not a start method: pass 'fork', 'spawn', "
                "'forkserver', a multiprocessing context, or None for manycore's default"
            )
        method = get()
    try:
        return LAUNCHERS[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"{_unknown(method)} (available here: {multiprocessing.get_all_start_methods()})"
        ) from None


# ---------------------------------------------------------------- the fork server client


class ForkServer:
    """The owner's handle on one fork server process."""

    def __init__(self, fresh: bool) -> None:
        ours, theirs = socket.socketpair()
        self.forked = not fresh and os_thread_count() == 1
        if self.forked:
            unblock = child_unblocks_async_signals()
            flush_stdio()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    if unblock:
                        unblock_async_signals()
                    control = theirs.detach()
                    neutralize_inherited(keep=[control])
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    # Never examine the caller's objects again: fewer pages copied in
                    # every worker, and no stray finalizer runs on inherited objects.
                    gc.freeze()
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
        # Requests sent whose reply is not read yet, oldest first.
        self._pending: deque[tuple[ServerChild, str]] = deque()

    def request(self, entry: str, fds: Sequence[int], keep: bool) -> ServerChild:
        """Ask the server to fork a child that runs ``entry(*fds)``; its handle, whose pid
        is read from the server's reply when first needed.

        The handle's status fd becomes readable when the child has been reaped: it then
        holds the raw wait status (4 bytes), followed by EOF.
        """
        request = encode_request(entry)
        status_r, status_w = os.pipe()
        try:
            with self.lock:
                socket.send_fds(self.sock, [request], [*fds, status_w])
                child = ServerChild(self, status_r, keep)
                self._pending.append((child, entry))
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        return child

    def resolve(self, child: ServerChild) -> None:
        """Read the server's replies, in request order, up to ``child``'s."""
        with self.lock:
            while not child._replied:
                waiting, entry = self._pending.popleft()
                try:
                    (pid,) = REPLY.unpack(_recv_exactly(self.sock, REPLY.size))
                except OSError as exc:  # the server is gone: every request waiting failed
                    waiting.replied(0, exc)
                    continue
                error = None
                if pid < 0:
                    if -pid == errno.ENOENT:
                        error = OSError(-pid, f"the fork server found no entry point {entry!r}")
                    else:
                        error = OSError(
                            -pid, f"the fork server could not fork a child: {os.strerror(-pid)}"
                        )
                waiting.replied(pid, error)

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
        proc = OwnChild(self.pid)
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
