"""NumPy arrays in shared memory that the user owns: ``shared_array`` and ``SharedArray``.

What this module guarantees:

* ``shared_array(shape, dtype)`` (zero-filled) and ``SharedArray.from_array(a)`` (a copy of
  ``a``) make an array backed by one ``_shm.Segment`` owned by the calling process; ``.array``
  is a ``numpy.ndarray`` viewing it.
* A ``SharedArray`` pickles as a handle (segment name, shape, dtype, order): passed to a pool
  task, a ``Process`` or a queue, the receiver maps the same memory, so its writes are seen by
  everyone at once, with nothing copied back. Receivers never free the memory.
* The owner frees it at ``unlink()`` (or ``close()`` of the owner, or garbage collection, or
  interpreter exit, or through the tracker when the owner is killed). Arrays already obtained
  from ``.array`` stay valid after that; new receivers cannot attach any more.
* NumPy is imported only when one of these is used: ``import manycore`` never imports it.
* A ``SharedArray`` behaves as its array where NumPy users expect it to (#6): indexing and
  slicing (views of the shared memory, so ``sa[2:5] = 1`` writes it), ``len``, iteration,
  ``shape``/``dtype``, ``np.asarray(sa)`` without a copy, every ufunc and operator
  (``sa + 1``, ``np.sqrt(sa)``: a new private array; ``sa += 1`` and ``out=sa``: in
  place), and the array's own attributes and methods (``sa.sum()``, ``sa.ndim``). Results
  are plain ``ndarray``s: only what was made with ``shared_array``/``from_array`` is shared.
  As with an array, ``==`` compares element by element and a ``SharedArray`` is unhashable.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Optional

from ._shm import Segment

__all__ = ["SharedArray", "shared_array"]


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - numpy is installed in the test env
        raise ImportError(
            "manycore.SharedArray needs NumPy: install it with pip install 'manycore[numpy]'"
        ) from exc
    return numpy


class SharedArray:
    """A NumPy array in shared memory; pickles as a handle to the same memory."""

    __slots__ = ("_array", "_owner", "dtype", "order", "segment", "shape")

    def __init__(
        self, segment: Segment, shape: tuple[int, ...], dtype: Any, order: str, owner: bool
    ) -> None:
        # Use shared_array() or SharedArray.from_array(); this assembles the object.
        np = _numpy()
        self.segment = segment
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.order = order
        self._owner = owner
        count = math.prod(self.shape)
        self._array: Optional[Any] = (
            np.ndarray(self.shape, self.dtype, buffer=segment.buf, order=order)
            if count
            else np.zeros(self.shape, self.dtype, order=order)
        )

    @classmethod
    def create(cls, shape: Any, dtype: Any = float, order: str = "C") -> SharedArray:
        """A zero-filled shared array.

        Raises:
            ValueError: an object dtype (Python objects cannot live in shared memory) or an
                order other than "C"/"F".
            manycore._shm.ShmUnavailableError: no room in shared memory.
        """
        np = _numpy()
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise ValueError(
                f"a SharedArray cannot hold Python objects (dtype {dt}): use a numeric, "
                "string or structured dtype without object fields"
            )
        if order not in ("C", "F"):
            raise ValueError(f"order must be 'C' or 'F', not {order!r}")
        shape_t = (int(shape),) if isinstance(shape, int) else tuple(int(n) for n in shape)
        nbytes = math.prod(shape_t) * dt.itemsize
        return cls(Segment.create(nbytes), shape_t, dt, order, owner=True)

    @classmethod
    def from_array(cls, a: Any) -> SharedArray:
        """A shared copy of the array ``a`` (same shape, dtype, and C or F order)."""
        np = _numpy()
        a = np.asarray(a)
        order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"
        shared = cls.create(a.shape, a.dtype, order)
        shared.array[...] = a
        return shared

    @classmethod
    def _attach(cls, name: str, shape: tuple[int, ...], dtype: Any, order: str) -> SharedArray:
        return cls(Segment.attach(name), shape, dtype, order, owner=False)

    @property
    def array(self) -> Any:
        """The ``numpy.ndarray`` viewing the shared memory."""
        if self._array is None:
            raise ValueError("this SharedArray is closed")
        return self._array

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        a = self.array
        if dtype is not None:
            a = a.astype(dtype, copy=bool(copy))
        elif copy:
            a = a.copy()
        return a

    # ------------------------------------------------------------ the array protocol

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """Run NumPy's ufunc on the arrays behind any SharedArray among the operands."""
        inputs = tuple(x.array if isinstance(x, SharedArray) else x for x in inputs)
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(x.array if isinstance(x, SharedArray) else x for x in out)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __getitem__(self, key: Any) -> Any:
        return self.array[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.array[key] = value.array if isinstance(value, SharedArray) else value

    def __len__(self) -> int:
        return len(self.array)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.array)

    def __contains__(self, value: Any) -> bool:
        return value in self.array

    def __bool__(self) -> bool:
        return bool(self.array)

    def __int__(self) -> int:
        return int(self.array)

    def __float__(self) -> float:
        return float(self.array)

    def __index__(self) -> int:
        return self.array.__index__()  # type: ignore[no-any-return]

    __hash__ = None  # type: ignore[assignment]  # == is element-wise, as for an array

    def __getattr__(self, name: str) -> Any:
        # Only for names this class lacks: the array's attributes and methods (sa.sum()).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.array, name)

    @property
    def name(self) -> str:
        return self.segment.name

    def close(self) -> None:
        """Drop this handle's view; in the owner, also free the memory (as ``unlink``)."""
        self._array = None
        self.segment.close()
        if self._owner:
            self.segment.unlink()

    def unlink(self) -> None:
        """Free the shared memory (owner only; idempotent). Views already taken stay valid."""
        if self._owner:
            self.segment.unlink()

    def __reduce__(self) -> tuple[Any, ...]:
        return (SharedArray._attach, (self.segment.name, self.shape, self.dtype, self.order))

    def __repr__(self) -> str:
        return f"SharedArray(shape={self.shape}, dtype={self.dtype}, name={self.segment.name!r})"

    def __enter__(self) -> SharedArray:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _operator(ufunc: str, reflected: bool = False, in_place: bool = False) -> Any:
    def method(self: SharedArray, other: Any) -> Any:
        fn = getattr(_numpy(), ufunc)
        if in_place:
            fn(self.array, other, out=(self.array,))
            return self
        return fn(other, self) if reflected else fn(self, other)

    return method


