"""Run CPython's own multiprocessing and concurrent.futures tests against manycore.

"Drop-in" is measured against the interpreter's own test suites: this script takes the test
sources that ship with the running Python (``test/_test_multiprocessing.py``,
``test/test_multiprocessing_main_handling.py`` and ``test/test_concurrent_futures``),
writes a copy into a temporary folder in which ``multiprocessing`` is replaced by
``manycore`` and ``concurrent.futures`` by ``manycore.futures`` (nothing is copied into this
repository), and runs it with unittest in a fresh interpreter per part. The same tests run
unmodified first (``--baseline``, the default), so that a test which fails against the
stdlib on this machine is not counted against manycore.

A failure is *expected* when ``tools/cpython_expected.txt`` lists its test id (``fnmatch``
patterns allowed) with the ``docs/migrating.md`` section that explains the deliberate
difference. The script exits 1 when any other test fails against manycore but passes against
the stdlib, and prints those tests.

Usage (from the repository root, in the project's environment)::

    python tools/cpython_suites.py                       # everything this Python ships
    python tools/cpython_suites.py --part mp-fork-processes --part futures
    python tools/cpython_suites.py --list                # the parts
    python tools/cpython_suites.py -k test_pool --no-baseline

Needs the ``test`` package of the interpreter (pyenv's builds have it; some distributions
split it out as ``python3-test``).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = Path(__file__).with_name("cpython_expected.txt")
STDLIB_TESTS = Path(os.__file__).parent / "test"

# ``multiprocessing`` as a name of the package (not ``_multiprocessing``, the C module, nor
# ``test_multiprocessing``), also inside the strings of the scripts the tests run; but not
# in "unclosed running multiprocessing pool", the text of a warning the stdlib's pools give.
_MP = re.compile(r"(?<![\w.])multiprocessing(?![\w]| pool\b)")
# ``concurrent.futures`` and its process module; its private ``_base`` stays the stdlib's,
# and so does the name in quotes, the stdlib's logger (its thread pool logs there).
_CF = re.compile(r"(?<![\w.'\"])concurrent\.futures(?=\.process\b|[^\w.'\"]|$)")
_CF_FROM = re.compile(r"\bfrom concurrent import futures\b")

MP_TYPES = ("processes", "threads", "manager", "misc")
# How scripts, packages and zip files run as __main__ start a pool under each start method.
MAIN_HANDLING = "test_multiprocessing_main_handling.py"
METHODS = ("fork", "spawn", "forkserver")


def _rewrite(text: str) -> str:
    text = _MP.sub("manycore", text)
    text = _CF_FROM.sub("from manycore import futures", text)
    return _CF.sub("manycore.futures", text)


def _parts() -> dict[str, str]:
    """Each part's name, mapped to the module unittest runs for it."""
    parts = {}
    if (STDLIB_TESTS / "_test_multiprocessing.py").exists():
        for method in METHODS:
            for type_ in MP_TYPES:
                parts[f"mp-{method}-{type_}"] = f"mc_mp_{method}_{type_}"
    if (STDLIB_TESTS / MAIN_HANDLING).exists():
        parts["mp-main-handling"] = "mc_mp_main_handling"
    if (STDLIB_TESTS / "test_concurrent_futures").is_dir() or (
        STDLIB_TESTS / "test_concurrent_futures.py"
    ).exists():
        parts["futures"] = "mc_futures"
    return parts


_MP_PART = """\
import inspect
import unittest
from {package}._test_multiprocessing import install_tests_in_module_dict

if "only_type" in inspect.signature(install_tests_in_module_dict).parameters:
    install_tests_in_module_dict(globals(), {method!r}, {selection})
else:  # Python 3.9 installs every type: keep this part's classes only
    install_tests_in_module_dict(globals(), {method!r})
    for _name, _value in list(globals().items()):
        if not isinstance(_value, type):
            continue
        _typed = _name.startswith(("WithProcesses", "WithThreads", "WithManager"))
        if {type_!r} == "misc" and _typed or {type_!r} != "misc" and not _name.startswith(
            "With" + {type_!r}.capitalize()
        ):
            del globals()[_name]
"""


