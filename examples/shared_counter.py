"""Four processes add 10,000 each to one shared integer, under a lock: the total is 40000.

Run it:  python examples/shared_counter.py
"""

import manycore as multiprocessing


def add_many(total, lock, times=10_000):
    for _ in range(times):
        with lock:
            total.value += 1


total = multiprocessing.Value("i", 0)
lock = multiprocessing.Lock()
workers = [multiprocessing.Process(target=add_many, args=(total, lock)) for _ in range(4)]
for w in workers:
    w.start()
for w in workers:
    w.join(timeout=120)
print(f"total: {total.value}")
