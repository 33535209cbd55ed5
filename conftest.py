"""Marks the tests that touch ArviZ (marker ``arviz``).

CI runs the whole suite under ArviZ 0.23 (Python 3.11) and under ArviZ 1.x (Python 3.12).
``pytest -m arviz`` runs only what reads, writes, summarises or plots ArviZ data or runs the
diagnostic and the command: the quick check after changing ArviZ-facing code, or a way to keep
CI short should the suite outgrow the 20 minutes. The rest (kernels, flows, score matching)
never imports ArviZ.
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
    "arviz_io.py",
    "plots.py",
    "diagnostic.py",
    "inputs.py",
    "cli.py",
    "demo.py",
    "thinning.py",
    "bootstrap.py",
    "along_chain.py",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "arviz: touches ArviZ; CI runs it under both ArviZ lines")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.path)).name in ARVIZ_FILES:
            item.add_marker(pytest.mark.arviz)
