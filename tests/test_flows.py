"""Fitting flows: NeuTra SVI on a model (``fit_flow``) and maximum likelihood on draws
(``fit_flow_to_samples``), resumption, saving, and the flow diffusion on a NumPyro model."""

from __future__ import annotations

import math
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import Predictive, Trace_ELBO

from numpyro_dsd import IMQ, ksd
from numpyro_dsd.flows.fitting import (
    _model_svi,
    default_optim,
    fit_flow,
    fit_flow_to_samples,
    gaussian_start,
    standardization,
)
from numpyro_dsd.flows.quality import FlowFitError, FlowQualityWarning, loss_problem
from numpyro_dsd.model.targets import log_density_fn, model_draws


def gaussian_model():
    """Posterior = prior: a ~ N(0, 1), b | a ~ N(2a, 0.5^2); log evidence 0, so -ELBO = KL."""
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    numpyro.sample("b", dist.Normal(2.0 * a, 0.5))


def constrained_model():
    """A positive site and a plate: sigma ~ LogNormal(0, 0.5), mu_i | sigma ~ N(0, sigma)."""
    sigma = numpyro.sample("sigma", dist.LogNormal(0.0, 0.5))
    with numpyro.plate("i", 2):
        numpyro.sample("mu", dist.Normal(0.0, sigma))


@pytest.fixture(scope="module")
def gaussian_fit():
    return fit_flow(gaussian_model, progress_bar=False)  # the default 2000 steps


def test_fit_flow_learns_the_posterior(gaussian_fit):
    flow = gaussian_fit.flow
    svi, guide = _model_svi(
        gaussian_model,
        dict(num_flows=2, skip_connections=False),
        None,
        "elu",
        default_optim(),
        1,
        (flow.loc, flow.scale),
    )
    svi.init(jax.random.key(0))
    kl = float(
        Trace_ELBO(num_particles=20000).loss(
            jax.random.key(1), gaussian_fit.params, gaussian_model, guide
        )
    )
    # the ELBO estimate has MC error ~ sd(log q - log p)/sqrt(20000) < 0.01 for a good fit
    assert kl < 0.05
    # the rebuilt generator is AutoIAFNormal's own transform
    eps = jax.random.normal(jax.random.key(2), (1000, 2))
    G = guide.get_transform(gaussian_fit.params)
    np.testing.assert_allclose(gaussian_fit.flow.generator()(eps), G(eps), rtol=1e-5, atol=1e-5)
    x = G(jax.random.normal(jax.random.key(3), (40000, 2)))
    cov = np.cov(np.asarray(x).T)
    np.testing.assert_allclose(cov, [[1.0, 2.0], [2.0, 4.25]], rtol=0.1, atol=0.05)


def far_model():
    """Far from the origin, scales 5 and 0.01 with correlation 0.99: a regression on an
    uncentred predictor. a ~ N(40, 5), b | a ~ N(a / 500, 0.0014)."""
    a = numpyro.sample("a", dist.Normal(40.0, 5.0))
    numpyro.sample("b", dist.Normal(a / 500.0, 0.0014))


FAR_COV = np.array([[25.0, 0.05], [0.05, 0.01**2 + 0.0014**2]])  # a/500: sd 0.01, corr 0.99


@pytest.mark.parametrize("full_rank", [True, False])
def test_gaussian_start_finds_location_and_scales(full_rank):
    log_prob, _, d = log_density_fn(far_model)
    loc, L = gaussian_start(log_prob, d, full_rank=full_rank)
    np.testing.assert_allclose(loc, [40.0, 0.08], rtol=0.02)
    if full_rank:  # the Gaussian target itself, up to the 32 fixed draws' sampling error
        sd = np.sqrt(np.diag(FAR_COV))
        np.testing.assert_allclose(
            np.asarray(L @ L.T) / np.outer(sd, sd), FAR_COV / np.outer(sd, sd), atol=0.3
        )
    else:  # mean-field optimum: the conditional sds 1 / sqrt(diag(P))
        prec = np.linalg.inv(FAR_COV)
        np.testing.assert_allclose(L, 1.0 / np.sqrt(np.diag(prec)), rtol=0.2)


