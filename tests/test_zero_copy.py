"""Big buffers through shared memory: round trips, lifetime after every kind of ending,
pack/unpack for queues, SharedArray, and the fallback when /dev/shm has no room."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import signal
import time
import warnings
from typing import Any, Iterator, Optional

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import manycore
from manycore import _buffers, _payload, _reuse, _shm
from manycore._executor import ProcessPoolExecutor
from manycore._pool import Pool
from manycore._sharedarray import SharedArray, shared_array
from tests import helpers

LOW = 64  # the threshold the tests use: tiny arrays already take the shared-memory path


@pytest.fixture
def low_threshold() -> Iterator[None]:
    before = _buffers.shm_threshold()
    _buffers.set_shm_threshold(LOW)
    try:
        yield
    finally:
        _buffers.set_shm_threshold(before)


def _ours() -> set[str]:
    """manycore's segments on this machine, less those another job (a second test run
    beside this one) holds."""
    directory = _shm.shm_dir()
    try:
        names = {n for n in os.listdir(directory) if n.startswith("manycore")}
    except OSError:
        return set()
    return names - helpers.held_by_others(names, directory) if names else names


# --- functions the workers run (importable by reference) ---------------------------------


def echo(x: Any) -> Any:
    return x


def shm_backed(a: Any) -> bool:
    """Whether the argument arrived as a view of shared memory (not a copy from the pipe)."""
    import ctypes
    import mmap

    base = a
    while getattr(base, "base", None) is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if isinstance(base, ctypes.Array):  # a reusable segment's view (see _reuse)
        base = next(iter(base._objects.values())).obj
    return isinstance(base, mmap.mmap)


def total(a: Any) -> float:
    return float(np.asarray(a).sum())


def fail_with(a: Any) -> None:
    raise ValueError(f"bad array of {a.size}")


def die_mid_transfer(n: int) -> Any:
    # Put a result in a handed-off segment the way the worker does, then die before sending.
    _payload.dumps_payload(np.ones(n), handoff=True)
    os.kill(os.getpid(), signal.SIGKILL)


def leave_segment_and_sleep(n: int) -> None:
    _payload.dumps_payload(np.ones(n), handoff=True)  # handed over, never sent
    time.sleep(120)


def sleepy(a: Any, seconds: float) -> float:
    time.sleep(seconds)
    return float(a.sum())


_kept: list[Any] = []


def keep(a: Any) -> float:
    _kept.append(a)  # a view of the caller's segment, kept past the call
    return float(a.sum())


def kept_sums() -> list[float]:
    return [float(a.sum()) for a in _kept]


def add_one_in_place(shared: SharedArray, start: int, stop: int) -> None:
    shared.array[start:stop] += 1


# --- pure serializer --------------------------------------------------------------------


def test_payload_moves_big_buffers_out_of_band(low_threshold: None) -> None:
    a = np.arange(1000, dtype=np.float64)
    data = _payload.dumps_payload(a)
    assert len(data) < 400  # the array is not in the bytes
    assert _payload.payload_size(data) == a.nbytes
    back = _payload.loads(data)
    assert np.array_equal(back, a) and shm_backed(back)
    del data, back  # the owner's payload frees its segment
    assert not _ours()


def test_small_payloads_stay_ordinary_pickles() -> None:
    data = _payload.dumps_payload((1, "two", np.arange(3)))
    assert data[:1] == b"\x80" and _payload.payload_size(data) == 0


@pytest.mark.parametrize(
    "value",
    [
        b"x" * 5000,
        bytearray(range(256)) * 20,
        pickle.PickleBuffer(bytearray(b"y" * 5000)),
        np.arange(5000, dtype=np.int16).reshape(50, 100)[:, ::3],  # non-contiguous
        np.asfortranarray(np.arange(600.0).reshape(20, 30)),
        np.array([object(), "x", 3] * 100, dtype=object)[:3],
        np.zeros(300, dtype=[("a", "<i4"), ("b", "<f8", (2,))]),
    ],
    ids=["bytes", "bytearray", "picklebuffer", "strided", "fortran", "object", "structured"],
)
def test_byteslike_and_odd_arrays_round_trip(low_threshold: None, value: Any) -> None:
    data = _payload.dumps_payload(value)
    if not isinstance(value, np.ndarray) or (value.flags.forc and not value.dtype.hasobject):
        assert _payload.payload_size(data) > 0  # went through shared memory
    back = _payload.loads(data)
    if isinstance(value, pickle.PickleBuffer):
        assert bytes(back) == bytes(value.raw())
    elif isinstance(value, np.ndarray):
        assert back.dtype == value.dtype and back.shape == value.shape
        if value.dtype.hasobject:
            assert [type(x) for x in back] == [type(x) for x in value]
        else:
            assert np.array_equal(back, value)
            assert back.flags.f_contiguous == value.flags.f_contiguous
    else:
        assert back == value and type(back) is type(value)


def test_memoryview_round_trips_with_its_format(low_threshold: None) -> None:
    a = np.arange(1000, dtype=np.float64).reshape(10, 100)
    data = _payload.dumps_payload([b"x" * 1000, memoryview(a), a, b"tiny"])
    assert _payload.payload_size(data) == 1000 + 2 * a.nbytes
    blob, back, array, tiny = _payload.loads(data)
    assert blob == b"x" * 1000 and tiny == b"tiny" and np.array_equal(array, a)
    assert isinstance(back, memoryview)
    assert back.format == "d" and back.shape == (10, 100)
    assert back.tobytes() == a.tobytes()


def test_pack_unpack_hand_over_and_release(low_threshold: None) -> None:
    a = np.arange(2000.0)
    data = _payload.pack({"a": a, "n": 1})
    assert isinstance(data, bytes) and len(data) < 500
    got = _payload.unpack(data)
    assert np.array_equal(got["a"], a) and got["n"] == 1
    assert not _ours()  # the reader took the segment over: the name is gone
    with pytest.raises(FileNotFoundError):
        _payload.unpack(data)  # a message is read once
    unread = _payload.pack(a)
    assert len(_ours()) == 1
    _payload.release(unread)
    _payload.release(unread)
    assert not _ours()
    _payload.release(_payload.pack(1))  # nothing to free


# --- through pools, under every start method ----------------------------------------------


ARRAYS = hnp.arrays(
    dtype=st.one_of(
        hnp.integer_dtypes(),
        hnp.unsigned_integer_dtypes(),
        hnp.floating_dtypes(),
        hnp.complex_number_dtypes(),
        hnp.datetime64_dtypes(),
        hnp.byte_string_dtypes(),
        hnp.unicode_string_dtypes(),
        st.just(np.dtype(bool)),
    ),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12),
)


def _variants(a: np.ndarray, order: str, step: int) -> np.ndarray:
    b = np.asfortranarray(a) if order == "F" else a
    return b[::step] if step > 1 else b


def test_round_trips_through_a_pool(start_method: Optional[str], low_threshold: None) -> None:
    with Pool(2, context=start_method) as pool:

        @given(a=ARRAYS, order=st.sampled_from("CF"), step=st.sampled_from([1, 2]))
        def check(a: np.ndarray, order: str, step: int) -> None:
            value = _variants(a, order, step)
            back = pool.apply_async(echo, (value,)).get(helpers.TIMEOUT)
            # As an ordinary pickle would give it (NumPy itself turns a non-contiguous
            # big-endian array into a native one when pickling it).
            expected = pickle.loads(pickle.dumps(value, 5))
            assert back.dtype == expected.dtype and back.shape == value.shape
            assert back.flags.f_contiguous == expected.flags.f_contiguous
            np.testing.assert_array_equal(back, value)

        check()
        big = np.arange(4096, dtype=np.float64)
        assert pool.apply_async(shm_backed, (big,)).get(helpers.TIMEOUT)
        back = pool.apply_async(echo, (big,)).get(helpers.TIMEOUT)
        assert shm_backed(back) and np.array_equal(back, big)
        assert pool.map(total, [big, big * 2], chunksize=1) == [big.sum(), 2 * big.sum()]
        pool.close()
        pool.join()


def test_reused_segments_never_change_under_a_reader(low_threshold: None) -> None:
    n = 50_000
    with Pool(1) as pool:
        # Results the caller keeps: the worker must not refill their segments.
        kept = [
            pool.apply_async(echo, (np.full(n, float(i)),)).get(helpers.TIMEOUT) for i in range(8)
        ]
        for i, a in enumerate(kept):
            assert shm_backed(a) and (a == i).all(), i
        # Arguments the worker keeps: the caller must not refill their segments.
        assert pool.apply_async(keep, (np.full(n, 7.0),)).get(helpers.TIMEOUT) == 7.0 * n
        for i in range(6):
            assert pool.apply_async(total, (np.full(n, float(i)),)).get(helpers.TIMEOUT) == i * n
        assert pool.apply_async(kept_sums).get(helpers.TIMEOUT) == [7.0 * n]
        # Results dropped at once free their segments for the next ones.
        for _ in range(6):
            assert pool.apply_async(total, (np.full(n, 1.0),)).get(helpers.TIMEOUT) == n
            assert (pool.apply_async(echo, (np.full(n, 2.0),)).get(helpers.TIMEOUT) == 2.0).all()
        for i, a in enumerate(kept):  # still intact after all that traffic
            assert (a == i).all(), i
        # The worker keeps at most a few segments to refill; the rest were handed over.
        assert len([n for n in _ours() if n.startswith("manycore_w")]) <= 4
        pool.close()
        pool.join()
    del kept
    assert helpers.wait_until(lambda: not _ours(), helpers.TIMEOUT), _ours()


def test_arguments_of_two_sizes_in_turn_keep_their_segments() -> None:
    """A map of small arrays and a call with a big one, in turn, each reuse the segments
    they made (the caller keeps both kinds), instead of each pushing the other's out and
    paying a new segment at every call (an executor's 128 MiB chunk after a map of 16 MiB
    arrays cost it 6x its time)."""
    small = [np.full(1 << 17, float(i)) for i in range(6)]  # 1 MiB each
    big = np.ones(1 << 20)  # 8 MiB

    def big_segments() -> set[str]:
        return {s.segment.name for s in _payload._spares.spares if s.segment.size >= big.nbytes}

    def all_free() -> bool:
        return all(_payload._spares._free(s) for s in _payload._spares.spares)

    seen = []
    with Pool(2) as pool:
        for _ in range(4):
            sums = pool.map_async(total, small, chunksize=1).get(helpers.TIMEOUT)
            assert sums == [float(i) * (1 << 17) for i in range(6)]
            assert pool.apply_async(total, (big,)).get(helpers.TIMEOUT) == float(1 << 20)
            # The workers free a segment once their views of it are gone: wait for that,
            # so that the next call finds every spare free.
            assert helpers.wait_until(all_free, helpers.TIMEOUT)
            seen.append(big_segments())
        pool.close()
        pool.join()
    assert len(seen[0]) == 1, seen
    assert seen[1:] == seen[:-1], seen  # the same big segment served every call


# --- one rule for reusing a payload segment (_reuse): forks and dead readers --------------

_held: list[Any] = []  # what a forked child drops (its frames above the target never unwind)


def _send_kept_result(conn: Any, n: int) -> None:
    """In a child: a result placed as a pool worker places it (a kept segment), kept alive
    until the parent says it is done."""
    conn.send_bytes(_payload.dumps_payload(np.arange(n, dtype=float), handoff=True, reuse=True))
    conn.recv_bytes()
    _payload.drop_segments()


def _drop_what_the_parent_holds() -> None:
    _held.clear()
    gc.collect()  # the views' finalizers run here, in the forked copy


def _read_and_die(data: bytes) -> None:
    _held.append(_payload.loads(data))
    os._exit(0)  # holding the views: nothing is collected


def _state_of(data: bytes) -> int:
    seg = _shm.Segment.attach(_payload._parse(data)[1])
    state = _reuse.state_word(seg.buf)
    try:
        return int(state[0])
    finally:
        state.release()
        seg.close()


def test_a_forked_copy_of_a_result_never_frees_the_readers_segment(low_threshold: None) -> None:
    fork = multiprocessing.get_context("fork")
    ours, theirs = fork.Pipe()
    writer = fork.Process(target=_send_kept_result, args=(theirs, 5000))
    writer.start()
    try:
        data = ours.recv_bytes()
        _held.append(_payload.loads(data))
        mine = (os.getpid() << 2) | _reuse.HELD
        assert _state_of(data) == mine
        child = fork.Process(target=_drop_what_the_parent_holds)
        child.start()
        child.join(helpers.TIMEOUT)
        assert child.exitcode == 0
        assert _state_of(data) == mine  # the child's drop left the parent's array alone
        assert (_held[0] == np.arange(5000)).all()
        _held.clear()
        gc.collect()
        assert _state_of(data) == _reuse.FREE  # the reader's own drop frees it
    finally:
        _held.clear()
        ours.send_bytes(b"done")
        writer.join(helpers.TIMEOUT)
    assert writer.exitcode == 0


def test_a_payload_segment_whose_reader_died_is_taken_back(low_threshold: None) -> None:
    _payload.pool_opened()  # task arguments go in kept segments while a pool lives
    try:
        data = _payload.dumps_payload(np.ones(5000))
        name = _payload._parse(data)[1]
        reader = multiprocessing.get_context("fork").Process(target=_read_and_die, args=(data,))
        reader.start()
        reader.join(helpers.TIMEOUT)
        assert reader.exitcode == 0
        assert _state_of(data) == (reader.pid << 2) | _reuse.HELD  # held by a dead reader
        del data  # the task settled: its lease on the segment goes
        again = _payload.dumps_payload(np.full(5000, 2.0))
        assert _payload._parse(again)[1] == name  # taken back and refilled
        assert (_payload.loads(again) == 2.0).all()
        del again
    finally:
        _payload.pool_closed()


def test_executor_and_bytes(low_threshold: None) -> None:
    blob = os.urandom(100_000)
    with ProcessPoolExecutor(2) as ex:
        assert ex.submit(echo, blob).result(helpers.TIMEOUT) == blob
        got = ex.submit(echo, bytearray(blob)).result(helpers.TIMEOUT)
        assert got == bytearray(blob) and type(got) is bytearray
        assert list(ex.map(total, [np.ones(1000)] * 3)) == [1000.0] * 3


def test_freed_after_exceptions_and_uncollected_results(low_threshold: None) -> None:
    a = np.ones(10_000)
    with Pool(2) as pool:
        with pytest.raises(ValueError, match="bad array of 10000"):
            pool.apply_async(fail_with, (a,)).get(helpers.TIMEOUT)
        for _ in range(3):
            pool.apply_async(echo, (a,))  # results never collected
        pool.close()
        pool.join()
    # the leak fixture checks /dev/shm too; be explicit here
    assert helpers.wait_until(lambda: not _ours(), helpers.TIMEOUT)


def test_worker_killed_mid_transfer_leaves_nothing(low_threshold: None) -> None:
    with Pool(1) as pool:
        with pytest.raises(manycore.WorkerLostError):
            pool.apply_async(die_mid_transfer, (50_000,)).get(helpers.TIMEOUT)
        # the replacement worker still moves arrays
        assert pool.apply_async(total, (np.ones(5000),)).get(helpers.TIMEOUT) == 5000.0
        # The dead worker's segment is gone (the caller's reusable ones stay while the pool
        # lives).
        assert not any(n.startswith("manycore_w") for n in _ours()), _ours()
        pool.close()
        pool.join()
    assert helpers.wait_until(lambda: not _ours(), helpers.TIMEOUT), _ours()


def test_terminate_with_big_tasks_in_flight(low_threshold: None) -> None:
    pool = Pool(2)
    try:
        results = [pool.apply_async(sleepy, (np.ones(20_000), 5.0)) for _ in range(4)]
        time.sleep(0.3)
    finally:
        pool.terminate()
        pool.join()
    for r in results:
        with pytest.raises(Exception):  # noqa: B017 - any error; the task did not finish
            r.get(helpers.TIMEOUT)
    del results
    assert helpers.wait_until(lambda: not _ours(), helpers.TIMEOUT), _ours()


_KILLED_CALLER = r"""
import os, sys, numpy as np
from manycore import _buffers, _payload
from manycore._pool import Pool
from tests.test_zero_copy import sleepy
_buffers.set_shm_threshold(64)
pool = Pool(2)
rs = [pool.apply_async(sleepy, (np.ones(20_000), 60.0)) for _ in range(2)]
held = _payload.pack(np.ones(5000))  # a message nobody reads
import time
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    names = [n for n in os.listdir("/dev/shm") if n.startswith("manycore")]
    if len(names) >= 3:
        break
    time.sleep(0.05)
