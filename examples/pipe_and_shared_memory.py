"""Two-way messages over a Pipe, then four processes updating shared memory under a Lock.

This one keeps the ``if __name__ == "__main__":`` guard that stdlib code carries; manycore
does not need it, and the other examples do without.

Run it:  python examples/pipe_and_shared_memory.py
"""

import os

import manycore as multiprocessing


def shout_back(conn):
    text = conn.recv()
    print(f"[child {os.getpid()}] got {text!r}", flush=True)
    conn.send(text.upper())
    conn.close()


def pipe_demo():
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.Process(target=shout_back, args=(theirs,))
    child.start()
    ours.send("hello from the parent")
    if not ours.poll(30):
        raise SystemExit("no reply from the child within 30 s")
    print(f"[parent] reply: {ours.recv()!r}")
    child.join(timeout=30)
    ours.close()


def bump(counter, cells, lock, rounds=5):
    for _ in range(rounds):
        with lock:
            counter.value += 1
            for i in range(len(cells)):
                cells[i] += 1


def shared_memory_demo():
    lock = multiprocessing.Lock()
    counter = multiprocessing.Value("i", 0)
    cells = multiprocessing.Array("i", [10, 20, 30, 40])
    workers = [multiprocessing.Process(target=bump, args=(counter, cells, lock)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    print(f"counter: {counter.value}")
    print(f"cells: {cells[:]}")


if __name__ == "__main__":
    pipe_demo()
    shared_memory_demo()