def _prepare(folder: Path, against_manycore: bool) -> None:
    """Write the test modules into folder, rewritten for manycore or unmodified."""
    package = folder / "mc_suites"
    package.mkdir()
    (package / "__init__.py").write_text("")
    convert = _rewrite if against_manycore else (lambda text: text)
    source = STDLIB_TESTS / "_test_multiprocessing.py"
    if source.exists():
        (package / "_test_multiprocessing.py").write_text(convert(source.read_text()))
        # The scripts some tests run, found beside the test module (mp_fork_bomb.py, ...).
        for script in STDLIB_TESTS.glob("mp_*.py"):
            (package / script.name).write_text(convert(script.read_text()))
        for method in METHODS:
            for type_ in MP_TYPES:
                selection = "exclude_types=True" if type_ == "misc" else f"only_type={type_!r}"
                (folder / f"mc_mp_{method}_{type_}.py").write_text(
                    _MP_PART.format(
                        package="mc_suites", method=method, selection=selection, type_=type_
                    )
                )
    if (STDLIB_TESTS / MAIN_HANDLING).exists():
        text = (STDLIB_TESTS / MAIN_HANDLING).read_text()
        (folder / "mc_mp_main_handling.py").write_text(convert(text))
    futures = STDLIB_TESTS / "test_concurrent_futures"
    if futures.is_dir():
        target = folder / "mc_futures"
        shutil.copytree(futures, target, ignore=shutil.ignore_patterns("__pycache__"))
        for path in target.glob("*.py"):
            path.write_text(convert(path.read_text()))
        # test.support's load_package_tests discovers from the stdlib's own folder; this copy
        # is discovered from the folder it lies in.
        init = target / "__init__.py"
        init.write_text(init.read_text().replace(_LOAD_PACKAGE, _LOAD_COPY))
    elif (STDLIB_TESTS / "test_concurrent_futures.py").exists():
        text = (STDLIB_TESTS / "test_concurrent_futures.py").read_text()
        (folder / "mc_futures.py").write_text(convert(text))


_LOAD_PACKAGE = "support.load_package_tests(os.path.dirname(__file__), *args)"
_LOAD_COPY = (
    "args[0].discover(start_dir=os.path.dirname(__file__), pattern=args[2] or 'test*',"
    " top_level_dir=os.path.dirname(os.path.dirname(__file__)))"
)


# Runs in the child interpreter: unittest with a result that records every test's outcome.
_RUNNER = """\
import json, sys, unittest
from test import support
from test.support import script_helper
# Scripts the tests run (python -c, assert_python_ok) keep PYTHONPATH, so they import this
# checkout's manycore rather than an installed one: as if the interpreter needed its environment.
setattr(script_helper, "__cached_interp_requires_environment", True)

class Recorder(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes = {}
    def addSuccess(self, test):
        super().addSuccess(test); self.outcomes[test.id()] = "pass"
    def addFailure(self, test, err):
        super().addFailure(test, err); self.outcomes[test.id()] = "fail"
    def addError(self, test, err):
        super().addError(test, err); self.outcomes[test.id()] = "error"
    def addSkip(self, test, reason):
        super().addSkip(test, reason); self.outcomes[test.id()] = "skip"
    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err); self.outcomes[test.id()] = "pass"
    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test); self.outcomes[test.id()] = "fail"
    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.outcomes[test.id()] = "fail"

def main():
    module, pattern, out = sys.argv[1:4]
    loader = unittest.TestLoader()
    if pattern:
        loader.testNamePatterns = ["*%s*" % pattern]
    suite = loader.loadTestsFromName(module)
    runner = unittest.TextTestRunner(resultclass=Recorder, verbosity=1, stream=sys.stderr)
    result = runner.run(suite)
    with open(out, "w") as file:
        json.dump(result.outcomes, file)

# The stdlib's spawn and forkserver children import the main module again: without the
# guard, each of them would run the whole part once more.
if __name__ == "__main__":
    main()
"""


