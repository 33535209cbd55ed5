"""A gallery of ``examples/*.py`` without running them: one page per script, written at build time.

Each page is the script's module docstring (reStructuredText), its saved figure
``docs/figures/<name>.png`` and its source (``literalinclude``, the docstring left out). The
examples take about a minute each on 2 cores, too slow to execute in every documentation build;
rerun a script and copy its figure from ``examples/figures/`` to ``docs/figures/`` to refresh it.
A script without a figure is a build warning, so ``-W`` fails until the figure is committed.

Pages go to ``docs/gallery/`` (not committed), rewritten only when their text changes.
"""

from __future__ import annotations

import ast
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)
OUT = "gallery"


def _underline(title: str, char: str) -> str:
    return f"{title}\n{char * len(title)}\n"


def _docstring(script: Path) -> tuple[str, str, int]:
    """(title, body, first source line after the docstring) of an example script."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree, clean=True)
    if not doc:
        raise ValueError(f"{script.name} has no module docstring to make its gallery page from")
    title, _, body = doc.partition("\n")
    return title.strip().rstrip("."), body.strip(), tree.body[0].end_lineno + 1


def _page(script: Path, figure: Path | None, srcdir: Path) -> str:
    title, body, after = _docstring(script)
    name = script.stem
    rel = "/" + Path("..", script.relative_to(srcdir.parent)).as_posix()  # from srcdir
    parts = [f".. _gallery-{name}:\n", _underline(title, "="), body, ""]
    if figure is not None:
        alt = f"Figure saved by examples/{script.name}"
        parts += [f".. figure:: /{figure.relative_to(srcdir).as_posix()}", f"   :alt: {alt}", ""]
    parts += [
        _underline("Source", "-"),
        f"Run it from the repository root: ``python examples/{script.name}``.",
        "",
        f".. literalinclude:: {rel}",
        "   :language: python",
        f"   :lines: {after}-",
        "",
    ]
    return "\n".join(parts)


def _index(entries: list[tuple[str, str, Path | None]], srcdir: Path) -> str:
    parts = [
        ".. _gallery:\n",
        _underline("Gallery", "="),
        "The ``examples/`` scripts, each with the figure it saves. They are not run when the",
        "documentation is built; every page says how to run its script.",
        "",
        ".. toctree::",
        "   :hidden:",
        "",
        *[f"   {name}" for name, _, _ in entries],
        "",
    ]
    for name, title, figure in entries:
        parts += [_underline(f"{name}.py", "-"), f":doc:`{title} <{name}>`", ""]
        if figure is not None:
            parts += [
                f".. image:: /{figure.relative_to(srcdir).as_posix()}",
                "   :width: 480px",
                f"   :alt: {title}",
                f"   :target: {name}.html",
                "",
            ]
    return "\n".join(parts)


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def generate(app: Sphinx) -> None:
    """Write ``gallery/<name>.rst`` for every example and ``gallery/index.rst``."""
    srcdir = Path(app.srcdir)
    examples = Path(app.config.gallery_examples)
    figures = Path(app.config.gallery_figures)
    out = srcdir / OUT
    out.mkdir(exist_ok=True)
    entries = []
    for script in sorted(examples.glob("*.py")):
        figure = figures / f"{script.stem}.png"
        if not figure.exists():
            logger.warning("gallery: no figure %s for examples/%s", figure, script.name)
            figure = None
        _write(out / f"{script.stem}.rst", _page(script, figure, srcdir))
        entries.append((script.stem, _docstring(script)[0], figure))
    _write(out / "index.rst", _index(entries, srcdir))


def setup(app: Sphinx) -> dict:
    app.add_config_value("gallery_examples", "", "env", types=(str,))
    app.add_config_value("gallery_figures", "", "env", types=(str,))
    app.connect("builder-inited", generate)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
