"""Progress reports for map calls: ``progress=True``, a tqdm bar, or a callback.

``make_progress`` turns what the user passed into a ``Progress`` (or None: no cost at all).
Its ``advance`` runs on the pool's scheduler thread once per settled chunk, never per item,
so a bar over 200k trivial items costs a few hundred updates; tqdm itself redraws at most
ten times a second. ``finish`` runs once, when the call ends for any reason: all done, an
error, a cancel, Ctrl-C, or the pool going away.

* ``True``: a ``tqdm.auto`` bar (a widget in Jupyter when ipywidgets is installed, text on
  stderr elsewhere), owned and closed by manycore.
* a tqdm instance (anything with ``update`` and ``close``): updated; its ``total`` is set
  when it has none; closed by its owner, not by manycore.
* a callable: called as ``callback(done, total)`` (``total`` is None for input of unknown
  length) on the scheduler thread; it must return quickly.
"""

from __future__ import annotations

import threading
import traceback
from typing import Any, Callable, Optional

__all__ = ["Progress", "make_progress"]


class Progress:
    """One call's progress: counts items and forwards them to a bar or a callback."""

    def __init__(
        self,
        total: Optional[int],
        bar: Any = None,
        callback: Optional[Callable[[int, Optional[int]], object]] = None,
        owned: bool = False,
    ) -> None:
        self.total = total
        self.done = 0
        self._bar = bar
        self._callback = callback
        self._owned = owned  # close the bar when the call ends
        self._finished = False
        self._lock = threading.Lock()

    def advance(self, items: int) -> None:
        """``items`` more items settled (successfully or not)."""
        if self._finished or not items:
            return
        self.done += items
        try:
            if self._bar is not None:
                self._bar.update(items)
            if self._callback is not None:
                self._callback(self.done, self.total)
        except Exception:  # a broken bar or callback must not break the pool
            traceback.print_exc()
            self._bar = self._callback = None

    def finish(self) -> None:
        """The call ended (any way): close the bar manycore made; later advances are ignored."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        if self._owned and self._bar is not None:
            try:
                self._bar.close()
            except Exception:
                traceback.print_exc()


def make_progress(spec: Any, total: Optional[int], desc: str = "") -> Optional[Progress]:
    """The ``Progress`` for a call's ``progress=`` argument; None for None/False.

    Raises:
        TypeError: ``spec`` is neither a bool, a tqdm-like bar nor a callable.
        ImportError: ``progress=True`` without tqdm installed.
    """
    if spec is None or spec is False:
        return None
    if spec is True:
        try:
            from tqdm.auto import tqdm  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - tqdm is a dependency
            raise ImportError(
                "progress=True draws its bar with tqdm, which is not installed: pip install tqdm"
            ) from exc
        bar = tqdm(total=total, desc=desc or None, unit="item", dynamic_ncols=True)
        return Progress(total, bar=bar, owned=True)
    if hasattr(spec, "update") and hasattr(spec, "close"):
        if getattr(spec, "total", 0) is None and total is not None:
            spec.total = total
            try:
                spec.refresh()
            except Exception:
                pass
        return Progress(total, bar=spec)
    if callable(spec):
        return Progress(total, callback=spec)
    raise TypeError(
        f"progress must be True, a tqdm bar or a callable (done, total) -> None, not {spec!r}"
    )
