"""Preconditioned SVGD through the class: constant matrix (re-estimated), given and refitted
flows, resumption across re-estimates and refits."""

from __future__ import annotations

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.optim import Adagrad

from numpyro_dsd import SVGD, ConstantPreconditioner, FlowPreconditioner
from numpyro_dsd.flows.fitting import fit_flow


def hierarchical():
    tau = numpyro.sample("tau", dist.LogNormal(0.0, 0.5))
    with numpyro.plate("k", 3):
        numpyro.sample("theta", dist.Normal(1.0, tau))
    numpyro.deterministic("total", 2.0)


def test_resume_with_constant_preconditioner_and_numpyro_optim():
    pre = ConstantPreconditioner(every=10)
    svgd = SVGD(hierarchical, Adagrad(0.5), num_particles=15, preconditioner=pre)
    whole = svgd.run(jax.random.key(1), 25, progress_bar=False)
    first = svgd.run(jax.random.key(1), 10, progress_bar=False)
    rest = svgd.run(jax.random.key(1), 15, progress_bar=False, init_state=first.state)
    np.testing.assert_array_equal(rest.particles, whole.particles)
    samples = svgd.get_samples(whole)
    assert samples["theta"].shape == (15, 3) and samples["total"].shape == (15,)
    assert np.all(samples["tau"] > 0)


def test_flow_preconditioner_with_given_flow():
    fit = fit_flow(hierarchical, num_steps=50, progress_bar=False)
    svgd = SVGD(hierarchical, optax.adagrad(0.2), num_particles=10, preconditioner=fit.flow)
    result = svgd.run(jax.random.key(0), 20, progress_bar=False)
    assert result.particles.shape == (10, 4) and np.all(np.isfinite(result.particles))
    # particles returned in the data space: the flow's generator of the latent state
    bij = svgd.preconditioner.bijection()
    pulled = jax.vmap(lambda z: bij.inverse_and_log_det(z)[0])(result.state.particles)
    np.testing.assert_allclose(result.particles, pulled, rtol=1e-6)


def test_flow_refit_on_particles_resumes_exactly():
    def make():
        fit = fit_flow(hierarchical, num_steps=30, progress_bar=False)
        pre = FlowPreconditioner(fit.flow, refit_every=10, refit_kwargs={"num_steps": 30})
        return SVGD(hierarchical, optax.adagrad(0.2), num_particles=12, preconditioner=pre)

    one, two = make(), make()
    whole = one.run(jax.random.key(0), 25, progress_bar=False)
    assert one.flow_fit.flow.spec.direction == "normalizer"  # refitted on the particles
    first = two.run(jax.random.key(0), 20, progress_bar=False)
    x_before = two.get_particles(first.state)
    refitted = two._maybe_refit(first.state, (), {})  # what run does at step 20
    np.testing.assert_allclose(two.get_particles(refitted), x_before, rtol=1e-4, atol=1e-4)
    rest = two.run(jax.random.key(0), 5, progress_bar=False, init_state=first.state)
    np.testing.assert_allclose(rest.particles, whole.particles, rtol=1e-6, atol=1e-6)


def test_fitted_autoguide_as_flow():
    """(guide, params) of a NumPyro AutoIAFNormal: G = guide.get_transform(params), T = G^-1."""
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoIAFNormal

    guide = AutoIAFNormal(hierarchical, num_flows=1, hidden_dims=[8])
    svi = SVI(hierarchical, guide, optax.adam(1e-2), Trace_ELBO())
    params = svi.run(jax.random.key(0), 20, progress_bar=False).params
    svgd = SVGD(hierarchical, optax.adagrad(0.2), num_particles=8, preconditioner=(guide, params))
    result = svgd.run(jax.random.key(1), 10, progress_bar=False)
    generator = guide.get_transform(params)
    np.testing.assert_allclose(
        result.particles, jax.vmap(generator)(result.state.particles), rtol=1e-5, atol=1e-6
    )


def far_regression(x, y):
    """Linear regression on an uncentred predictor with a flat prior: the coefficients sit near
    (26, 0.6) with sds (6, 0.06) and correlation -0.99, far outside the [-2, 2] box."""
    beta = numpyro.sample("beta", dist.ImproperUniform(dist.constraints.real_vector, (), (2,)))
    sigma = numpyro.sample("sigma", dist.HalfNormal(50.0))
    numpyro.sample("y", dist.Normal(beta[0] + beta[1] * x, sigma), obs=y)


def test_constant_preconditioner_starts_at_the_mode():
    """The initial re-estimates (Newton steps from the box) put the particles at the least-squares
    fit with the posterior's scales; without them they start at the box's Newton point."""
    rng = np.random.default_rng(0)
    x = rng.uniform(70, 130, size=200)
    y = 26.0 + 0.6 * x + rng.normal(0.0, 18.0, size=200)
    X = np.stack([np.ones_like(x), x], axis=1)
    bhat = np.linalg.lstsq(X, y, rcond=None)[0]
    sd = 18.0 * np.sqrt(np.diag(np.linalg.inv(X.T @ X)))
    errors = []
    for rounds in (10, 0):
        pre = ConstantPreconditioner(every=None, init_rounds=rounds)
        svgd = SVGD(
            far_regression, optax.adagrad(0.1), num_particles=50, preconditioner=pre, x=x, y=y
        )
        beta = svgd.get_samples(svgd.init(jax.random.key(0)))["beta"]
        errors.append(np.abs(np.asarray(beta).mean(0) - bhat) / sd)
    assert errors[0].max() < 1.0
    assert errors[1].max() > 3.0


def test_init_rounds_are_checked():
    with pytest.raises(ValueError, match="init_rounds"):
        ConstantPreconditioner(init_rounds=-1)
    assert ConstantPreconditioner(source="covariance").init_rounds == 0
