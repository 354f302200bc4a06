"""Task and process functions that print and log, for tests/test_output.py and the notebook.

Importable (travel by reference), so every start method can run them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from typing import Any

THREADS = 4
LINES_PER_THREAD = 50


def speak(tag: str) -> tuple[str, int]:
    """Print to stdout and stderr in every way user code does; return (tag, worker pid)."""
    print(f"out {tag}")
    print(f"err {tag}", file=sys.stderr)
    sys.stdout.buffer.write(f"bytes {tag} \N{SNOWMAN}\n".encode())
    sys.stdout.write(f"partial {tag}")  # no newline, no flush: the result must wait for it
    return tag, os.getpid()


def speak_from_threads(tag: str) -> int:
    """Write whole lines from several threads at once; return the number of lines.

    One ``write`` per line: ``print`` writes the text and the newline in two calls, so
    threads' prints interleave in any process, forwarded or not.
    """

    def talk(t: int) -> None:
        for i in range(LINES_PER_THREAD):
            sys.stdout.write(f"{tag} thread {t} line {i} " + "x" * 40 + "\n")

    threads = [threading.Thread(target=talk, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return THREADS * LINES_PER_THREAD


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("not picklable")

    def __repr__(self) -> str:
        return "<Unpicklable>"


def log_some(name: str, tag: str) -> int:
    """Log at every level, with arguments, an exception and extras; return the worker pid."""
    log = logging.getLogger(name)
    log.debug("debug %s", tag)
    log.info("info %s %d", tag, 1)
    log.warning("warning %s", tag)
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("failed %s", tag)
    log.warning("extra %s", tag, extra={"color": "blue", "thing": Unpicklable()})
    return os.getpid()


def fork_and_print(tag: str) -> int:
    """Fork a child that prints and logs (it must not write into the worker's socket)."""
    pid = os.fork()
    if pid == 0:
        try:
            print(f"grandchild {tag}", flush=True)
            logging.getLogger("tests.output").warning("grandchild %s", tag)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def child_speaks(tag: str) -> None:
    """A Process target: print, write to descriptor 1 from C level, and to stderr."""
    print(f"child out {tag}")
    print(f"child err {tag}", file=sys.stderr)
    sys.stdout.flush()
    os.write(1, f"child fd {tag}\n".encode())


def child_leaves_grandchild(path: str) -> None:
    """A Process target that leaves a grandchild holding its stdout, and says its pid."""
    print("before the grandchild")
    proc = subprocess.Popen(["sleep", "60"], stdout=sys.stdout, stderr=sys.stderr)
    with open(path, "w") as f:
        f.write(str(proc.pid))
    print("after the grandchild")
