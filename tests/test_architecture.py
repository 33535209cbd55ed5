"""The architecture of docs/architecture.md holds: imports only run downward, and
``import numpyro_dsd`` loads neither ArviZ nor matplotlib."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "numpyro_dsd"

_SHARED = {"vocabulary", "_validation"}
#: What each unit (a subpackage or a top-level module) may import from the package.
ALLOWED: dict[str, set[str]] = {
    "vocabulary": set(),
    "_validation": {"vocabulary"},
    "stein": _SHARED,
    "model": _SHARED,
    "arviz": _SHARED,
    "flows": _SHARED | {"stein", "model"},
    "mcmc": _SHARED | {"stein", "model", "flows", "arviz"},
    "svgd": _SHARED | {"stein", "model", "flows", "arviz"},
    "datasets": _SHARED | {"stein", "model", "flows", "arviz", "mcmc", "svgd"},
    "demo": _SHARED | {"stein", "model", "flows", "arviz", "mcmc", "svgd"},
    "_cli_inputs": set(),
    "cli": _SHARED | {"stein", "model", "flows", "arviz", "mcmc", "svgd", "demo", "_cli_inputs"},
}


def _unit(module: str) -> str:
    """``numpyro_dsd.stein.engine`` -> ``stein``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every ``numpyro_dsd`` module imported anywhere in ``path`` (module level or inside a
    function), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("numpyro_dsd")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "numpyro_dsd":  # from numpyro_dsd import stein, arviz, ...
                found += [(node.lineno, f"numpyro_dsd.{a.name}") for a in node.names]
            elif node.module.startswith("numpyro_dsd."):
                found.append((node.lineno, node.module))
    return found


def test_every_unit_is_known():
    units = {_unit(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert units - {"__init__"} <= set(ALLOWED), units - set(ALLOWED)


def test_imports_run_downward():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(_module_name(path))
        if unit == "__init__":
            continue  # the top level re-exports the public API
        for line, target in _imports(path):
            other = _unit(target)
            if other != unit and other not in ALLOWED[unit]:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not violations, "\n".join(violations)


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from numpyro_dsd.svgd.core import init\n")
    assert _imports(bad) == [(2, "numpyro_dsd.svgd.core")]
    assert "svgd" not in ALLOWED["stein"]


def test_import_loads_neither_arviz_nor_matplotlib():
    code = (
        "import sys, numpyro_dsd\n"
        "from numpyro_dsd import arviz, mcmc, svgd, flows\n"
        "assert 'arviz' not in sys.modules, 'arviz'\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
