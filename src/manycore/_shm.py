"""Shared-memory segments: named, private to their owner, freed even when the owner is killed.

What this module guarantees:

* ``Segment.create(size)`` makes a file of ``size`` bytes in the shared-memory directory
  (``/dev/shm``, or ``$MANYCORE_SHM_DIR``) with mode 0600 and an unguessable name starting
  with ``manycore``, reserves its memory at once (``posix_fallocate``), so a full ``/dev/shm``
  raises ``OSError(ENOSPC)`` here instead of killing a process with SIGBUS later, and maps it.
  The creating process owns it: the name is unlinked at ``unlink()``, when the ``Segment`` is
  garbage-collected, at interpreter exit, and, through the tracker, when the creator dies
  without running any of those (SIGKILL, ``os._exit``). A forked child never unlinks what
  its parent created.
* ``Segment.attach(name)`` maps an existing segment in another process and never unlinks it.
  It refuses names without our prefix, anything that is not a regular file owned by this
  user with no group or other permission bits: a name from outside is not trusted blindly.
* Pickling a ``Segment`` pickles its name; unpickling attaches.
* ``close()`` and ``unlink()`` are idempotent. ``close()`` drops this object's mapping; views
  (NumPy arrays, memoryviews) made from ``buf`` keep the memory mapped until they go.

The tracker. A process that creates a segment starts, on its first ``create``, a small helper
process (``python -I -S -c ...``, in its own session so Ctrl-C and group kills spare it)
connected by a socketpair. Every name is registered with it *before* the file exists (the
registration is acknowledged, so no name is created untracked) and unregistered after unlink.
When the creator dies, however it dies, the kernel closes its end; the tracker reads EOF and
unlinks every name still registered. The tracker exits by itself once it has tracked nothing
for ``TRACKER_IDLE`` seconds (names whose files are gone, e.g. handed-off segments another
process claimed, are forgotten then; a client that finds it gone starts another), so it
never lingers after the work that needed it.

Why not an inherited tracker pipe (as the stdlib's resource tracker does): workers forked by
manycore's fork server have every inherited descriptor pointed at ``/dev/null`` (see
``_fds.neutralize_inherited``), so registrations written to an inherited pipe would go
nowhere. Instead the tracker belongs to the process that registers: each process uses a
tracker it started itself (checked by pid), and a forked child closes its copy of the parent's
socket, so the parent's tracker still sees EOF when the parent dies.

Segments whose ownership passes to another process (a worker's result, a queued message) can
be created with a ``prefix`` naming their producer, so a process that knows the producer died
can remove what it left with ``unlink_prefix``.
"""

from __future__ import annotations

import atexit
import errno
import mmap
import os
import re
import socket
import stat
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    import subprocess  # the tracker's; imported when it starts (a worker never starts one)

__all__ = [
    "PREFIX",
    "Segment",
    "ShmUnavailableError",
    "map_shared",
    "semaphore_path",
    "shm_dir",
    "shm_limit",
    "track_prefix",
    "track_semaphore",
    "track_semaphores",
    "tracker_pid",
    "unlink_prefix",
    "untrack_prefix",
    "untrack_semaphore",
    "untrack_semaphores",
]

PREFIX = "manycore"
# Names we create or accept: our prefix, then letters, digits and underscores only (no path
# separators, no dots), short enough for any filesystem.
_NAME = re.compile(r"manycore[A-Za-z0-9_]{8,120}\Z")
DIR_VAR = "MANYCORE_SHM_DIR"  # where segments live (default /dev/shm); for tests and odd hosts
LIMIT_VAR = "MANYCORE_SHM_LIMIT"  # bytes: pretend the shm directory holds at most this much
TRACKER_IDLE = 1.0  # seconds the tracker waits with nothing tracked before it exits
_ACK_TIMEOUT = 30.0


class ShmUnavailableError(OSError):
    """Shared memory cannot be used here (no ``/dev/shm``, or too small for this segment).

    Subclasses ``OSError`` and carries its ``errno`` (``ENOSPC``, ``ENOENT``, ...).
    """


