"""What workers print and log reaches the caller.

Who runs where::

    owner, pool creation        worker, after WorkerConfig      owner, scheduler thread
    --------------------        --------------------------      -----------------------
    worker_settings():          install_worker(): sys.stdout    deliver(): an Output's text
    forward stdout/stderr?  ──► and sys.stderr become       ──► goes to the *current*
    the root's level and the    _ForwardStream (a line is one   sys.stdout / sys.stderr; a
    levels set on loggers       Output frame; the rest goes     Log is re-emitted through
    (WorkerConfig.output)       before the next frame); the     logging.getLogger(name)
                                root's handlers become one          .handle(record)
                                that sends each record (Log)

    owner, Process.start()      Process child
    ----------------------      -------------
    ProcessOutput: a pipe per   redirect_child(): the pipe becomes descriptor 1 (2), and
    forwarded stream, and a     sys.stdout (sys.stderr) a line-buffered UTF-8 writer on it,
    reader thread that writes   so print(), C code and the child's subprocesses all write
    to the current sys.stdout   there
    / sys.stderr until join()

When stdout/stderr are forwarded (``MANYCORE_WORKER_OUTPUT``, read at pool creation and at
``Process.start()``):

* ``auto`` (the default): a stream is forwarded when the caller's ``sys.stdout`` (``sys.stderr``)
  is not a plain ``io.TextIOWrapper`` on descriptor 1 (2): Jupyter's kernel streams, an IDE's
  console, ``contextlib.redirect_stdout``, pytest's capture. In a plain terminal, children
  inherit descriptors 1 and 2 and write there directly, which costs nothing.
* ``forward``: always forwarded; ``inherit``: never (children write to descriptors 1 and 2).

Log records are always forwarded: the parent's handlers format and route them, whatever the
start method. A worker's loggers get the caller's levels (the root's and every level set
explicitly), so what the caller would log, the workers log too, and nothing else is sent.

Guarantees:

* A task's output reaches the caller before the task's result (the worker flushes what is
  buffered before it sends each frame, and the scheduler handles frames in order).
* Output written by other threads of a worker is never interleaved inside a frame and never
  lost while the worker lives; a child that a task forks writes to the worker's descriptors
  instead of the worker's socket.
* Delivery never raises on the scheduler thread: a stream that fails to write loses that text.
* Records keep their level, logger name, message, time, thread and traceback text; the
  worker's identity is in ``record.process`` (its pid), ``record.processName``
  (``manycore-worker-<index>``) and ``record.worker`` (its index).
* A worker that prints nothing pays one attribute test per frame it sends.

Gaps: in a pool worker only Python-level writes to ``sys.stdout``/``sys.stderr`` are forwarded;
output of C code and subprocesses goes to the inherited descriptors.
"""

from __future__ import annotations

import codecs
import io
import os
import select
import sys
import threading
import warnings
from typing import Any, Callable, NamedTuple, Optional

from ._fds import close_internal, internal_fd, start_helper_thread

__all__ = [
    "ENV_VAR",
    "MESSAGES",
    "Log",
    "Output",
    "ProcessOutput",
    "Settings",
    "deliver",
    "install_worker",
    "redirect_child",
    "use_descriptors",
    "worker_settings",
]

ENV_VAR = "MANYCORE_WORKER_OUTPUT"
MODES = ("auto", "forward", "inherit")
# Buffered text without a newline is sent anyway past this size (a long line, a progress
# bar redrawn with "\r"): memory stays bounded and the caller sees it.
SEND_AT = 8192
STDOUT, STDERR = 1, 2


# ---------------------------------------------------------------- messages


class Settings(NamedTuple):
    """What a worker installs (``WorkerConfig.output``)."""

    stdout: bool  # forward writes to sys.stdout
    stderr: bool  # forward writes to sys.stderr
    root_level: int
    levels: tuple[tuple[str, int], ...]  # loggers whose level the caller set explicitly
    disable: int  # logging.disable() level in the caller


class Output(NamedTuple):
    """Text a worker wrote to sys.stdout (``stream`` 1) or sys.stderr (2)."""

    stream: int
    text: str


class Log(NamedTuple):
    """A log record from a worker: its attributes, made picklable."""

    attrs: dict[str, Any]


MESSAGES = (Output, Log)


# ---------------------------------------------------------------- the owner's side


def _mode() -> str:
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value not in MODES:
        warnings.warn(
            f"{ENV_VAR}={value!r} is not one of {', '.join(MODES)}; using 'auto'. Set it to "
            "'forward' to always send workers' print() output through the pool, or 'inherit' "
            "to let workers write to this process's descriptors 1 and 2.",
            RuntimeWarning,
            stacklevel=3,
        )
        value = "auto"
    return value


