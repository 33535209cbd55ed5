"""The MCMC diagnostic on a NumPyro model whose posterior is known in closed form.

Bayesian linear regression with a known noise scale: beta ~ N(0, 2^2 I), y ~ N(X beta, 1), so
the posterior is N(m, P^-1) with P = X^T X + I/4 and m = P^-1 X^T y. Exact draws, draws 20% too
wide and an unadjusted Langevin chain with too large a step are fed to ``ksd_diagnostic``.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS

from numpyro_dsd import IMQ, Identity, fit_flow, ksd, ksd_diagnostic
from numpyro_dsd.arviz.convert import (
    add_diagnostics,
    add_stein_inputs,
    from_stein_inputs,
    get_group,
    load,
    posterior_dict,
    read_stein_inputs,
    save,
)
from numpyro_dsd.mcmc.diagnostic import diagnose_draws
from numpyro_dsd.mcmc.inputs import Draws, resolve_draws, with_stein_inputs
from numpyro_dsd.mcmc.prefix import ksd_trace
from numpyro_dsd.stein.kernels import default_kernel

D, CHAINS = 3, 4


def regression(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.0).expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ beta, 1.0), obs=y)


@pytest.fixture(scope="module")
def posterior():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, D))
    y = X @ np.array([1.0, -1.0, 0.5]) + rng.normal(size=30)
    prec = X.T @ X + np.eye(D) / 4.0
    cov = np.linalg.inv(prec)
    return {"X": X, "y": y, "prec": prec, "mean": cov @ X.T @ y, "L": np.linalg.cholesky(cov)}


def exact(post, seed, n=500, scale=1.0):
    z = np.random.default_rng(seed).normal(size=(CHAINS, n, D))
    return {"beta": post["mean"] + scale * z @ post["L"].T}


def ula(post, seed, n=1000, burn=300):
    """Unadjusted Langevin x' = x + h grad log p + sqrt(2h) xi with h = 1/lambda_max: its
    stationary law is Gaussian with the stiffest variance doubled."""
    h = 1.0 / np.linalg.eigvalsh(post["prec"]).max()
    rng, x, out = np.random.default_rng(seed), np.tile(post["mean"], (CHAINS, 1)), []
    for t in range(n + burn):
        x = x - h * (x - post["mean"]) @ post["prec"] + np.sqrt(2 * h) * rng.normal(size=x.shape)
        if t >= burn:
            out.append(x.copy())
    return {"beta": np.stack(out, axis=1)}


def diag(post, draws, seed=0, **kw):
    kw.setdefault("num_bootstrap", 300)
    return ksd_diagnostic(
        draws, regression, (post["X"], post["y"]), rng_key=jax.random.key(seed), **kw
    )


def closed_form(post, draws):
    """Draws with the posterior's closed-form scores (beta is unconstrained already)."""
    x = jnp.asarray(draws["beta"])
    return Draws(x, -(x - post["mean"]) @ post["prec"], None, ("beta",))


@pytest.mark.slow
def test_exact_draws_pass(posterior):
    """Under H0, p > 0.05 in at least 90% of seeds (expected 95%), per chain and pooled.
    Scores in closed form here (the model's own scores are checked in the tests below)."""
    seeds = range(20)
    results = [
        diagnose_draws(
            closed_form(posterior, exact(posterior, s)), Identity(), rng_key=jax.random.key(s)
        )
        for s in seeds
    ]
    pooled = np.array([float(r.pvalue_pooled) for r in results])
    chains = np.concatenate([r.pvalue.values for r in results])
    assert np.mean(pooled > 0.05) >= 0.9, pooled
    assert np.mean(chains > 0.05) >= 0.9, chains
    # One verdict at level 0.05, Holm over the chains: P(any chain "fail") <= 0.05, so 20 runs
    # with more than 3 runs not "pass" would be a 1-in-60 event (binomial(20, 0.05 + 0.01)).
    verdicts = [str(r.verdict_pooled.values) for r in results]
    assert verdicts.count("pass") >= 17, verdicts
    assert sum("fail" in r.verdict.values for r in results) <= 3


@pytest.mark.parametrize("kind", ["wide", "ula"])
def test_wrong_samplers_flagged(posterior, kind):
    for seed in range(2):
        draws = (
            exact(posterior, seed, n=1000, scale=1.2) if kind == "wide" else ula(posterior, seed)
        )
        ds = diag(posterior, draws, seed=seed)
        assert np.all(ds.pvalue.values < 0.01), ds.pvalue.values
        assert float(ds.pvalue_pooled) < 0.01
        assert str(ds.verdict_pooled.values) == "fail" and set(ds.verdict.values) == {"fail"}


def test_model_scores_equal_closed_form(posterior, x64):
    draws = exact(posterior, 0, n=50)
    r = resolve_draws(draws, regression, (posterior["X"], posterior["y"]))
    np.testing.assert_allclose(r.scores, closed_form(posterior, draws).scores, rtol=1e-10)


