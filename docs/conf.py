"""Sphinx configuration for manycore's documentation.

Build it with ``make docs`` (or ``python -m sphinx -W --keep-going -b html docs build/docs``).
The API reference is generated from the docstrings (autodoc + napoleon for the Google style);
the guides are markdown, read by myst-parser.
"""

from __future__ import annotations

import os
import sys

# Document the source tree even when manycore is not installed in this environment.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src")))

import manycore

project = "manycore"
author = "the manycore developers"
copyright = "the manycore developers"
release = manycore.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Google-style docstrings only (the style guide's choice).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"

# Headings in the markdown guides get anchors, so pages can link to a section.
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"manycore {release}"
