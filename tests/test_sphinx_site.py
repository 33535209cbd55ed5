"""The Sphinx site builds with warnings as errors and has a page for everything it promises.

Builds a copy of ``docs/`` (and ``examples/``, which the gallery reads) in a temporary folder
exactly as CI does (``-n -W --keep-going``: nitpicky, so every cross-reference must resolve),
so the build's generated pages never touch the checkout, then checks the HTML: an API page
documenting every name of ``numpyro_dsd.__all__``, a page per subpackage documenting its
``__all__`` (the building blocks the docstrings link to), a gallery page with its figure and
source for every ``examples/*.py``, a page in the navigation for every guide ``docs/*.md`` and
typeset formulas in the theory. One test, so ``pytest -n 2`` builds the site once. Needs the
``docs`` extra; skipped without Sphinx.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")

import numpyro_dsd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = [f"numpyro_dsd.{p}" for p in ("stein", "model", "flows", "mcmc", "svgd", "arviz")]
GENERATED = shutil.ignore_patterns("_build", "generated", "gallery", "figures", "__pycache__")


def _build(tmp: Path) -> Path:
    shutil.copytree(ROOT / "docs", tmp / "docs", ignore=GENERATED)
    shutil.copytree(ROOT / "docs" / "figures", tmp / "docs" / "figures")
    shutil.copytree(ROOT / "examples", tmp / "examples", ignore=GENERATED)
    out = tmp / "html"
    cmd = [sys.executable, "-m", "sphinx", "-n", "-W", "--keep-going", "-q", "-b", "html"]
    run = subprocess.run([*cmd, "docs", str(out)], cwd=tmp, capture_output=True, text=True)
    assert run.returncode == 0, f"sphinx failed:\n{run.stdout}\n{run.stderr}"
    assert "WARNING" not in run.stderr, run.stderr
    return out


def _api_problems(site: Path) -> list[str]:
    index = (site / "api" / "index.html").read_text(encoding="utf-8")
    problems = []
    for name in numpyro_dsd.__all__:
        page = site / "api" / "generated" / f"numpyro_dsd.{name}.html"
        if not page.exists():
            problems.append(f"{name}: no page")
        elif f'id="numpyro_dsd.{name}"' not in page.read_text(encoding="utf-8"):
            problems.append(f"{name}: page does not document it")
        elif f'href="generated/numpyro_dsd.{name}.html' not in index:
            problems.append(f"{name}: not linked from the API index")
    return problems


def _building_block_problems(site: Path) -> list[str]:
    problems = []
    for package in SUBPACKAGES:
        page = site / "api" / "generated" / f"{package}.html"
        html = page.read_text(encoding="utf-8") if page.exists() else ""
        module = importlib.import_module(package)
        missing = [n for n in module.__all__ if f'id="{package}.{n}"' not in html]
        if not html or missing:
            problems.append(f"{package}: {'no page' if not html else f'undocumented {missing}'}")
    return problems


def _gallery_problems(site: Path) -> list[str]:
    problems = []
    for script in sorted(p.stem for p in (ROOT / "examples").glob("*.py")):
        page = site / "gallery" / f"{script}.html"
        html = page.read_text(encoding="utf-8") if page.exists() else ""
        images = [Path(src).name for src in re.findall(r'<img[^>]*src="([^"]+)"', html)]
        if f"{script}.png" not in images or not (site / "_images" / f"{script}.png").exists():
            problems.append(f"{script}: no page with its figure (images: {images})")
        elif 'class="highlight-python' not in html:
            problems.append(f"{script}: the source is missing")
    return problems


def _guide_problems(site: Path) -> list[str]:
    home = (site / "index.html").read_text(encoding="utf-8")
    guides = sorted(p.stem for p in (ROOT / "docs").glob("*.md") if p.stem != "index")
    return [
        g for g in guides if f'href="{g}.html"' not in home or not (site / f"{g}.html").exists()
    ]


@pytest.mark.slow
def test_site_builds_without_warnings_with_every_page(tmp_path: Path) -> None:
    site = _build(tmp_path)
    assert _api_problems(site) == []
    assert _building_block_problems(site) == []
    assert _gallery_problems(site) == []
    assert _guide_problems(site) == [], "guides without a page in the navigation"
    theory = (site / "theory.html").read_text(encoding="utf-8")
    assert theory.count('class="math') > 50 and "mathjax" in theory.lower()
    assert "$$" not in theory, "display math left as raw text"
