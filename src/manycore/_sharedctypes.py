"""Shared ctypes objects: ``Value``, ``Array``, ``RawValue``, ``RawArray`` on named segments.

What this module guarantees:

* Each object lives in its own shared-memory ``Segment`` (``_shm.py``): created and owned by
  the process that called ``Value``/``Array``/..., unlinked when that object is
  garbage-collected or the process exits (or, through the segment tracker, when it is
  killed). Memory starts zeroed, then takes the initial value.
* A raw object is an instance of a ctypes type (``ctypes.c_int``, ``c_double * 4``, a
  ``Structure``...), or rather of a subclass made here that adds pickling: it pickles as a
  handle (the segment's name, the type and the length), so the process that unpickles it
  maps the same memory and writes are visible both ways. That works wherever manycore
  pickles: ``Process`` arguments under every start method, ``Pool``/``Executor`` initargs
  and task arguments, queue items. ``isinstance(v, ctypes.c_int)`` stays true.
* ``Value``/``Array`` wrap the raw object in a ``Synchronized*`` object (subclasses of the
  stdlib's ``multiprocessing.sharedctypes`` wrappers) whose ``.value``, indexing and slicing
  each take the lock: a new ``RLock`` for ``lock=True``, none for ``lock=False`` (the raw
  object is returned), or the lock given. They pickle as the raw handle plus the lock.
* ``numpy.frombuffer(arr.get_obj(), dtype)`` / ``numpy.asarray(raw)`` view the shared
  memory without a copy.

As with the stdlib, the creating process must keep the object referenced until every
process that uses it has unpickled it.
"""

from __future__ import annotations

import ctypes
from multiprocessing import sharedctypes as _mpsc
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Literal,
    Optional,
    Sequence,
    TypeVar,
    Union,
    overload,
)

from ._shm import Segment
from ._synchronize import RLock

if TYPE_CHECKING:
    # The types the stdlib's stubs give these functions (the classes below subclass them).
    from _ctypes import _CData
    from ctypes import _SimpleCData
    from multiprocessing.sharedctypes import Synchronized as _Synchronized
    from multiprocessing.sharedctypes import SynchronizedArray as _SynchronizedArray
    from multiprocessing.sharedctypes import SynchronizedString as _SynchronizedString
    from multiprocessing.synchronize import _LockLike

_T = TypeVar("_T")  # what a simple ctypes type holds (int for c_int)
_CT = TypeVar("_CT", bound="_CData")  # a ctypes type

__all__ = [
    "Array",
    "RawArray",
    "RawValue",
    "Synchronized",
    "SynchronizedArray",
    "SynchronizedString",
    "Value",
    "copy",
    "synchronized",
    "typecode_to_type",
]

typecode_to_type: dict[str, Any] = {
    "c": ctypes.c_char,
    "u": ctypes.c_wchar,
    "b": ctypes.c_byte,
    "B": ctypes.c_ubyte,
    "h": ctypes.c_short,
    "H": ctypes.c_ushort,
    "i": ctypes.c_int,
    "I": ctypes.c_uint,
    "l": ctypes.c_long,
    "L": ctypes.c_ulong,
    "q": ctypes.c_longlong,
    "Q": ctypes.c_ulonglong,
    "f": ctypes.c_float,
    "d": ctypes.c_double,
}

TypeOrCode = Union[str, Any]

# ---------------------------------------------------------------------------------- raw objects


def _resolve(typecode_or_type: TypeOrCode, what: str) -> Any:
    """The ctypes type for a type code or a ctypes type, or a clear error."""
    if isinstance(typecode_or_type, str):
        try:
            return typecode_to_type[typecode_or_type]
        except KeyError:
            codes = " ".join(sorted(typecode_to_type))
            raise TypeError(
                f"{what}: unknown type code {typecode_or_type!r}; use one of {codes} "
                "(as in the array module) or a ctypes type such as ctypes.c_double"
            ) from None
    type_ = typecode_or_type
    if not isinstance(type_, type) or (
        not issubclass(type_, ctypes._SimpleCData)
        and not (issubclass(type_, (ctypes.Structure, ctypes.Union, ctypes.Array)))
    ):
        raise TypeError(
            f"{what}: {typecode_or_type!r} is neither a type code nor a ctypes type; use a "
            "type code such as 'i' or 'd', or a ctypes type such as ctypes.c_double"
        )
    if issubclass(type_, (ctypes._Pointer, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_wchar_p)):
        raise TypeError(
            f"{what}: {type_.__name__} holds a pointer, which means nothing in another "
            "process; share the data itself (an Array of the item type) instead"
        )
    return type_


