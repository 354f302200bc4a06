"""The fork server: a single-threaded process that forks workers on request.

Who runs where::

    owner process                          fork server (this module's serve())
    -------------                          -----------------------------------
    ForkServer.launch(fds) ── b"L" + 4 fds over SCM_RIGHTS ──►  fork()
                                                                ├─ child: run_worker(fds)
                           ◄── pid (8 bytes) ─────────────────  └─ keep status fd
    worker's status pipe   ◄── raw wait status (4 bytes), then EOF, when it is reaped

Wire format on the control socket (a socketpair, so only the owner can reach it):
a request is one byte naming its kind, with descriptors; the last one is always the
child's status pipe write end, which the server keeps.

* ``L``, a pool worker: worker socket end, lifeline read end, board, status pipe.
* ``P``, a ``Process`` child: its payload pipe's read end, its report pipe's write end,
  then any descriptors its pickled process object refers to (see ``_process``), status pipe.

The reply is a signed 8-byte pid, or ``-errno`` if the request was malformed or fork failed.

Why a server: forking from a process that has threads can copy a lock held by another
thread into the child, where it stays held forever (Python 3.12 warns about it). The
server never has a second thread, so its forks are safe, and they are as cheap as fork.

Guarantees: the server exits when the owner closes the control socket (the owner exited or
died); it ignores SIGINT; each worker's exit status is written to its status pipe exactly
once, and the pipe is closed, when the worker is reaped.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import sys
from typing import NoReturn

__all__ = ["REPLY", "serve"]

REPLY = struct.Struct("<q")
MAX_FDS = 253  # SCM_MAX_FD: the most descriptors one message can carry
STATUS = struct.Struct("<i")


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
        data, fds, _flags, _addr = socket.recv_fds(control, 16, MAX_FDS)
    except OSError:
        return False
    if not data:
        return False
    kind = data[:1]
    if not ((kind == b"L" and len(fds) == 4) or (kind == b"P" and len(fds) >= 3)):
        for fd in fds:
            os.close(fd)
        control.sendall(REPLY.pack(-errno.EINVAL))
        return True
    *child_fds, status_w = fds
    if kind == b"P":  # imported once here rather than in every child
        from . import _process  # noqa: F401
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
            if kind == b"L":
                from ._worker import run_worker

                code = run_worker(*child_fds)
            else:
                # A Process child takes Ctrl-C like any program (the server ignores it).
                signal.signal(signal.SIGINT, signal.default_int_handler)
                from ._process import server_child_main

                code = server_child_main(child_fds[0], child_fds[1], child_fds[2:])
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


if __name__ == "__main__":  # pragma: no cover - started as ``python -m manycore._zygote N``
    serve(int(sys.argv[1]))