def shm_dir() -> str:
    """The directory segments live in: ``$MANYCORE_SHM_DIR`` or ``/dev/shm``."""
    return os.environ.get(DIR_VAR) or "/dev/shm"


def shm_limit() -> Optional[int]:
    """The simulated capacity from ``$MANYCORE_SHM_LIMIT`` (bytes), or None for no limit."""
    raw = os.environ.get(LIMIT_VAR)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"refusing to attach shared memory named {name!r}: manycore only attaches "
            f"segments it created (names '{PREFIX}' followed by letters, digits and '_'). "
            "Pass the Segment (or its pickle) that manycore gave you."
        )


def _new_name(prefix: str) -> str:
    # os.urandom, as secrets.token_hex does, without importing secrets (hashlib, hmac, random:
    # milliseconds of a spawned worker's start)
    return f"{prefix}_{os.urandom(12).hex()}"


# --------------------------------------------------------------------------------------------
# The tracker process.

_TRACKER_CODE = r"""
import os, select, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
idle = float(sys.argv[1])
fd = 0
names = set()
prefixes = set()

def ours(path):
    return os.path.basename(path).startswith(("manycore", "sem.manycore", "sem.mp-manycore"))

def cleanup():
    for path in names:
        try:
            os.unlink(path)
        except OSError:
            pass
    for prefix in prefixes:
        d, base = os.path.split(prefix)
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        for entry in entries:
            if entry.startswith(base):
                try:
                    os.unlink(os.path.join(d, entry))
                except OSError:
                    pass

pending = b""
while True:
    try:
        ready, _, _ = select.select([fd], [], [], idle)
    except InterruptedError:
        continue
    if not ready:
        # Forget names another process already claimed (handed-off segments), then exit if
        # nothing is left to watch; the client starts another tracker when it needs one.
        names = {path for path in names if os.path.lexists(path)}
        if not names and not prefixes:
            break
        continue
    try:
        data = os.read(fd, 65536)
    except InterruptedError:
        continue
    except OSError:
        data = b""
    if not data:
        cleanup()
        break
    pending += data
    *lines, pending = pending.split(b"\n")
    acks = 0
    for line in lines:
        op, path = line[:1], os.fsdecode(line[1:])
        if not ours(path):
            continue
        if op == b"+":
            names.add(path)
            acks += 1
        elif op == b"-":
            names.discard(path)
        elif op == b"P":
            prefixes.add(path)
            acks += 1
        elif op == b"Q":
            prefixes.discard(path)
    if acks:
        try:
            os.write(fd, b"k" * acks)
        except OSError:
            cleanup()
            break
"""