_SHARED_TYPES: dict[tuple[Any, Optional[int]], type] = {}


def _shared_type(base: Any, length: Optional[int]) -> type:
    """The subclass of ``base`` (or of ``base * length``) whose instances pickle as handles."""
    key = (base, length)
    try:
        return _SHARED_TYPES[key]
    except KeyError:
        pass
    ctype = base if length is None else base * length
    namespace: dict[str, Any] = {
        "__reduce__": _reduce_shared,
        "__module__": __name__,
        "_manycore_base": (base, length),
    }
    if length is None and issubclass(base, ctypes._SimpleCData):
        namespace["__repr__"] = _simple_repr
    cls = type(ctype.__name__, (ctype,), namespace)
    _SHARED_TYPES[key] = cls
    return cls


def _simple_repr(self: Any) -> str:
    return f"{type(self).__name__}({self.value!r})"


def _reduce_shared(self: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    base, length = type(self)._manycore_base
    return (_attach, (base, length, self._manycore_segment))


def _attach(base: Any, length: Optional[int], segment: Segment) -> Any:
    """Unpickling: a ctypes object over the segment the pickle named (already attached)."""
    cls: Any = _shared_type(base, length)
    obj = cls.from_buffer(segment.buf)
    obj._manycore_segment = segment  # keeps the mapping alive as long as the object
    return obj


def _new(base: Any, length: Optional[int]) -> Any:
    if length is None and issubclass(base, ctypes.Array):
        # An array type (c_int * 3): keep the item type and length, which pickle by name.
        base, length = base._type_, base._length_
    cls: Any = _shared_type(base, length)
    segment = Segment.create(ctypes.sizeof(cls))  # fresh memory is zeroed
    obj = cls.from_buffer(segment.buf)
    obj._manycore_segment = segment
    return obj


@overload
def RawValue(typecode_or_type: type[_CT], *args: Any) -> _CT: ...
@overload
def RawValue(typecode_or_type: str, *args: Any) -> Any: ...
def RawValue(typecode_or_type: TypeOrCode, *args: Any) -> Any:
    """A ctypes object in shared memory, without a lock.

    Raises:
        TypeError: an unknown type code or a type that is not a ctypes data type.
    """
    type_ = _resolve(typecode_or_type, "RawValue")
    obj = _new(type_, None)
    if args:
        obj.__init__(*args)
    return obj


@overload
def RawArray(
    typecode_or_type: type[_CT], size_or_initializer: Union[int, Sequence[Any]]
) -> ctypes.Array[_CT]: ...
@overload
def RawArray(typecode_or_type: str, size_or_initializer: Union[int, Sequence[Any]]) -> Any: ...
def RawArray(typecode_or_type: TypeOrCode, size_or_initializer: Union[int, Sequence[Any]]) -> Any:
    """A ctypes array in shared memory, without a lock: ``size`` zeroed items, or a copy of a
    sequence.

    Raises:
        TypeError: an unknown type code, or a size that is neither an int nor a sequence.
        ValueError: a negative size.
    """
    type_ = _resolve(typecode_or_type, "RawArray")
    if isinstance(size_or_initializer, bool):
        raise TypeError("RawArray: the size must be an int or a sequence, not a bool")
    if isinstance(size_or_initializer, int):
        if size_or_initializer < 0:
            raise ValueError(
                f"RawArray: the size must be >= 0, not {size_or_initializer}; pass the number "
                "of items, or a sequence of initial values"
            )
        return _new(type_, size_or_initializer)
    try:
        length = len(size_or_initializer)
    except TypeError:
        raise TypeError(
            "RawArray: size_or_initializer must be an int (the number of items) or a sequence "
            f"of initial values, not {type(size_or_initializer).__name__}; for an iterator, "
            "pass list(it)"
        ) from None
    obj = _new(type_, length)
    if isinstance(size_or_initializer, (bytes, str)) and type_ in (ctypes.c_char, ctypes.c_wchar):
        obj[:] = size_or_initializer
    else:
        obj.__init__(*size_or_initializer)
    return obj


def copy(obj: Any) -> Any:
    """A new raw shared object holding a copy of the ctypes object ``obj``."""
    base, length = getattr(type(obj), "_manycore_base", (type(obj), None))
    new = _new(base, length)
    ctypes.memmove(ctypes.addressof(new), ctypes.addressof(obj), ctypes.sizeof(new))
    return new


# ---------------------------------------------------------------------------------- wrappers


def _lock_for(lock: Any, what: str) -> Any:
    if lock is True or lock is None:
        return RLock()
    if not hasattr(lock, "acquire") or not hasattr(lock, "release"):
        # AttributeError, as the stdlib raises for a lock without ``acquire``: code catches it.
        raise AttributeError(
            f"{what}: lock must be True, False or a lock object with acquire()/release() "
            f"(manycore.Lock(), manycore.RLock()), not {lock!r}"
        )
    return lock


@overload
def Value(
    typecode_or_type: type[_SimpleCData[_T]],
    *args: Any,
    lock: Literal[True] | _LockLike = True,
    ctx: Any = None,
) -> _Synchronized[_T]: ...
@overload
def Value(
    typecode_or_type: type[_CT], *args: Any, lock: Literal[False], ctx: Any = None
) -> _CT: ...
@overload
def Value(
    typecode_or_type: str, *args: Any, lock: Literal[True] | _LockLike = True, ctx: Any = None
) -> _Synchronized[Any]: ...
@overload
def Value(
    typecode_or_type: str | type[_CData], *args: Any, lock: bool | _LockLike = True, ctx: Any = None
) -> Any: ...
def Value(typecode_or_type: TypeOrCode, *args: Any, lock: Any = True, ctx: Any = None) -> Any:
    """A ctypes object in shared memory, wrapped with a lock (``lock=False``: unwrapped).

    Raises:
        TypeError: an unknown type code.
        AttributeError: a ``lock`` that is not a lock (the stdlib's error for it).
    """
    if lock is False:
        return RawValue(typecode_or_type, *args)
    lock = _lock_for(lock, "Value")
    return synchronized(RawValue(typecode_or_type, *args), lock)


@overload
def Array(
    typecode_or_type: type[_CT],
    size_or_initializer: Union[int, Sequence[Any]],
    *,
    lock: Literal[False],
    ctx: Any = None,
) -> ctypes.Array[_CT]: ...
@overload
def Array(
    typecode_or_type: type[ctypes.c_char],
    size_or_initializer: Union[int, Sequence[Any]],
    *,
    lock: Literal[True] | _LockLike = True,
    ctx: Any = None,
) -> _SynchronizedString: ...
@overload
def Array(
    typecode_or_type: type[_SimpleCData[_T]],
    size_or_initializer: Union[int, Sequence[Any]],
    *,
    lock: Literal[True] | _LockLike = True,
    ctx: Any = None,
) -> _SynchronizedArray[_T]: ...
@overload
def Array(
    typecode_or_type: str,
    size_or_initializer: Union[int, Sequence[Any]],
    *,
    lock: Literal[True] | _LockLike = True,
    ctx: Any = None,
) -> _SynchronizedArray[Any]: ...
@overload
def Array(
    typecode_or_type: str | type[_CData],
    size_or_initializer: Union[int, Sequence[Any]],
    *,
    lock: bool | _LockLike = True,
    ctx: Any = None,
) -> Any: ...
def Array(
    typecode_or_type: TypeOrCode,
    size_or_initializer: Union[int, Sequence[Any]],
    *,
    lock: Any = True,
    ctx: Any = None,
) -> Any:
    """A ctypes array in shared memory, wrapped with a lock (``lock=False``: unwrapped).

    Raises:
        TypeError: an unknown type code or a bad size.
        ValueError: a negative size.
        AttributeError: a ``lock`` that is not a lock (the stdlib's error for it).
    """
    if lock is False:
        return RawArray(typecode_or_type, size_or_initializer)
    lock = _lock_for(lock, "Array")
    return synchronized(RawArray(typecode_or_type, size_or_initializer), lock)


# The stdlib's wrapper classes (generic in typeshed, not subscriptable at runtime).
_SynchronizedBase: Any = _mpsc.SynchronizedBase
_StdSynchronized: Any = _mpsc.Synchronized
_StdSynchronizedArray: Any = _mpsc.SynchronizedArray
_StdSynchronizedString: Any = _mpsc.SynchronizedString


class _Wrapper(_SynchronizedBase):  # type: ignore[misc]
    """Common part of the wrappers: the stdlib's API, pickling anywhere."""

    def __init__(self, obj: Any, lock: Any = None, ctx: Any = None) -> None:
        self._obj = obj
        self._lock = lock if lock else RLock()
        self.acquire = self._lock.acquire
        self.release = self._lock.release

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (synchronized, (self._obj, self._lock))


def _locked_property(field: str) -> property:
    def get(self: Any) -> Any:
        lock = self._lock
        lock.acquire()
        try:
            return getattr(self._obj, field)
        finally:
            lock.release()

    def set(self: Any, value: Any) -> None:
        lock = self._lock
        lock.acquire()
        try:
            setattr(self._obj, field, value)
        finally:
            lock.release()

    return property(get, set)


class Synchronized(_Wrapper, _StdSynchronized):  # type: ignore[misc]
    """A shared scalar whose ``.value`` reads and writes take the lock."""

    # Written out (not getattr) for the hot path: ``with lock: v.value += 1``.
    @property
    def value(self) -> Any:
        acquire, release = self.acquire, self.release
        acquire()
        try:
            return self._obj.value
        finally:
            release()

    @value.setter
    def value(self, new: Any) -> None:
        acquire, release = self.acquire, self.release
        acquire()
        try:
            self._obj.value = new
        finally:
            release()


class SynchronizedArray(_Wrapper, _StdSynchronizedArray):  # type: ignore[misc]
    """A shared array whose indexing and slicing take the lock."""

    def __len__(self) -> int:
        return len(self._obj)

    def __getitem__(self, i: Any) -> Any:
        self.acquire()
        try:
            return self._obj[i]
        finally:
            self.release()

    def __setitem__(self, i: Any, value: Any) -> None:
        self.acquire()
        try:
            self._obj[i] = value
        finally:
            self.release()

    def __iter__(self) -> Any:
        return iter(self[:])


class SynchronizedString(SynchronizedArray, _StdSynchronizedString):  # type: ignore[misc]
    """A shared ``c_char`` array: also ``.value`` (up to the first NUL) and ``.raw``."""

    value = _locked_property("value")
    raw = _locked_property("raw")


_STRUCT_WRAPPERS: dict[type, type] = {}


def synchronized(obj: Any, lock: Any = None, ctx: Any = None) -> Any:
    """Wrap the raw shared object ``obj`` so that each access takes ``lock`` (default: a new
    ``RLock``)."""
    if isinstance(obj, _mpsc.SynchronizedBase):
        raise TypeError(f"{obj!r} is already synchronized; pass its get_obj()")
    lock = _lock_for(lock, "synchronized")
    if isinstance(obj, ctypes._SimpleCData):
        return Synchronized(obj, lock)
    if isinstance(obj, ctypes.Array):
        if obj._type_ is ctypes.c_char:
            return SynchronizedString(obj, lock)
        return SynchronizedArray(obj, lock)
    base = getattr(type(obj), "_manycore_base", (type(obj), None))[0]
    try:
        cls = _STRUCT_WRAPPERS[base]
    except KeyError:
        fields = {name: _locked_property(name) for name, *_ in base._fields_}
        cls = type("Synchronized" + base.__name__, (_Wrapper,), fields)
        _STRUCT_WRAPPERS[base] = cls
    return cls(obj, lock)
