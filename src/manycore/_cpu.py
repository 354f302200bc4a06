"""How many CPUs this process may really use.

``os.cpu_count()`` counts the machine's CPUs. A process pinned to fewer cores (taskset,
``sched_setaffinity``) or confined by a cgroup CPU quota (a container with ``--cpus=2``)
gets less, and a pool sized to the machine then oversubscribes what it has. ``cpu_count``
returns the smallest of: the machine's count, the affinity mask, and the cgroup quota
rounded up.
"""

from __future__ import annotations

import math
import os

__all__ = ["cgroup_cpu_quota", "cpu_count"]


def cpu_count() -> int:
    """The number of CPUs this process can use: affinity and cgroup quota honoured, at least 1."""
    count = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        try:
            count = min(count, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    quota = cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_cpu_quota() -> float | None:
    """The CPU quota of this process's cgroup in CPUs (``1.5`` = 150 ms per 100 ms), or None."""
    # cgroup v2: "max 100000" or "150000 100000"
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    # cgroup v1: two files, quota -1 for unlimited
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota_us = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period_us = int(f.read())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None
