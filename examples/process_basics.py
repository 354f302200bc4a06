"""Start one process, keep working while it runs, then wait for it.

Run it:  python examples/process_basics.py
"""

import os
import time

import manycore as multiprocessing


def greet(name):
    print(f"child {name!r} running as pid {os.getpid()}", flush=True)
    time.sleep(0.2)
    print(f"child {name!r} done", flush=True)


print(f"parent pid {os.getpid()}")
child = multiprocessing.Process(target=greet, args=("Ada",))
child.start()
print(f"parent keeps going while the child is alive: {child.is_alive()}")
child.join(timeout=30)
print(f"child exit code: {child.exitcode}")
