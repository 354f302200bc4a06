"""A producer and a consumer process joined by a Queue; ``None`` marks the end.

Run it:  python examples/queue_producer_consumer.py
"""

import time

import manycore as multiprocessing

ITEMS = 5


def produce(queue):
    for n in range(ITEMS):
        queue.put(f"item-{n}")
        print(f"produced item-{n}", flush=True)
        time.sleep(0.05)
    queue.put(None)


def consume(queue):
    while True:
        item = queue.get(timeout=30)
        if item is None:
            break
        print(f"consumed {item}", flush=True)


queue = multiprocessing.Queue()
producer = multiprocessing.Process(target=produce, args=(queue,))
consumer = multiprocessing.Process(target=consume, args=(queue,))
producer.start()
consumer.start()
producer.join(timeout=60)
consumer.join(timeout=60)
print(f"finished: producer exit {producer.exitcode}, consumer exit {consumer.exitcode}")