def test_standardization_gives_marginal_scales():
    log_prob, _, d = log_density_fn(far_model)
    loc, scale = standardization(log_prob, d)
    np.testing.assert_allclose(loc, [40.0, 0.08], rtol=0.02)
    np.testing.assert_allclose(scale, np.sqrt(np.diag(FAR_COV)), rtol=0.02)  # Gaussian: exact


def test_started_fit_reaches_a_far_posterior():
    """500 SVI steps: from the mean-field or Laplace start the flow has the posterior's moments;
    from (0, I) the layers are still travelling."""
    eps = jax.random.normal(jax.random.key(3), (20000, 2))
    truth_sd = np.sqrt(np.diag(FAR_COV))
    errs = {}
    for start in ("mean_field", "laplace", "none"):
        fit = fit_flow(far_model, num_steps=500, progress_bar=False, start=start)
        x = np.asarray(fit.flow.generator()(eps))
        errs[start] = np.abs(x.mean(0) - [40.0, 0.08]) / truth_sd
    assert errs["laplace"].max() < 0.1, errs
    # the mean-field start's mean carries the error of its 32 fixed draws (about 0.15 sd here)
    assert errs["mean_field"].max() < 0.25, errs
    assert errs["none"].max() > 1.0, errs


def test_layers_start_at_the_identity():
    """With the output layers zeroed, the first guide is the start Gaussian itself: a fit that
    cannot move (step size 0) returns G(eps) = loc + scale * P eps, P the reversal between the two
    layers (a permutation of a standard normal is one)."""
    loc, scale = jnp.array([40.0, 0.08]), jnp.array([5.0, 0.01])
    fit = fit_flow(
        far_model, num_steps=2, optim=optax.sgd(0.0), start=(loc, scale), progress_bar=False
    )
    eps = jax.random.normal(jax.random.key(0), (100, 2))
    np.testing.assert_allclose(fit.flow.generator()(eps), loc + scale * eps[:, ::-1], rtol=1e-6)


def test_standardize_is_deprecated_for_start():
    with pytest.warns(DeprecationWarning, match="start='laplace'"):
        old = fit_flow(far_model, num_steps=5, progress_bar=False, standardize=True)
    new = fit_flow(far_model, num_steps=5, progress_bar=False, start="laplace")
    np.testing.assert_allclose(old.losses, new.losses, rtol=1e-6)


