"""One rule for reusing a block of shared memory: its state word, and who may refill it.

Creating and freeing a 64 MiB block costs several times the copy into a warm one (the kernel
zeroes every page, and frees them again), so every writer of big buffers keeps a few blocks
and fills them again: a Pipe's sending end its memfds (``_memfd``), a queue its kept
segments (``_queue``), a pool worker and a process with a pool their payload segments
(``_payload``). They all follow this rule::

    writer (keeps a few blocks)                   reader (whichever process got the record)
    picks a block whose word is reusable(),       hold(word): word = pid << 2 | HELD,
    sets it SENT, copies the buffers in,          builds its objects on watched_views();
    sends a record naming the block               when the last of them is collected,
                                                  word = FREE (in that pid only)

The state word is the first u64 of the block; the data starts at ``RESERVED``. Its values:
``FREE`` (0), ``SENT`` (1: claimed by a writer, its record on the way), or
``(reader pid << 2) | HELD``.

Guarantees:

* **Nobody's array changes under it**: a writer refills only a block whose word is FREE, or
  HELD by a reader that no longer exists; a reader's objects keep the word HELD until the
  last of them is garbage-collected (``watched_views``).
* **A forked copy never frees the reader's memory**: only the pid named in the word sets it
  FREE, so a child forked while the reader holds an array can drop its copy harmlessly. (The
  child still shares the memory, and the reader's drop frees it while the child may read it:
  keep arrays in the parent while a child uses them.)
* **A dead reader gives its block back**: a writer takes back a block HELD by a pid that is
  gone (SIGKILL included). A block left SENT (its writer died before the record went out, or
  its reader between taking the record and ``hold``) is not reused; it goes when its owner
  frees its blocks.

Writers also share how they wait for a busy block (``wait_until``, ``WAIT_S``) and how they
size a new one (``round_up``), so a block kept for one message fits the next.
"""

from __future__ import annotations

import itertools
import os
import time
import weakref
from typing import Any, Callable

__all__ = [
    "FREE",
    "HELD",
    "NO_WAIT_S",
    "RESERVED",
    "SENT",
    "WAIT_MIN",
    "WAIT_S",
    "hold",
    "process_alive",
    "reusable",
    "round_up",
    "state_word",
    "wait_until",
    "watched_views",
]

RESERVED = 64  # bytes before a block's data; the first u64 is the state word
FREE, SENT, HELD = 0, 1, 2  # held: (reader pid << 2) | HELD
# When every kept block that fits is busy, a writer polls them this long before making a new
# one: its reader is usually a moment from dropping the last message, and a new 64 MiB block
# costs about 40-60 ms against a 6 ms copy. A wait that runs out while two or more blocks
# stayed busy (the reader keeps what it gets) turns the waiting off for NO_WAIT_S
# (``no_wait_after``).
WAIT_S = 0.02
WAIT_MIN = 4 << 20  # smaller blocks are made at once while the writer keeps fewer: cheap
SPIN_S = 0.0005
POLL_S = 0.0002
NO_WAIT_S = 1.0


def no_wait_after(busy: int) -> float:
    """Seconds not to wait again after a wait for ``busy`` blocks ran out.

    One busy block is what the commonest reader keeps: ``for item in iter(q.get, None)``
    drops each message only when the next one arrives, so the wait for its block cannot
    succeed, and one more block is all that reader ever needs; turning the waiting off then
    would make the writer create a third 64 MiB block, since the next write usually comes
    a moment before the reader drops the first. Two or more blocks that stayed busy mean a
    reader that holds on to what it got: waiting is off for ``NO_WAIT_S``.
    """
    return NO_WAIT_S if busy > 1 else 0.0


def state_word(block: Any) -> memoryview:
    """The state word of a block (a writable buffer of at least ``RESERVED`` bytes)."""
    return memoryview(block)[:8].cast("Q")


def hold(state: memoryview) -> Callable[[], None]:
    """Mark a block's state word as held by this process; return what frees it again (for
    ``watched_views``). Only this process frees it, never a forked copy of its views."""
    held = (os.getpid() << 2) | HELD
    state[0] = held

    def all_gone() -> None:
        if state[0] == held and os.getpid() == held >> 2:
            state[0] = FREE

    return all_gone


def reusable(state: int) -> bool:
    """Whether a block with this state word may be refilled: free, or held by a reader that
    has died."""
    return state == FREE or (state & 3 == HELD and not process_alive(state >> 2))


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists and has not died (a reader named in a state
    word, a queue's lock holder)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists
        return True
    # A zombie has died: its parent just has not reaped it yet (often the very process that
    # waits for what the dead one held).
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] not in (b"Z", b"X")
    except (OSError, ValueError):
        return True


def watched_views(
    mm: Any, base: int, spans: list[tuple[int, int]], all_gone: Callable[[], None]
) -> list[Any]:
    """Writable views of ``mm[base + offset : base + offset + length]`` for each span; once
    the last object built on any of them is garbage-collected, ``all_gone()`` runs (in
    whatever thread collects it: it must only write memory, never take a lock).

    The views are ctypes arrays over the mapping: whatever keeps a view of their memory
    (a NumPy array and every array derived from it, a memoryview) keeps a reference to the
    ctypes object itself, so its collection means nobody uses the memory any more. (A
    memoryview slice would not do: NumPy re-exports the underlying buffer and drops the
    slice at once.)"""
    try:
        import ctypes
    except ImportError:  # pragma: no cover - a Python without ctypes: never mark it free
        view = memoryview(mm)
        return [view[base + o : base + o + n] for o, n in spans]
    views: list[Any] = []
    for offset, length in spans:
        if length:
            views.append((ctypes.c_ubyte * length).from_buffer(mm, base + offset))
        else:
            views.append(bytearray())
    total = len(views)
    gone = itertools.count(1)  # next() is atomic: no lock, which a finalizer must not take

    def one_gone() -> None:
        if next(gone) == total:
            all_gone()

    for view in views:
        if isinstance(view, bytearray):
            one_gone()  # nothing of the segment in it
        else:
            weakref.finalize(view, one_gone)
    return views


def wait_until(ready: Callable[[], bool], seconds: float) -> bool:
    """Whether ``ready()`` came true within ``seconds``: checked in a tight loop for
    ``SPIN_S`` (a reader dropping a message it just got takes microseconds, less than one
    sleep), then every ``POLL_S``."""
    start = time.perf_counter()
    spin_until, until = start + SPIN_S, start + seconds
    while True:
        if ready():
            return True
        now = time.perf_counter()
        if now >= until:
            return False
        if now >= spin_until:
            time.sleep(POLL_S)


def round_up(need: int) -> int:
    """Sizes come in steps (64 KiB, or 1 MiB above 1 MiB), so a kept block also fits the
    next message when it is a little bigger."""
    step = 1 << 20 if need > 1 << 20 else 1 << 16
    return -(-need // step) * step
