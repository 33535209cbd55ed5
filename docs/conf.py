"""Sphinx configuration: the guides (MyST Markdown), the API (autosummary + numpydoc), the gallery.

Build: ``python -m sphinx -n -W --keep-going -b html docs docs/_build/html`` after
``pip install -e ".[docs]"``. Docstring examples are not executed here (pytest runs them).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import numpyro_dsd  # noqa: E402

project = "numpyro-dsd"
author = "numpyro-dsd developers"
copyright = "2026, numpyro-dsd developers"  # noqa: A001
version = release = numpyro_dsd.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "gallery",
    "api_check",
    "canonical_first",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]

# MyST: $...$ and $$...$$ math, \begin{align} blocks, GitHub anchors for [text](file.md#anchor)
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 4
myst_dmath_double_inline = True

# API: one page per public name and per subpackage module, generated at build time into
# api/generated/ (not committed)
autosummary_generate = True
autosummary_imported_members = True
autosummary_ignore_module_all = False  # module tables list __all__, what automodule documents
templates_path = ["_templates"]  # autosummary/class.rst, autosummary/module.rst
autodoc_typehints = "none"
# Members inherited from the package's own bases (IMQ.frozen from the radial-kernel base), not
# those of Python's: a NamedTuple's count/index, an exception's with_traceback.
autodoc_default_options = {"members": True, "inherited-members": "object,tuple,BaseException"}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# Nitpicky builds (-n): every cross-reference must resolve. References into other packages
# (``numpyro.infer.Predictive``, ``arviz.summary``, ``jax.Array``) would need intersphinx, which
# downloads each project's inventory at build time, and CI machines are not assumed to reach
# documentation sites; so exactly these packages' prefixes are exempt. Never add a numpyro_dsd
# name here: a reference to the package's own objects that does not resolve is a bug to fix.
EXTERNAL_PACKAGES = (
    "numpyro", "jax", "jaxlib", "arviz", "arviz_plots", "xarray", "numpy", "optax",
    "matplotlib", "flowjax", "equinox", "pandas", "collections.abc", "typing",
)  # fmt: skip
nitpick_ignore_regex = [(r"py:.*", rf"{re.escape(pkg)}\..+") for pkg in EXTERNAL_PACKAGES]

# Gallery: one page per examples/*.py from its docstring, its figure and its source (not run)
gallery_examples = str(DOCS.parent / "examples")
gallery_figures = str(DOCS / "figures")

html_theme = "pydata_sphinx_theme"
html_title = "numpyro-dsd"
html_theme_options = {
    "navigation_with_keys": False,
    "header_links_before_dropdown": 8,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
