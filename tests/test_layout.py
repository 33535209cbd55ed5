"""The flat unconstrained layout has one owner (ModelLayout), and every path that flattens a model
agrees with it on a model whose sites are declared out of alphabetical order, with mixed shapes
and constraints."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import SVI, Predictive, Trace_ELBO
from numpyro.infer.autoguide import AutoIAFNormal

from numpyro_dsd import (
    SVGD,
    FlowDiffusion,
    FlowPreconditioner,
    fit_flow,
    ksd,
    ksd_diagnostic,
    model_draws,
    reestimate_every,
)
from numpyro_dsd.mcmc.inputs import Draws, resolve_diffusion
from numpyro_dsd.model.layout import ModelLayout


def out_of_order():
    """Declared z, b, a: sorted order is a (simplex, 2 unconstrained), b (positive), z (2)."""
    numpyro.sample("z", dist.Normal(10.0, 1.0).expand([2]))
    numpyro.sample("b", dist.LogNormal(0.0, 0.5))
    numpyro.sample("a", dist.Dirichlet(jnp.ones(3)))


def _prior_draws(n: int, seed: int = 0) -> dict:
    return Predictive(out_of_order, num_samples=n)(jax.random.key(seed))


def test_layout_orders_sites_and_permutes_declared_vectors():
    layout = ModelLayout(out_of_order)
    assert layout.site_names == ("a", "b", "z")
    assert layout.declared_names == ("z", "b", "a")
    assert layout.unconstrained_shapes == {"a": (2,), "b": (), "z": (2,)}
    assert layout.dim == 5
    np.testing.assert_array_equal(layout.declared_permutation(), [3, 4, 2, 0, 1])
    v = jnp.arange(5.0)
    np.testing.assert_array_equal(layout.to_declared(layout.from_declared(v)), v)


def test_flatten_constrain_round_trip():
    layout = ModelLayout(out_of_order)
    draws = _prior_draws(4)
    for i in range(4):
        one = {k: v[i] for k, v in draws.items()}
        x = layout.flatten(one)
        np.testing.assert_allclose(x[3:], one["z"], rtol=1e-6)  # z last, unchanged
        np.testing.assert_allclose(x[2], jnp.log(one["b"]), rtol=1e-5)
        back = layout.constrain(x)
        for k in one:
            np.testing.assert_allclose(back[k], one[k], rtol=1e-4, atol=1e-6)


def test_model_draws_uses_the_layout():
    draws = _prior_draws(50)
    md = model_draws(out_of_order, draws)
    layout = ModelLayout(out_of_order)
    assert md.site_names == layout.site_names
    np.testing.assert_allclose(md.x, jax.vmap(layout.flatten)(draws), rtol=1e-6)
    np.testing.assert_allclose(md.scores, jax.vmap(jax.grad(layout.log_prob))(md.x), rtol=1e-5)
    assert float(jnp.mean(md.x[:, 3])) > 9.0  # z sits in the last coordinates


def _fitted_guide(num_steps: int = 1000):
    guide = AutoIAFNormal(out_of_order, num_flows=1, hidden_dims=[10])
    svi = SVI(out_of_order, guide, optax.adam(0.05), Trace_ELBO())
    result = svi.run(jax.random.key(0), num_steps, progress_bar=False)
    return guide, result.params


@pytest.fixture(scope="module")
def guide_params():
    return _fitted_guide()


def test_autoguide_generator_is_in_layout_order(guide_params):
    guide, params = guide_params
    layout = ModelLayout(out_of_order)
    G = layout.autoguide_generator(guide, params)
    eps = jax.random.normal(jax.random.key(1), (5,))
    expected = guide._unpack_and_constrain(guide.get_transform(params)(eps), params)
    got = layout.constrain(G(eps))
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6)
    # the guide's own transform is in declaration order: taken as the layout's, it scrambles
    scrambled = layout.constrain(guide.get_transform(params)(eps))
    assert not np.allclose(scrambled["z"], expected["z"], atol=1.0)


def test_flow_diffusion_of_an_autoguide_in_layout_order(guide_params):
    """A flow diffusion is the plain KSD of the latent points: with the layout's generator the
    draws map near N(0, I); the declaration-order generator sends them far away."""
    guide, params = guide_params
    layout = ModelLayout(out_of_order)
    md = model_draws(out_of_order, _prior_draws(200))
    good = FlowDiffusion.from_generator(layout.autoguide_generator(guide, params))
    z, _ = good.latent(md.x, md.scores)
    assert float(jnp.max(jnp.abs(jnp.mean(z, 0)))) < 1.0
    value = ksd(md.x, md.scores, diffusion=good)
    assert bool(jnp.isfinite(value))


@pytest.mark.slow
def test_fit_flow_in_layout_order():
    fit = fit_flow(out_of_order, num_steps=200, start="laplace", progress_bar=False)
    x = jax.vmap(fit.flow.generator())(jax.random.normal(jax.random.key(2), (500, 5)))
    mean = jnp.mean(x, 0)
    np.testing.assert_allclose(mean[3:], 10.0, atol=0.5)  # z last
    assert float(jnp.max(jnp.abs(mean[:3]))) < 1.5


def test_svgd_with_an_autoguide_flow_starts_in_layout_order(guide_params):
    svgd = SVGD(out_of_order, optax.adagrad(0.05), num_particles=20, preconditioner=guide_params)
    result = svgd.run(jax.random.key(0), 5, progress_bar=False)
    samples = svgd.get_samples(result)
    np.testing.assert_allclose(jnp.mean(samples["z"]), 10.0, atol=1.0)
    assert float(jnp.mean(samples["b"])) < 5.0
    np.testing.assert_allclose(jnp.sum(samples["a"], -1), 1.0, rtol=1e-5)


def test_svgd_init_params_and_get_samples_round_trip():
    draws = _prior_draws(10, seed=3)
    svgd = SVGD(out_of_order, optax.adagrad(0.05), num_particles=10)
    state = svgd.init(jax.random.key(0), init_params=draws)
    samples = svgd.get_samples(state)
    for k in draws:
        np.testing.assert_allclose(samples[k], draws[k], rtol=1e-4, atol=1e-6)


def test_diagnostic_takes_an_autoguide_in_layout_order(guide_params):
    draws = {k: v[None] for k, v in _prior_draws(200, seed=4).items()}  # one chain
    layout = ModelLayout(out_of_order)
    flow = FlowDiffusion.from_generator(layout.autoguide_generator(*guide_params))
    by_tuple = ksd_diagnostic(draws, out_of_order, diffusion=guide_params, test=False)
    by_flow = ksd_diagnostic(draws, out_of_order, diffusion=flow, test=False)
    np.testing.assert_allclose(float(by_tuple["ksd_pooled"]), float(by_flow["ksd_pooled"]))
    md = model_draws(out_of_order, draws)
    with pytest.raises(ValueError, match="needs the model"):
        resolve_diffusion(guide_params, Draws(md.x, md.scores, None, ()))


def test_an_autoguide_preconditioner_is_put_in_the_layout_before_use(guide_params):
    """Outside the SVGD class, a (guide, params) flow must be put in the model's coordinates:
    used as it is it would read the particles in declaration order, so it refuses."""
    pre = FlowPreconditioner(guide_params)
    with pytest.raises(ValueError, match="declaration order"):
        pre.bijection()
    layout = ModelLayout(out_of_order)
    T = pre.in_layout(layout).bijection()
    x = layout.flatten({"a": jnp.array([0.2, 0.3, 0.5]), "b": 1.5, "z": jnp.array([9.0, 11.0])})
    z, _ = T.transform_and_log_det(x)
    np.testing.assert_allclose(layout.autoguide_generator(*guide_params)(z), x, rtol=1e-4)
    assert reestimate_every(pre, 3).in_layout(layout).every == 3
