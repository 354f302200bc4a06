"""Functions and classes the tests run in worker processes.

They live in an importable module (``pythonpath = ["."]`` in pyproject.toml), so they travel by
reference and every start method, spawn included, can import them in a worker.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import threading
import time
from typing import Any

# --- plain work -------------------------------------------------------------------------------


def square(x: Any) -> Any:
    return x * x


def add(a: Any, b: Any) -> Any:
    return a + b


def identity(x: Any) -> Any:
    return x


def getpid(_: Any = None) -> int:
    return os.getpid()


def getpid_slow(_: Any = None, delay: float = 0.05) -> int:
    """The worker's pid, after a pause long enough that every worker gets a share of a map."""
    time.sleep(delay)
    return os.getpid()


def slow(x: Any, delay: float = 0.05) -> Any:
    time.sleep(delay)
    return x


def slow_square(x: Any) -> Any:
    time.sleep(0.001)
    return x * x


def sleep_then(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


# --- exceptions -------------------------------------------------------------------------------


class CustomError(Exception):
    """A user exception with an attribute, to check that both come back from a worker."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> Any:
        return (CustomError, (self.args[0], self.code))


def raise_value_error(x: Any = None) -> Any:
    raise ValueError(f"bad value: {x!r}")


def raise_custom(code: int) -> Any:
    raise CustomError(f"custom failure {code}", code)


def raise_if(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"bad value: {x!r}")
    return x * x


# --- crashes ----------------------------------------------------------------------------------


def crash_exit(code: int = 3) -> Any:
    os._exit(code)


def crash_sigkill() -> Any:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)  # not reached


def segfault() -> None:
    faulthandler.disable()  # a worker forked from pytest would print a dump to the terminal
    ctypes.string_at(0)


def crash_segfault() -> Any:
    segfault()


CRASHES = {"exit": crash_exit, "sigkill": crash_sigkill, "segfault": crash_segfault}


def crash_later(kind: str, delay: float = 0.2) -> int:
    """Return the worker's pid at once, and make the worker die ``delay`` s later, so that it
    dies between tasks rather than during one."""

    def die() -> None:
        time.sleep(delay)
        if kind == "exit":
            os._exit(3)
        elif kind == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        else:
            segfault()

    threading.Thread(target=die, daemon=True).start()
    return os.getpid()


def exit_if(x: int, bad: int) -> int:
    if x == bad:
        os._exit(7)
    return x * x


# --- initializers -----------------------------------------------------------------------------

_STATE: dict[str, Any] = {}


def init_state(value: Any) -> None:
    _STATE["value"] = value


def get_state(_: Any = None) -> Any:
    return _STATE.get("value")


def init_raise() -> None:
    raise ValueError("initializer failed on purpose")


def init_exit() -> None:
    os._exit(5)


# --- pickling failures ------------------------------------------------------------------------


class Unpicklable:
    """Cannot be pickled at all (by pickle or cloudpickle)."""

    def __reduce__(self) -> Any:
        raise TypeError("Unpicklable objects refuse to be pickled")


def _refuse_to_unpickle(name: str) -> Any:
    raise RuntimeError(f"{name} refuses to be unpickled")


class FailsToUnpickle:
    """Pickles fine, but rebuilding it raises: as an argument it fails in the worker, as a
    result it fails in the caller."""

    def __reduce__(self) -> Any:
        return (_refuse_to_unpickle, ("FailsToUnpickle",))


def return_unpicklable(_: Any = None) -> Any:
    return threading.Lock()


def return_fails_to_unpickle(_: Any = None) -> Any:
    return FailsToUnpickle()


class UnpicklableError(Exception):
    """An exception that holds a lock, so the worker cannot pickle it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def raise_unpicklable_error(_: Any = None) -> Any:
    raise UnpicklableError("an error holding a lock")


class TwoArgError(Exception):
    """Pickles, but cannot be rebuilt: ``args`` has one item and ``__init__`` wants two (the
    classic exception that makes ``multiprocessing.Pool`` hang)."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first} and {second}")


def raise_two_arg_error(_: Any = None) -> Any:
    raise TwoArgError("first part", "second part")


# --- nesting ----------------------------------------------------------------------------------


def nested_map(n: int) -> tuple[list[int], list[int]]:
    """Run a manycore Pool inside a worker; return its results and its workers' pids."""
    import manycore

    with manycore.Pool(2) as pool:
        squares = pool.map_async(square, range(n)).get(timeout=60)
        pids = sorted(set(pool.map_async(getpid_slow, range(6), chunksize=1).get(timeout=60)))
    return squares, pids


def announce_then_sleep(path: str, seconds: float) -> int:
    """Write the worker's pid to ``path`` (atomically), then sleep: a task the test can find."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, path)
    time.sleep(seconds)
    return os.getpid()