def _is_plain(stream: Any, fd: int) -> bool:
    """Whether ``stream`` writes straight to descriptor ``fd`` (a child that inherits the
    descriptor writes to the same place)."""
    if type(stream) is not io.TextIOWrapper:
        return False
    try:
        return bool(stream.fileno() == fd)
    except (OSError, ValueError):
        return False


def forwarded_streams() -> tuple[bool, bool]:
    """Whether children's stdout and stderr should come through manycore, now."""
    mode = _mode()
    if mode == "inherit":
        return False, False
    out, err = sys.stdout, sys.stderr
    if mode == "forward":
        return out is not None, err is not None
    return (
        out is not None and not _is_plain(out, STDOUT),
        err is not None and not _is_plain(err, STDERR),
    )


def worker_settings() -> Settings:
    """The caller's side of output forwarding, taken at pool creation (caller's thread).

    Raises nothing: an invalid ``MANYCORE_WORKER_OUTPUT`` warns and counts as ``auto``.
    """
    import logging  # loaded in the caller already (by concurrent.futures)

    out, err = forwarded_streams()
    root = logging.getLogger()
    levels = []
    for name, logger in list(root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels.append((name, logger.level))
    return Settings(out, err, root.level, tuple(levels), root.manager.disable)


def deliver(message: Any, worker_index: int, worker_pid: int) -> None:
    """Write a worker's text to the current sys.stdout/sys.stderr, or re-emit its log record
    in this process. Runs on the scheduler thread; never raises."""
    try:
        _follow_the_running_cell()
        if type(message) is Output:
            stream = sys.stdout if message.stream == STDOUT else sys.stderr
            if stream is not None:
                stream.write(message.text)
        elif type(message) is Log:
            import logging

            record = logging.makeLogRecord(message.attrs)
            record.process = worker_pid
            record.processName = f"manycore-worker-{worker_index}"
            record.worker = worker_index
            logging.getLogger(record.name).handle(record)
    except Exception:
        pass  # a closed or failing stream: the text is lost, the pool goes on


def _follow_the_running_cell() -> None:
    """In Jupyter, let this thread's text go to the cell that runs now.

    ipykernel 6.29 up to 7 (the newest kernels for Python 3.9) ties each thread to the cell
    that started it: a pool made in one cell and used in a later one would send its
    workers' text to the finished cell, where nobody sees it. ipykernel has no public way out
    (ipython/ipykernel#1289; 7.0 dropped the tie), so drop this thread's entry from the
    stream's maps, as ipyparallel does for its own I/O thread. A no-op elsewhere.
    """
    ident = threading.get_ident()
    for stream in (sys.stdout, sys.stderr):
        for name in ("_thread_to_parent_header", "_thread_to_parent"):
            tied = getattr(stream, name, None)
            if type(tied) is dict and ident in tied:
                tied.pop(ident, None)


# ---------------------------------------------------------------- the worker's side


def install_worker(
    send: Callable[[Any], None], settings: Optional[Settings]
) -> Optional[Callable[[], None]]:
    """Forward this worker's log records, and its stdout/stderr if ``settings`` say so.

    ``send`` writes one message to the owner (thread-safe). Returns the callable to run
    before each frame the worker sends (it sends what output is buffered), or None when no
    stream is forwarded.
    """
    if settings is None:
        return None
    pid = os.getpid()
    _forward_logging(send, settings, pid)
    streams: list[_ForwardStream] = []
    if settings.stdout:
        sys.stdout = _ForwardStream(send, STDOUT, pid)
        streams.append(sys.stdout)
    else:
        use_descriptors(STDOUT)
    if settings.stderr:
        sys.stderr = _ForwardStream(send, STDERR, pid)
        streams.append(sys.stderr)
    else:
        use_descriptors(STDERR)
    if not streams:
        return None
    if len(streams) == 1:
        (only,) = streams

        def flush_one() -> None:
            if only._parts:
                only.flush()

        return flush_one
    first, second = streams

    def flush_both() -> None:
        if first._parts:
            first.flush()
        if second._parts:
            second.flush()

    return flush_both


def use_descriptors(*fds: int) -> None:
    """In a child whose stream is not forwarded: make sys.stdout (1) / sys.stderr (2) write
    to the descriptor, as "inherit" promises. Only a forked child needs it: it holds a copy
    of the caller's stream object (a redirect's StringIO, a kernel's stream), where text
    would be lost."""
    for fd in fds:
        current = sys.stdout if fd == STDOUT else sys.stderr
        if current is None or _is_plain(current, fd):
            continue
        original = sys.__stdout__ if fd == STDOUT else sys.__stderr__
        if not _is_plain(original, fd):
            try:
                original = _line_writer(fd)
            except OSError:  # no such descriptor: leave the stream alone
                continue
        if fd == STDOUT:
            sys.stdout = original
        else:
            sys.stderr = original


def _line_writer(fd: int) -> io.TextIOWrapper:
    return io.TextIOWrapper(
        io.FileIO(fd, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
    )


class _ForwardStream(io.TextIOBase):
    """sys.stdout/sys.stderr of a worker: text goes to the owner as ``Output`` frames.

    A frame leaves at each write that ends a line (or redraws one with "\\r"), past
    ``SEND_AT`` buffered characters, at ``flush()``, and before every frame the worker sends.
    In a process forked from the worker (a task that forks), writes go to the descriptor
    instead: the worker's socket is not that process's to write.
    """

    def __init__(self, send: Callable[[Any], None], fd: int, pid: int) -> None:
        super().__init__()
        self._send = send
        self._fd = fd
        self._pid = pid
        self._parts: list[str] = []
        self._size = 0
        self._lock = threading.Lock()
        self._fallback: Optional[io.TextIOWrapper] = None
        self._name = "<stdout>" if fd == STDOUT else "<stderr>"
        self._buffer: Optional[_BinaryForward] = None

    # -- what code expects of sys.stdout

    @property
    def name(self) -> str:
        return self._name

    encoding = "utf-8"
    errors = "backslashreplace"

    @property
    def line_buffering(self) -> bool:
        return True

    @property
    def buffer(self) -> _BinaryForward:
        """Bytes written here are decoded as UTF-8 and forwarded like text."""
        if self._buffer is None:
            self._buffer = _BinaryForward(self)
        return self._buffer

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # faulthandler and subprocess(stdout=sys.stdout) need a descriptor: the inherited one.
        return self._fd

    # -- writing

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if os.getpid() != self._pid:
            return self._fallback_stream().write(s)
        with self._lock:
            self._parts.append(s)
            self._size += len(s)
            if "\n" in s or "\r" in s or self._size >= SEND_AT:
                self._send_locked()
        return len(s)

    def flush(self) -> None:
        if os.getpid() != self._pid:
            if self._fallback is not None:
                self._fallback.flush()
            return
        with self._lock:
            if self._parts:
                self._send_locked()

    def _send_locked(self) -> None:
        text = "".join(self._parts)
        self._parts = []
        self._size = 0
        try:
            self._send(Output(self._fd, text))
        except Exception:
            # The owner is gone (its socket closed): the worker is about to exit anyway,
            # so the text goes where it would have gone without forwarding.
            try:
                self._fallback_stream().write(text)
            except Exception:
                pass

    def _fallback_stream(self) -> io.TextIOWrapper:
        if self._fallback is None:
            self._fallback = _line_writer(self._fd)
        return self._fallback


class _BinaryForward(io.RawIOBase):
    """``sys.stdout.buffer`` of a worker: bytes decoded as UTF-8 (split characters kept)."""

    def __init__(self, text: _ForwardStream) -> None:
        super().__init__()
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        text = self._decoder.decode(data)
        if text:
            self._text.write(text)
        return len(data)

    def flush(self) -> None:
        self._text.flush()


class _AfterImport:
    """A finder on ``sys.meta_path`` that runs ``then()`` once the module ``name`` has been
    imported, inside that import: before the importer's next line can use it. It finds
    nothing itself; it asks the finders after it and wraps the loader they give."""

    def __init__(self, name: str, then: Callable[[], None]) -> None:
        self.name = name
        self.then = then

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        try:
            sys.meta_path.remove(self)  # once, whatever follows
        except ValueError:
            pass
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec  # not a loader we can wrap (the stdlib's logging always is)
        then = self.then

        class Loader:
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: Any) -> None:
                loader.exec_module(module)
                module.__loader__ = module.__spec__.loader = loader  # as if never wrapped
                try:
                    then()
                except Exception:  # never fail the user's import: records stay local
                    pass

        spec.loader = Loader()
        return spec


def _forward_logging(send: Callable[[Any], None], settings: Settings, pid: int) -> None:
    """Forward the worker's log records (``_logforward``), now if ``logging`` is loaded (a
    forked worker), else as soon as something imports it: a spawned worker does not import
    ``logging`` (with ``traceback``, a quarter of its start, issue 16) unless its tasks do."""

    def install() -> None:
        from ._logforward import install

        install(lambda attrs: send(Log(attrs)), settings, pid)

    if "logging" in sys.modules:
        install()
    else:
        sys.meta_path.insert(0, _AfterImport("logging", install))


# ---------------------------------------------------------------- Process children


class ProcessOutput:
    """The parent's side of one ``Process`` child's forwarded stdout/stderr.

    ``create()`` makes one pipe per stream to forward (None if none is); the child gets the
    write ends (``write_fds``) and makes them its descriptors 1/2 (``redirect_child``);
    ``started()`` closes the parent's copies and starts a reader thread that writes what comes
    to the parent's current sys.stdout/sys.stderr; ``finish()``, once the child has exited,
    lets the reader take what is left and joins it, so no thread or descriptor outlives
    ``join()`` (even when a grandchild still holds the pipe). The reader owns and closes every
    descriptor once started; a lock keeps ``finish()`` from writing to a closed one.
    """

    def __init__(self, streams: list[int]) -> None:
        self._pid = os.getpid()
        self._pipes: dict[int, tuple[int, int]] = {}  # stream -> (read end, write end)
        self._stop_r = self._stop_w = -1
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._closed = False
        try:
            for stream in streams:
                self._pipes[stream] = os.pipe()
            self._stop_r, self._stop_w = os.pipe()
        except BaseException:
            self.abandon()
            raise
        for fd in self.parent_fds:  # no forked child (this one included) keeps them
            internal_fd(fd)

    @classmethod
    def create(cls) -> Optional[ProcessOutput]:
        """Pipes for the streams to forward now, or None when none is."""
        out, err = forwarded_streams()
        streams = [s for s, wanted in ((STDOUT, out), (STDERR, err)) if wanted]
        return cls(streams) if streams else None

    @property
    def parent_fds(self) -> list[int]:
        """Descriptors only the parent needs (a fork child closes them)."""
        return [*(r for r, _ in self._pipes.values()), self._stop_r, self._stop_w]

    @property
    def write_fds(self) -> dict[int, int]:
        """Stream number -> the write end the child makes that descriptor."""
        return {stream: w for stream, (_, w) in self._pipes.items()}

    def started(self) -> None:
        """The child has its copies: close ours and start reading."""
        for _, w in self._pipes.values():
            close_internal(w)
        readers = {r: stream for stream, (r, _) in self._pipes.items()}
        self._pipes = {}
        thread = threading.Thread(
            target=self._pump, args=(readers,), name="manycore-process-output", daemon=True
        )
        start_helper_thread(thread)
        self._thread = thread

    def abandon(self) -> None:
        """The child was not started: close everything."""
        _close_all([fd for pair in self._pipes.values() for fd in pair])
        self._pipes = {}
        _close_all([fd for fd in (self._stop_r, self._stop_w) if fd >= 0])
        self._stop_r = self._stop_w = -1
        self._closed = True

    def finish(self, timeout: float = 5.0) -> None:
        """The child has exited: deliver what it wrote, then stop the reader."""
        thread, self._thread = self._thread, None
        if thread is None or os.getpid() != self._pid:
            return
        with self._lock:
            if not self._closed:
                try:
                    os.write(self._stop_w, b"x")
                except OSError:
                    pass
        if thread is not threading.current_thread():
            thread.join(timeout)

    def _pump(self, readers: dict[int, int]) -> None:
        """Copy the child's output to the current sys.stdout/sys.stderr until EOF, or until
        ``finish()`` says the child has exited (then copy what is left without waiting)."""
        owned = [*readers, self._stop_r]
        decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace") for fd in readers}
        poller = select.poll()
        for fd in [*readers, self._stop_r]:
            poller.register(fd, select.POLLIN)
        try:
            while readers:
                ready = [fd for fd, _ in poller.poll()]
                if self._stop_r in ready:
                    for fd in list(readers):
                        os.set_blocking(fd, False)
                        # Bounded: a grandchild that keeps writing must not hold join().
                        for _ in range(256):
                            if not _copy(fd, readers[fd], decoders[fd]):
                                break
                    break
                for fd in ready:
                    if not _copy(fd, readers[fd], decoders[fd]):
                        poller.unregister(fd)
                        del readers[fd]
        finally:
            with self._lock:
                self._closed = True
                _close_all([*owned, self._stop_w])


def _copy(fd: int, stream_no: int, decoder: Any) -> bool:
    """Copy one read from ``fd`` to the stream; False at EOF or when nothing is left."""
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        data, final = b"", False
    except OSError:
        data, final = b"", True
    else:
        final = not data
    text = decoder.decode(data, final)
    if text:
        stream = sys.stdout if stream_no == STDOUT else sys.stderr
        try:
            if stream is not None:
                stream.write(text)
        except Exception:
            pass
    return bool(data)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        close_internal(fd)


def redirect_child(write_fds: dict[int, int]) -> None:
    """In a ``Process`` child: make the pipes descriptors 1/2 and sys.stdout/sys.stderr
    line-buffered UTF-8 writers on them (what C code and subprocesses write goes there too);
    a stream not forwarded writes to its descriptor."""
    use_descriptors(*(fd for fd in (STDOUT, STDERR) if fd not in write_fds))
    for stream, fd in write_fds.items():
        if fd != stream:
            os.dup2(fd, stream)
            os.close(fd)
        wrapper = _line_writer(stream)
        if stream == STDOUT:
            sys.stdout = wrapper
        else:
            sys.stderr = wrapper
