"""The Dask backend, connecting: importing Dask, starting a local cluster, reaching one.

Guarantees: Dask is imported only through ``import_distributed`` (so importing manycore
never imports it), and its absence is an ``ImportError`` naming ``INSTALL_HINT``; a cluster
manycore starts listens on 127.0.0.1 only and speaks mutual TLS with credentials made for it
alone, so no other local user can reach its scheduler or workers; a connection that fails
leaves no thread behind.
"""

from __future__ import annotations

import ast
import os
import signal
import sys
from typing import Any

__all__ = [
    "INSTALL_HINT",
    "allowed_failures",
    "connect",
    "import_distributed",
    "kill_children",
    "start_local_cluster",
]

INSTALL_HINT = "pip install 'manycore[dask]'"


def import_distributed() -> Any:
    """The ``distributed`` module.

    Raises:
        ImportError: it is not installed; the message says how to install it.
    """
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            f"backend='dask' needs Dask's distributed scheduler, which is not installed "
            f"({exc}). Install it with: {INSTALL_HINT}"
        ) from exc
    return distributed


def start_local_cluster(workers: int) -> Any:
    """The ``distributed.LocalCluster`` a pool with no ``address`` starts and owns.

    ``workers`` worker processes of one thread each (CPU-bound Python needs processes), on
    127.0.0.1 only; no dashboard, and the scheduler's HTTP endpoint on a free loopback port
    instead of 8787. Dask's ``allowed-failures`` is 0, so a worker's death comes straight
    back to manycore, whose policy (see docs/cluster.md) users see; the
    workers' statistical profiler (a thread sampling every 10 ms) is off, as it costs the
    tasks CPU time and the GIL.

    Loopback is not private: any local user can connect to 127.0.0.1, and a Dask scheduler
    runs whatever code its clients send. So the cluster speaks TLS with a temporary
    certificate authority and key that exist only in this process's memory and are handed to
    the workers it starts (``Security.temporary``); a peer without them is refused. Their
    plain-HTTP endpoints serve only a health check.

    Raises:
        ImportError: Dask is not installed (the message says how to install it).
    """
    distributed = import_distributed()
    import dask

    line = _unguarded_main_line()
    if line is not None:
        raise RuntimeError(
            f"backend='dask' starts a local cluster whose worker processes Dask starts by "
            f"spawn, which imports your main module in each: line {line} of "
            f"{sys.modules['__main__'].__file__} would make this pool again in every one of "
            f"them. Put the code that makes the pool under `if __name__ == '__main__':` "
            f"(see docs/cluster.md), or pass address= to use a cluster started separately."
        )
    settings = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.worker.profile.enabled": False,
        # The HTTP endpoints stay plain HTTP on loopback, readable by any local user: serve
        # only the health check there (not the pages that show tasks, logs and a proxy).
        "distributed.scheduler.http.routes": ["distributed.http.health"],
        "distributed.worker.http.routes": ["distributed.http.health"],
    }
    try:
        security = distributed.security.Security.temporary()
    except ImportError as exc:  # the `cryptography` package, which makes the credentials
        raise ImportError(
            f"backend='dask' secures the cluster it starts with TLS, which needs the "
            f"'cryptography' package ({exc}). Install it with: {INSTALL_HINT}"
        ) from exc
    try:
        with dask.config.set(settings):
            return distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                protocol="tls://",
                security=security,
                dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            )
    except RuntimeError as exc:
        raise RuntimeError(
            f"Dask could not start the local cluster's worker processes ({exc}). Dask starts "
            "them by spawn, which imports your main module in each: if this is a script, put "
            "the code that makes the pool under `if __name__ == '__main__':` (see "
            "docs/cluster.md), or pass address= to use a cluster started separately."
        ) from exc


