"""Packages the bench uses when they are installed (numpy, matplotlib, the peers).

None of them is a dependency of manycore: each is imported by name, only when it is used,
and a missing one is reported (``MissingExtra`` names the install) rather than failing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtra", "import_optional"]


class MissingExtra(Exception):
    """An optional package a feature needs is not installed; the message names the install."""


def import_optional(module: str) -> ModuleType | None:
    """The module, or None when it is not installed (or cannot be imported here)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
