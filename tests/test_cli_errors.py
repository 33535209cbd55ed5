"""``numpyro-dsd`` as a user meets it, run as a subprocess (issue 17, items 8 and 9).

Every ordinary mistake ends in one line on stderr that names the problem and the fix, exit status
1 (2 for a usage error), and no traceback; output paths are checked before any computation. And
``diagnose --model FILE.py:FUNCTION --data ARGS`` diagnoses a plain ``az.from_numpyro(mcmc)`` file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from numpyro_dsd import arviz as arviz_io
from numpyro_dsd.cli import _parser, main

pytestmark = pytest.mark.arviz

#: A small NumPyro model as a user writes it: a plate sized by a Python int, a constrained site.
MODEL_SOURCE = """
import numpyro
import numpyro.distributions as dist


def eight_schools(J, sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * eta)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)
"""
DATA = {
    "J": 8,
    "sigma": [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0],
    "y": [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
}


def cli(*argv: object) -> subprocess.CompletedProcess:
    """``numpyro-dsd ARGV`` in a fresh interpreter, as the console script runs it."""
    code = "import sys; from numpyro_dsd.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", code, *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def cli_in_process(capsys, *argv: object) -> SimpleNamespace:
    """``main(argv)`` here, with what the interpreter would show: a ``SystemExit`` message goes
    to stderr with status 1. For the cases beyond the issue's list (a subprocess costs seconds)."""
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    code, captured = exit_.value.code, capsys.readouterr()
    if isinstance(code, str):
        return SimpleNamespace(returncode=1, stderr=captured.err + code + "\n", stdout=captured.out)
    return SimpleNamespace(returncode=code, stderr=captured.err, stdout=captured.out)


def assert_one_line_error(run: Any, status: int, *words: str) -> None:
    """Exit ``status``, exactly one line on stderr holding ``words``, no traceback, no output."""
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == status, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("numpyro-dsd"), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert run.stdout == ""  # nothing computed, no table printed


