"""The peers manycore is measured beside: joblib (loky), mpire, pebble and faster-fifo.

``find_peers`` reports, for each, whether it is installed and whether it imports here;
``peers_note`` turns that into one line for a report. How each peer's pool is driven is in
``systems`` (for ``manycore bench``) and ``benchmarks/peers.py`` (for the suite).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from .optional import import_optional

__all__ = ["PEERS", "Peer", "PeerStatus", "find_peers", "peers_note", "stop_joblib_workers"]


@dataclass(frozen=True)
class Peer:
    """A library that does what manycore does, compared with it when installed."""

    name: str  # the distribution, as pip knows it
    module: str  # what to import
    measured_as: str  # how the comparison uses it, or why it does not


# Only pools are measured. faster-fifo is a faster multiprocessing.Queue: it is detected and
# reported so the table says why it has no row.
PEERS: tuple[Peer, ...] = (
    Peer("joblib", "joblib", "joblib.Parallel, loky backend"),
    Peer("mpire", "mpire", "mpire.WorkerPool"),
    Peer("pebble", "pebble", "pebble.ProcessPool"),
    Peer("faster-fifo", "faster_fifo", "a queue, not a pool: not measured here"),
)


@dataclass(frozen=True)
class PeerStatus:
    """Whether a peer can be used in this environment."""

    peer: Peer
    version: str | None = None  # None: not installed
    error: str | None = None  # installed, but importing it failed

    @property
    def usable(self) -> bool:
        return self.version is not None and self.error is None

    def describe(self) -> str:
        """``mpire 2.10.2``, ``pebble (not installed)`` or ``x 1.0 (import failed: ...)``."""
        if self.version is None:
            return f"{self.peer.name} (not installed)"
        if self.error is not None:
            return f"{self.peer.name} {self.version} (import failed: {self.error})"
        return f"{self.peer.name} {self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.peer.name,
            "version": self.version,
            "usable": self.usable,
            "error": self.error,
            "measured_as": self.peer.measured_as,
        }


def find_peers() -> dict[str, PeerStatus]:
    """Every peer in ``PEERS``, by name: installed or not, and importable or not."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, PeerStatus] = {}
    for peer in PEERS:
        try:
            installed = version(peer.name)
        except PackageNotFoundError:
            found[peer.name] = PeerStatus(peer)
            continue
        try:
            importlib.import_module(peer.module)
        except Exception as exc:  # a broken install: say so instead of failing the run
            first = (str(exc).strip().splitlines() or [""])[0]
            found[peer.name] = PeerStatus(peer, installed, f"{type(exc).__name__}: {first}")
            continue
        found[peer.name] = PeerStatus(peer, installed)
    return found


def peers_note(peers: dict[str, PeerStatus], compared: set[str]) -> str:
    """One line for a report: which peers were measured (those in ``compared`` that are
    usable), which are installed but not compared, and which are missing."""
    measured = [s.describe() for s in peers.values() if s.usable and s.peer.name in compared]
    detected = [
        f"{s.describe()} ({s.peer.measured_as})"
        for s in peers.values()
        if s.usable and s.peer.name not in compared
    ]
    broken = [s.describe() for s in peers.values() if s.version is not None and not s.usable]
    missing = [s.peer.name for s in peers.values() if s.version is None]
    parts = []
    if measured:
        parts.append("measured " + ", ".join(measured))
    if detected:
        parts.append("installed but not compared: " + ", ".join(detected))
    if broken:
        parts.append("installed but not importable: " + ", ".join(broken))
    if missing:
        parts.append(
            f"not installed: {', '.join(missing)} (pip install 'manycore[bench]' adds them)"
        )
    return "peers: " + "; ".join(parts) + "."


def stop_joblib_workers(kill: bool = False) -> None:
    """Shut down the loky executor that joblib keeps for reuse, if there is one.

    joblib leaves it running for 300 s after the last ``Parallel`` call and offers no
    public handle on it; a benchmark that leaves no process behind must stop it itself.
    """
    module = import_optional("joblib.externals.loky.reusable_executor")
    executor = getattr(module, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=kill)
