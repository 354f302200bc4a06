"""Square numbers on every core with Pool.map, then the async forms and an error.

Run it:  python examples/pool_map.py
"""

import manycore as multiprocessing


def square(x):
    return x * x


def reciprocal(x):
    return 1 / x


with multiprocessing.Pool() as pool:
    print(f"map: {pool.map(square, range(20))}")
    print(f"apply: {pool.apply(square, (12,))}")
    pending = pool.map_async(square, range(5))
    one = pool.apply_async(square, (7,))
    print(f"map_async: {pending.get(timeout=60)}")
    print(f"apply_async: {one.get(timeout=60)}")
    print(f"imap with chunksize: {list(pool.imap(square, range(10), chunksize=3))}")
    try:
        pool.map(reciprocal, [1, 2, 0])
    except ZeroDivisionError as exc:
        print(f"the worker's error reached the caller: {type(exc).__name__}: {exc}")
