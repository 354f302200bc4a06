"""Value, Array, RawValue, RawArray: the stdlib's API on manycore's shared memory, handed to
processes of every start method and to pools, with writes visible both ways."""

from __future__ import annotations

import ctypes
import gc
import multiprocessing.sharedctypes
import os
import pickle
from typing import Any, Iterator, Optional

import cloudpickle
import pytest

import manycore
from manycore import _serialize
from manycore._context import get_context
from manycore._sharedctypes import (
    Array,
    RawArray,
    RawValue,
    Synchronized,
    SynchronizedArray,
    SynchronizedString,
    Value,
    copy,
    synchronized,
    typecode_to_type,
)
from manycore._shm import Segment
from manycore._synchronize import Condition, Lock, RLock
from tests import workloads_sync as w
from tests.helpers import TIMEOUT


@pytest.fixture(scope="module", autouse=True)
def segment_tracker() -> Iterator[None]:
    """Keep the shared-memory tracker running for the whole module (see test_synchronize)."""
    keep = Segment.create(8)
    yield
    keep.unlink()
    keep.close()


def run(method: Optional[str], target: Any, *args: Any) -> Optional[int]:
    p = get_context(method).Process(target=target, args=args)
    p.start()
    p.join(TIMEOUT)
    if p.is_alive():
        p.kill()
        p.join(TIMEOUT)
        pytest.fail(f"{p} did not finish within {TIMEOUT} s")
    code: Optional[int] = p.exitcode
    return code


def segment_of(obj: Any) -> Segment:
    raw = obj.get_obj() if hasattr(obj, "get_obj") else obj
    seg: Segment = raw._manycore_segment
    return seg


# ------------------------------------------------------------------------------ construction

VALUES = {
    "c": b"x",
    "u": "\u00e9",
    "b": -5,
    "B": 250,
    "h": -30000,
    "H": 60000,
    "i": -(2**31),
    "I": 2**32 - 1,
    "l": -(2**40),
    "L": 2**40,
    "q": -(2**62),
    "Q": 2**64 - 1,
    "f": 0.5,
    "d": 1e300,
}


@pytest.mark.parametrize("code", sorted(typecode_to_type))
def test_value_of_every_type_code(code: str) -> None:
    v = Value(code, VALUES[code])
    assert v.value == VALUES[code]
    assert isinstance(v.get_obj(), typecode_to_type[code])
    zero = RawValue(code)
    assert zero.value in (0, 0.0, b"\x00", "\x00")


def test_value_with_a_ctypes_type_and_a_structure() -> None:
    v = Value(ctypes.c_double, 2.5)
    assert v.value == 2.5

    three = Value(ctypes.c_int * 3)
    assert type(three) is SynchronizedArray and three[:] == [0, 0, 0]
    three[1] = 5
    assert pickle.loads(pickle.dumps(three))[:] == [0, 5, 0]
    p = Value(w.Point, 3, 4.5)
    assert (p.x, p.y) == (3, 4.5)
    p.x = 7
    assert p.get_obj().x == 7
    assert isinstance(p.get_obj(), w.Point)
    raw = RawValue(w.Point, 1, 2.0)
    back = pickle.loads(pickle.dumps(raw))
    assert (back.x, back.y) == (1, 2.0)
    assert run("spawn", w.move_point, p, 10) == 0
    assert p.x == 17


def test_wrappers_are_the_stdlib_wrapper_types() -> None:
    sc = multiprocessing.sharedctypes
    assert isinstance(Value("i"), sc.Synchronized)
    assert isinstance(Array("i", 2), sc.SynchronizedArray)
    assert isinstance(Array("c", 2), sc.SynchronizedString)
    assert type(Value("i")) is Synchronized
    assert type(Array("d", 2)) is SynchronizedArray
    assert type(Array("c", b"ab")) is SynchronizedString
    assert "c_int(3)" in repr(Value("i", 3))
    assert repr(RawValue("d", 1.5)) == "c_double(1.5)"


