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
from numpyro_dsd.flows.fitting import fit_flow, fit_flow_to_samples
from numpyro_dsd.svgd import core
from numpyro_dsd.svgd.preconditioners import (
    FlowParams,
    Reestimated,
    as_preconditioner,
    reestimate_every,
)


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


@pytest.mark.slow
def test_flow_preconditioner_with_given_flow():
    fit = fit_flow(hierarchical, num_steps=50, progress_bar=False)
    svgd = SVGD(hierarchical, optax.adagrad(0.2), num_particles=10, preconditioner=fit.flow)
    result = svgd.run(jax.random.key(0), 20, progress_bar=False)
    assert result.particles.shape == (10, 4) and np.all(np.isfinite(result.particles))
    # a state's data-space particles: the flow's generator of its latent particles
    bij = svgd.preconditioner.bijection()
    pulled = jax.vmap(lambda z: bij.inverse_and_log_det(z)[0])(result.state.particles)
    np.testing.assert_allclose(svgd.get_particles(result.state), pulled, rtol=1e-6)
    # fit_flow's result itself is accepted, and is the same preconditioner as its flow
    by_fit = SVGD(hierarchical, optax.adagrad(0.2), num_particles=10, preconditioner=fit)
    again = by_fit.run(jax.random.key(0), 20, progress_bar=False)
    np.testing.assert_allclose(again.particles, result.particles, rtol=1e-6)


@pytest.mark.slow
def test_flow_refit_on_particles_resumes_exactly():
    def make():
        fit = fit_flow(hierarchical, num_steps=30, progress_bar=False)
        pre = FlowPreconditioner(fit.flow, refit_every=10, refit_kwargs={"num_steps": 30})
        return SVGD(hierarchical, optax.adagrad(0.2), num_particles=12, preconditioner=pre)

    one, two = make(), make()
    whole = one.run(jax.random.key(0), 25, progress_bar=False)
    assert whole.flow_fit.flow.spec.direction == "normalizer"  # refitted on the particles
    first = two.run(jax.random.key(0), 20, progress_bar=False)
    x_before = two.get_particles(first.state)
    refitted, _ = two._reestimate(first.state, (), {})  # what run does at step 20
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
        svgd.get_particles(result.state),
        jax.vmap(generator)(result.state.particles),
        rtol=1e-5,
        atol=1e-6,
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


def _flow_svgd(**kwargs):
    """A flow fitted at init (NeuTra) and refitted every 10 steps: every key is the run's."""
    pre = FlowPreconditioner(
        fit_kwargs={"num_steps": 30}, refit_every=10, refit_kwargs={"num_steps": 30}
    )
    return SVGD(hierarchical, optax.adagrad(0.2), num_particles=12, preconditioner=pre, **kwargs)


@pytest.mark.slow
def test_run_twice_on_one_object_is_identical_with_flow_refits():
    """The object is configuration: a flow fitted at init and refitted lives in the state, so
    two runs with one key agree exactly (they differed by up to 2.93 when the object kept the
    refitted flow), and the object's settings are unchanged."""
    svgd = _flow_svgd(chunk_size=7, finish_steps=0)  # particles: the chain's
    pre = svgd.preconditioner
    one = svgd.run(jax.random.key(0), 21, progress_bar=False)  # refits at steps 10 and 20
    two = svgd.run(jax.random.key(0), 21, progress_bar=False)
    np.testing.assert_array_equal(one.particles, two.particles)
    np.testing.assert_array_equal(one.ksd_squared, two.ksd_squared)
    assert svgd.preconditioner is pre and pre.flow is None and not hasattr(svgd, "flow_fit")
    params = one.state.precond_params
    assert isinstance(params, FlowParams) and params.spec.direction == "normalizer"
    assert one.flow_fit.flow.spec == params.spec  # the last refit's record
    np.testing.assert_array_equal(svgd.get_particles(one.state), one.particles)


def test_run_twice_on_one_object_is_identical_with_constant_preconditioner():
    svgd = SVGD(
        hierarchical, optax.adagrad(0.5), num_particles=15, preconditioner="constant", chunk_size=4
    )
    one = svgd.run(jax.random.key(2), 12, progress_bar=False)
    two = svgd.run(jax.random.key(2), 12, progress_bar=False)
    np.testing.assert_array_equal(one.particles, two.particles)
    assert one.flow_fit is None


