"""Pipe and Connection: the stdlib's API and wire format, and no recv that blocks on a dead peer.

What it guarantees:

* **The stdlib's behaviour**: ``send``/``recv``, ``send_bytes``/``recv_bytes(maxlength)``/
  ``recv_bytes_into`` (``BufferTooShort`` carrying the whole message), ``poll(timeout)``,
  ``EOFError`` once the other end is closed, ``close``/``closed``/``fileno``/``readable``/
  ``writable``, a context manager. The bytes on the wire are the stdlib's (a 4-byte big-endian
  length, or -1 and an 8-byte length for messages over 2 GiB), so a manycore end can talk to
  a ``multiprocessing.connection.Connection`` on the same descriptor.
* **A dead peer is an EOF, even when this process still holds the peer's end.** The classic
  trap: ``a, b = Pipe(); Process(target=f, args=(b,)).start(); a.recv()`` blocks forever if
  the child dies without sending, because the parent's copy of ``b`` keeps the pipe open.
  ``manycore.Process`` calls ``b._manycore_handed_to(process)`` after the start; from then on
  the parent's copy of ``b`` counts as given away, and ``a.recv()``/``a.poll()``/``wait([a])``
  wait on the descriptor *and* on the sentinels of the processes ``b`` was handed to: when
  they have all exited and nothing is left to read, ``recv`` raises ``EOFError``. Data the
  child sent before it died is still delivered first. The parent's copy stays its own if
  the parent sends or receives on it itself (a process that writes into the pipe it also
  hands out, as CPython's test_recursion does), and the holders' exit is an EOF only if no
  other process holds the end either (a grandchild the holder handed it to): that is
  checked in ``/proc`` once, when the holders have all exited.
* **Throughput**: every pipe is a Unix socketpair (one-way pipes too, where the stdlib makes
  an OS pipe), with kernel buffers raised to 1 MiB where the system allows (fewer context
  switches for big messages); a message is written with one system call when it is small and
  without concatenation when it is big, and a big one is read straight into its final buffer
  (the caller's, for ``recv_bytes_into``).
* **Big buffers do not go through the socket**: ``send`` of an object whose NumPy arrays,
  ``bytearray``/``memoryview`` objects and big ``bytes`` add up to ``shm_threshold()`` bytes
  or more copies them once into a memfd whose descriptor travels with the message, and
  ``recv`` builds the arrays on that memory (``_memfd`` explains the format, the reuse and
  the lifetime). Such a message reads as the stdlib's only for a manycore end;
  ``send_bytes`` never uses it.

``Listener``/``Client`` are the stdlib's: the connections they make are the stdlib's, and
``wait`` here (or the stdlib's) takes them beside manycore's.

Objects are pickled with ``pickle`` (protocol 5), or ``manycore._serialize``'s cloudpickle
for functions and classes from ``__main__``, lambdas and closures. What the stdlib pickles
with reducers of its own (``multiprocessing.reduction.register``: a stdlib ``Connection``
from ``Listener``/``Client``, a socket, and the types a program registered) is pickled with
those reducers, as the stdlib's ``send`` does (``_reducers``).
"""

from __future__ import annotations

import array
import fcntl
import os
import pickle
import select
import socket
import stat
import struct
import weakref
from multiprocessing import BufferTooShort
from multiprocessing import reduction as _reduction
from multiprocessing.connection import Client as Client  # stdlib's: their ends work with wait()
from multiprocessing.connection import Listener as Listener
from typing import Any, Iterable, List, Optional, Union

from . import _buffers, _memfd, _reuse
from ._buffers import BigBuffer, has_big_bytes, inband_unless_big, split_buffers
from ._reducers import needs_reducers, reducing_dumps, reducing_pickler
from ._serialize import dumps

__all__ = ["BufferTooShort", "Client", "Connection", "Listener", "Pipe", "wait"]

BUFFER_BYTES = 1 << 20  # kernel buffer asked for each pipe and socket (capped by the system)
SMALL = 16 << 10  # up to this, header and payload go out in one write
_HEADER = struct.Struct("!i")
_BIG_HEADER = struct.Struct("!Q")
_MAIN = b"__main__"
_pdumps = pickle.dumps


