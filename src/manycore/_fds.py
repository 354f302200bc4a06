"""Descriptor hygiene and helper threads: what every process-owning module needs.

This module sits at the bottom of the package (it imports nothing of manycore), so the
scheduler, the workers, ``Process`` and the output forwarding can all use it without
importing the launcher.

Descriptor hygiene: descriptors that belong to the owner's machinery (worker sockets,
lifeline write ends, wake-up pipes, the fork server's control socket, a ``Process``'s
pipes) are registered with ``internal_fd``. Any process forked from the owner lets go of
them first thing (an ``os.register_at_fork`` hook), so a child never keeps a dead worker's
socket or a lifeline open by accident. ``forget_internal_fd`` must be called before such a
descriptor is closed, so a number the kernel hands out again is not dropped in children.

Helper threads: ``start_helper_thread`` starts a thread with every asynchronous signal
blocked, so Ctrl-C and friends always reach the main thread. They stay blocked there for
good; a child such a thread starts unblocks them itself (``children_unblock_async_signals``).

Guarantees: in a forked child every registered descriptor points at /dev/null (closed as
far as the channel is concerned) before any other code of the child runs, and the registry
starts empty there.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator

__all__ = [
    "ASYNC_SIGNALS",
    "child_unblocks_async_signals",
    "children_unblock_async_signals",
    "close_internal",
    "flush_stdio",
    "forget_internal_fd",
    "internal_fd",
    "neutralize",
    "neutralize_inherited",
    "os_thread_count",
    "spawn_sigmask",
    "start_helper_thread",
    "unblock_async_signals",
]

# ---------------------------------------------------------------- descriptor hygiene

_internal_fds: set[int] = set()


def internal_fd(fd: int) -> int:
    """Register an owner-side descriptor that forked children must let go of; returns it."""
    _internal_fds.add(fd)
    return fd


def forget_internal_fd(fd: int) -> None:
    """Unregister ``fd``; call it before closing the descriptor."""
    _internal_fds.discard(fd)


def close_internal(fd: int) -> None:
    """Unregister ``fd`` (before the number can be reused) and close it, ignoring a
    descriptor that is closed already."""
    _internal_fds.discard(fd)
    try:
        os.close(fd)
    except OSError:
        pass


def _after_fork_in_child() -> None:
    neutralize(_internal_fds)
    _internal_fds.clear()


def neutralize(fds: Iterable[int]) -> None:
    """Point ``fds`` at /dev/null: the channel they were is closed in this process.

    Rather than closing them: Python objects in this forked child may still wrap these
    numbers and close them when collected; a closed number could by then be reused for
    something else, and that close would hit the wrong file.
    """
    fds = list(fds)
    if not fds:
        return
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for fd in fds:
            if fd != null:
                try:
                    os.dup2(null, fd, inheritable=False)
                except OSError:
                    pass
    finally:
        os.close(null)


def neutralize_inherited(keep: Iterable[int]) -> None:
    """In a process forked from a user's process: let go of every descriptor but stdio and
    ``keep``, so that the fork server never holds a user's pipe or socket open."""
    keep = set(keep)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # pragma: no cover - no procfs
        fds = list(range(3, 1024))
    neutralize(fd for fd in fds if fd > 2 and fd not in keep)


os.register_at_fork(after_in_child=_after_fork_in_child)


def flush_stdio() -> None:
    """Flush sys.stdout and sys.stderr, ignoring any error.

    Before a fork: unflushed output would be written twice, by the parent and by the
    child's copy. Before ``os._exit``: nothing else would write it.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


# ---------------------------------------------------------------- helper threads

# Signals that a helper thread must never take: the kernel delivers a process-directed
# signal to any thread that does not block it, and a Python handler runs only when the
# main thread gets control. Were SIGINT delivered to a helper thread, a main thread blocked
# in a wait would not see Ctrl-C until the wait ended.
ASYNC_SIGNALS = frozenset(
    getattr(signal, name)
    for name in (
        "SIGINT",
        "SIGTERM",
        "SIGHUP",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGALRM",
        "SIGCHLD",
        "SIGWINCH",
        "SIGVTALRM",
        "SIGPROF",
        "SIGIO",
        "SIGURG",
    )
    if hasattr(signal, name)
)


_SIGMASK = hasattr(signal, "pthread_sigmask")  # POSIX


def start_helper_thread(thread: threading.Thread | Callable[[], object]) -> None:
    """Start ``thread`` with every asynchronous signal blocked, so signals reach the main
    thread. A plain callable runs in a bare thread (``_thread``) that is not waited for:
    the caller goes on at once (``Thread.start`` waits until the new thread runs)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, ASYNC_SIGNALS) if _SIGMASK else None
    try:
        # The new thread inherits the blocked mask when it is created.
        if isinstance(thread, threading.Thread):
            thread.start()
        else:
            _thread.start_new_thread(thread, ())
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


# Set on a helper thread while it starts a process (``children_unblock_async_signals``).
_starting = threading.local()


@contextlib.contextmanager
def children_unblock_async_signals() -> Iterator[None]:
    """On a helper thread, while it starts a process: the child unblocks the asynchronous
    signals first thing, or is spawned with them unblocked.

    A child inherits the signal mask of the thread that forks or spawns it: one started by
    a helper thread (a scheduler starting a worker on demand or replacing a dead one)
    would otherwise ignore SIGTERM and SIGINT for good, and a fork server never see the
    SIGCHLD that tells it to reap. The thread itself keeps them blocked: were it to unblock
    them for the start, a Ctrl-C that came meanwhile could be taken by this thread, and
    the main thread, asleep in a wait, would not see it until the wait ended.
    The launchers read the flag (``child_unblocks_async_signals``).
    """
    _starting.unblock = True
    try:
        yield
    finally:
        _starting.unblock = False


def child_unblocks_async_signals() -> bool:
    """Whether a child started now must unblock the asynchronous signals (see
    ``children_unblock_async_signals``); read in the parent, before the fork or spawn."""
    return getattr(_starting, "unblock", False)


def unblock_async_signals() -> None:
    """In a forked child of a helper thread: unblock the asynchronous signals."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, ASYNC_SIGNALS)


def spawn_sigmask() -> set[int] | None:
    """The signal mask of a child spawned now: this thread's less the asynchronous signals
    when ``child_unblocks_async_signals``, else None (it inherits this thread's)."""
    if not child_unblocks_async_signals() or not hasattr(signal, "pthread_sigmask"):
        return None
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, [])) - ASYNC_SIGNALS


def os_thread_count() -> int:
    """Threads of this process as the kernel counts them (C threads included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()
