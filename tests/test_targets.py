"""Tests for numpyro_dsd.model.targets against real NumPyro models and NUTS runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.distributions.transforms import biject_to
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import potential_energy

from numpyro_dsd.model.targets import ModelDraws, latent_sites, log_density_fn, model_draws

GROUPS = np.array([0, 0, 1, 1, 2, 2, 2])
Y = np.array([0.3, -0.4, 1.2, 0.9, -1.1, -0.7, -1.5])


def hier_model(y, groups):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("groups", 3):
        theta = numpyro.sample("theta", dist.Normal(mu, 1.0))
    numpyro.deterministic("theta_mean", theta.mean())
    with numpyro.plate("data", len(y)):
        numpyro.sample("obs", dist.Normal(theta[groups], sigma), obs=y)


def hand_log_density(mu, u, theta):
    """Closed-form unconstrained log density of hier_model, u = log sigma."""
    sigma = np.exp(u)
    r = Y - theta[GROUPS]
    return (
        -0.5 * mu**2 / 100.0
        - np.log(10.0 * np.sqrt(2 * np.pi))
        + np.log(2.0)
        - 0.5 * sigma**2 / 4.0
        - np.log(2.0 * np.sqrt(2 * np.pi))
        + u
        - 0.5 * np.sum((theta - mu) ** 2)
        - 3 * 0.5 * np.log(2 * np.pi)
        - 0.5 * np.sum(r**2) / sigma**2
        - len(Y) * (u + 0.5 * np.log(2 * np.pi))
    )


def hand_score(mu, u, theta):
    """Closed-form gradient of hand_log_density in the order (mu, u, theta)."""
    sigma2 = np.exp(2 * u)
    r = Y - theta[GROUPS]
    d_mu = -mu / 100.0 + np.sum(theta - mu)
    d_u = -sigma2 / 4.0 + 1.0 + np.sum(r**2) / sigma2 - len(Y)
    d_theta = -(theta - mu) + np.bincount(GROUPS, weights=r, minlength=3) / sigma2
    return np.concatenate([[d_mu, d_u], d_theta])


def fake_draws(batch_shape, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "mu": rng.normal(size=batch_shape),
        "sigma": rng.gamma(2.0, 0.5, size=batch_shape),
        "theta": rng.normal(size=(*batch_shape, 3)),
        "theta_mean": rng.normal(size=batch_shape),  # deterministic: must be ignored
    }


def test_latent_sites():
    shapes = latent_sites(hier_model, (Y, GROUPS))
    assert shapes == {"mu": (), "sigma": (), "theta": (3,)}


def nuts_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    w = numpyro.sample("w", dist.Dirichlet(jnp.ones(3)))
    numpyro.deterministic("loc", mu + w[0])
    with numpyro.plate("data", len(y)):
        numpyro.sample("obs", dist.Normal(mu + w[0], sigma), obs=y)


@pytest.fixture(scope="class")
def nuts_run(x64_class):
    mcmc = MCMC(NUTS(nuts_model), num_warmup=100, num_samples=100, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), Y, extra_fields=("z_grad",))
    return mcmc


@pytest.mark.usefixtures("x64_class")
class TestFloat64:
    """Numerical comparisons, all under one float64 switch (see the x64_class fixture)."""

    @pytest.mark.parametrize("batch_shape", [(2, 50), (100,)])
    def test_closed_form_scores(self, batch_shape):
        samples = fake_draws(batch_shape)
        out = model_draws(hier_model, samples, (Y, GROUPS), batch_size=32)
        assert isinstance(out, ModelDraws)
        assert out.site_names == ("mu", "sigma", "theta")
        assert out.x.shape == out.scores.shape == (*batch_shape, 5)
        assert out.x.dtype == jnp.float64
        mu, u, theta = samples["mu"], np.log(samples["sigma"]), samples["theta"]
        expected_x = np.concatenate([mu[..., None], u[..., None], theta], axis=-1)
        np.testing.assert_allclose(out.x, expected_x, rtol=1e-12)
        flat_x = expected_x.reshape(-1, 5)
        expected = np.stack([hand_score(p[0], p[1], p[2:]) for p in flat_x])
        np.testing.assert_allclose(out.scores.reshape(-1, 5), expected, rtol=1e-10, atol=1e-12)
        site_values = out.unravel(out.x.reshape(-1, 5)[3])
        np.testing.assert_allclose(site_values["sigma"], np.log(samples["sigma"].reshape(-1)[3]))

    def test_log_density_fn(self):
        log_prob, unravel, d = log_density_fn(hier_model, (Y, GROUPS))
        assert d == 5
        mu, u, theta = 0.2, -0.3, np.array([0.5, 1.0, -0.8])
        point = jnp.array([mu, u, *theta])
        params = unravel(point)
        assert set(params) == {"mu", "sigma", "theta"}
        energy = jax.jit(lambda p: potential_energy(hier_model, (Y, GROUPS), {}, p))(params)
        value, grad = jax.jit(jax.value_and_grad(log_prob))(point)
        np.testing.assert_allclose(value, -energy, rtol=1e-12)
        np.testing.assert_allclose(value, hand_log_density(mu, u, theta), rtol=1e-12)
        np.testing.assert_allclose(grad, hand_score(mu, u, theta), rtol=1e-10)
        samples = {"mu": [mu], "sigma": [np.exp(u)], "theta": [theta]}
        out = model_draws(hier_model, samples, (Y, GROUPS))
        np.testing.assert_allclose(grad, out.scores[0], rtol=1e-10)

    def test_dynamic_support(self):
        """x ~ Uniform(0, sigma): the transform of x depends on the draw of sigma."""

        def model():
            sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
            numpyro.sample("x", dist.Uniform(0.0, sigma))

        rng = np.random.default_rng(3)
        sigma = rng.gamma(2.0, 1.0, size=(2, 7))
        frac = rng.uniform(size=(2, 7))
        out = model_draws(model, {"sigma": sigma, "x": frac * sigma})
        u, v = np.log(sigma), np.log(frac / (1 - frac))
        np.testing.assert_allclose(out.x, np.stack([u, v], axis=-1), rtol=1e-10)
        # log p(u, v) = -e^{2u}/2 + u + log s(v) + log(1 - s(v)) + const, s = sigmoid
        expected = np.stack([1.0 - sigma**2, 1.0 - 2.0 * frac], axis=-1)
        np.testing.assert_allclose(out.scores, expected, rtol=1e-10, atol=1e-12)

    @pytest.mark.parametrize("group_by_chain", [False, True])
    def test_nuts_z_grad_matches_autodiff(self, nuts_run, group_by_chain):
        samples = nuts_run.get_samples(group_by_chain=group_by_chain)
        z_grad = nuts_run.get_extra_fields(group_by_chain=group_by_chain)["z_grad"]
        assert "loc" in samples
        batch = (1, 100) if group_by_chain else (100,)
        from_grad = model_draws(nuts_model, samples, (Y,), z_grad=z_grad)
        from_ad = model_draws(nuts_model, samples, (Y,))
        # the Dirichlet site (3,) is 2-dimensional in unconstrained space
        assert from_ad.x.shape == from_grad.scores.shape == (*batch, 4)
        np.testing.assert_allclose(from_grad.x, from_ad.x, rtol=1e-12)
        np.testing.assert_allclose(from_grad.scores, from_ad.scores, rtol=1e-8, atol=1e-8)
        w_unconstrained = biject_to(dist.Dirichlet(jnp.ones(3)).support).inv(samples["w"])
        np.testing.assert_allclose(from_ad.x[..., 2:], w_unconstrained, rtol=1e-8, atol=1e-10)


def test_discrete_site_raises():
    def model():
        numpyro.sample("mu", dist.Normal())
        numpyro.sample("k", dist.Bernoulli(0.5))

    with pytest.raises(ValueError, match=r"'k' are discrete"):
        latent_sites(model)
    with pytest.raises(ValueError, match=r"'k'"):
        model_draws(model, {"mu": np.zeros(4), "k": np.zeros(4)})
    with pytest.raises(ValueError, match=r"'k'"):
        log_density_fn(model)


def test_observed_discrete_site_is_fine():
    def model():
        p = numpyro.sample("p", dist.Beta(2.0, 2.0))
        numpyro.sample("k", dist.Bernoulli(p), obs=1)

    assert latent_sites(model) == {"p": ()}


def test_missing_site_raises():
    samples = fake_draws((10,))
    del samples["theta"]
    with pytest.raises(ValueError, match=r"lacks the latent site\(s\) 'theta'"):
        model_draws(hier_model, samples, (Y, GROUPS))


def test_mismatched_batch_shapes_raise():
    samples = fake_draws((2, 5))
    samples["mu"] = samples["mu"].reshape(10)
    with pytest.raises(ValueError, match="disagree on the batch shape"):
        model_draws(hier_model, samples, (Y, GROUPS))


def test_wrong_site_shape_raises():
    samples = fake_draws((10,))
    samples["theta"] = samples["theta"][:, :2]
    with pytest.raises(ValueError, match=r"site 'theta' of samples has shape \(10, 2\)"):
        model_draws(hier_model, samples, (Y, GROUPS))


def test_z_grad_shape_mismatch_raises():
    samples = fake_draws((2, 5))
    z_grad = {k: np.zeros_like(samples[k]) for k in ("mu", "sigma", "theta")}
    flat_grad = {k: v.reshape(10, *v.shape[2:]) for k, v in z_grad.items()}
    with pytest.raises(ValueError, match=r"z_grad has batch shape \(10,\)"):
        model_draws(hier_model, samples, (Y, GROUPS), z_grad=flat_grad)
    bad_site = dict(z_grad, theta=np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match=r"site 'theta' of z_grad"):
        model_draws(hier_model, samples, (Y, GROUPS), z_grad=bad_site)


def test_non_finite_draws_raise():
    samples = fake_draws((2, 5))
    samples["sigma"][1, 3] = -1.0
    samples["sigma"][1, 4] = -2.0
    msg = r"unconstrained values .* in 2 of 10 rows \(first at row \(1, 3\)\).*support"
    with pytest.raises(ValueError, match=msg):
        model_draws(hier_model, samples, (Y, GROUPS))


def test_non_finite_z_grad_raises():
    samples = fake_draws((4,))
    z_grad = {k: np.zeros_like(samples[k]) for k in ("mu", "sigma", "theta")}
    z_grad["theta"][2, 1] = np.nan
    msg = r"scores contains NaN or inf in 1 of 4 rows \(first at row 2\)"
    with pytest.raises(ValueError, match=msg):
        model_draws(hier_model, samples, (Y, GROUPS), z_grad=z_grad)


def test_bad_batch_size_raises():
    with pytest.raises(ValueError, match="batch_size"):
        model_draws(hier_model, fake_draws((4,)), (Y, GROUPS), batch_size=0)


def test_dtype_follows_jax_config():
    """float32 unless jax_enable_x64 is on (it is off here: the x64 fixtures restore it)."""
    out = model_draws(hier_model, fake_draws((8,)), (Y, GROUPS))
    assert out.x.dtype == out.scores.dtype == jnp.result_type(float) == jnp.float32