def nan_model():
    """The log density is NaN wherever x_0 < 1.5: 93% of the prior's mass."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.factor("bad", jnp.where(x[0] > 1.5, 0.0, jnp.nan))


class TestFitHealth:
    def test_nan_elbo_raises_at_fit_time(self):
        with pytest.raises(FlowFitError, match="not finite at the start") as info:
            fit_flow(nan_model, num_steps=50, progress_bar=False)
        assert info.value.fit.losses.shape == (50,)  # the record is kept for inspection
        assert isinstance(info.value, ValueError)

    @pytest.mark.parametrize("optim", [optax.adam(10.0), optax.sgd(1e3)], ids=["adam", "sgd"])
    def test_divergent_step_size_raises(self, optim):
        with pytest.raises(FlowFitError, match="diverged with the optimiser given"):
            fit_flow(gaussian_model, num_steps=200, optim=optim, progress_bar=False)
        x = jax.random.normal(jax.random.key(0), (500, 2)) * jnp.array([1.0, 5.0])
        with pytest.raises(FlowFitError, match="diverged with the optimiser given"):
            fit_flow_to_samples(x, num_steps=200, optim=optim, progress_bar=False)

    def test_khat_reported_and_warned(self, gaussian_fit):
        assert gaussian_fit.khat < 0.5  # a near-exact fit of a Gaussian
        assert gaussian_fit.summary()["num_nonfinite"] == 0

        def funnel():
            v = numpyro.sample("v", dist.Normal(0.0, 3.0))
            numpyro.sample("x", dist.Normal(jnp.zeros(4), jnp.exp(v / 2)))

        with pytest.warns(FlowQualityWarning, match="k-hat"):  # 10 steps from (0, I)
            fit = fit_flow(funnel, num_steps=10, start="none", progress_bar=False)
        assert fit.khat > 0.7

    def test_bad_start(self):
        with pytest.raises(ValueError, match="start must be"):
            fit_flow(gaussian_model, num_steps=1, start="mode")
        with pytest.raises(ValueError, match=r"shape \(2,\)"):
            fit_flow(gaussian_model, num_steps=1, start=(np.zeros(3), np.ones(3)))
        with pytest.raises(ValueError, match="scale > 0"):
            fit_flow(gaussian_model, num_steps=1, start=(np.zeros(2), np.array([1.0, 0.0])))


def test_loss_problem():
    ok = np.linspace(10.0, 1.0, 100)
    assert loss_problem(ok) is None
    assert loss_problem(np.r_[np.nan, ok]) == "the loss is not finite at the start"
    some_nan = ok.copy()
    some_nan[50:55] = np.nan  # 5%: skipped steps, harmless
    assert loss_problem(some_nan) is None
    some_nan[50:70] = np.nan
    assert loss_problem(some_nan) == "20 of 100 losses are not finite"
    assert "rose" in loss_problem(np.r_[ok, np.full(100, 50.0)])
    noisy = 1.0 + np.random.default_rng(0).normal(scale=3.0, size=200)  # flat and noisy: fine
    assert loss_problem(noisy) is None
    # up within the first tenth, then partly back down, ending above the start: the first
    # tenth's median and noise are high, so only the comparison with the start sees it
    up_down = np.r_[np.full(30, 40.0), np.linspace(40, 4000, 70), np.linspace(4000, 650, 900)]
    up_down += np.random.default_rng(1).normal(scale=3.0, size=1000)
    assert "above where the fit started" in loss_problem(up_down)
    bump = np.r_[np.full(30, 40.0), np.linspace(40, 60, 70), np.linspace(60, 30, 900)]
    bump += np.random.default_rng(1).normal(scale=3.0, size=1000)
    assert loss_problem(bump) is None  # a bump, then below the start: healthy


def unsorted_model():
    """Sites declared out of sorted order (z, then a, then m): the autoguide flattens them in
    this order, model_draws in sorted order (a, m, z)."""
    z = numpyro.sample("z", dist.Normal(-3.0, 0.1).expand([2]).to_event(1))
    a = numpyro.sample("a", dist.Normal(5.0, 2.0))
    numpyro.sample("m", dist.Normal(a, 0.5))
    numpyro.deterministic("s", z.sum())


@pytest.mark.slow
def test_fit_flow_in_model_draws_order():
    """The generator's output is in model_draws' sorted order, whatever the declaration order."""
    fit = fit_flow(unsorted_model, num_steps=1000, progress_bar=False, start="laplace")
    assert fit.flow.spec.order is not None
    x = np.asarray(fit.flow.generator()(jax.random.normal(jax.random.key(0), (20000, 4))))
    sd_m = math.sqrt(2.0**2 + 0.5**2)
    np.testing.assert_allclose(x.mean(0), [5.0, 5.0, -3.0, -3.0], atol=0.1 * sd_m)
    np.testing.assert_allclose(x.std(0), [2.0, sd_m, 0.1, 0.1], rtol=0.2)  # a swap: 20x
    draws = model_draws(
        unsorted_model, {"a": jnp.ones(3), "m": jnp.ones(3), "z": -jnp.ones((3, 2))}
    )
    assert draws.x.shape == (3, 4) and np.allclose(draws.x[:, 2:], -1.0)  # a, m, z[0], z[1]
    T = fit.flow.transform()
    np.testing.assert_allclose(T.inv(T(x[:5])), x[:5], rtol=1e-4, atol=1e-4)


def test_fit_flow_resumes_exactly():
    one = fit_flow(gaussian_model, num_steps=40, progress_bar=False)
    half = fit_flow(gaussian_model, num_steps=20, progress_bar=False)
    two = fit_flow(gaussian_model, num_steps=20, progress_bar=False, init_state=half.state)
    np.testing.assert_allclose(np.concatenate([half.losses, two.losses]), one.losses, rtol=1e-6)
    for k in one.flow.params:
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
            two.flow.params[k],
            one.flow.params[k],
        )


def test_fitted_flow_pickles(gaussian_fit):
    flow = pickle.loads(pickle.dumps(gaussian_fit.flow))
    x = jax.random.normal(jax.random.key(0), (5, 2))
    np.testing.assert_array_equal(flow.transform()(x), gaussian_fit.flow.transform()(x))


@pytest.mark.slow
def test_flow_diffusion_on_a_numpyro_model(x64):
    """End to end with a constrained site and a plate: draws of the model (posterior = prior),
    scores by ``model_draws``, a NeuTra flow; the flow diffusion KSD equals the plain KSD of the
    latent points against T#p, scored independently by autodiff of log p(G(z)) + log|det dG|."""
    fit = fit_flow(constrained_model, num_steps=300, progress_bar=False)
    samples = Predictive(constrained_model, num_samples=300)(jax.random.key(1))
    draws = model_draws(constrained_model, samples)
    log_p, _, d = log_density_fn(constrained_model)
    assert d == 3 and draws.site_names == ("mu", "sigma")
    G = fit.flow.generator()

    def log_push(z):
        x = G(z)
        return log_p(x) + G.log_abs_det_jacobian(z, x)

    z = fit.flow.transform()(draws.x)
    s_z = jax.jit(jax.vmap(jax.grad(log_push)))(z)
    expected = ksd(z, s_z, kernel=IMQ(bandwidth="med"))
    got = ksd(draws.x, draws.scores, kernel=IMQ(bandwidth="med"), diffusion=fit.flow.diffusion())
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def _banana(n, key):
    k1, k2 = jax.random.split(key)
    x1 = 3.0 * jax.random.normal(k1, (n,))
    return jnp.stack([x1, 0.1 * x1**2 - 1.0 + jax.random.normal(k2, (n,))], axis=1)


