"""Read the API pages of the modules that define objects before the pages that re-export them.

A class documented under a re-exported name (``numpyro_dsd.IMQ``, ``numpyro_dsd.stein.IMQ``)
carries autodoc's ``:canonical:`` alias, its defining module's name
(``numpyro_dsd.stein.kernels.IMQ``), which the defining module's own page documents. Sphinx keeps
the real description over aliases, but two aliases of one name met before the real one are a
"duplicate object description" warning. Reading the deepest module pages first (most dots in
the generated page's name) registers every real description before its aliases.
"""

from __future__ import annotations

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment


def defining_modules_first(app: Sphinx, env: BuildEnvironment, docnames: list[str]) -> None:
    """Reorder ``docnames`` in place: most dotted (submodule pages) first, otherwise stable."""
    docnames.sort(key=lambda name: -name.count("."))


def setup(app: Sphinx) -> dict:
    app.connect("env-before-read-docs", defining_modules_first)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