def test_dataset_layout(posterior):
    ds = diag(posterior, exact(posterior, 0, n=200), num_prefixes=5)
    assert ds.sizes == {"chain": CHAINS, "prefix": 5}
    assert ds.ksd_trace.dims == ("chain", "prefix")
    assert list(ds.prefix.values) == sorted(ds.prefix.values) and int(ds.prefix[-1]) == 200
    assert np.all(ds.n.values == 200)
    for key in ("kernel", "c", "beta", "bandwidth", "diffusion", "test", "num_bootstrap"):
        assert key in ds.attrs
    assert ds.attrs["bandwidth"] == "med"
    np.testing.assert_allclose(ds.ksd_trace.values[:, -1], ds.ksd.values, rtol=1e-5)


def test_values_match_ksd(posterior, x64):
    """Per-chain, pooled and prefix values equal plain ``ksd`` calls with the frozen kernel."""
    draws = exact(posterior, 3, n=300)
    ds = diag(posterior, draws, num_prefixes=4)
    r = resolve_draws(draws, regression, (posterior["X"], posterior["y"]))
    x, s = np.asarray(r.x), np.asarray(r.scores)
    kernel = IMQ(bandwidth="med").frozen(x.reshape(-1, D))
    for c in range(CHAINS):
        np.testing.assert_allclose(ds.ksd[c], ksd(x[c], s[c], kernel=kernel), rtol=1e-10)
        m, v = ksd_trace(x[c], s[c], kernel=kernel, prefixes=ds.prefix.values)
        np.testing.assert_allclose(ds.ksd_trace[c], v, rtol=1e-10)
        first = ksd(x[c, : m[1]], s[c, : m[1]], kernel=kernel)
        np.testing.assert_allclose(v[1], first, rtol=1e-10)
    pooled = ksd(x.reshape(-1, D), s.reshape(-1, D), kernel=kernel)
    np.testing.assert_allclose(ds.ksd_pooled, pooled, rtol=1e-10)


@pytest.fixture(scope="module")
def mcmc(posterior):
    m = MCMC(NUTS(regression), num_warmup=200, num_samples=300, num_chains=2, progress_bar=False)
    m.chain_method = "sequential"
    m.run(jax.random.key(1), posterior["X"], posterior["y"], extra_fields=("z_grad",))
    return m


def test_mcmc_and_inference_data_agree(mcmc, posterior):
    import arviz as az

    from_mcmc = ksd_diagnostic(mcmc, num_bootstrap=200)
    idata = az.from_numpyro(mcmc)
    before = copy.deepcopy(posterior_dict(idata))
    from_idata = ksd_diagnostic(
        idata, regression, (posterior["X"], posterior["y"]), num_bootstrap=200
    )
    np.testing.assert_allclose(from_mcmc.ksd, from_idata.ksd, rtol=1e-4)
    np.testing.assert_allclose(from_mcmc.pvalue, from_idata.pvalue)
    after = posterior_dict(idata)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing modified
    assert float(from_mcmc.pvalue_pooled) > 0.01  # NUTS on a Gaussian posterior is fine


def test_stein_inputs_need_no_model(mcmc, posterior, tmp_path):
    import arviz as az

    r = resolve_draws(mcmc)
    stored = add_stein_inputs(az.from_numpyro(mcmc), r.x, r.scores, r.site_names)
    save(with_stein_inputs(mcmc), tmp_path / "run.nc")
    for data in (stored, load(tmp_path / "run.nc")):
        np.testing.assert_allclose(read_stein_inputs(data)[1], r.scores)
        assert get_group(data, "posterior") is not None
    a = ksd_diagnostic(stored, num_bootstrap=200)
    b = ksd_diagnostic(mcmc, num_bootstrap=200)
    np.testing.assert_allclose(a.ksd, b.ksd, rtol=1e-5)
    np.testing.assert_allclose(a.pvalue_pooled, b.pvalue_pooled)


@pytest.mark.parametrize("diffusion", ["covariance", "flow"])
def test_other_diffusions(posterior, diffusion):
    kw = {"flow_kwargs": {"num_steps": 300}} if diffusion == "flow" else {}
    good = diag(posterior, exact(posterior, 0, n=300), diffusion=diffusion, **kw)
    bad = diag(posterior, exact(posterior, 0, n=300, scale=1.3), diffusion=diffusion, **kw)
    assert float(good.pvalue_pooled) > 0.01
    assert float(bad.pvalue_pooled) < 0.01
    assert diffusion in good.attrs["diffusion"]


def test_a_fitted_flow_is_reused(posterior):
    """``diffusion=fit`` (a FlowFit) or ``fit.flow`` is used as it is: the same statistic as the
    flow's own diffusion object, the fit's record in the attributes, and no refit (the flow's
    arrays are the fit's)."""
    fit = fit_flow(regression, posterior["X"], posterior["y"], num_steps=300, progress_bar=False)
    draws = exact(posterior, 0, n=300)
    by_fit = diag(posterior, draws, diffusion=fit)
    by_flow = diag(posterior, draws, diffusion=fit.flow)
    by_object = diag(posterior, draws, diffusion=fit.flow.diffusion())
    np.testing.assert_allclose(by_fit.ksd, by_object.ksd, rtol=1e-6)
    np.testing.assert_allclose(by_flow.ksd, by_object.ksd, rtol=1e-6)
    assert by_fit.attrs["flow_fitted"] == "given" and by_fit.attrs["flow_khat"] == fit.khat
    assert by_fit.attrs["flow_num_steps"] == 300
    fitted = diag(posterior, draws, diffusion="flow", flow_kwargs={"num_steps": 300})
    assert fitted.attrs["flow_fitted"] == "fit_flow(model)" and fitted.attrs["flow_khat"] < 0.7