def test_lock_true_false_or_given() -> None:
    v = Value("i", 1)
    assert isinstance(v.get_lock(), RLock)  # recursive, as the stdlib's
    with v.get_lock():
        v.value += 1  # takes the same lock again inside
    assert v.value == 2
    raw = Value("i", 5, lock=False)
    assert isinstance(raw, ctypes.c_int) and raw.value == 5
    assert not hasattr(raw, "get_lock")
    lock = Lock()
    v2 = Value("d", 0.0, lock=lock)
    assert v2.get_lock() is lock
    a = Array("i", 3, lock=lock)
    assert a.get_lock() is lock
    assert isinstance(Array("i", 3, lock=False), ctypes.Array)
    lock.acquire()
    try:
        assert v2.acquire(timeout=0) is False  # the wrapper's acquire is the lock's
    finally:
        lock.release()
    with pytest.raises(AttributeError, match="acquire"):  # the stdlib's error type
        Value("i", 0, lock="yes")
    with pytest.raises(TypeError, match="already synchronized"):
        synchronized(v)


def test_array_indexing_slicing_and_slice_assignment() -> None:
    a = Array("i", range(10))
    assert len(a) == 10
    assert a[0] == 0 and a[-1] == 9
    assert a[2:5] == [2, 3, 4]
    assert a[::3] == [0, 3, 6, 9]
    a[2:5] = [20, 30, 40]
    assert a[:] == [0, 1, 20, 30, 40, 5, 6, 7, 8, 9]
    a[-1] = 99
    assert list(a)[-1] == 99
    with pytest.raises(IndexError):
        a[10]
    with pytest.raises(ValueError):
        a[0:2] = [1, 2, 3]  # ctypes does not resize
    zeros = RawArray("d", 4)
    assert zeros[:] == [0.0] * 4
    assert RawArray("i", 0)[:] == []


def test_char_array_value_and_raw() -> None:
    s = Array("c", b"hello")
    assert s.value == b"hello" and s.raw == b"hello"
    s.value = b"hi"
    assert s.value == b"hi"
    assert s.raw == b"hi\x00lo"
    s.raw = b"HELLO"
    assert s[:] == b"HELLO"
    sized = Array("c", 8)
    assert sized.raw == b"\x00" * 8 and sized.value == b""
    wide = RawArray("u", "abc")
    assert wide.value == "abc"


def test_copy_makes_independent_shared_memory() -> None:
    a = RawArray("i", [1, 2, 3])
    b = copy(a)
    b[0] = 100
    assert a[:] == [1, 2, 3] and b[:] == [100, 2, 3]
    assert segment_of(a).name != segment_of(b).name


def test_bad_type_codes_and_sizes_say_how_to_fix_them() -> None:
    with pytest.raises(TypeError, match=r"unknown type code 'x'.*one of"):
        Value("x")
    with pytest.raises(TypeError, match="unknown type code"):
        Array("int", 3)
    with pytest.raises(TypeError, match="neither a type code nor a ctypes type"):
        RawValue(int)
    with pytest.raises(TypeError, match="pointer"):
        RawValue(ctypes.c_char_p)
    with pytest.raises(ValueError, match=">= 0"):
        Array("i", -1)
    with pytest.raises(TypeError, match="list\\(it\\)"):
        RawArray("i", iter([1, 2]))
    with pytest.raises(TypeError, match="bool"):
        RawArray("i", True)


def test_memory_is_freed_when_the_object_goes() -> None:
    v = Value("i", 1)
    path = os.path.join("/dev/shm", segment_of(v).name)
    lock_name = v.get_lock()._semlock.name
    assert os.path.exists(path)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    del v
    gc.collect()
    assert not os.path.exists(path)
    assert not os.path.exists("/dev/shm/sem." + lock_name.lstrip("/"))


