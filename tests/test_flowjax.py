"""flowjax bijections in :class:`numpyro_dsd.FlowDiffusion` (docs/math.md §3), in float64.

A flowjax ``Transformed(base, bijection)`` samples ``bijection(base draw)``: its bijection is a
generator :math:`G` (latent to data). So ``FlowDiffusion.from_generator(flow.bijection)`` and
``FlowDiffusion(Invert(flow.bijection))`` are the two routes to the same diffusion. The latent
scores are checked against autodiff of :math:`\\log p(G(z)) + \\log|\\det\\nabla G(z)|` at
:math:`z = G^{-1}(x)` (Lemma 3.1), for a randomly initialised (untrained) flow.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

flowjax = pytest.importorskip("flowjax")

import equinox as eqx  # noqa: E402  (a flowjax dependency)
from flowjax.bijections import (  # noqa: E402
    Affine,
    Chain,
    Coupling,
    Flip,
    Invert,
    MaskedAutoregressive,
    RationalQuadraticSpline,
)
from flowjax.distributions import Normal, Transformed  # noqa: E402

from numpyro_dsd import FlowDiffusion, ksd  # noqa: E402

D = 3
N = 16


def log_p(x):
    """A non-Gaussian target: correlated Gaussian core, quartic tails, a twist."""
    P = jnp.array([[1.5, 0.4, 0.0], [0.4, 1.0, -0.3], [0.0, -0.3, 0.8]])
    return -0.5 * x @ P @ x - 0.05 * jnp.sum(x**4) + 0.3 * jnp.sin(x[0] * x[1])


def make_flow():
    """A small random flowjax flow: a rational-quadratic-spline coupling layer, a flip and an
    affine masked autoregressive layer (both layer kinds of flowjax's ``coupling_flow`` and
    ``masked_autoregressive_flow``, in one flow to compile once). Built under x64, so its
    parameters are float64."""
    k1, k2 = jax.random.split(jax.random.key(7))
    net = dict(nn_width=8, nn_depth=1, nn_activation=jnp.tanh)
    spline = RationalQuadraticSpline(knots=5, interval=4.0)
    bijection = Chain(
        [
            Coupling(k1, transformer=spline, untransformed_dim=1, dim=D, **net),
            Flip((D,)),
            MaskedAutoregressive(k2, transformer=Affine(), dim=D, **net),
        ]
    )
    return Transformed(Normal(jnp.zeros(D)), bijection)


def points():
    x = 1.2 * jax.random.normal(jax.random.key(0), (N, D))
    return x, jax.jit(jax.vmap(jax.grad(log_p)))(x)


def pushforward_reference(G, x):
    """:math:`z = G^{-1}(x)` and :math:`\\nabla_z[\\log p(G(z)) + \\log|\\det\\nabla G(z)|]`."""

    def log_push(z):
        x_z, logdet = G.transform_and_log_det(z)
        return log_p(x_z) + logdet

    def one(x):
        z = G.inverse(x)
        return z, jax.grad(log_push)(z)

    return jax.jit(jax.vmap(one))(x)


@pytest.mark.slow
def test_flowjax_generator_and_jacobian_routes(x64):
    G = make_flow().bijection  # latent -> data
    params = [a for a in jax.tree_util.tree_leaves(G) if eqx.is_inexact_array(a)]
    assert params and all(a.dtype == jnp.float64 for a in params)
    x, s = points()
    z_ref, s_ref = pushforward_reference(G, x)

    by_generator = FlowDiffusion.from_generator(G)
    z, s_z = by_generator.latent(x, s)
    assert z.dtype == s_z.dtype == jnp.float64
    np.testing.assert_allclose(z, z_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(s_z, s_ref, rtol=1e-10, atol=1e-10)

    # The random flow is not affine: z = G^{-1}(x) is no affine map of x.
    X = np.hstack([np.asarray(x), np.ones((N, 1))])
    residual = np.linalg.lstsq(X, np.asarray(z), rcond=None)[1]
    assert residual.sum() > 1e-2 * float(jnp.sum((z - z.mean(0)) ** 2))

    by_jacobian = FlowDiffusion(Invert(G))
    z_j, s_j = by_jacobian.latent(x, s)
    np.testing.assert_allclose(z_j, z_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(s_j, s_ref, rtol=1e-9, atol=1e-9)

    k_gen = float(ksd(x, s, diffusion=by_generator))
    k_jac = float(ksd(x, s, diffusion=by_jacobian))
    assert k_gen > 0
    assert abs(k_gen - k_jac) <= 1e-9 * k_gen

    # flowjax's own shape check becomes the FlowDiffusion error that names the dimension.
    wrong = jnp.zeros((4, D + 1))
    with pytest.raises(ValueError, match="dimension d=4"):
        by_generator.latent(wrong, wrong)
