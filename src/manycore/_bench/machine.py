"""Facts about this machine and Python that decide how parallel code performs.

``manycore info`` prints them; benchmark results record them beside the figures, with the
load average before and after the run.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import os
import platform
import sys
import sysconfig
from typing import Any

from .._cpu import cgroup_cpu_quota

__all__ = ["load_average", "machine_facts"]


def machine_facts() -> dict[str, Any]:
    """What ``manycore info`` shows, as a JSON-ready dict (also recorded with benchmark results)."""
    import manycore

    affinity: int | None = None
    if hasattr(os, "sched_getaffinity"):
        try:
            affinity = len(os.sched_getaffinity(0))
        except OSError:
            pass
    try:
        stdlib_default = multiprocessing.get_start_method()
    except RuntimeError:  # pragma: no cover - only if the context cannot be fixed
        stdlib_default = "unknown"
    return {
        "manycore_version": _version(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "gil": _gil_text(),
        "cpus": {
            "usable": manycore.cpu_count(),
            "os_cpu_count": os.cpu_count(),
            "affinity": affinity,
            "cgroup_quota": cgroup_cpu_quota(),
            "load_average": load_average(),
        },
        "start_methods": {
            "available": multiprocessing.get_all_start_methods(),
            "stdlib_default": stdlib_default,
            "manycore_default": (
                "fork server (context=None): forked from the caller while it has one "
                "thread, else started fresh"
            ),
        },
        "dev_shm": _shm_facts(),
    }


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages, or None where the platform has none."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def _version() -> str:
    from .. import __version__

    return __version__


def _gil_text() -> str:
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    free_threaded_build = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    if is_enabled is None:
        return "enabled (this Python has no free-threaded mode)"
    if is_enabled():
        build = "free-threaded build, GIL re-enabled" if free_threaded_build else "standard build"
        return f"enabled ({build})"
    return "disabled (free-threaded build): threads run Python code in parallel"


def _shm_facts() -> dict[str, Any] | None:
    try:
        st = os.statvfs("/dev/shm")
    except (OSError, AttributeError):
        return None
    return {"size_bytes": st.f_blocks * st.f_frsize, "free_bytes": st.f_bavail * st.f_frsize}
