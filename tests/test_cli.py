"""The ``numpyro-dsd`` command: the demo end to end (small), and ``diagnose`` on saved files."""

from __future__ import annotations

import numpy as np
import pytest

from numpyro_dsd import arviz as arviz_io
from numpyro_dsd.cli import _parser, main
from numpyro_dsd.mcmc.inputs import resolve_draws


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    argv = ["demo", "--out", str(out), "--num-samples", "300", "--num-chains", "2"]
    assert main([*argv, "--num-bootstrap", "100", "--num-flow-steps", "200"]) == 0
    return out


@pytest.mark.slow
def test_demo_writes_table_figure_and_files(demo_dir, capsys):
    assert (demo_dir / "demo.png").stat().st_size > 10_000
    for name in ("centred.nc", "noncentred.nc"):
        data = arviz_io.load(demo_dir / name)
        x, scores, names = arviz_io.read_stein_inputs(data)
        assert x.shape == scores.shape == (2, 300, 5) and names == ("v", "x")
        assert np.all(np.isfinite(scores))


def test_diagnose_reuses_the_stored_flow(demo_dir, capsys):
    """The demo's files keep the flow it fitted to the model; ``--diffusion flow`` reuses it
    (no refit to the draws under test) and says which flow it used."""
    argv = ["diagnose", str(demo_dir / "centred.nc"), "--num-bootstrap", "100"]
    assert main([*argv, "--diffusion", "flow"]) == 0
    out = capsys.readouterr().out
    assert "flow: stored with an earlier diagnostic (fit_flow(model)); Pareto k-hat" in out


def test_diagnose_a_saved_file_without_the_model(demo_dir, tmp_path, capsys):
    saved, fig = tmp_path / "out.nc", tmp_path / "trace.png"
    argv = ["diagnose", str(demo_dir / "noncentred.nc"), "--num-bootstrap", "100"]
    assert main([*argv, "--save", str(saved), "--plot", str(fig)]) == 0
    out = capsys.readouterr().out
    assert "pooled" in out and "r_hat_max" in out and "ess_bulk_min" in out
    ds = arviz_io.load(saved)
    group = ds["stein_diagnostics"] if hasattr(ds, "children") else ds.stein_diagnostics
    assert set(group.data_vars) >= {"ksd", "pvalue", "ksd_pooled", "pvalue_pooled", "ksd_trace"}
    assert group["ksd_trace"].dims == ("chain", "prefix")
    assert group.attrs["num_bootstrap"] == 100
    assert group.attrs["rng_key"].startswith("key_data [0, 0] (given)")  # --seed 0
    assert fig.stat().st_size > 5_000


def test_diagnose_with_the_nystrom_estimate(demo_dir, tmp_path, capsys):
    saved = tmp_path / "out.nc"
    argv = ["diagnose", str(demo_dir / "noncentred.nc"), "--num-bootstrap", "100"]
    assert (
        main([*argv, "--estimator", "nystrom", "--num-inducing", "50", "--save", str(saved)]) == 0
    )
    ds = arviz_io.load(saved)
    group = ds["stein_diagnostics"] if hasattr(ds, "children") else ds.stein_diagnostics
    assert (group.attrs["estimator"], group.attrs["num_inducing"]) == ("nystrom", 50)
    assert np.all(np.isfinite(group["ksd"].values))
    with pytest.raises(SystemExit, match="used only by estimator='nystrom'"):
        main([*argv, "--num-inducing", "50"])  # without --estimator nystrom: a one-line error


def test_old_option_names_are_hidden_aliases(capsys):
    """--n-boot, --chains, --flow-steps and --diffusion precond still parse (one release), with a
    note on stderr, and are not in the help."""
    args = _parser().parse_args(["demo", "--n-boot", "7", "--chains", "3", "--flow-steps", "9"])
    assert (args.num_bootstrap, args.num_chains, args.num_flow_steps) == (7, 3, 9)
    args = _parser().parse_args(["diagnose", "f.nc", "--n-boot", "5", "--diffusion", "precond"])
    assert (args.num_bootstrap, args.diffusion) == (5, "covariance")
    err = capsys.readouterr().err
    for old in ("--n-boot", "--chains", "--flow-steps", "--diffusion precond"):
        assert f"{old} is deprecated" in err
    for command in ("demo", "diagnose"):
        with pytest.raises(SystemExit):
            _parser().parse_args([command, "--help"])
        help_text = capsys.readouterr().out
        assert "--num-bootstrap" in help_text
        assert "--n-boot" not in help_text and "precond" not in help_text


def test_stored_scores_are_the_models(demo_dir):
    """The file's scores equal the centred funnel's scores at the stored draws."""
    from numpyro_dsd.demo import funnel

    data = arviz_io.load(demo_dir / "noncentred.nc")
    x, scores, _ = arviz_io.read_stein_inputs(data)
    again = resolve_draws(arviz_io.posterior_dict(data), funnel, (5,))
    np.testing.assert_allclose(again.scores, scores, rtol=1e-4, atol=1e-4)


def test_diagnose_errors(tmp_path):
    import arviz as az

    with pytest.raises(SystemExit, match="no such file"):
        main(["diagnose", str(tmp_path / "missing.nc")])
    posterior = {"mu": np.zeros((2, 10))}
    data = az.from_dict({"posterior": posterior}) if arviz_io.arviz_1() else az.from_dict(posterior)
    path = tmp_path / "no_inputs.nc"
    arviz_io.save(data, path)
    with pytest.raises(SystemExit, match="stein_inputs"):
        main(["diagnose", str(path)])