class Connection:
    """One end of a ``Pipe``: a file descriptor with the ``multiprocessing`` message API.

    Picklable for Process arguments (any start method), queues and pool tasks, as the
    stdlib's is: the descriptor is duplicated into the receiving process. One thread at a
    time may send on it (and one receive), as with the stdlib's.
    """

    def __init__(
        self, fd: int, readable: bool = True, writable: bool = True, side: int = -1
    ) -> None:
        if not readable and not writable:
            raise ValueError("a connection must be readable, writable or both")
        if fd.__index__() < 0:
            raise ValueError(f"invalid handle {fd}: a connection needs an open file descriptor")
        self._fd = fd
        # A one-way pipe's data travel on an OS pipe (``fd``); the memfd of a big message
        # cannot, so it goes ahead on ``side``, a socket beside it (-1: none; see ``Pipe``).
        self._side = side
        self._readable = readable
        self._writable = writable
        # Processes this end was handed to, and those the other end was handed to (a list
        # shared with the other end's object, in the process that made the pipe).
        self._holders: _Holders = _Holders(self)
        self._peer_holders: _Holders = _Holders(None)
        self._scratch = bytearray()
        self._socket: Optional[bool] = None  # whether fd is a socket (memfds can travel)
        self._outbox: Optional[_memfd.Outbox] = None
        self._inbox: Optional[_memfd.Inbox] = None

    # --- state ---

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._fd < 0

    @property
    def readable(self) -> bool:
        return self._readable

    @property
    def writable(self) -> bool:
        return self._writable

    def fileno(self) -> int:
        """The file descriptor.

        Raises:
            OSError: the connection is closed.
        """
        self._check_open()
        return self._fd

    def close(self) -> None:
        """Close this end; the other end sees EOF once every copy of this one is closed."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        if self._side >= 0:
            side, self._side = self._side, -1
            os.close(side)
        outbox, inbox, self._outbox, self._inbox = self._outbox, self._inbox, None, None
        if outbox is not None:
            outbox.close()
        if inbox is not None:
            inbox.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        mode = ("r" if self._readable else "") + ("w" if self._writable else "")
        return f"<manycore.Connection {state} {mode}>"

    def _check_open(self) -> None:
        if self._fd < 0:
            raise OSError("handle is closed")

    def _check_readable(self) -> None:
        self._check_open()
        self._holders.used_here = True
        if not self._readable:
            raise OSError("connection is write-only")

    def _check_writable(self) -> None:
        self._check_open()
        self._holders.used_here = True
        if not self._writable:
            raise OSError("connection is read-only")

    # --- handing over to a process ---

    def _manycore_handed_to(self, process: Any) -> None:
        """Called by ``manycore.Process.start`` in the parent: this copy now counts as given
        away, so the other end reports EOF once ``process`` (and any other holder) exits."""
        self._holders.append(process)

    def __reduce__(self) -> tuple[Any, ...]:
        df = _reduction.DupFd(self.fileno())
        side = _reduction.DupFd(self._side) if self._side >= 0 else None
        return _rebuild, (df, self._readable, self._writable, side)

    def _peer_gone(self) -> bool:
        """Whether the other end was handed to processes that have all exited."""
        holders = self._peer_holders
        if not holders or holders.used_here or holders.escaped:
            return False
        for process in holders:
            try:
                # A readable sentinel is an exit, even a moment before waitpid() can see it.
                if process.exitcode is None and not _readable_now(process.sentinel):
                    return False
            except ValueError:  # the Process object was closed: it had exited
                continue
        peer = holders.end()
        if peer is None or peer._fd < 0:
            return False  # no copy here: the kernel's EOF is exact
        if _held_elsewhere(peer._fd):
            holders.escaped = True  # a holder passed it on: only the kernel can tell now
            return False
        return True

    def _peer_sentinels(self) -> list[int]:
        fds = []
        for process in self._peer_holders:
            try:
                fds.append(process.sentinel)
            except ValueError:
                pass
        return fds

    def _wait_readable(self, timeout: Optional[float]) -> int:
        """Wait until the descriptor is readable (1) or the peer's holders have all exited
        with nothing left to read (-1); 0 if ``timeout`` ran out first."""
        fd = self._fd
        if _readable_now(fd):  # data (or EOF) is there already: no need to ask about holders
            return 1
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        for sentinel in self._peer_sentinels():
            poller.register(sentinel, select.POLLIN)
        ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
        while True:
            events = poller.poll(ms)
            if any(ready == fd for ready, _ in events):
                return 1
            if self._peer_gone():
                # Anything it wrote before exiting is readable now; otherwise this is EOF.
                return 1 if _readable_now(fd) else -1
            if not events:
                return 0
            for ready, _ in events:  # one holder exited, others live on: stop watching it
                poller.unregister(ready)

    # --- sending ---

    def send_bytes(self, buf: Any, offset: int = 0, size: Optional[int] = None) -> None:
        """Send the bytes of ``buf[offset:offset + size]`` (any bytes-like object) as one message.

        Raises:
            ValueError: offset or size do not fit the buffer.
            OSError: the connection is closed or read-only.
        """
        self._check_writable()
        m = memoryview(buf)
        if m.itemsize > 1 or not m.c_contiguous or m.ndim != 1:
            m = m.cast("B")
        n = m.nbytes
        if offset < 0:
            raise ValueError("offset is negative")
        if n < offset:
            raise ValueError("buffer length < offset")
        if size is None:
            size = n - offset
        elif size < 0:
            raise ValueError("size is negative")
        elif offset + size > n:
            raise ValueError("buffer length < offset + size")
        self._send(m[offset : offset + size] if (offset or size != n) else m, size)

    def send(self, obj: Any) -> None:
        """Pickle ``obj`` and send it as one message.

        Raises:
            Exception: whatever pickling ``obj`` raises (nothing is sent then).
            OSError: the connection is closed or read-only.
        """
        self._check_writable()
        big = _looks_big(obj)
        if not big:
            try:
                data = _pdumps(obj, 5, buffer_callback=inband_unless_big)
            except BigBuffer:  # a big array inside a tuple, list, dict or object
                big = True
            except Exception:  # e.g. a memoryview, or what only cloudpickle can do
                big = True
            else:
                least = _buffers.shm_threshold()
                if least is not None and len(data) >= least and has_big_bytes(obj, least):
                    big = True  # big bytes inside: they can go out of band too
                elif data.find(_MAIN) < 0 and not needs_reducers(data):  # find: faster than in
                    self._send(data, len(data))
                    return
        if big:
            if self._send_memfd(obj):
                return
            pieces = _pickle_pieces(obj)
            if pieces is not None:
                self._send_pieces(pieces)
                return
        data = reducing_dumps(obj)
        self._send(data, len(data))

    def _send_memfd(self, obj: Any) -> bool:
        """Send ``obj`` with its big buffers in a memfd (see ``_memfd``); False when that
        does not apply (not a socket, shared memory off or out of room, nothing big)."""
        threshold = _buffers.shm_threshold()
        if threshold is None or not (self._side >= 0 or self._is_socket()):
            return False
        try:
            body, raws, persistent = split_buffers(obj, threshold)
        except Exception:
            return False
        if needs_reducers(body):
            return False
        if not raws:
            self._send(body, len(body))
            return True
        if self._outbox is None:
            self._outbox = _memfd.Outbox()
        spans, total = _buffers.layout(raws)
        try:
            memfd, kept = self._outbox.claim(_reuse.RESERVED + total)
        except OSError as exc:
            _buffers.shm_failed(exc)
            return False
        try:
            blob = _memfd.blob_for(memfd, kept, body, raws, spans, persistent)
            length = _BIG_HEADER.pack(len(blob))
            fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [memfd.fd]))]
            if self._side >= 0:
                # The descriptor goes first, on the side socket: by the time the reader
                # sees the message on the pipe, it is waiting there.
                _send_fds(self._side, [b"M"], fds)
                self._write_all(memoryview(_HEADER.pack(_memfd.FD_MESSAGE) + length))
                self._write_all(memoryview(blob))
                return True
            self._write_all(memoryview(_HEADER.pack(_memfd.FD_MESSAGE)))
            sent = _send_fds(self._fd, [length, blob], fds)
            if sent < len(length) + len(blob):  # the descriptor went with the first byte
                self._write_all(memoryview(length + blob)[sent:])
        except BaseException:
            if kept:
                memfd.state[0] = _reuse.FREE
            raise
        finally:
            if not kept:
                memfd.close()  # the message holds the memory now
        return True

    def _is_socket(self) -> bool:
        """Whether ``fd`` itself can carry a descriptor."""
        if self._socket is None:
            self._socket = stat.S_ISSOCK(os.fstat(self._fd).st_mode)
        return self._socket

    def _send_pieces(self, pieces: list[memoryview]) -> None:
        n = sum(p.nbytes for p in pieces)
        header = _HEADER.pack(n) if n <= 0x7FFFFFFF else _HEADER.pack(-1) + _BIG_HEADER.pack(n)
        for view in [memoryview(header), *pieces]:
            self._write_all(view)

    def _send(self, data: Any, n: int) -> None:
        fd = self._fd
        if n <= SMALL:
            message = _HEADER.pack(n) + data
            written = os.write(fd, message)
            if written != len(message):
                self._write_all(memoryview(message)[written:])
            return
        header = _HEADER.pack(n) if n <= 0x7FFFFFFF else _HEADER.pack(-1) + _BIG_HEADER.pack(n)
        written = os.writev(fd, [header, data])
        if written != len(header) + n:
            rest = memoryview(header + b"") if written < len(header) else None
            if rest is not None:
                self._write_all(rest[written:])
                written = len(header)
            self._write_all(memoryview(data).cast("B")[written - len(header) :])

    def _write_all(self, view: memoryview) -> None:
        while view.nbytes:
            view = view[os.write(self._fd, view) :]

    # --- receiving ---

    def _read_exact_into(self, view: memoryview, at_start: bool) -> None:
        """Fill ``view`` from the descriptor, or raise EOFError / OSError at EOF."""
        fd = self._fd
        watch = bool(self._peer_holders)
        pos, n = 0, view.nbytes
        while pos < n:
            if watch and self._wait_readable(None) < 0:
                raise self._eof(at_start and pos == 0)
            got = os.readv(fd, [view[pos:]])
            if got == 0:
                raise self._eof(at_start and pos == 0)
            pos += got

    @staticmethod
    def _eof(clean: bool) -> Exception:
        return EOFError() if clean else OSError("got end of file during message")

    def _read_length(self) -> int:
        fd = self._fd
        if self._peer_holders:
            head = bytearray(4)
            self._read_exact_into(memoryview(head), True)
        else:
            head = os.read(fd, 4)  # type: ignore[assignment]
            if len(head) != 4:
                if not head:
                    raise EOFError
                rest = bytearray(4 - len(head))
                self._read_exact_into(memoryview(rest), False)
                head = head + rest
        (size,) = _HEADER.unpack(head)
        if size == -1:
            big = bytearray(8)
            self._read_exact_into(memoryview(big), False)
            (size,) = _BIG_HEADER.unpack(big)
        return int(size)

    def _read_payload(
        self, size: int, scratch: bool = False
    ) -> Union[bytes, bytearray, memoryview]:
        """The next ``size`` bytes. With ``scratch``, a big payload may come back as a view of
        this connection's reusable buffer, valid until the next receive: a fresh 1 MiB buffer
        per message costs more in page faults than the copy itself."""
        if scratch and size > SMALL:
            if len(self._scratch) < size:
                self._scratch = bytearray(size)
            view = memoryview(self._scratch)[:size]
            self._read_exact_into(view, False)
            return view
        if not self._peer_holders and size <= SMALL:
            data = os.read(self._fd, size)
            if len(data) == size:
                return data
            buf = bytearray(size)
            buf[: len(data)] = data
            if data:
                self._read_exact_into(memoryview(buf)[len(data) :], False)
                return buf
        else:
            buf = bytearray(size)
        self._read_exact_into(memoryview(buf), False)
        return buf

    def recv_bytes(self, maxlength: Optional[int] = None) -> bytes:
        """Receive one message's bytes.

        Raises:
            EOFError: the other end is closed (or its holders exited) and nothing is left.
            OSError: the message is longer than ``maxlength`` (this end is then closed,
                as the stdlib does), or the connection is closed or write-only.
        """
        self._check_readable()
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        size = self._read_length()
        if size == _memfd.FD_MESSAGE:  # sent with send(): its pickle, as the stdlib gives
            data = dumps(self._recv_memfd())
            size = len(data)
        else:
            data = b""
        if maxlength is not None and size > maxlength:
            self.close()
            raise OSError("bad message length")
        if size == 0 or data:
            return data
        payload = self._read_payload(size)
        return payload if type(payload) is bytes else bytes(payload)

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:
        """Receive one message into ``buf`` at byte ``offset``; return its length in bytes.

        Raises:
            BufferTooShort: the message does not fit; ``exc.args[0]`` holds all of it.
            EOFError, OSError: as ``recv_bytes``.
        """
        self._check_readable()
        with memoryview(buf) as m:
            itemsize = m.itemsize
            bytesize = itemsize * len(m)
            if offset < 0:
                raise ValueError("negative offset")
            if offset > bytesize:
                raise ValueError("offset too large")
            size = self._read_length()
            if size == _memfd.FD_MESSAGE:  # sent with send(): its pickle, as the stdlib gives
                pickled = dumps(self._recv_memfd())
                size = len(pickled)
                if bytesize < offset + size:
                    raise BufferTooShort(pickled)
                m.cast("B")[offset : offset + size] = pickled
                return size
            if bytesize < offset + size:
                data = self._read_payload(size) if size else b""
                raise BufferTooShort(bytes(data))
            if size:
                flat = m.cast("B") if (itemsize != 1 or m.format != "B") else m
                self._read_exact_into(flat[offset : offset + size], False)
            return size

    def recv(self) -> Any:
        """Receive one pickled object.

        Raises:
            EOFError: the other end is closed (or its holders exited) and nothing is left.
        """
        self._check_readable()
        size = self._read_length()
        if size == _memfd.FD_MESSAGE:
            return self._recv_memfd()
        return pickle.loads(self._read_payload(size, scratch=True))

    def _recv_memfd(self) -> Any:
        """After the length word FD_MESSAGE: the object, built on the memfd sent with it."""
        if self._peer_holders and self._wait_readable(None) < 0:
            raise self._eof(False)
        if self._side >= 0:  # the descriptor came ahead on the side socket
            _, ancillary, flags, _ = _recv_fds(self._side, 1)
            fds = _memfd.parse_fds(ancillary)
            head = b""
        else:
            head, ancillary, flags, _ = _recv_fds(self._fd, 8)
            fds = _memfd.parse_fds(ancillary)
        try:
            if not head and self._side < 0:
                raise self._eof(False)
            if len(head) < 8:
                rest = bytearray(8 - len(head))
                self._read_exact_into(memoryview(rest), False)
                head += rest
            (size,) = _BIG_HEADER.unpack(head)
            blob = self._read_payload(size, scratch=True)  # read even if refused: in step
            if len(fds) != 1 or flags & socket.MSG_CTRUNC:
                raise OSError(
                    "a big message arrived without its shared-memory descriptor (it was "
                    "dropped: this process may be out of descriptors, see ulimit -n; or the "
                    "sender is not a manycore end); the message is lost"
                )
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        if self._inbox is None:
            self._inbox = _memfd.Inbox()
        return self._inbox.rebuild(blob, fds[0])

    def poll(self, timeout: Optional[float] = 0.0) -> bool:
        """Whether ``recv`` would return (or raise EOFError) without blocking, waiting up to
        ``timeout`` seconds (``None``: for ever)."""
        self._check_readable()
        if self._peer_holders:
            return self._wait_readable(timeout) != 0
        return _readable_now(self._fd, timeout)


class _Holders(List[Any]):
    """The processes an end was handed to, shared with the other end's object (``Pipe``)."""

    def __init__(self, end: Optional[Connection]) -> None:
        super().__init__()
        self.end = weakref.ref(end) if end is not None else lambda: None
        self.used_here = False  # this process sent or received on the end itself
        self.escaped = False  # some process other than the holders has it too


