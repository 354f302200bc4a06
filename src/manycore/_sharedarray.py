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
"""

from __future__ import annotations

import math
from typing import Any, Optional

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
        return a if dtype is None else a.astype(dtype)

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


def shared_array(shape: Any, dtype: Any = float, order: str = "C") -> SharedArray:
    """A zero-filled NumPy array in shared memory, owned by this process (see the module)."""
    return SharedArray.create(shape, dtype, order)