def _unary(ufunc: str) -> Any:
    def method(self: SharedArray) -> Any:
        return getattr(_numpy(), ufunc)(self)

    return method


# The operators, each the ufunc NumPy's own ndarray uses (as numpy.lib.mixins lays them out,
# without importing NumPy here).
for _name, _ufunc in {
    "add": "add",
    "sub": "subtract",
    "mul": "multiply",
    "matmul": "matmul",
    "truediv": "true_divide",
    "floordiv": "floor_divide",
    "mod": "remainder",
    "pow": "power",
    "lshift": "left_shift",
    "rshift": "right_shift",
    "and": "bitwise_and",
    "or": "bitwise_or",
    "xor": "bitwise_xor",
}.items():
    setattr(SharedArray, f"__{_name}__", _operator(_ufunc))
    setattr(SharedArray, f"__r{_name}__", _operator(_ufunc, reflected=True))
    setattr(SharedArray, f"__i{_name}__", _operator(_ufunc, in_place=True))
setattr(SharedArray, "__divmod__", _operator("divmod"))  # noqa: B010
setattr(SharedArray, "__rdivmod__", _operator("divmod", reflected=True))  # noqa: B010
for _name, _ufunc in {
    "lt": "less",
    "le": "less_equal",
    "eq": "equal",
    "ne": "not_equal",
    "gt": "greater",
    "ge": "greater_equal",
}.items():
    setattr(SharedArray, f"__{_name}__", _operator(_ufunc))
for _name, _ufunc in {
    "neg": "negative",
    "pos": "positive",
    "abs": "absolute",
    "invert": "invert",
}.items():
    setattr(SharedArray, f"__{_name}__", _unary(_ufunc))
del _name, _ufunc


def shared_array(shape: Any, dtype: Any = float, order: str = "C") -> SharedArray:
    """A zero-filled NumPy array in shared memory, owned by this process (see the module)."""
    return SharedArray.create(shape, dtype, order)