@pytest.mark.slow
def test_fit_flow_to_samples_close_to_true_entropy():
    """On held-out draws, mean(log p - log q) estimates KL(p || q) >= 0 (MC error
    sd / sqrt(n_test)), and the negative log-likelihood is the true entropy plus that KL."""
    fit = fit_flow_to_samples(_banana(4000, jax.random.key(0)), progress_bar=False)
    test = _banana(4000, jax.random.key(1))
    nll = -np.asarray(fit.flow.log_prob(test))
    entropy = 0.5 * math.log(2 * math.pi * math.e * 9) + 0.5 * math.log(2 * math.pi * math.e)
    log_p = (
        -jnp.log(3.0)
        - 0.5 * (test[:, 0] / 3) ** 2
        - 0.5 * (test[:, 1] - 0.1 * test[:, 0] ** 2 + 1) ** 2
        - math.log(2 * math.pi)
    )
    kl = nll + np.asarray(log_p)  # per draw: log p - log q
    se = kl.std() / math.sqrt(kl.size)
    assert -4 * se < kl.mean() < 0.05 + 4 * se  # KL(p || q) >= 0; measured 4e-4
    assert nll.mean() - entropy < 0.05 + 4 * np.asarray(log_p).std() / math.sqrt(kl.size)
    z = fit.flow.transform()(test)
    np.testing.assert_allclose(np.cov(np.asarray(z).T), np.eye(2), atol=0.15)
    np.testing.assert_allclose(fit.flow.generator()(z), test, rtol=1e-4, atol=1e-4)


def test_fit_flow_to_samples_resumes_exactly():
    x = _banana(500, jax.random.key(0))
    one = fit_flow_to_samples(x, num_steps=30, progress_bar=False)
    half = fit_flow_to_samples(x, num_steps=15, progress_bar=False)
    two = fit_flow_to_samples(x, num_steps=15, progress_bar=False, init_state=half.state)
    np.testing.assert_allclose(np.concatenate([half.losses, two.losses]), one.losses, rtol=1e-6)


class TestBadInput:
    def test_one_dimensional(self):
        with pytest.raises(ValueError, match="d >= 2"):
            fit_flow_to_samples(np.zeros((10, 1)) + np.arange(10.0)[:, None], num_steps=1)

    def test_constant_column(self):
        x = np.stack([np.arange(10.0), np.ones(10)], axis=1)
        with pytest.raises(ValueError, match="constant across draws"):
            fit_flow_to_samples(x, num_steps=1)

    def test_non_finite_draws(self):
        x = np.ones((10, 2)) * np.arange(10.0)[:, None]
        x[3, 1] = np.nan
        with pytest.raises(ValueError, match="NaN or inf.*row 3"):
            fit_flow_to_samples(x, num_steps=1)

    def test_bad_nonlinearity(self):
        with pytest.raises(ValueError, match="nonlinearity must be one of"):
            fit_flow(gaussian_model, nonlinearity="sigmoid", num_steps=1)