def _held_elsewhere(fd: int) -> bool:
    """Whether a process other than this one holds the socket ``fd`` is, by ``/proc``."""
    try:
        target = f"socket:[{os.fstat(fd).st_ino}]"
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return True  # cannot tell: do as the stdlib does and wait for the kernel's EOF
    me = str(os.getpid())
    for pid in pids:
        if pid == me:
            continue
        base = f"/proc/{pid}/fd/"
        try:
            fds = os.listdir(base)
        except OSError:  # gone, or another user's
            continue
        for name in fds:
            try:
                if os.readlink(base + name) == target:
                    return True
            except OSError:
                continue
    return False


def _looks_big(obj: Any) -> bool:
    """Whether ``obj`` is a big buffer worth pickling without an extra copy."""
    t = type(obj)
    if t is bytes or t is bytearray:
        return len(obj) > SMALL
    nbytes = getattr(obj, "nbytes", None) if t.__module__ == "numpy" else None
    return isinstance(nbytes, int) and nbytes > SMALL


class _Pieces(list):  # type: ignore[type-arg]
    """A file for the C pickler: keeps what it writes, big payloads by reference."""

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1 or not view.c_contiguous:
            view = view.cast("B")
        self.append(view)
        return view.nbytes


def _pickle_pieces(obj: Any) -> Optional[list[memoryview]]:
    """``obj`` pickled (protocol 5, in band) as pieces that borrow its big buffers, or None
    if it needs cloudpickle. The pieces read the same as ``pickle.dumps(obj, 5)``."""
    pieces = _Pieces()
    try:
        reducing_pickler()(pieces, 5).dump(obj)
    except Exception:
        return None
    return pieces