def test_refit_keys_come_from_the_state():
    """A refit at step t uses fold_in(state.rng_key, t): another state key, another flow."""
    svgd = _flow_svgd()
    state = svgd.init(jax.random.key(0))
    state = state._replace(step=jax.numpy.asarray(10, jax.numpy.int32))
    a, fit_a = svgd._reestimate(state, (), {})
    b, _ = svgd._reestimate(state, (), {})
    c, _ = svgd._reestimate(state._replace(rng_key=jax.random.key(9)), (), {})
    np.testing.assert_array_equal(a.particles, b.particles)
    assert np.abs(np.asarray(a.particles - c.particles)).max() > 1e-4
    x = svgd.get_particles(state)
    key = jax.random.fold_in(state.rng_key, 10)
    ref = fit_flow_to_samples(x, rng_key=key, progress_bar=False, num_steps=30, batch_size=None)
    np.testing.assert_array_equal(fit_a.losses, ref.losses)


def test_cadence_combinator_is_what_the_keywords_mean():
    """ConstantPreconditioner(every=k) = reestimate_every(ConstantPreconditioner(every=None), k);
    FlowPreconditioner(refit_every=k) likewise; the outermost cadence wins."""
    sugar = ConstantPreconditioner(every=5)
    wrapped = reestimate_every(ConstantPreconditioner(every=None), 5)
    assert isinstance(wrapped, Reestimated) and wrapped.every == 5 and wrapped.in_step
    assert wrapped.source == "hessian" and "reestimate_every" in repr(wrapped)
    assert reestimate_every(sugar, 3).every == 3
    runs = []
    for pre in (sugar, wrapped):
        svgd = SVGD(hierarchical, optax.adagrad(0.5), num_particles=10, preconditioner=pre)
        runs.append(svgd.run(jax.random.key(4), 12, progress_bar=False))
    np.testing.assert_array_equal(runs[0].particles, runs[1].particles)
    assert FlowPreconditioner(refit_every=7).every == 7
    flow = reestimate_every(FlowPreconditioner(refit_kwargs={"num_steps": 30}), 10)
    assert not flow.in_step and flow.refit_kwargs["num_steps"] == 30
    assert core.steps_to_reestimate(flow, 3) == 7 and core.reestimate_due(flow, 10)
    assert core.steps_to_reestimate(wrapped, 3) is None  # inside the jitted step
    with pytest.raises(ValueError, match="every"):
        reestimate_every(ConstantPreconditioner(), 0)


def test_flow_params_retrace_only_when_the_architecture_changes():
    x = jax.random.normal(jax.random.key(0), (40, 2))
    fits = [
        fit_flow_to_samples(x, rng_key=jax.random.key(k), num_steps=2, progress_bar=False)
        for k in (0, 1)
    ]
    key = jax.random.key(2)
    other = fit_flow_to_samples(x, rng_key=key, num_steps=2, hidden_dims=[6], progress_bar=False)
    traces = []

    @jax.jit
    def latent(params):
        traces.append(params.spec)
        return jax.vmap(params.flow.transform())(x)

    outs = [latent(FlowParams.of(f.flow)) for f in (*fits, other)]
    assert len(traces) == 2 and traces[1] == other.flow.spec
    ref = jax.vmap(fits[0].flow.transform())(x)
    np.testing.assert_allclose(outs[0], ref, rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(outs[0] - outs[1])).max() > 0


@pytest.mark.slow
def test_update_and_resume_need_no_fitted_object():
    """The state carries the flow fitted at init: update and resume work on an object whose
    preconditioner has no flow, and a fresh object given a state resumes it exactly."""
    svgd = _flow_svgd()
    whole = svgd.run(jax.random.key(0), 8, progress_bar=False)
    first = svgd.run(jax.random.key(0), 5, progress_bar=False)
    fresh = _flow_svgd()
    rest = fresh.run(jax.random.key(7), 3, progress_bar=False, init_state=first.state)
    np.testing.assert_array_equal(rest.particles, whole.particles)
    state, info = fresh.update(first.state)
    assert int(state.step) == 6 and bool(info.finite)
    with pytest.raises(ValueError, match="not fitted"):
        fresh.update(first.state._replace(precond_params=()))


def test_a_preconditioner_with_only_estimate_and_bijection_still_works():
    """What earlier versions asked of a preconditioner (estimate, bijection, every) is enough:
    the defaults complete it, and it runs as the built-in it imitates."""

    class Minimal:
        every = 5

        def __init__(self):
            self.inner = ConstantPreconditioner(every=None)

        def estimate(self, x, log_prob):
            return self.inner.estimate(x, log_prob)

        def bijection(self, params):
            return self.inner.bijection(params)

    runs = []
    for pre in (Minimal(), ConstantPreconditioner(every=5)):
        svgd = SVGD(hierarchical, optax.adagrad(0.5), num_particles=10, preconditioner=pre)
        runs.append(svgd.run(jax.random.key(3), 12, progress_bar=False).particles)
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not a preconditioner"):
        as_preconditioner(object())
