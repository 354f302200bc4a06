"""The ``manycore`` command line: ``manycore bench`` (see ``_bench``) and ``manycore info``.

``manycore info`` prints what a user checks first when parallel code is slow: usable cores,
start methods, ``/dev/shm``, the Python version and whether the GIL is enabled.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

from ._bench.command import bench_command
from ._bench.machine import machine_facts

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``manycore`` command line; returns the process exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error: argparse already printed why
        return exc.code if isinstance(exc.code, int) else 1
    if args.command is None:
        parser.print_help()
        return 2
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manycore",
        description="manycore: true parallelism on every core, with the multiprocessing API.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    bench = sub.add_parser(
        "bench",
        help="compare serial, threads, the stdlib process pools, the peers and manycore here",
        description=(
            "Run CPU-bound, I/O-bound, trivial and large-NumPy-payload workloads through "
            "serial code, multiprocessing's ThreadPool and Pool, concurrent.futures' "
            "ProcessPoolExecutor, joblib, mpire and pebble (when installed) and manycore, and "
            "print times (median of repeats), spread, speedup over serial and the ratio "
            "against multiprocessing.Pool; then crash a worker in each pool and show which "
            "ones report it and which hang. Progress goes to stderr."
        ),
        epilog=(
            "Exit status: 0 when every manycore call succeeded (and its pools survived the "
            "crash), 1 when one did not, 2 for a usage error. Other systems' failures and "
            "hangs are reported in the table, not in the exit status."
        ),
    )
    bench.add_argument("--quick", action="store_true", help="smaller workloads, fewer repeats")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    bench.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw the comparison into FILE.png (needs matplotlib)",
    )
    bench.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="workers per pool (default: the CPUs this process may use)",
    )
    bench.add_argument(
        "--repeats",
        type=_positive_int,
        metavar="N",
        help="timed repeats per measurement (default: 5, or 3 with --quick)",
    )
    bench.set_defaults(run=bench_command)

    info = sub.add_parser(
        "info",
        help="show cores, start methods, /dev/shm, Python and GIL: what to check when it is slow",
    )
    info.add_argument("--json", action="store_true", help="print the facts as JSON")
    info.set_defaults(run=_info_command)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# --- info -----------------------------------------------------------------------------------------


def _info_command(args: argparse.Namespace) -> int:
    facts = machine_facts()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    cpus = facts["cpus"]
    shm = facts["dev_shm"]
    lines = [
        ("manycore", facts["manycore_version"]),
        ("Python", f"{facts['python']} ({facts['implementation']}, {sys.executable})"),
        ("platform", facts["platform"]),
        ("GIL", facts["gil"]),
        ("usable CPUs", f"{cpus['usable']} (manycore.cpu_count(): what pools use by default)"),
        ("  os.cpu_count()", str(cpus["os_cpu_count"])),
        ("  affinity mask", _or_dash(cpus["affinity"], suffix=" CPUs")),
        ("  cgroup quota", _or_dash(cpus["cgroup_quota"], "no limit")),
        ("  load average", _or_dash(cpus["load_average"])),
        ("start methods", ", ".join(facts["start_methods"]["available"])),
        ("  stdlib default", facts["start_methods"]["stdlib_default"]),
        ("  manycore default", facts["start_methods"]["manycore_default"]),
        ("/dev/shm", _shm_text(shm)),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}")
    for warning in _info_warnings(facts):
        print(f"warning: {warning}")
    return 0


def _shm_text(shm: dict[str, Any] | None) -> str:
    if shm is None:
        return "not available (shared memory falls back to temporary files)"
    return f"{_bytes(shm['free_bytes'])} free of {_bytes(shm['size_bytes'])}"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _or_dash(value: Any, none: str = "-", suffix: str = "") -> str:
    if value is None:
        return none
    if isinstance(value, int):
        return f"{value}{suffix}"
    if isinstance(value, (tuple, list)):
        return " ".join(f"{v:.2f}" for v in value)
    if isinstance(value, float):
        return f"{value:g} CPUs"
    return str(value)


def _info_warnings(facts: dict[str, Any]) -> list[str]:
    warnings: list[str] = []
    cpus = facts["cpus"]
    if cpus["os_cpu_count"] and cpus["usable"] < cpus["os_cpu_count"]:
        warnings.append(
            f"this process may use {cpus['usable']} of the machine's {cpus['os_cpu_count']} "
            "CPUs; pools sized with os.cpu_count() would oversubscribe them"
        )
    load = cpus["load_average"]
    if load and load[0] > cpus["usable"]:
        warnings.append(
            f"the 1-minute load average ({load[0]:.2f}) exceeds the usable CPUs: "
            "other work competes for them, and timings will be noisy"
        )
    shm = facts["dev_shm"]
    if shm is not None and shm["size_bytes"] < 256 * 1024 * 1024:
        warnings.append(
            f"/dev/shm is small ({_bytes(shm['size_bytes'])}); containers often default to "
            "64 MiB (docker run --shm-size=1g raises it)"
        )
    return warnings