class _Tracker:
    """This process's connection to its tracker process (started on first use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._pid = -1  # the process that started the tracker we talk to

    def pid(self) -> Optional[int]:
        """The tracker process's pid, if one is running for this process."""
        with self._lock:
            if self._proc is not None and self._pid == os.getpid() and self._proc.poll() is None:
                return self._proc.pid
            return None

    def _start(self) -> socket.socket:
        import subprocess

        if self._proc is not None and self._pid == os.getpid():
            try:
                self._proc.wait(timeout=5)  # it exited (idle) or is exiting: reap it
            except subprocess.TimeoutExpired:
                pass
        mine, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _TRACKER_CODE, str(TRACKER_IDLE)],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                close_fds=True,
                start_new_session=True,
            )
        finally:
            theirs.close()
        mine.settimeout(_ACK_TIMEOUT)
        self._sock, self._pid = mine, os.getpid()
        return mine

    def _send(self, line: bytes, acked: bool) -> None:
        with self._lock:
            for attempt in (0, 1):
                sock = self._sock if self._pid == os.getpid() else None
                if sock is None:
                    if not acked:
                        return  # nothing registered through a tracker of ours
                    sock = self._start()
                try:
                    sock.sendall(line)
                    if acked and sock.recv(1) != b"k":
                        raise ConnectionResetError("tracker closed")
                    return
                except OSError:
                    # The tracker exited (idle) or died: start another and say it again.
                    self._drop()
                    if attempt or not acked:
                        if acked:
                            raise
                        return

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None

    def after_fork_in_child(self) -> None:
        # The parent's tracker must see EOF when the parent dies: drop our copy of its socket.
        # (The lock may have been held by another thread at fork: make a fresh one.)
        self._lock = threading.Lock()
        self._drop()
        self.leave_running()  # the parent's child, not ours to reap
        self._proc = None
        self._pid = -1

    def leave_running(self) -> None:
        """Never reap the tracker from here: it outlives this process on purpose (it frees
        what we leave when it reads EOF). ``Popen`` warns "subprocess ... is still running"
        when the object of a child it never reaped is collected; at interpreter exit that
        happens after ``sys.stderr`` is gone, and Python prints "lost sys.stderr" instead
        (Python 3.9 every time, 3.11 now and then). So the object is told the child is done.
        """
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.returncode = 0  # init reaps it once we are gone

    def register(self, path: str) -> None:
        self._send(b"+" + os.fsencode(path) + b"\n", acked=True)

    def unregister(self, path: str) -> None:
        self._send(b"-" + os.fsencode(path) + b"\n", acked=False)

    def register_prefix(self, path_prefix: str) -> None:
        self._send(b"P" + os.fsencode(path_prefix) + b"\n", acked=True)

    def unregister_prefix(self, path_prefix: str) -> None:
        self._send(b"Q" + os.fsencode(path_prefix) + b"\n", acked=False)


_tracker = _Tracker()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_tracker.after_fork_in_child)
# Registered at import, so it runs after the exit handlers that still unlink through the
# tracker (atexit runs the last registered first).
atexit.register(_tracker.leave_running)


def tracker_pid() -> Optional[int]:
    """The pid of this process's tracker, or None when none runs now."""
    return _tracker.pid()


def track_prefix(prefix: str) -> None:
    """Have this process's tracker remove every segment named ``prefix...`` when this process
    dies (for segments another process creates on our behalf, e.g. a worker's results)."""
    _tracker.register_prefix(os.path.join(shm_dir(), prefix))


# glibc keeps the named POSIX semaphore "/name" as the file /dev/shm/sem.name.
SEM_DIR = "/dev/shm"


def semaphore_path(name: str) -> str:
    """Where the named semaphore ``name`` (``/manycore-...``) lives as a file."""
    return os.path.join(SEM_DIR, "sem." + name.lstrip("/"))


def track_semaphore(name: str) -> None:
    """Have this process's tracker unlink the named semaphore ``name`` if this process dies
    without doing it. Call before creating it, and ``untrack_semaphore`` after unlinking."""
    _tracker.register(semaphore_path(name))


def untrack_semaphore(name: str) -> None:
    _tracker.unregister(semaphore_path(name))


def track_semaphores(prefix: str) -> None:
    """Like ``track_semaphore`` for every semaphore named ``/prefix...``."""
    _tracker.register_prefix(semaphore_path(prefix))


def untrack_semaphores(prefix: str) -> None:
    _tracker.unregister_prefix(semaphore_path(prefix))


def untrack_prefix(prefix: str) -> None:
    _tracker.unregister_prefix(os.path.join(shm_dir(), prefix))


def unlink_prefix(prefix: str) -> int:
    """Unlink every segment whose name starts with ``prefix`` (which must start with our
    prefix); return how many were removed."""
    if not prefix.startswith(PREFIX):
        raise ValueError(f"unlink_prefix needs a prefix starting with {PREFIX!r}, not {prefix!r}")
    d = shm_dir()
    try:
        entries = os.listdir(d)
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        if entry.startswith(prefix):
            try:
                os.unlink(os.path.join(d, entry))
                removed += 1
            except OSError:
                pass
    return removed


