"""How a child starts, before its entry point: the fork server, and a spawned child's start.

This module is all a child imports of manycore before its entry point's own module, so it
stays small: a spawned child (``python -c``) runs ``spawned_main``, a fork server runs
``serve``, and neither imports the owner's launcher (``_launch``).

The fork server is a single-threaded process that forks children on request.

Who runs where::

    owner process                          fork server (this module's serve())
    -------------                          -----------------------------------
    ForkServer.request(entry, fds) ─ request + fds over SCM_RIGHTS ─►  fork()
                                                       ├─ child: entry(*fds)
                           ◄── pid (8 bytes) ──────────┘  server keeps the status fd
    child's status pipe    ◄── raw wait status (4 bytes), then EOF, when it is reaped

The server knows nothing of what it starts: each request names the entry point, a
``"module:function"`` string. The server imports the module once (so each child starts
with it loaded), then forks; the child calls ``function(*fds)`` and exits with the int it
returns. Pool workers and ``Process`` children are two such entry points (see ``_launch``).

Wire format on the control socket (a socketpair, so only the owner can reach it): a
request is ``b"R"``, the entry's length (2 bytes, little-endian) and the entry in UTF-8,
sent with descriptors; the last descriptor is always the child's status pipe write end,
which the server keeps; the others are the child's, in order. The reply is a signed
8-byte pid, or ``-errno`` if the request was malformed (``EINVAL``), the entry point could
not be found (``ENOENT``) or fork failed. The owner may send several requests before it
reads their replies, which come in request order: a pool's workers fork one after the
other while the pool goes on. (Each request is one message that carries descriptors, and
a read on a Unix stream socket never runs past such a message, so one read is one request.)

Why a server: forking from a process that has threads can copy a lock held by another
thread into the child, where it stays held forever (Python 3.12 warns about it). The
server never has a second thread, so its forks are safe, and they are as cheap as fork.

Guarantees: the server exits when the owner closes the control socket (the owner exited or
died); it ignores SIGINT, and its children start with SIGINT ignored too (an entry point
that wants Ctrl-C installs its own handler); each child's exit status is written to its
status pipe exactly once, and the pipe is closed, when the child is reaped.
"""

from __future__ import annotations

import errno
import importlib
import os
import select
import signal
import socket
import struct
import sys
from typing import Callable, NoReturn

from ._fds import flush_stdio, internal_fd
from ._serialize import use_fresh_main

__all__ = [
    "REPLY",
    "REQUEST",
    "STATUS",
    "encode_request",
    "resolve_entry",
    "serve",
    "spawned_main",
]

REQUEST = struct.Struct("<cH")  # b"R", then the entry's length; the entry follows
REPLY = struct.Struct("<q")
STATUS = struct.Struct("<i")
MAX_FDS = 253  # SCM_MAX_FD: the most descriptors one message can carry
MAX_ENTRY = 1024  # bytes of a "module:function" entry point


def encode_request(entry: str) -> bytes:
    """The request bytes that ask the server to run ``entry`` in a new child."""
    name = entry.encode()
    if len(name) > MAX_ENTRY:
        raise ValueError(f"entry point name too long: {entry!r}")
    return REQUEST.pack(b"R", len(name)) + name


def resolve_entry(entry: str) -> Callable[..., int]:
    """The function a ``"module:function"`` string names, its module imported if needed.

    Raises:
        ImportError, AttributeError, ValueError: no such module or function.
    """
    module, sep, name = entry.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"entry point {entry!r} is not 'module:function'")
    func: Callable[..., int] = getattr(importlib.import_module(module), name)
    return func


def spawned_main(entry: str, nfds: int, sentinel: bool) -> None:
    """In a spawned child (``python -c``): run ``entry`` on descriptors 3, 4, ...; never returns.

    With ``sentinel``, descriptor 3 is the sentinel's write end: it is held, never passed
    to the entry, and closed only by this process's exit.
    """
    code = 1
    try:
        use_fresh_main()  # __main__ here is the ``python -c`` launcher: not the user's
        first = 3
        if sentinel:
            os.set_inheritable(first, False)
            internal_fd(first)  # this child's own children must not hold it
            first += 1
        fds = range(first, first + nfds)
        for fd in fds:
            os.set_inheritable(fd, False)
        code = resolve_entry(entry)(*fds)
    except Exception:
        import traceback

        traceback.print_exc()
    finally:
        flush_stdio()
        os._exit(code)


def serve(control_fd: int) -> NoReturn:
    """Run the fork server on ``control_fd`` until the owner goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=control_fd)
    control_no = control.fileno()
    control.setblocking(True)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    status_fds: dict[int, int] = {}  # worker pid -> status pipe write end
    try:
        while True:
            _reap(status_fds)
            try:
                ready, _, _ = select.select([control_no, wake_r], [], [])
            except InterruptedError:
                continue
            if wake_r in ready:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            if control_no in ready and not _handle(control, status_fds, (wake_r, wake_w)):
                break
    finally:
        _reap(status_fds)
    os._exit(0)


def _handle(control: socket.socket, status_fds: dict[int, int], own: tuple[int, int]) -> bool:
    try:
        data, fds, _flags, _addr = socket.recv_fds(control, REQUEST.size + MAX_ENTRY, MAX_FDS)
    except OSError:
        return False
    if not data:
        return False
    error = 0
    entry: Callable[..., int] | None = None
    kind, size = REQUEST.unpack_from(data) if len(data) >= REQUEST.size else (b"", 0)
    name = data[REQUEST.size : REQUEST.size + size]
    if kind != b"R" or len(name) != size or not fds:
        error = errno.EINVAL
    else:
        try:  # imported here once rather than in every child
            entry = resolve_entry(name.decode())
        except Exception:
            error = errno.ENOENT
    if entry is None:
        for fd in fds:
            os.close(fd)
        control.sendall(REPLY.pack(-(error or errno.EINVAL)))
        return True
    *child_fds, status_w = fds
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        control.sendall(REPLY.pack(-(exc.errno or errno.EAGAIN)))
        return True
    if pid == 0:
        code = 1
        try:
            control.close()
            for fd in (*own, status_w, *status_fds.values()):
                os.close(fd)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # The server's main module is the caller's as it was when the server started
            # (or the launcher's): __main__ functions get an empty namespace of their own.
            use_fresh_main()
            code = entry(*child_fds)
        finally:
            os._exit(code)
    for fd in child_fds:
        os.close(fd)
    status_fds[pid] = status_w
    control.sendall(REPLY.pack(pid))
    return True


def _reap(status_fds: dict[int, int]) -> None:
    while status_fds:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status_fds.pop(pid, None)
        if fd is not None:
            try:
                os.write(fd, STATUS.pack(status))
            except OSError:
                pass
            os.close(fd)
