"""No one else gets in: the pool's channels are anonymous, so no other process can connect.

Every socket the caller, the fork server and the workers hold must be an unnamed AF_UNIX
socket (a socketpair), none of them listening, and no TCP/UDP socket may exist at all.
"""

from __future__ import annotations

import os

import manycore
from manycore import _launch

from . import helpers, workloads
from .helpers import TIMEOUT

_LISTENING = 0x00010000  # __SO_ACCEPTCON in /proc/net/unix's Flags column


def _unix_sockets() -> dict[int, tuple[int, str]]:
    """inode -> (flags, path) for every AF_UNIX socket on the machine."""
    table: dict[int, tuple[int, str]] = {}
    with open("/proc/net/unix") as f:
        next(f)  # header
        for line in f:
            fields = line.split()
            flags, inode = int(fields[3], 16), int(fields[6])
            table[inode] = (flags, fields[7] if len(fields) > 7 else "")
    return table


def _inet_inodes() -> set[int]:
    inodes: set[int] = set()
    for name in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/net/{name}") as f:
                next(f)
                inodes.update(int(line.split()[9]) for line in f)
        except OSError:
            continue
    return inodes


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def test_every_channel_is_an_anonymous_socketpair(start_method):
    with manycore.Pool(2, context=start_method) as pool:
        pids = helpers.every_worker(
            lambda: pool.map_async(workloads.getpid_slow, range(8), 1).get(timeout=TIMEOUT), 2
        )
        assert len(pids) == 2
        assert pool.apply_async(workloads.square, (4,)).get(timeout=TIMEOUT) == 16
        processes = {os.getpid(), *pids, *_launch.fork_server_pids()}
        unix = _unix_sockets()
        inet = _inet_inodes()
        checked = 0
        for pid in processes:
            for inode in _socket_inodes(pid):
                assert inode not in inet, f"process {pid} holds a network socket"
                flags, path = unix[inode]
                assert not flags & _LISTENING, f"process {pid} listens on a unix socket"
                assert path == "", f"process {pid} holds a named unix socket {path!r}"
                checked += 1
        # the caller holds one socket per worker (and one for its fork server, if any)
        assert checked >= 2 * len(pids)