# --------------------------------------------------------------------------------------------
# Segments.


def _unlink_path(path: str, creator: int, tracked: bool) -> None:
    """Finalizer of an owned segment: unlink it, only in the process that created it."""
    if os.getpid() != creator:
        return
    try:
        os.unlink(path)
    except OSError:
        pass
    if tracked:
        try:
            _tracker.unregister(path)
        except Exception:  # at interpreter exit, nothing must raise here
            pass


def map_shared(fd: int, size: int) -> mmap.mmap:
    """Map ``size`` bytes of ``fd`` shared, read-write, without keeping a descriptor.

    Python's mmap duplicates the descriptor it maps and keeps the copy while the mapping
    lives (until 3.13's ``trackfd=False``), so each array received from a queue or pipe
    and kept would hold one: a consumer keeping a thousand would run out. Where the copy
    cannot be avoided and descriptors run out, the soft limit is raised to the hard one,
    once, and the mapping tried again.

    Raises:
        OSError: the mapping failed (EMFILE: raise ``ulimit -n``).
    """
    # (MAP_POPULATE was measured: no faster here, and it faults in pages a reader may skip.)
    flags, prot = mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
    if sys.version_info >= (3, 13):
        return mmap.mmap(fd, size, flags, prot, trackfd=False)
    try:
        return mmap.mmap(fd, size, flags, prot)
    except OSError as exc:
        if exc.errno != errno.EMFILE or not _raise_fd_limit():
            raise OSError(
                exc.errno,
                f"{exc.strerror}: this process keeps one descriptor per shared-memory block "
                "that received arrays still use; raise the limit (ulimit -n) or drop arrays "
                "you no longer need",
            ) from exc
        return mmap.mmap(fd, size, flags, prot)