print(" ".join(names), flush=True)
time.sleep(120)
"""


def test_caller_sigkilled_the_tracker_frees_its_segments() -> None:
    with helpers.python_running(_KILLED_CALLER) as proc:
        assert proc.stdout is not None
        listed = helpers.read_line(proc.stdout).split()
        names = set(listed) - helpers.held_by_others(listed)  # not another job's segments
        assert len(names) >= 3, listed
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=helpers.TIMEOUT)
        left = helpers.shm_left(names, 30.0)
        assert not left, left


_KILLED_TOGETHER = r"""
import os, time, numpy as np
from manycore import _buffers
from manycore._pool import Pool
from tests.test_zero_copy import echo, leave_segment_and_sleep
_buffers.set_shm_threshold(64)
pool = Pool(1)
pool.apply(echo, (np.ones(5000),))  # one result through shared memory
pool.apply_async(leave_segment_and_sleep, (5000,))
deadline = time.monotonic() + 30
names = []
while time.monotonic() < deadline and not names:
    names = [n for n in os.listdir("/dev/shm") if n.startswith("manycore_w")]
    time.sleep(0.05)
print(" ".join(names), flush=True)
time.sleep(120)
"""


def test_caller_and_worker_sigkilled_together_leave_nothing() -> None:
    with helpers.python_running(_KILLED_TOGETHER) as proc:
        assert proc.stdout is not None
        listed = helpers.read_line(proc.stdout).split()
        names = set(listed) - helpers.held_by_others(listed)  # not another job's segments
        assert names, listed
        # The workers and the fork server, not the tracker (what a real crash spares: it
        # runs in its own session, away from the process group's signals).
        family = {
            p for p in helpers.descendants(proc.pid) if "-I -S -c" not in helpers.cmdline(p.pid)
        }
        os.kill(proc.pid, signal.SIGKILL)
        for p in family:  # the workers and the fork server die at the same moment
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=helpers.TIMEOUT)
        assert not helpers.shm_left(names, 30.0), names


# --- SharedArray --------------------------------------------------------------------------


def test_shared_array_workers_write_parent_sees(start_method: Optional[str]) -> None:
    shared = shared_array((1000,), dtype=np.int64)
    try:
        assert shared.array.sum() == 0
        with Pool(2, context=start_method) as pool:
            pool.starmap(add_one_in_place, [(shared, 0, 500), (shared, 250, 1000)])
            pool.close()
            pool.join()
        expected = np.ones(1000, dtype=np.int64)
        expected[250:500] = 2
        assert np.array_equal(shared.array, expected)
    finally:
        shared.close()
    assert not _ours()


def test_shared_array_from_array_and_pickle() -> None:
    a = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    with SharedArray.from_array(a) as shared:
        assert np.array_equal(shared.array, a) and shared.array.flags.f_contiguous
        other = pickle.loads(pickle.dumps(shared))
        other.array[0, 0] = 99
        assert shared.array[0, 0] == 99
        other.close()
        assert _ours()  # a receiver's close never frees the owner's memory
    with pytest.raises(ValueError, match="Python objects"):
        shared_array(3, dtype=object)


def test_importing_manycore_does_not_import_numpy() -> None:
    out = helpers.run_python(
        ["-c", "import sys, manycore, manycore._sharedarray; print('numpy' in sys.modules)"]
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --- no room in shared memory -------------------------------------------------------------


@pytest.mark.parametrize("how", ["too small", "missing"])
def test_fallback_without_room_warns_once_and_works(
    low_threshold: None, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(_buffers, "_warned", False)
    if how == "too small":
        monkeypatch.setenv(_shm.LIMIT_VAR, "1000")
    else:
        monkeypatch.setenv(_shm.DIR_VAR, "/nonexistent/manycore-shm")
    a = np.arange(5000.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        datas = [_payload.dumps_payload(a) for _ in range(3)]
        with Pool(1) as pool:
            back = pool.apply_async(echo, (a,)).get(helpers.TIMEOUT)
            pool.close()
            pool.join()
    assert all(d[:1] == b"\x80" for d in datas)  # ordinary pickles, through the pipe
    assert all(np.array_equal(_payload.loads(d), a) for d in datas)
    assert np.array_equal(back, a)
    shm_warnings = [w for w in caught if issubclass(w.category, _buffers.SharedMemoryWarning)]
    assert len(shm_warnings) == 1, [str(w.message) for w in caught]
    assert "shm" in str(shm_warnings[0].message)