# ---------------------------------------------------------------------------------- pickling


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps, _serialize.dumps])
def test_pickles_as_a_handle_to_the_same_memory(dumps: Any) -> None:
    v, a, raw = Value("d", 1.5), Array("i", [1, 2, 3]), RawArray("c", b"abc")
    v2, a2, raw2 = pickle.loads(dumps((v, a, raw)))
    assert type(v2) is Synchronized and type(a2) is SynchronizedArray
    v2.value = 2.5
    a2[1:] = [20, 30]
    raw2[0] = b"X"
    assert v.value == 2.5 and a[:] == [1, 20, 30] and raw[:] == b"Xbc"
    a[0] = 10
    assert a2[0] == 10
    assert v2.get_lock()._semlock.name == v.get_lock()._semlock.name
    assert isinstance(raw2, ctypes.Array) and raw2._type_ is ctypes.c_char


# ---------------------------------------------------------------------------------- NumPy


def test_numpy_views_share_the_memory_without_a_copy() -> None:
    np = pytest.importorskip("numpy")
    a = Array("d", [1.0, 2.0, 3.0])
    view = np.frombuffer(a.get_obj(), dtype=np.float64)
    assert view.tolist() == [1.0, 2.0, 3.0]
    view[1] = 20.0
    assert a[1] == 20.0
    a[2] = 30.0
    assert view[2] == 30.0
    raw = RawArray("i", 4)
    as_array = np.asarray(raw)
    assert as_array.dtype == np.int32 and as_array.shape == (4,)
    as_array[:] = [4, 3, 2, 1]
    assert raw[:] == [4, 3, 2, 1]
    # No copy: both see the same address.
    assert as_array.__array_interface__["data"][0] == ctypes.addressof(raw)
    assert view.__array_interface__["data"][0] == ctypes.addressof(a.get_obj())


# ------------------------------------------------------------------------- across processes


def test_counter_with_four_processes_is_exact(start_method: Optional[str]) -> None:
    total, lock = Value("i", 0), Lock()
    procs = [
        get_context(start_method).Process(target=w.inc, args=(total, lock, 2500)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(TIMEOUT)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert total.value == 10000


def test_counter_under_the_values_own_lock() -> None:
    total = Value("q", 0)
    procs = [get_context(None).Process(target=w.inc_own_lock, args=(total, 1000)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(TIMEOUT)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert total.value == 4000


def test_child_writes_are_seen_by_the_parent(start_method: Optional[str]) -> None:
    v, arr, raw, chars = (
        Value("d", 0.0),
        Array("i", [10, 20, 30, 40]),
        RawArray("q", 3),
        Array("c", 6),
    )
    assert run(start_method, w.write_value, v, 3.25) == 0
    assert v.value == 3.25
    assert run(start_method, w.array_add, arr, 20) == 0
    assert arr[:] == [30, 40, 50, 60]  # the seed's shared array
    assert run(start_method, w.array_add, raw, 7) == 0
    assert raw[:] == [7, 7, 7]
    assert run(start_method, w.string_write, chars, b"hey") == 0
    assert chars.value == b"hey"


def test_writes_are_visible_both_ways_while_both_run(start_method: Optional[str]) -> None:
    value, turn = RawValue("i", 0), Condition()
    rounds = 5
    p = get_context(start_method).Process(target=w.ping_pong, args=(value, turn, rounds, TIMEOUT))
    p.start()
    try:
        for i in range(rounds):
            with turn:
                assert turn.wait_for(lambda i=i: value.value == 2 * i + 1, TIMEOUT)
                value.value += 1  # the parent's write, which the child waits to see
                turn.notify_all()
    finally:
        p.join(TIMEOUT)
    assert p.exitcode == 0
    assert value.value == 2 * rounds


def test_pool_initargs_and_task_args_share_the_value(start_method: Optional[str]) -> None:
    total, lock = Value("i", 0), Lock()
    with manycore.Pool(
        2, initializer=w.pool_init, initargs=(lock, total), context=start_method
    ) as pool:
        assert pool.map_async(w.pool_inc, [200] * 3, chunksize=1).get(TIMEOUT) == [200] * 3
        arr = Array("i", [1, 2])
        assert pool.apply_async(w.array_add, (arr, 5)).get(TIMEOUT) is None
    assert total.value == 600
    assert arr[:] == [6, 7]
