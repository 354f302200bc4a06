"""Shared-memory segments (_shm): creation, attachment, safety, and cleanup after any death."""

from __future__ import annotations

import gc
import os
import pickle
import signal
import stat

import pytest

from manycore import _shm
from manycore._shm import Segment, ShmUnavailableError
from tests import helpers

SHM = "/dev/shm"


def _exists(name: str) -> bool:
    return os.path.exists(os.path.join(_shm.shm_dir(), name))


def test_create_write_attach_read() -> None:
    seg = Segment.create(4096)
    try:
        assert seg.size == 4096 and len(seg.buf) == 4096
        assert seg.name.startswith("manycore") and len(seg.name) >= 24
        st = os.stat(os.path.join(SHM, seg.name))
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
        assert st.st_blocks * 512 >= 4096  # reserved up front
        seg.buf[:5] = b"hello"
        other = Segment.attach(seg.name)
        assert bytes(other.buf[:5]) == b"hello"
        other.buf[5:6] = b"!"
        assert bytes(seg.buf[:6]) == b"hello!"
        other.close()
        other.close()
        assert _exists(seg.name)  # attach never unlinks
    finally:
        seg.unlink()
        seg.unlink()
        seg.close()
        seg.close()
    assert not _exists(seg.name)


def test_names_are_unguessable_and_distinct() -> None:
    segs = [Segment.create(1) for _ in range(5)]
    try:
        assert len({s.name for s in segs}) == 5
    finally:
        for s in segs:
            s.unlink()


def test_pickle_is_the_name_and_unpickling_attaches() -> None:
    seg = Segment.create(100)
    try:
        data = pickle.dumps(seg)
        assert len(data) < 200
        seg.buf[0] = 7
        again = pickle.loads(data)
        assert again.name == seg.name and again.size == 100 and again.buf[0] == 7
        again.close()
    finally:
        seg.unlink()


def test_garbage_collection_unlinks_the_owners_segment() -> None:
    seg = Segment.create(10)
    name = seg.name
    del seg
    gc.collect()
    assert not _exists(name)


def test_views_outlive_close_and_unlink() -> None:
    seg = Segment.create(8)
    view = seg.buf[2:6]
    seg.buf[2:6] = b"abcd"
    seg.close()
    seg.unlink()
    assert bytes(view) == b"abcd"
    with pytest.raises(ValueError, match="closed"):
        seg.buf  # noqa: B018
    view.release()


def test_zero_size_segment() -> None:
    seg = Segment.create(0)
    try:
        assert seg.size == 0 and len(seg.buf) == 0
        other = Segment.attach(seg.name)
        assert other.size == 0
    finally:
        seg.unlink()


@pytest.mark.parametrize(
    "name", ["psm_1234", "../etc/passwd", "manycore/../../x", "manycore", "manycore_x.y", 5]
)
def test_attach_refuses_foreign_names(name: object) -> None:
    with pytest.raises(ValueError, match="refusing"):
        Segment.attach(name)  # type: ignore[arg-type]


def test_attach_refuses_a_segment_others_can_read() -> None:
    path = os.path.join(SHM, "manycore_test_" + os.urandom(8).hex())
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, 64)
        os.fchmod(fd, 0o644)
        with pytest.raises(ValueError, match="not a private segment"):
            Segment.attach(os.path.basename(path))
    finally:
        os.close(fd)
        os.unlink(path)


def test_attach_missing_says_so() -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Segment.attach("manycore_" + "0" * 24)


def test_simulated_full_shm_raises_enospc_at_create(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_shm.LIMIT_VAR, "1000")
    with pytest.raises(ShmUnavailableError) as info:
        Segment.create(2000)
    assert info.value.errno == 28  # ENOSPC
    Segment.create(500).unlink()


def test_missing_shm_dir_raises_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_shm.DIR_VAR, "/nonexistent/manycore-shm")
    with pytest.raises(ShmUnavailableError, match="cannot create shared memory"):
        Segment.create(10)


def test_real_enospc_from_fallocate_is_reported_at_create() -> None:
    free = os.statvfs(SHM)
    too_big = free.f_bavail * free.f_frsize + (1 << 30)
    with pytest.raises(ShmUnavailableError) as info:
        Segment.create(too_big)
    assert info.value.errno in (28, 27)  # ENOSPC or EFBIG


def test_forked_child_does_not_unlink_parents_segment() -> None:
    seg = Segment.create(16)
    try:
        pid = os.fork()
        if pid == 0:  # child: drop its copy and exit through the normal path
            try:
                child_view = Segment.attach(seg.name)
                child_view.buf[0] = 42
                del child_view
                gc.collect()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        assert _exists(seg.name) and seg.buf[0] == 42
    finally:
        seg.unlink()


_KILLED_CREATOR = r"""
import sys, time
from manycore._shm import Segment
segs = [Segment.create(1 << 16) for _ in range(3)]
keep = Segment.create(1 << 16)
keep.unlink()
print(" ".join(s.name for s in segs), flush=True)
time.sleep(120)
"""


def test_segments_are_freed_when_the_creator_is_sigkilled() -> None:
    with helpers.python_running(_KILLED_CREATOR) as proc:
        assert proc.stdout is not None
        names = helpers.read_line(proc.stdout).split()
        assert len(names) == 3 and all(_exists(n) for n in names)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=helpers.TIMEOUT)
        assert helpers.wait_until(lambda: not any(_exists(n) for n in names), 30.0), names


_EXITING_CREATOR = r"""
from manycore._shm import Segment
segs = [Segment.create(1 << 12) for _ in range(2)]
print(" ".join(s.name for s in segs), flush=True)
"""


def test_segments_are_freed_at_normal_exit_without_warnings() -> None:
    out = helpers.run_python(["-W", "error", "-c", _EXITING_CREATOR])
    assert out.returncode == 0, out.stderr
    names = out.stdout.split()
    assert len(names) == 2
    assert not any(_exists(n) for n in names)
    assert "leaked" not in out.stderr and out.stderr == ""


def test_prefix_cleanup_and_tracked_prefix() -> None:
    prefix = "manycore_w" + os.urandom(6).hex()
    segs = [Segment.create(8, prefix=prefix, track=False) for _ in range(3)]
    for s in segs:
        s.disown()
    assert all(s.name.startswith(prefix) for s in segs)
    assert _shm.unlink_prefix(prefix) == 3
    assert not any(_exists(s.name) for s in segs)
    with pytest.raises(ValueError):
        _shm.unlink_prefix("psm_")


def test_tracker_exits_when_idle() -> None:
    Segment.create(8).unlink()
    assert helpers.wait_until(lambda: _shm.tracker_pid() is None, 10.0)
    # and a new one starts on demand
    seg = Segment.create(8)
    assert _shm.tracker_pid() is not None
    seg.unlink()
