"""The pool from asyncio: await calls and maps, stream results, run coroutines in workers.

Run it:  python examples/asyncio_pool.py
"""

import asyncio

import manycore.aio


def square(x):
    return x * x


async def slow_echo(x):
    await asyncio.sleep(0.05)  # an I/O wait: many of these run at once in each worker
    return x


async def main():
    async with manycore.aio.Pool(2, concurrency=8) as pool:
        print(f"apply: {await pool.apply(square, 12)}")
        print(f"map: {await pool.map(square, range(10))}")
        print(f"coroutines: {await pool.map(slow_echo, range(16))}")
        streamed = [x async for x in pool.imap(square, range(5))]
        print(f"async for: {streamed}")
        try:
            await asyncio.wait_for(pool.apply(slow_echo, "late"), timeout=0.01)
        except asyncio.TimeoutError:
            print("too slow: the awaiting task gave up and the call was cancelled")


asyncio.run(main())
