"""Queue, SimpleQueue and JoinableQueue: process-shared FIFOs whose data lives in shared memory.

The package, bottom up: ``_layout`` (the header, records and files), ``_fifo`` (the ring and
its overflow chain: byte records), ``_items`` (objects as records; big buffers in kept
segments), ``_api`` (the ``multiprocessing`` API, with the hot paths inlined).

Who runs where::

    producer processes                  /dev/shm                      consumer processes
    put(obj): pickle on the caller's    ┌──────────────────────────┐  get(): wait on "items",
    thread; under the mutex copy the    │ control header + ring    │  take the oldest record
    record into the ring (or the        │ (RING_BYTES, reused)     │  under the mutex (a big
    overflow chain), then post "items"  ├──────────────────────────┤  one is copied out after
                                        │ overflow blocks, chained │  releasing it), unpickle
                                        │ only while the ring is   │  outside it
                                        │ full; one emptied block  │
                                        │ is kept as a spare       │
                                        └──────────────────────────┘

Guarantees, and how:

* **No feeder thread.** ``put`` pickles on the caller's thread and writes the bytes into
  shared memory before it returns. An object that cannot be pickled raises in ``put`` itself
  (``ArgumentPicklingError`` naming its type) and nothing is enqueued; a process that put items
  and exits leaves them in the queue, readable by others, and is never held at exit by items
  nobody read (the stdlib's feeder thread blocks on a full pipe there).
* **An unbounded put never waits long for space.** The ring has a fixed size. When a record
  does not fit (the ring is full, or the record is larger than a quarter of it), it goes to an
  overflow chain of blocks, each a shared-memory file of at least ``RING_BYTES``; once the
  chain is in use every later put goes there too, and ``get`` reads the ring before the
  chain, so FIFO order holds. A producer that finds the ring full (or the chain past
  ``OVF_SOFT_BYTES``) first waits up to ``SPACE_WAIT`` for a consumer to free space, so a
  producer that outruns live consumers is paced by them and reuses warm memory; when nobody
  reads, that wait times out once and the producer spills freely for ``NO_READER_S``. The
  consumer that empties a block keeps it as the spare (if there is none) or unlinks it. A
  bounded queue (``maxsize > 0``) blocks in ``put`` on a "slots free" semaphore, as the
  stdlib's does.
* **FIFO per producer, no loss, no duplication**: records are appended and handed out under
  one process-shared mutex; "items" is posted only after the record is complete. A ring
  record of ``BIG_READ`` bytes or more is copied out with the mutex released (so a producer
  writes the next one meanwhile): it is marked READING and only the read cursor
  (``H_CURSOR``) moves past it; its space is freed (``H_HEAD`` moves) when the copy is done,
  together with any later records other consumers took meanwhile (marked FREE).
* **qsize() works**: it is counters in the header, not a semaphore's value.
* **Cleanup**: the creating process unlinks the ring, every overflow block and the named
  semaphores when its queue object is collected or at interpreter exit; all of them are
  registered (by name prefix) with the ``_shm`` tracker, which unlinks them if the creator
  dies without doing it (SIGKILL).

What a crash does: every wait on the mutex follows the caller's timeout (``get(timeout)``
raises ``Empty``, ``put(timeout)`` ``Full``; the ``_nowait`` calls wait at most
``LOCK_NOWAIT_S``), and the mutex's holder writes its pid next to it (``H_LOCKER``). A waiter
that finds the holder dead (SIGKILL, the OOM killer; a zombie counts as dead) takes the
mutex over: one waiter only, under an ``flock`` the kernel drops if it dies too. It then
repairs what the dead one left half done (``RecordFifo._repair``): the ring is walked from
the read cursor to the tail and the counters are set from what is there (a put that wrote
its record and advanced ``H_TAIL`` is delivered; one that did not is dropped whole; a get
that moved the head is finished), and "items" is posted for every record without a token (a
surplus post only makes a consumer look again). A holder that died while changing the
overflow chain leaves damage that is not repaired: the queue is marked broken and every
later call raises ``QueueBrokenError`` naming the dead pid, never hangs. What remains: a
consumer killed inside ``get`` loses the item it was taking; a bounded queue may lose or gain
a slot; a holder killed between taking the semaphore and writing its pid (two bytecodes) is
taken over from once the mutex has stayed taken with no holder named for ``STALE_S``
(waiters with shorter timeouts time out meanwhile); one killed while copying a big record out
leaves that record's ring space unfreed (later puts spill to the overflow chain, nothing
blocks). A kept segment whose producer died before enqueuing its item, or whose consumer died
between taking the record and building the item, stays "sent": the queue has one kept
segment fewer for reuse (items then use one-offs); everything is still freed with the queue.

Big items travel in segments of their own (``_items``); the wire format is in ``_layout``.
"""

from __future__ import annotations

from ._api import Empty as Empty
from ._api import Full as Full
from ._api import JoinableQueue as JoinableQueue
from ._api import Queue as Queue
from ._api import SimpleQueue as SimpleQueue

__all__ = ["Empty", "Full", "JoinableQueue", "Queue", "SimpleQueue"]