def stein_file(path: Path, x: np.ndarray) -> Path:
    arviz_io.save(arviz_io.from_stein_inputs(x, -x, ("mu", "tau")), path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good and bad inputs: every file a test below names."""
    root = tmp_path_factory.mktemp("cli_errors")
    x = np.random.default_rng(0).normal(size=(2, 50, 2))
    bad = x.copy()
    bad[1, 7, 0] = np.nan
    (root / "text.nc").write_text("not a netCDF file\n")
    (root / "empty.nc").write_bytes(b"")
    (root / "folder.nc").mkdir()
    (root / "models.py").write_text(MODEL_SOURCE)
    (root / "broken.py").write_text("import numpyro\n\ndef model(:\n    pass\n")
    (root / "raises.py").write_text("import numpyro\nSCALE = undefined_name\n")
    (root / "data.json").write_text(json.dumps(DATA))
    (root / "list.json").write_text("[8, 1.0]")
    (root / "bad.json").write_text('{"J": 8,')
    (root / "wrong_keys.json").write_text(json.dumps({**DATA, "sigmas": DATA["sigma"]}))
    (root / "data.csv").write_text("J\n8\n")
    posterior = {"mu": np.zeros((2, 10)), "tau": np.ones((2, 10)), "eta": np.zeros((2, 10, 8))}
    return {
        "root": root,
        "good": stein_file(root / "good.nc", x),
        "nan": stein_file(root / "nan.nc", bad),
        "one_draw": stein_file(root / "one_draw.nc", x[:, :1]),
        "posterior_only": _posterior_only(root / "posterior_only.nc", posterior),
    }


def _posterior_only(path: Path, posterior: dict[str, np.ndarray]) -> Path:
    import arviz as az

    data = az.from_dict({"posterior": posterior}) if arviz_io.arviz_1() else az.from_dict(posterior)
    arviz_io.save(data, path)
    return path


def _unwritable_dir(root: Path) -> Path:
    """A directory this process cannot create files in (``/sys`` when running as root)."""
    if os.geteuid() != 0:
        locked = root / "locked"
        locked.mkdir(exist_ok=True)
        locked.chmod(0o555)
        return locked
    sysfs = Path("/sys")  # takes no new files, not even from root
    if sysfs.is_dir():
        try:
            with tempfile.TemporaryFile(dir=sysfs):
                pass
        except OSError:
            return sysfs
    # Skip justified: as root, chmod does not stop writes, so without a sysfs that refuses new
    # files no directory here can be unwritable and the case cannot be set up; the other path
    # cases (missing folder, a file as a folder) still run. Non-root runs never reach this line.
    pytest.skip("no directory that root cannot write to here")


def _argv(files: dict[str, Path], argv: list[str]) -> list[str]:
    """``argv`` with ``{root}``, ``{good}``, ``{unwritable}`` ... filled in from ``files``."""
    names = {k: v for k, v in files.items()}
    if any("{unwritable}" in a for a in argv):
        names["unwritable"] = _unwritable_dir(files["root"])
    return [a.format(**names) for a in argv]


MODEL = "--model={root}/models.py:eight_schools"

# --- item 8 and 9: the issue's cases, each a real subprocess ------------------------------------

#: case: (argv, exit status, words the one line holds)
ISSUE_CASES = {
    "text_file": (["{root}/text.nc"], 1, ["text.nc", "netCDF", "to_netcdf"]),
    "empty_file": (["{root}/empty.nc"], 1, ["empty.nc", "empty"]),
    "directory": (["{root}/folder.nc"], 1, ["folder.nc", "directory"]),
    "nan_inputs": (["{nan}"], 1, ["nan.nc", "NaN"]),
    "too_few_draws": (["{one_draw}"], 1, ["one_draw.nc", "draws", "got 1"]),
    "n_boot_0": (["{good}", "--n-boot", "0"], 2, ["--n-boot", "at least 1", "--help"]),
    "save_no_dir": (["{good}", "--save", "{root}/no/dir/out.nc"], 1, ["--save", "does not exist"]),
    "save_unwritable": (["{good}", "--save", "{unwritable}/out.nc"], 1, ["--save", "not writable"]),
    "plot_no_dir": (["{good}", "--plot", "{root}/no/dir/t.png"], 1, ["--plot", "does not exist"]),
    "model_missing": (
        ["{posterior_only}", "--model", "{root}/nowhere.py:eight_schools"],
        1,
        ["--model", "no such file", "nowhere.py"],
    ),
    "model_name_wrong": (
        ["{posterior_only}", "--model", "{root}/models.py:eigth_schools"],
        1,
        ["--model", "no 'eigth_schools'", "its functions: eight_schools"],
    ),
}


@pytest.mark.parametrize("case", ISSUE_CASES)
def test_a_mistake_is_one_line_without_traceback(files, case):
    """Issue 17 item 8 (and item 9's missing file, wrong name): exit status, one line on stderr,
    no "Traceback"; bad output paths fail before anything is computed (no table on stdout)."""
    argv, status, words = ISSUE_CASES[case]
    assert_one_line_error(cli("diagnose", *_argv(files, argv)), status, *words)


# --- more mistakes, in this process ---------------------------------------------------------------

MORE_CASES = {
    "missing_file": (["diagnose", "{root}/missing.nc"], 1, ["no such file", "missing.nc"]),
    "no_stein_inputs": (
        ["diagnose", "{posterior_only}"],
        1,
        ["stein_inputs", "--model FILE.py:FUNCTION"],
    ),
    "no_command": ([], 2, ["command", "--help"]),
    "num_bootstrap_0": (["diagnose", "{good}", "--num-bootstrap", "0"], 2, ["--num-bootstrap"]),
    "num_bootstrap_word": (["diagnose", "{good}", "--num-bootstrap", "many"], 2, ["'many'"]),
    "unknown_option": (["diagnose", "{good}", "--bootstrap", "5"], 2, ["--bootstrap"]),
    "bad_diffusion": (["diagnose", "{good}", "--diffusion", "langevin"], 2, ["--diffusion"]),
    "model_no_colon": (["diagnose", "{good}", "--model", "m.py"], 2, ["FILE.py:FUNCTION"]),
    "data_no_model": (["diagnose", "{good}", "--data", "d.json"], 2, ["--data", "--model"]),
    "demo_samples": (["demo", "--num-samples", "1"], 2, ["--num-samples", "at least 8"]),
    "demo_out_file": (["demo", "--out", "{good}"], 1, ["--out", "not a directory"]),
    "save_under_file": (["diagnose", "{good}", "--save", "{good}/o.nc"], 1, ["not a directory"]),
    "save_is_dir": (["diagnose", "{good}", "--save", "{root}"], 1, ["--save", "is a directory"]),
    "plot_unwritable": (["diagnose", "{good}", "--plot", "{unwritable}/t.png"], 1, ["writable"]),
    "plot_format": (["diagnose", "{good}", "--plot", "{root}/t.xyz"], 1, [".xyz", ".png"]),
    "syntax_error": (
        ["diagnose", "{posterior_only}", "--model", "{root}/broken.py:model"],
        1,
        ["broken.py", "line 3", "SyntaxError"],
    ),
    "import_fails": (
        ["diagnose", "{posterior_only}", "--model", "{root}/raises.py:model"],
        1,
        ["raises.py", "line 2", "NameError", "undefined_name"],
    ),
    "no_module": (
        ["diagnose", "{posterior_only}", "--model", "no_such_module_xyz:model"],
        1,
        ["no_such_module_xyz", "FILE.py:FUNCTION"],
    ),
    "data_missing": (["diagnose", "{posterior_only}", MODEL, "--data", "{root}/x.json"], 1, []),
    "data_not_json": (["diagnose", "{posterior_only}", MODEL, "--data", "{root}/bad.json"], 1, []),
    "data_list": (["diagnose", "{posterior_only}", MODEL, "--data", "{root}/list.json"], 1, []),
    "data_csv": (["diagnose", "{posterior_only}", MODEL, "--data", "{root}/data.csv"], 1, []),
    "data_keys": (
        ["diagnose", "{posterior_only}", MODEL, "--data", "{root}/wrong_keys.json"],
        1,
        ["eight_schools(J, sigma, y=None)", "'sigmas'"],
    ),
    "no_data": (["diagnose", "{posterior_only}", MODEL], 1, ["missing a required", "--data"]),
}
_DATA_WORDS = {
    "data_missing": ["--data", "no such file"],
    "data_not_json": ["--data", "not valid JSON"],
    "data_list": ["--data", "list, not an object"],
    "data_csv": ["--data", "'.csv'", ".npz"],
}


@pytest.mark.parametrize("case", MORE_CASES)
def test_more_mistakes_are_one_line(files, case, capsys):
    argv, status, words = MORE_CASES[case]
    run = cli_in_process(capsys, *_argv(files, argv))
    assert_one_line_error(run, status, *words, *_DATA_WORDS.get(case, []))


def test_help_describes_every_option():
    parser = _parser()
    sub = parser._subparsers._group_actions[0].choices  # the demo and diagnose parsers
    for name, command in [("numpyro-dsd", parser), *sub.items()]:
        for action in command._actions:
            if action.help != "==SUPPRESS==":
                assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    help_text = sub["diagnose"].format_help()
    for option in ("--model", "--data", "--save", "--plot", "--seed", "--num-bootstrap", "FILE"):
        assert option in help_text


def test_a_model_file_imports_its_neighbours_and_a_module_works_too(tmp_path):
    """``--model`` imports the file with its folder on ``sys.path`` (as ``python models.py``
    would), or an installed module by its dotted name."""
    from numpyro_dsd._cli_inputs import load_model
    from numpyro_dsd.demo import funnel

    (tmp_path / "helpers.py").write_text("SCALE = 3.0\n")
    (tmp_path / "models.py").write_text(
        "from helpers import SCALE\n\ndef model():\n    return SCALE\n"
    )
    assert load_model((str(tmp_path / "models.py"), "model"))() == 3.0
    assert load_model(("numpyro_dsd.demo", "funnel")) is funnel


def test_data_files_give_keyword_arguments(tmp_path):
    """JSON lists become arrays and numbers stay Python numbers (a plate size stays an int); an
    ``.npz`` gives arrays, its 0-d arrays as Python scalars."""
    from numpyro_dsd._cli_inputs import load_model_kwargs

    (tmp_path / "d.json").write_text(json.dumps({**DATA, "name": "schools", "scale": None}))
    from_json = load_model_kwargs(tmp_path / "d.json")
    np.savez(tmp_path / "d.npz", **{k: np.asarray(v) for k, v in DATA.items()})
    from_npz = load_model_kwargs(tmp_path / "d.npz")
    for kwargs in (from_json, from_npz):
        assert type(kwargs["J"]) is int and kwargs["J"] == 8
        np.testing.assert_array_equal(kwargs["y"], DATA["y"])
    assert from_json["name"] == "schools" and from_json["scale"] is None


# --- item 9: a plain ArviZ file diagnosed with the model named on the command line ---------------


@pytest.fixture(scope="module")
def nuts_run(tmp_path_factory) -> dict[str, Any]:
    """A real short NUTS run of ``MODEL_SOURCE`` saved with ArviZ, the model's data as JSON and
    as ``.npz``, and what ``ksd_diagnostic(idata, model, model_kwargs=...)`` says in Python."""
    import arviz as az
    import jax
    from numpyro.infer import MCMC, NUTS

    from numpyro_dsd.mcmc.diagnostic import ksd_diagnostic

    root = tmp_path_factory.mktemp("nuts")
    (root / "models.py").write_text(MODEL_SOURCE)
    (root / "data.json").write_text(json.dumps(DATA))
    np.savez(root / "data.npz", **{k: np.asarray(v) for k, v in DATA.items()})
    namespace: dict[str, Any] = {}
    exec(MODEL_SOURCE, namespace)
    model, kwargs = namespace["eight_schools"], {k: np.asarray(v) for k, v in DATA.items()}
    kwargs["J"] = DATA["J"]  # a Python int: it sizes the plate
    mcmc = MCMC(
        NUTS(model),
        num_warmup=300,
        num_samples=300,
        num_chains=2,
        progress_bar=False,
        chain_method="sequential",
    )
    mcmc.run(jax.random.key(1), **kwargs)
    az.from_numpyro(mcmc).to_netcdf(str(root / "posterior.nc"))
    idata = arviz_io.load(root / "posterior.nc")
    expected = ksd_diagnostic(
        idata, model, model_kwargs=kwargs, num_bootstrap=100, rng_key=jax.random.key(0)
    )
    return {"root": root, "posterior": root / "posterior.nc", "expected": expected}


@pytest.mark.slow
@pytest.mark.parametrize("data_file", ["data.json", "data.npz"])
def test_diagnose_a_plain_arviz_file_with_the_model(nuts_run, data_file, tmp_path):
    """Issue 17 item 9: ``az.from_numpyro(mcmc).to_netcdf(...)`` diagnosed from the shell with
    ``--model models.py:eight_schools --data ARGS`` gives the numbers of ``ksd_diagnostic(idata,
    model, model_kwargs=...)`` in Python."""
    root, saved, expected = nuts_run["root"], tmp_path / "diagnosed.nc", nuts_run["expected"]
    model = ["--model", f"{root}/models.py:eight_schools", "--data", root / data_file]
    run = cli("diagnose", nuts_run["posterior"], *model, "--num-bootstrap", 100, "--save", saved)
    assert run.returncode == 0, run.stderr
    assert "pooled verdict" in run.stdout and "r_hat_max" in run.stdout
    group = arviz_io.get_group(arviz_io.load(saved), "stein_diagnostics")
    assert group.attrs["num_bootstrap"] == 100
    np.testing.assert_allclose(group["ksd"].values, expected["ksd"].values, rtol=1e-5)
    np.testing.assert_allclose(group["pvalue_pooled"].values, expected["pvalue_pooled"].values)
    assert str(group["verdict_pooled"].values) == str(expected["verdict_pooled"].values)
