"""Latency: ``model_draws`` compiles once per model and shapes, the command's persistent
compilation cache and its switch, and the progress-bar arguments."""

from __future__ import annotations

import gc

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from numpyro_dsd import cli
from numpyro_dsd.mcmc.bootstrap import ksd_test, sign_process, wild_bootstrap
from numpyro_dsd.model import targets
from numpyro_dsd.model.targets import model_draws
from numpyro_dsd.stein.engine import prepare


def _normal(scale: float):
    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, scale).expand([3]).to_event(1))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    return model


def _compiles(model) -> int:
    """Programs compiled so far by ``model_draws`` for ``model``."""
    return targets._jitted_map(model)._cache_size()


def test_model_draws_compiles_once_per_model_and_shapes():
    model, y = _normal(2.0), np.ones(3)
    draws = {"mu": np.zeros((2, 50, 3))}
    model_draws(model, draws, model_kwargs={"y": y})
    first = _compiles(model)
    assert first == 2  # the flattening and the scores
    model_draws(model, {"mu": np.ones((2, 50, 3))}, model_kwargs={"y": 2 * y})  # new values
    assert _compiles(model) == first
    model_draws(model, {"mu": np.zeros((3, 40, 3))}, model_kwargs={"y": y})  # new shapes
    assert _compiles(model) == 2 * first


def test_a_new_model_gets_its_own_compile():
    """Two models of the same shapes: each gets its own scores (no stale program)."""
    draws, y = {"mu": np.full((1, 10, 3), 1.0)}, {"y": np.zeros(3)}
    wide = model_draws(_normal(10.0), draws, model_kwargs=y).scores
    narrow = model_draws(_normal(1.0), draws, model_kwargs=y).scores
    np.testing.assert_allclose(wide, -1.01, rtol=1e-5)  # -mu / s^2 - (mu - y) at mu = 1, y = 0
    np.testing.assert_allclose(narrow, -2.0, rtol=1e-5)


def test_the_cache_lets_a_model_go():
    model = _normal(1.0)
    model_draws(model, {"mu": np.zeros((1, 10, 3))}, model_kwargs={"y": np.zeros(3)})
    assert len(targets._JITTED) >= 1
    size = len(targets._JITTED)
    del model
    gc.collect()
    assert len(targets._JITTED) == size - 1


def test_a_model_that_needs_concrete_arguments_still_works():
    """A 0-d array sizing a plate cannot be traced: it is used as a constant instead."""

    def model(n):
        with numpyro.plate("k", int(n)):
            numpyro.sample("z", dist.Normal(0.0, 1.0))

    out = model_draws(model, {"z": jnp.ones((5, 4))}, (np.array(4),))
    np.testing.assert_allclose(out.scores, -1.0, rtol=1e-6)


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli.cache_dir() == tmp_path / "numpyro_dsd" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cli.cache_dir().parts[-3:] == (".cache", "numpyro_dsd", "jax")


def test_compilation_cache_switch(monkeypatch, tmp_path):
    """On: JAX's cache points at the folder while the block runs and is put back after; off by
    the flag or the environment variable."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(cli.NO_CACHE_ENV, raising=False)
    before = jax.config.jax_compilation_cache_dir
    with cli.compilation_cache() as folder:
        assert folder == tmp_path / "numpyro_dsd" / "jax" and folder.is_dir()
        assert jax.config.jax_compilation_cache_dir == str(folder)
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    assert jax.config.jax_compilation_cache_dir == before
    with cli.compilation_cache(no_cache=True) as folder:
        assert folder is None and jax.config.jax_compilation_cache_dir == before
    monkeypatch.setenv(cli.NO_CACHE_ENV, "1")
    with cli.compilation_cache() as folder:
        assert folder is None
    monkeypatch.setenv(cli.NO_CACHE_ENV, "0")
    with cli.compilation_cache() as folder:
        assert folder is not None


def test_no_cache_option_parses():
    for command in (["demo"], ["diagnose", "f.nc"]):
        assert cli._parser().parse_args([*command, "--no-cache"]).no_cache
        assert not cli._parser().parse_args(command).no_cache


def test_bootstrap_progress_bar_is_off_by_default_and_changes_nothing(capsys):
    x = jax.random.normal(jax.random.key(0), (300, 2))
    sk, signs = prepare(x, -x), sign_process(jax.random.key(1), 300, 100, 0.5)
    quiet = wild_bootstrap(sk, signs, method="dense")
    assert "bootstrap" not in capsys.readouterr().err
    shown = wild_bootstrap(sk, signs, method="dense", progress_bar=True)
    assert "bootstrap" in capsys.readouterr().err  # tqdm writes to stderr
    np.testing.assert_allclose(shown.replicates, quiet.replicates, rtol=1e-5)
    assert float(shown.pvalue) == float(quiet.pvalue)
    res = ksd_test(x, -x, num_bootstrap=50, progress_bar=True)
    assert "bootstrap" in capsys.readouterr().err and 0.0 < float(res.pvalue) <= 1.0


@pytest.mark.parametrize("name", ["fit_flow", "fit_flow_to_samples"])
def test_flow_fits_show_numpyros_bar_by_default(name):
    import inspect

    from numpyro_dsd.flows import fitting

    assert inspect.signature(getattr(fitting, name)).parameters["progress_bar"].default is True


def test_ksd_diagnostic_shows_its_tests_bar_and_changes_nothing(capsys, monkeypatch):
    """The KSD tests' bar (one step per chain and one pooled) appears once the tests take over
    PROGRESS_DELAY seconds, on stderr, and the result does not depend on it."""
    from numpyro_dsd import ksd_diagnostic
    from numpyro_dsd.mcmc import diagnostic

    draws = {"mu": np.asarray(jax.random.normal(jax.random.key(0), (2, 200)))}

    def model():
        numpyro.sample("mu", dist.Normal(0.0, 1.0))

    quiet = ksd_diagnostic(draws, model, num_bootstrap=100, progress_bar=False)
    capsys.readouterr()
    monkeypatch.setattr(diagnostic, "PROGRESS_DELAY", 0.0)
    shown = ksd_diagnostic(draws, model, num_bootstrap=100)  # progress_bar=True by default
    err = capsys.readouterr().err
    assert "KSD tests" in err and "3/3" in err
    np.testing.assert_array_equal(shown.pvalue.values, quiet.pvalue.values)
    np.testing.assert_array_equal(shown.ksd.values, quiet.ksd.values)
    ksd_diagnostic(draws, model, num_bootstrap=100, progress_bar=False)
    assert "KSD tests" not in capsys.readouterr().err
