"""Functions the chaos test and the soak run in workers (importable, so every start method
finds them by reference)."""

from __future__ import annotations

import time
from typing import Any


def echo_after(x: Any, seconds: float = 0.001) -> Any:
    """``x``, after ``seconds`` asleep: a task long enough for a SIGKILL to land inside it."""
    time.sleep(seconds)
    return x