def _raise_fd_limit() -> bool:
    """Raise this process's soft descriptor limit to its hard limit; False if it was."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return True


class Segment:
    """A named block of shared memory; see the module docstring for who unlinks it."""

    __slots__ = ("__weakref__", "_buf", "_closed", "_finalizer", "_mmap", "_path", "name", "size")

    name: str
    size: int

    def __init__(self, name: str, size: int, path: str, mm: Optional[mmap.mmap]) -> None:
        # Use create() or attach(); this only assembles the object.
        self.name = name
        self.size = size
        self._path = path
        self._mmap = mm
        self._buf: Optional[memoryview] = memoryview(mm) if mm is not None else None
        self._finalizer: Optional[weakref.finalize[Any, Any]] = None
        self._closed = False

    # -- making one ------------------------------------------------------------------------

    @classmethod
    def create(cls, size: int, *, prefix: str = PREFIX, track: bool = True) -> Segment:
        """A new segment of ``size`` bytes owned by this process.

        ``prefix`` (starting with ``manycore``) lets a reader remove a producer's leftovers;
        ``track=False`` skips the tracker, for segments whose owner cleans up by prefix.

        Raises:
            ShmUnavailableError: the shared-memory directory is missing, or has no room for
                ``size`` bytes (``ENOSPC``).
            ValueError: a negative size or a bad prefix.
        """
        size = int(size)
        if size < 0:
            raise ValueError(f"a segment size cannot be negative (got {size})")
        if not prefix.startswith(PREFIX) or not re.fullmatch(r"[A-Za-z0-9_]+", prefix):
            raise ValueError(f"a segment prefix starts with {PREFIX!r} and has only [A-Za-z0-9_]")
        limit = shm_limit()
        if limit is not None and size > limit:
            raise ShmUnavailableError(
                errno.ENOSPC,
                f"cannot place {size} bytes in shared memory: ${LIMIT_VAR} allows {limit}",
            )
        directory = shm_dir()
        name = _new_name(prefix)
        path = os.path.join(directory, name)
        creator = os.getpid()
        if track:
            _tracker.register(path)  # before the file exists: nothing is ever untracked
        try:
            fd = os.open(
                path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            if track:
                _tracker.unregister(path)
            raise ShmUnavailableError(
                exc.errno,
                f"cannot create shared memory in {directory}: {exc.strerror}. Mount a tmpfs "
                f"there or point ${DIR_VAR} at a writable tmpfs directory",
            ) from exc
        try:
            os.fchmod(fd, 0o600)
            if size:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError as exc:
                    raise ShmUnavailableError(
                        exc.errno,
                        f"cannot reserve {size} bytes of shared memory in {directory}: "
                        f"{exc.strerror}. Make it larger (e.g. docker run --shm-size=1g) or "
                        f"point ${DIR_VAR} at a larger tmpfs",
                    ) from exc
                mm: Optional[mmap.mmap] = map_shared(fd, size)
            else:
                mm = None
        except BaseException:
            os.close(fd)
            _unlink_path(path, creator, track)
            raise
        os.close(fd)
        seg = cls(name, size, path, mm)
        seg._finalizer = weakref.finalize(seg, _unlink_path, path, creator, track)
        return seg

    @classmethod
    def attach(cls, name: str) -> Segment:
        """Map the existing segment ``name``; this object never unlinks it.

        Raises:
            ValueError: the name is not one of ours, or the file is not a segment this user
                created privately (wrong owner, permissions, or type).
            FileNotFoundError: no such segment (its owner already freed it).
        """
        _check_name(name)
        path = os.path.join(shm_dir(), name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                exc.errno,
                f"shared memory {name!r} does not exist: the process that made it freed it "
                "or exited before this process attached it",
                path,
            ) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise ValueError(
                    f"refusing to attach {path}: not a private segment of this user (owner uid "
                    f"{st.st_uid}, mode {stat.filemode(st.st_mode)}); manycore only attaches "
                    "segments it created with mode 0600"
                )
            size = st.st_size
            mm = map_shared(fd, size) if size else None
        finally:
            os.close(fd)
        return cls(name, size, path, mm)

    @classmethod
    def _claim(cls, name: str) -> Segment:
        """Attach and take over: unlink the name at once (the mapping stays valid), so the
        memory is freed when the last view of it goes. For segments handed to this process."""
        seg = cls.attach(name)
        try:
            os.unlink(seg._path)
        except OSError:
            pass
        return seg

    # -- using one -------------------------------------------------------------------------

    @property
    def buf(self) -> memoryview:
        """A writable memoryview of the whole segment (``len == size``)."""
        if self._closed:
            raise ValueError(f"shared memory {self.name!r} is closed")
        if self._buf is None:  # size 0: nothing is mapped
            return memoryview(bytearray())
        return self._buf

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Drop this object's mapping (idempotent). Views made from ``buf`` stay valid."""
        buf, mm = self._buf, self._mmap
        self._closed = True
        self._buf = None
        self._mmap = None
        if buf is not None:
            try:
                buf.release()
            except BufferError:
                pass  # exported to a NumPy array or a slice: it goes when they do
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # still viewed; unmapped when the last view is garbage-collected

    def unlink(self) -> None:
        """Remove the name (idempotent); the owner's job. Memory goes with the last mapping."""
        fin = self._finalizer
        if fin is not None:
            fin()  # unlinks and unregisters once; only in the creating process
        else:
            # Attached (or claimed) segments never unlink on their own; an explicit call on
            # an attached segment still removes the name, as SharedMemory.unlink does.
            try:
                os.unlink(self._path)
            except OSError:
                pass

    def disown(self) -> None:
        """Stop unlinking this segment at GC/exit (its ownership passed to another process);
        it stays registered with the tracker, which still frees it if this process is killed."""
        fin = self._finalizer
        if fin is not None:
            fin.detach()

    # -- pickling and display ----------------------------------------------------------------

    def __reduce__(self) -> tuple[Callable[[str], Segment], tuple[str]]:
        return (Segment.attach, (self.name,))

    def __repr__(self) -> str:
        return f"<Segment {self.name} size={self.size}>"

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