def test_the_flow_is_kept_with_the_result(posterior, tmp_path):
    """A diagnostic with a flow stores the flow's arrays in its result; ``diffusion=<that
    result>`` (also read back from netCDF) reuses the flow, so the statistic is the same."""
    draws = exact(posterior, 0, n=300)
    first = diag(posterior, draws, diffusion="flow", flow_kwargs={"num_steps": 200})
    assert "flow_loc" in first and first.attrs["flow_spec_dim"] == "3"
    again = diag(posterior, draws, diffusion=first)
    np.testing.assert_allclose(again.ksd, first.ksd, rtol=1e-6)
    assert again.attrs["flow_fitted"].startswith("stored with an earlier diagnostic")
    mcmc_like = from_stein_inputs(*closed_form(posterior, draws)[:2])
    save(add_diagnostics(mcmc_like, first), tmp_path / "with_flow.nc")
    stored = diag(posterior, draws, diffusion=load(tmp_path / "with_flow.nc"))
    np.testing.assert_allclose(stored.ksd, first.ksd, rtol=1e-6)
    with pytest.raises(ValueError, match="holds no flow"):
        diag(posterior, draws, diffusion=diag(posterior, draws, test=False))


def test_a_flow_of_another_dimension(posterior):
    def other():
        numpyro.sample("z", dist.Normal(0.0, 1.0).expand([D + 1]).to_event(1))

    fit = fit_flow(other, num_steps=5, progress_bar=False, num_khat_draws=0)
    with pytest.raises(ValueError, match=r"acts on 4 dimensions but .* has 3"):
        diag(posterior, exact(posterior, 0, n=50), diffusion=fit)


def test_no_test(posterior):
    ds = diag(posterior, exact(posterior, 0, n=100), test=False)
    assert np.all(np.isnan(ds.pvalue.values)) and np.isnan(float(ds.pvalue_pooled))
    assert np.all(np.isfinite(ds.ksd.values)) and np.isfinite(float(ds.ksd_pooled))


# --- bad input ------------------------------------------------------------------------------


def test_unrun_mcmc():
    m = MCMC(NUTS(regression), num_warmup=10, num_samples=10, progress_bar=False)
    with pytest.raises(ValueError, match="mcmc.run"):
        ksd_diagnostic(m)


def test_discrete_latent_site():
    def mixture():
        z = numpyro.sample("z", dist.Bernoulli(0.5))
        numpyro.sample("x", dist.Normal(z, 1.0))

    draws = {"z": np.zeros((2, 10)), "x": np.zeros((2, 10))}
    with pytest.raises(ValueError, match="discrete"):
        ksd_diagnostic(draws, mixture)


def test_nan_draws_and_nothing_modified(posterior):
    draws = exact(posterior, 0, n=50)
    draws["beta"][1, 7, 0] = np.nan
    before = draws["beta"].copy()
    with pytest.raises(ValueError, match="not finite|NaN"):
        diag(posterior, draws)
    np.testing.assert_array_equal(draws["beta"], before)


def test_chain_of_length_one(posterior):
    with pytest.raises(ValueError, match="at least 8 draws; got 1"):
        diag(posterior, exact(posterior, 0, n=1))


def test_missing_model_and_bad_options(posterior):
    with pytest.raises(ValueError, match="model"):
        ksd_diagnostic(exact(posterior, 0, n=20))
    with pytest.raises(ValueError, match="diffusion must be"):
        diag(posterior, exact(posterior, 0, n=20), diffusion="magic")
    with pytest.raises(ValueError, match="num_bootstrap"):
        diag(posterior, exact(posterior, 0, n=20), num_bootstrap=0)
    with pytest.raises(ValueError, match="MCMC"):
        ksd_diagnostic(jnp.zeros((2, 10, 3)), regression)


def test_diffusion_features_are_computed_once_per_draw():
    """Each chain and the pooled statistic share one set of diffusion features (a flow
    diffusion maps each draw once, not once per chain and again for the pooled draws)."""

    class Counting(Identity):
        rows = 0

        def features(self, x, scores):
            Counting.rows += x.shape[0]
            return super().features(x, scores)

    x = jax.random.normal(jax.random.key(0), (3, 100, 2))
    ds = diagnose_draws(Draws(x, -x, None, ()), Counting(), num_bootstrap=50)
    assert Counting.rows == 300
    expected = ksd(x.reshape(-1, 2), -x.reshape(-1, 2), kernel=default_kernel())
    np.testing.assert_allclose(float(ds["ksd_pooled"]), float(expected), rtol=1e-4)
