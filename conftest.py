"""Marks the tests that touch ArviZ (marker ``arviz``).

``pytest -m arviz`` runs only what reads, writes, summarises or plots ArviZ data, runs the
diagnostic, the command or the SVGD class (with its conversion), or estimates a Pareto k-hat
(ArviZ's PSIS: the flow fit's quality, the moment test's heavy-tail rule): CI runs the whole suite
under ArviZ 0.23 and these under ArviZ 1.x, which keeps it under 25 minutes. The rest (kernels,
score matching, the SVGD core) never imports ArviZ; the flow fits reach it only through
``numpyro_dsd/flows/quality.py``, whose doctests run under both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: Test files, and the package's modules (their doctests), that touch ArviZ.
ARVIZ_TESTS = {
    "test_arviz_io.py",
    "test_plots.py",
    "test_diagnostic.py",
    "test_cli.py",
    "test_thinning.py",
    "test_bootstrap.py",
    "test_verdict.py",
    "test_svgd_infer.py",
    "test_moments.py",
}
ARVIZ_MODULES = (
    "numpyro_dsd/arviz/",
    "numpyro_dsd/mcmc/",
    "numpyro_dsd/svgd/infer.py",
    "numpyro_dsd/cli.py",
    "numpyro_dsd/demo.py",
    "numpyro_dsd/flows/quality.py",
)


def _touches_arviz(path: Path) -> bool:
    return path.name in ARVIZ_TESTS or any(m in path.as_posix() for m in ARVIZ_MODULES)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "arviz: touches ArviZ; CI runs it under both ArviZ lines")
    config.addinivalue_line("markers", "slow: takes over ~10 s on 2 cores; CI still runs it")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _touches_arviz(Path(str(item.path))):
            item.add_marker(pytest.mark.arviz)