def _unguarded_main_line() -> int | None:
    """The line of the main script, if any, that is making this pool at its top level
    outside an ``if __name__ == "__main__":`` block.

    Dask's workers import the main module: such a line runs again in each of them, and
    releases of distributed before 2024.12 (the last for Python 3.9) then wait for those
    nested clusters forever. None where it cannot tell (no script file, no source): Dask
    then reports what happens itself.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path:
        return None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is vars(main):
            break
        frame = frame.f_back  # type: ignore[assignment]
    else:
        return None  # the script is no longer running its top level: called later
    line = frame.f_lineno
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if _covers(node, line):
            guarded = (
                isinstance(node, ast.If)
                and _tests_main(node.test)
                and any(_covers(n, line) for n in node.body)
            )
            return None if guarded else line
    return None


def _covers(node: ast.stmt, line: int) -> bool:
    return node.lineno <= line <= (getattr(node, "end_lineno", None) or node.lineno)


def _tests_main(test: ast.expr) -> bool:
    """Whether an ``if`` test compares ``__name__`` with ``"__main__"``."""
    for part in ast.walk(test):
        if isinstance(part, ast.Compare) and all(isinstance(op, ast.Eq) for op in part.ops):
            sides = [part.left, *part.comparators]
            named = any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            main = any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
            if named and main:
                return True
    return False


def connect(distributed: Any, address: Any, processes: int | None) -> tuple[Any, Any, bool]:
    """``(client, cluster we started or None, whether the client is ours to close)``.

    Raises:
        OSError: the scheduler could not be reached.
        TypeError: ``address`` is not something that names a Dask scheduler.
    """
    if isinstance(address, distributed.Client):
        return address, None, False
    if address is None:
        from .._cpu import cpu_count

        cluster = start_local_cluster(cpu_count() if processes is None else processes)
        try:
            return _client(distributed, cluster, address=cluster), cluster, True
        except BaseException:
            cluster.close()
            raise
    if isinstance(address, distributed.deploy.Cluster):
        return _client(distributed, address, address=address), None, True
    if isinstance(address, (str, os.PathLike)):
        text = os.fspath(address)
        if "://" not in text and (os.path.exists(text) or text.endswith(".json")):
            return _client(distributed, address, scheduler_file=text), None, True
        return _client(distributed, address, address=text), None, True
    raise TypeError(
        f"address={address!r} is not a Dask scheduler: pass a 'tcp://host:port' address, "
        "a scheduler file path, a distributed.Client or a Cluster, or None for a local one"
    )


def allowed_failures(client: Any, cluster: Any) -> int:
    """The scheduler's ``allowed-failures``: Dask's re-runs of a task whose worker died."""
    if cluster is not None:
        return 0  # set by start_local_cluster
    try:
        return int(client.run_on_scheduler(_scheduler_allowed_failures))
    except Exception:  # an old or locked-down scheduler: assume Dask's own default
        import dask

        return int(dask.config.get("distributed.scheduler.allowed-failures", 3))


def _scheduler_allowed_failures(dask_scheduler: Any) -> int:
    return int(dask_scheduler.allowed_failures)


def _client(distributed: Any, shown: Any, **how: Any) -> Any:
    """A ``distributed.Client`` connected as ``how`` says.

    Raises:
        OSError: the scheduler could not be reached.
    """
    # Made in two steps so a failed connection can still stop the client's event-loop
    # thread, which Dask leaves running when the constructor raises.
    client = distributed.Client.__new__(distributed.Client)
    try:
        client.__init__(set_as_default=False, **how)
    except BaseException as exc:
        runner = getattr(client, "_loop_runner", None)
        if runner is not None:
            runner.stop()
        if isinstance(exc, (OSError, ValueError)):
            raise OSError(
                f"could not connect to the Dask scheduler at {shown!r}: {exc}. Check that "
                "the scheduler runs and that the address (tcp://host:port) or scheduler file "
                "is right."
            ) from exc
        raise
    return client


def kill_children(pids: list[int]) -> None:
    """SIGKILL those of ``pids`` that are still children of this process (our workers)."""
    me = os.getpid()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            if int(stat[stat.rindex(b")") + 2 :].split()[1]) == me:  # its parent is us
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass  # gone already
