"""Sphinx configuration for trioecho's documentation.

    python -m pip install -e '.[docs]'
    python -m sphinx -W --keep-going -b html docs docs/_build/html

Pages are Markdown (MyST), so the README and the docs share one dialect and
one snippet checker (tests/test_docs_snippets.py).  The API reference comes
from the docstrings (autodoc, with sphinxcontrib-trio for the async
functions); the CLI reference from the argparse parser itself
(sphinx-argparse), so neither can drift from the code.
"""

from __future__ import annotations

from trioecho import __version__

project = "trioecho"
author = "the trioecho developers"
copyright = f"2026, {author}"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinxcontrib_trio",
    "sphinxarg.ext",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "systemd"]

# Every link between pages and to a heading must resolve: with -W a broken
# one (MyST's xref_missing) fails the build.  (Not nitpicky: with no network,
# no intersphinx inventories, so every stdlib and Trio type would be "missing".)
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = f"trioecho {__version__}"
html_static_path = ["_static"]