def _send_fds(fd: int, buffers: list[Any], ancillary: list[Any]) -> int:
    """``sendmsg`` on the socket ``fd`` (not ours to close); the bytes sent."""
    sock = socket.socket(fileno=fd)
    try:
        return sock.sendmsg(buffers, ancillary)
    finally:
        sock.detach()


def _recv_fds(fd: int, size: int) -> tuple[bytes, list[Any], int, Any]:
    """``recvmsg`` of up to ``size`` bytes and one descriptor on the socket ``fd``."""
    sock = socket.socket(fileno=fd)
    try:
        return sock.recvmsg(size, socket.CMSG_SPACE(16))
    finally:
        sock.detach()


def _readable_now(fd: int, timeout: Optional[float] = 0.0) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return bool(poller.poll(ms))


def _rebuild(df: Any, readable: bool, writable: bool, side: Any = None) -> Connection:
    return Connection(df.detach(), readable, writable, side.detach() if side is not None else -1)


def _grow(s: socket.socket) -> None:
    """Ask for bigger kernel buffers; the system may cap or refuse them (that's fine)."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
    except OSError:
        pass


def _grow_pipe(fd: int) -> None:
    """Ask for a bigger OS pipe buffer (Linux; capped by /proc/sys/fs/pipe-max-size)."""
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), BUFFER_BYTES)
    except OSError:
        pass


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """A pair of connected ends, as ``multiprocessing.Pipe``.

    With ``duplex=False`` the first end only receives and the second only sends.
    """
    # A duplex pipe is a Unix socketpair, as the stdlib's: a big message's memfd travels
    # with it (see _memfd). A one-way pipe is an OS pipe, as the stdlib's (reading one costs
    # about half what reading a socket does: issue 16 measured a one-way stream at 0.4x the
    # stdlib's when it was a socketpair), with a socketpair beside it that carries only the
    # memfds of big messages, each ahead of its message.
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if duplex:
        for s in (s1, s2):
            _grow(s)
        c1, c2 = Connection(s1.detach()), Connection(s2.detach())
    else:
        s1.shutdown(socket.SHUT_WR)
        s2.shutdown(socket.SHUT_RD)
        r, w = os.pipe()
        _grow_pipe(w)
        c1 = Connection(r, writable=False, side=s1.detach())
        c2 = Connection(w, readable=False, side=s2.detach())
    c1._peer_holders, c2._peer_holders = c2._holders, c1._holders
    return c1, c2


def wait(object_list: Iterable[Any], timeout: Optional[float] = None) -> list[Any]:
    """``multiprocessing.connection.wait``, aware of handed-over ends.

    Returns the objects of ``object_list`` (connections, sockets, sentinels: anything with a
    ``fileno()``, or an int) that are ready, after up to ``timeout`` seconds. A manycore
    ``Connection`` whose other end's holders have all exited counts as ready, so ``recv`` on
    it raises EOFError at once.
    """
    objects = list(object_list)
    poller = select.poll()
    owners: dict[int, list[Any]] = {}
    watched: list[Connection] = []
    for obj in objects:
        fd = obj if isinstance(obj, int) else obj.fileno()
        owners.setdefault(fd, []).append(obj)
        poller.register(fd, select.POLLIN)
        if isinstance(obj, Connection) and obj._peer_holders:
            watched.append(obj)
            for sentinel in obj._peer_sentinels():
                poller.register(sentinel, select.POLLIN)
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    while True:
        ready_fds = {fd for fd, _ in poller.poll(ms)}
        ready = [obj for fd in ready_fds for obj in owners.get(fd, [])]
        ready += [c for c in watched if c._peer_gone() and c not in ready]
        if ready or not ready_fds:
            return [obj for obj in objects if any(obj is r for r in ready)]
        for fd in ready_fds:  # only sentinels of holders that are not all gone yet
            if fd not in owners:
                poller.unregister(fd)
