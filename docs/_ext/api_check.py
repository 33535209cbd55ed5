"""Fail the build (a warning under ``-W``) when a name of ``numpyro_dsd.__all__`` has no API page.

``docs/api/index.rst`` lists the public names by topic in ``autosummary`` tables; a name added
to ``__all__`` but not to a table would silently have no page.
"""

from __future__ import annotations

import re
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)
ENTRY = re.compile(r"^   ([A-Za-z_][A-Za-z0-9_]*)\s*$", re.M)


def check(app: Sphinx) -> None:
    """Warn for every public name missing from, or unknown to, the API index."""
    import numpyro_dsd

    listed = set(ENTRY.findall((Path(app.srcdir) / "api" / "index.rst").read_text("utf-8")))
    public = set(numpyro_dsd.__all__)
    for name in sorted(public - listed):
        logger.warning("api: numpyro_dsd.%s is public but not listed in docs/api/index.rst", name)
    for name in sorted(listed - public):
        logger.warning("api: docs/api/index.rst lists %s, not in numpyro_dsd.__all__", name)


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
