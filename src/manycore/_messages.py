"""The messages between the owner and its workers.

Each frame on a worker socket is one of these, pickled (see ``_transport`` for framing).
They are ``NamedTuple``s: immutable records that pickle as a class reference plus a tuple,
which is markedly cheaper than a dataclass on the per-task hot path.

Owner -> worker::

    WorkerConfig   first frame: slot, sys.path, cwd, initializer, task quota, shm settings
    CallBatch      calls to run in order; coroutine calls start at once and run together
    CancelCalls    cancel these running coroutine calls (the worker answers "cancelled")
    SHUTDOWN       finish and exit 0

Worker -> owner::

    WorkerReady    the initializer ran; the worker takes calls
    InitFailed     the initializer raised; the worker exits
    ResultBatch    outcomes of some calls of the current batch, in order
    Retiring       the task quota or the memory limit is reached; the worker exits after
                   this frame, and the calls of its batch it did not run go back to the queue
    (_output)      printed text and log records, delivered as they come

The two messages of every task travel in a wire form that pickles without a class
reference (which costs about 3 µs to pickle and as much to unpickle, per frame): a
``CallBatch`` as the plain tuple of its fields, rebuilt by the worker's channel, and a
``ResultBatch`` as its bare list of outcomes (the coroutine worker still sends the record).

Inside batches, calls and outcomes are plain tuples, because unpickling a ``NamedTuple``
runs Python code for every item while a tuple is rebuilt in C::

    Call    = (task_id, kind, fn, payload)      fn, payload: already-pickled bytes
    Outcome = (task_id, status, payload, elapsed)

``fn`` and ``payload`` were pickled on the caller's thread, so the batch frame only copies
them. A payload with big buffers is a small header naming a shared-memory segment
(``_payload.dumps_payload``): arguments' segments belong to the owner until the task
settles; results' segments are handed to the owner, which claims them on reading.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

__all__ = [
    "CALL",
    "CALL_KW",
    "CORO",
    "FAILED",
    "INIT_FAILED",
    "KIND",
    "MAP",
    "OK",
    "RAISED",
    "SHUTDOWN",
    "STARMAP",
    "Call",
    "CallBatch",
    "CancelCalls",
    "InitFailed",
    "Outcome",
    "ResultBatch",
    "Retiring",
    "Shutdown",
    "WorkerConfig",
    "WorkerReady",
]

# Call kinds: how the payload is applied to the function.
CALL = 0  # payload is args: fn(*args)
CALL_KW = 3  # payload is (args, kwargs): fn(*args, **kwargs)
MAP = 1  # payload is a list of items: [fn(x) for x in items]
STARMAP = 2  # payload is a list of argument tuples: [fn(*a) for a in items]
# A flag on any kind: fn is a coroutine function. A pool worker runs such calls on an event
# loop, many at once; elsewhere (a Dask worker) each runs to its end on a loop of its own.
CORO = 8
KIND = 7  # kind & KIND: the kind without its flag

# Outcome status (the payload's codec is _outcome's).
OK = 0  # payload: the pickled value (a list for MAP/STARMAP)
RAISED = 1  # payload: pickled (exception bytes, its text, traceback text, values before it)
FAILED = 2  # payload: a pickled manycore error (the call could not be run or sent back)
# Only as the first and only outcome of a Dask batch: the pool's initializer failed in that
# Dask worker; payload: pickled (exception, traceback text), as in InitFailed.
INIT_FAILED = -1


class WorkerConfig(NamedTuple):
    slot: int
    sys_path: list[str]
    cwd: str
    initializer: Optional[bytes]  # pickled (fn, args), or None
    max_tasks: Optional[int]
    # Big buffers (see _payload.dumps_payload): the pool's threshold (None: pipes only), and
    # the name prefix of the segments this worker hands its results over in.
    shm_threshold: Optional[int] = None
    shm_prefix: Optional[str] = None
    shm_dir: Optional[str] = None
    # The owner's multiprocessing authkey, so that Manager proxies passed as task arguments
    # can connect from workers that did not inherit it (spawn, a fresh fork server).
    authkey: Optional[bytes] = None
    # How print() and logging in the worker reach the owner (_output.worker_settings).
    output: Optional[Any] = None
    # Resident memory, in bytes, above which the worker retires after its current task.
    max_memory: Optional[int] = None
    # What current_process() says in the worker: (name, _identity), "ForkPoolWorker-3", (3,).
    identity: Optional[tuple[str, tuple[int, ...]]] = None


Call = tuple[int, int, bytes, bytes]
Outcome = tuple[int, int, bytes, float]


class CallBatch(NamedTuple):
    calls: list[Call]
    # Send each outcome as soon as its call returns: some call has a timeout, and stopping
    # the worker must not lose the outcomes it holds (retries=0 runs a task at most once).
    timed: bool = False
    # The batch's coroutine calls (kind & CORO), by task id, with their task_timeout (None:
    # none), which the worker enforces itself; None when the batch has none.
    coroutines: Optional[dict[int, Optional[float]]] = None
    # How many of them may run at once (the pool's concurrency); more wait their turn.
    concurrency: Optional[int] = None


class CancelCalls(NamedTuple):
    """Owner -> worker: cancel these coroutine calls if they are still running."""

    ids: list[int]


class ResultBatch(NamedTuple):
    outcomes: list[Outcome]


class WorkerReady(NamedTuple):
    pid: int
    stack_fd: int = -1  # the worker's descriptor that faulthandler dumps its stacks into


class InitFailed(NamedTuple):
    error: bytes  # pickled (exception, traceback text), or a pickled ResultPicklingError


class Retiring(NamedTuple):
    tasks_done: int
    reason: str = "tasks"  # "tasks" (its quota) or "memory" (over max_memory)
    rss: int = 0  # its resident memory in bytes when it decided


class Shutdown:
    """The named shutdown message; there is one instance, ``SHUTDOWN``."""

    __slots__ = ()

    def __reduce__(self) -> str:
        return "SHUTDOWN"

    def __repr__(self) -> str:
        return "SHUTDOWN"


SHUTDOWN = Shutdown()
