"""Marks the tests that touch ArviZ (marker ``arviz``).

``pytest -m arviz`` runs only what reads, writes, summarises or plots ArviZ data, runs the
diagnostic, the command or the SVGD class (with its conversion): CI runs the whole suite under
ArviZ 0.23 and these under ArviZ 1.x, which keeps it under 20 minutes. The rest (kernels, flows,
score matching, the SVGD core) never imports ArviZ.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ARVIZ_FILES = {
    "test_arviz_io.py",
    "test_plots.py",
    "test_diagnostic.py",
    "test_cli.py",
    "test_thinning.py",
    "test_bootstrap.py",
    "test_svgd_infer.py",
    "arviz_io.py",
    "plots.py",
    "diagnostic.py",
    "inputs.py",
    "cli.py",
    "demo.py",
    "thinning.py",
    "bootstrap.py",
    "along_chain.py",
    "svgd_infer.py",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "arviz: touches ArviZ; CI runs it under both ArviZ lines")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.path)).name in ARVIZ_FILES:
            item.add_marker(pytest.mark.arviz)