def _run_part(folder: Path, module: str, pattern: str, timeout: float, log: Path) -> dict[str, str]:
    out = folder / f"{module}.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(ROOT / "src"), env.get("PYTHONPATH", "")])
    script = folder / "_runner.py"
    script.write_text(_RUNNER)
    with log.open("ab") as sink:
        sink.write(f"\n=== {module} ({folder.name})\n".encode())
        sink.flush()
        try:
            subprocess.run(
                [sys.executable, str(script), module, pattern, str(out)],
                cwd=folder,
                env=env,
                stdout=sink,
                stderr=sink,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            sink.write(f"=== {module}: timed out after {timeout:.0f} s\n".encode())
            return {module: "timeout"}
    if not out.exists():
        return {module: "crashed"}
    outcomes: dict[str, str] = json.loads(out.read_text())
    # The test ids carry the temporary package's names; report them as CPython's.
    return {_canonical(test): outcome for test, outcome in outcomes.items()}


def _canonical(test_id: str) -> str:
    return test_id.replace("mc_suites.", "").replace("mc_futures.", "test_concurrent_futures.")


def _expected() -> list[tuple[str, str]]:
    rules = []
    for line in EXPECTED.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, reason = line.partition(" ")
        rules.append((pattern, reason.strip()))
    return rules


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", action="append", help="a part to run (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the parts and exit")
    parser.add_argument("-k", dest="pattern", default="", help="only tests whose name has this")
    parser.add_argument(
        "--no-baseline", action="store_true", help="do not run the tests against the stdlib"
    )
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per part")
    parser.add_argument(
        "--out", type=Path, default=Path("cpython-results"), help="folder for logs and JSON"
    )
    args = parser.parse_args(argv)
    parts = _parts()
    if not parts:
        print(f"no multiprocessing tests under {STDLIB_TESTS}", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(parts))
        return 0
    chosen = args.part or list(parts)
    unknown = [part for part in chosen if part not in parts]
    if unknown:
        print(f"unknown part(s) {unknown}; --list shows them", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
    rules = _expected()
    unexpected: list[str] = []
    summary = {}
    with tempfile.TemporaryDirectory() as temp:
        ours, theirs = Path(temp, "manycore"), Path(temp, "stdlib")
        ours.mkdir()
        theirs.mkdir()
        _prepare(ours, against_manycore=True)
        _prepare(theirs, against_manycore=False)
        for part in chosen:
            module = parts[part]
            log = args.out / f"{tag}-{part}.log"
            log.unlink(missing_ok=True)
            started = time.monotonic()
            mine = _run_part(ours, module, args.pattern, args.timeout, log)
            base = (
                {}
                if args.no_baseline
                else _run_part(theirs, module, args.pattern, args.timeout, log)
            )
            bad = sorted(
                test
                for test, outcome in mine.items()
                if outcome not in ("pass", "skip") and base.get(test, "pass") == "pass"
            )
            listed = [t for t in bad if any(fnmatch.fnmatch(t, p) for p, _ in rules)]
            new = [t for t in bad if t not in listed]
            unexpected += new
            summary[part] = {
                "manycore": _count(mine),
                "stdlib": _count(base),
                "failing_listed": listed,
                "failing_unexpected": new,
                "seconds": round(time.monotonic() - started),
                "outcomes": mine,
                "stdlib_outcomes": base,
            }
            print(
                f"{part}: manycore {_count(mine)}, stdlib {_count(base)}; "
                f"{len(listed)} listed differences, {len(new)} unexpected failures "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )
            for test in new:
                print(f"    {mine[test]:7} {test}")
    (args.out / f"{tag}-summary.json").write_text(json.dumps(summary, indent=1))
    return 1 if unexpected else 0


def _count(outcomes: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(main())
