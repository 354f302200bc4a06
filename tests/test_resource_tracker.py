"""The stdlib's resource tracker, shared with manycore's children as the stdlib shares it.

A ``multiprocessing.shared_memory.SharedMemory`` that a child creates is registered with
the child's resource tracker, which unlinks it once every process using that tracker has
exited. Children that share their parent's tracker leave the segment to the parent.
"""

from __future__ import annotations

import multiprocessing.resource_tracker
import time
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any, Optional

import pytest

from manycore._process import Process
from tests.helpers import TIMEOUT


@pytest.fixture(scope="module", autouse=True)
def resource_tracker() -> None:
    """The tracker lives as long as this process: start it before any leak check counts."""
    multiprocessing.resource_tracker.ensure_running()


def make_segment(conn: Any) -> None:
    segment = shared_memory.SharedMemory(create=True, size=16)
    segment.buf[0] = 42
    conn.send(segment.name)
    segment.close()  # not unlinked: the parent takes it over


@pytest.mark.parametrize("method", [None, "spawn", "forkserver"], ids=str)
def test_a_segment_a_child_made_outlives_the_child(method: Optional[str]) -> None:
    import manycore

    reader, writer = manycore.Pipe(duplex=False)
    cls = type("P", (Process,), {"_start_method": method})
    p = cls(target=make_segment, args=(writer,))
    p.start()
    writer.close()
    assert reader.poll(TIMEOUT), "nothing arrived from the child"
    name = reader.recv()
    reader.close()
    p.join(TIMEOUT)
    assert p.exitcode == 0
    # A tracker of the child's own would unlink the segment within moments of the child's
    # exit; the parent's runs on, so the segment stays.
    path = Path("/dev/shm", name.lstrip("/"))
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert path.exists(), "the segment was unlinked when the child exited"
        time.sleep(0.05)
    segment = shared_memory.SharedMemory(name=name)
    try:
        assert segment.buf[0] == 42
    finally:
        segment.close()
        segment.unlink()
