"""Framing of messages over a worker's socket.

Wire format: each frame is an 8-byte little-endian unsigned length followed by that many
bytes of payload (a protocol-5 pickle of one ``_messages`` record).

Two ends, two disciplines:

* ``OwnerChannel`` (scheduler thread) is non-blocking. ``queue`` appends a frame to an
  outbox and ``flush`` writes what the socket takes; ``receive`` reads what has arrived and
  returns the complete frames, and whether the worker's end has closed. The scheduler never
  blocks on a worker, so a worker busy writing results can never deadlock with a scheduler
  writing it tasks.
* ``WorkerChannel`` (worker main thread) is blocking: a worker has nothing else to do.

``flush`` and the worker's calls raise ``EOFError`` when the other side is gone.
"""

from __future__ import annotations

import socket
import struct
from collections import deque

__all__ = ["HEADER", "OwnerChannel", "WorkerChannel"]

HEADER = struct.Struct("<Q")
_RECV_SIZE = 1 << 18


class OwnerChannel:
    """The owner's non-blocking end of a worker socket."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._outbox: deque[memoryview] = deque()
        self._buffer = bytearray()
        self._body: bytearray | None = None
        self._body_view: memoryview | None = None
        self._filled = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def wants_write(self) -> bool:
        return bool(self._outbox)

    def queue(self, payload: bytes) -> None:
        self._outbox.append(memoryview(HEADER.pack(len(payload))))
        self._outbox.append(memoryview(payload))

    def flush(self) -> None:
        """Write as much of the outbox as the socket takes now.

        Raises:
            EOFError: the worker's end is closed.
        """
        outbox = self._outbox
        try:
            while outbox:
                if len(outbox) > 1 and len(outbox[0]) + len(outbox[1]) < 65536:
                    sent = self.sock.sendmsg(list(outbox)[:64])
                else:
                    sent = self.sock.send(outbox[0])
                while sent:
                    head = outbox[0]
                    if sent >= len(head):
                        sent -= len(head)
                        outbox.popleft()
                    else:
                        outbox[0] = head[sent:]
                        sent = 0
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EPIPE, ECONNRESET
            raise EOFError(str(exc)) from exc

    def receive(self) -> tuple[list[bytearray], bool]:
        """The complete frames that have arrived, and whether the worker's end is closed.

        Frames that arrived before the end was closed are returned with ``True``, so a
        worker's last words (``Retiring``) are never lost to its EOF.
        """
        frames: list[bytearray] = []  # handed over, not copied: pickle.loads reads them as-is
        sock = self.sock
        # Set by a short read, which took all the socket had: asking again would cost a
        # system call only to hear EAGAIN (on the scheduler thread, any system call can
        # wait out a GIL switch interval while a user thread submits); the poll says when
        # more has come.
        drained = False
        while True:
            if self._body_view is not None:
                if drained:
                    return frames, False
                try:
                    n = sock.recv_into(self._body_view[self._filled :])
                except (BlockingIOError, InterruptedError):
                    return frames, False
                except OSError:
                    return frames, True
                if n == 0:
                    return frames, True
                drained = n < len(self._body_view) - self._filled
                self._filled += n
                if self._filled == len(self._body_view):
                    assert self._body is not None
                    frames.append(self._body)
                    self._body = self._body_view = None
                continue
            buf = self._buffer
            # Parse complete frames out of the small-read buffer first.
            while len(buf) >= HEADER.size:
                (length,) = HEADER.unpack_from(buf)
                end = HEADER.size + length
                if len(buf) >= end:
                    frames.append(buf[HEADER.size : end])
                    del buf[:end]
                    continue
                if length > _RECV_SIZE:
                    # A large frame: read it straight into its own buffer.
                    body = bytearray(length)
                    have = len(buf) - HEADER.size
                    body[:have] = buf[HEADER.size :]
                    del buf[:]
                    self._body, self._body_view, self._filled = body, memoryview(body), have
                break
            if self._body_view is not None:
                continue
            if drained:
                return frames, False
            try:
                chunk = sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return frames, False
            except OSError:
                return frames, True
            if not chunk:
                return frames, True
            buf += chunk
            drained = len(chunk) < _RECV_SIZE

    def close(self) -> None:
        self._outbox.clear()
        self.sock.close()


class WorkerChannel:
    """The worker's blocking end of its socket."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock

    def send(self, payload: bytes) -> None:
        """Raises EOFError when the owner is gone."""
        try:
            if len(payload) < 65536:
                self.sock.sendall(HEADER.pack(len(payload)) + payload)
            else:
                self.sock.sendall(HEADER.pack(len(payload)))
                self.sock.sendall(payload)
        except OSError as exc:
            raise EOFError(str(exc)) from exc

    def recv(self) -> bytearray:
        """The next frame. Raises EOFError when the owner is gone."""
        header = self._exactly(HEADER.size)
        (length,) = HEADER.unpack(header)
        return self._exactly(length)

    def _exactly(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                k = self.sock.recv_into(view[got:])
            except InterruptedError:
                continue
            except OSError as exc:
                raise EOFError(str(exc)) from exc
            if k == 0:
                raise EOFError("owner closed the socket")
            got += k
        return buf
