"""The flow equivalence made executable (docs/math.md §3, §7 oracle 7), in float64.

The flow is ``tests/_flows.py::CouplingFlow`` (coupling, dense linear map, coupling) with an
analytic inverse. Pushed-forward scores are computed independently, by autodiff of
:math:`\\log T_\\#p(z) = \\log p(G(z)) + \\log|\\det\\nabla G(z)|` through the inverse.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _flows import CouplingFlow
from numpyro.distributions.flows import (
    BlockNeuralAutoregressiveTransform,
    InverseAutoregressiveTransform,
)
from numpyro.distributions.transforms import AffineTransform, LowerCholeskyAffine
from numpyro.nn import AutoregressiveNN, BlockNeuralAutoregressiveNN

from numpyro_dsd import IMQ, Constant, FlowDiffusion, PositionDependent, ksd, ksd_squared
from numpyro_dsd.flows.bijections import Inverse, NotInvertibleError
from numpyro_dsd.stein.engine import stein_kernel_pair
from numpyro_dsd.stein.ksd import stein_matrix

D = 4


def vmap(fn):
    """Jitted ``jax.vmap`` for the reference computations (eager vmap of autodiff is slow)."""
    return jax.jit(jax.vmap(fn))


def log_p(x):
    """A non-Gaussian target: correlated Gaussian core with quartic tails and a twist."""
    P = jnp.array([[2.0, 0.6, 0.0, 0.3], [0.6, 1.0, 0.2, 0.0], [0.0, 0.2, 1.5, -0.4]])
    P = jnp.concatenate([P, jnp.array([[0.3, 0.0, -0.4, 0.8]])])
    return -0.5 * x @ P @ x - 0.05 * jnp.sum(x**4) + 0.3 * jnp.sin(x[0] * x[1])


def log_q(x):
    return -0.5 * jnp.sum((x - 0.3) ** 2 / 1.4)


def pushforward(log_density, flow):
    """:math:`z \\mapsto \\log T_\\#p(z)`, through the flow's analytic inverse."""

    def log_push(z):
        x, logdet = flow.inverse_and_log_det(z)
        return log_density(x) + logdet

    return log_push


def jacobian_inverse(flow):
    return lambda x: jnp.linalg.inv(jax.jacfwd(flow)(x))


@pytest.fixture(scope="module")
def setup():
    from conftest import float64

    with float64():
        flow = CouplingFlow(D, key=3)
        x = 1.2 * jax.random.normal(jax.random.key(0), (12, D))
        s = jax.vmap(jax.grad(log_p))(x)
        yield flow, x, s


def _latent_reference(flow, x, log_density=log_p):
    z = vmap(flow)(x)
    return z, vmap(jax.grad(pushforward(log_density, flow)))(z)


@pytest.mark.parametrize("method", ["jacobian", "generator"])
def test_lemma_3_1_latent_score(x64, setup, method):
    flow, x, s = setup
    diffusion = (
        FlowDiffusion(flow) if method == "jacobian" else FlowDiffusion.from_generator(Inverse(flow))
    )
    z, s_z = diffusion.latent(x, s)
    z_ref, s_ref = _latent_reference(flow, x)
    np.testing.assert_allclose(z, z_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s_z, s_ref, rtol=1e-10, atol=1e-10)
    # corollary: (s_{T#q} - s_{T#p}) o T = J^{-T} (s_q - s_p), the log-det terms cancel
    s_q = vmap(jax.grad(log_q))(x)
    _, sq_ref = _latent_reference(flow, x, log_q)
    J = vmap(jax.jacfwd(flow))(x)
    rhs = jnp.linalg.solve(jnp.swapaxes(J, 1, 2), (s_q - s)[..., None])[..., 0]
    np.testing.assert_allclose(sq_ref - s_ref, rhs, rtol=1e-10, atol=1e-10)


def test_lemma_3_2_piola_and_effective_score(x64, setup):
    flow, x, s = setup
    diffusion = PositionDependent(jacobian_inverse(flow))
    M, div = vmap(diffusion.matrix_and_divergence)(x)
    grad_logdet = vmap(jax.grad(lambda p: flow.transform_and_log_det(p)[1]))(x)
    piola = -jnp.einsum("nji,nj->ni", M, grad_logdet)  # -J^{-T} grad log|det J|
    np.testing.assert_allclose(div, piola, rtol=1e-10, atol=1e-10)
    b = diffusion.features(x, s).b
    np.testing.assert_allclose(b, _latent_reference(flow, x)[1], rtol=1e-10, atol=1e-10)


def test_theorem_3_3_operators_intertwine(x64, setup):
    flow, x, _ = setup
    W = jax.random.normal(jax.random.key(5), (D, D))

    def f_z(z):
        return jnp.tanh(W @ z) + jnp.sin(z)

    def latent_side(x):
        z = flow(x)
        s_z = jax.grad(pushforward(log_p, flow))(z)
        return s_z @ f_z(z) + jnp.trace(jax.jacfwd(f_z)(z))

    def x_side(x):
        M, div = PositionDependent(jacobian_inverse(flow)).matrix_and_divergence(x)
        b = M.T @ jax.grad(log_p)(x) + div
        f = lambda p: f_z(flow(p))  # noqa: E731
        return b @ f(x) + jnp.trace(M @ jax.jacfwd(f)(x))

    np.testing.assert_allclose(vmap(x_side)(x), vmap(latent_side)(x), rtol=1e-10)


@partial(jax.jit, static_argnums=(0, 2))
def _x_space_gram(flow, A, M_fn, x, s):
    """The boxed docs/math.md §2.3 formula in x with kernel :math:`k_x = k_z \\circ T` and
    diffusion M_fn, all kernel derivatives by autodiff of :math:`k_x` (an independent route to
    :math:`k^0`)."""
    profile = IMQ().profile

    def k_x(a, b):
        r = flow(a) - flow(b)
        return profile(r @ A @ r)[0]

    pd = PositionDependent(M_fn)
    M, div = jax.vmap(pd.matrix_and_divergence)(x)
    b = jnp.einsum("nij,ni->nj", M, s) + div

    def k0(xa, xb, ba, bb, Ma, Mb):
        g1 = jax.grad(k_x, 0)(xa, xb)
        g2 = jax.grad(k_x, 1)(xa, xb)
        H = jax.jacfwd(jax.grad(k_x, 0), 1)(xa, xb)
        return k_x(xa, xb) * ba @ bb + (Ma @ bb) @ g1 + (Mb @ ba) @ g2 + jnp.sum(Ma @ Mb.T * H)

    row = jax.vmap(k0, (None, 0, None, 0, None, 0))
    return jax.vmap(row, (0, None, 0, None, 0, None))(x, x, b, b, M, M)


def _v_and_u(K):
    n = K.shape[0]
    return jnp.mean(K), (jnp.sum(K) - jnp.trace(K)) / (n * (n - 1))


def test_theorem_3_5_dksd_equals_latent_ksd(x64, setup):
    flow, x, s = setup
    z = vmap(flow)(x)
    A = IMQ(bandwidth="med").bandwidth_matrix(z)  # "med" is estimated in latent space
    K_x = _x_space_gram(flow, A, jacobian_inverse(flow), x, s)
    kernel = IMQ(bandwidth="med")
    for diffusion in (FlowDiffusion(flow), FlowDiffusion.from_generator(Inverse(flow))):
        K_z = stein_matrix(x, s, kernel=kernel, diffusion=diffusion)
        np.testing.assert_allclose(K_z, K_x, rtol=1e-9, atol=1e-12 * np.abs(K_x).max())
        for stat, ref in zip(("v", "u"), _v_and_u(K_x), strict=True):
            got = ksd_squared(x, s, kernel=kernel, diffusion=diffusion, statistic=stat)
            np.testing.assert_allclose(got, ref, rtol=1e-8)


def test_theorem_3_5_negative_controls(x64, setup):
    flow, x, s = setup
    z = vmap(flow)(x)
    A = IMQ(bandwidth="med").bandwidth_matrix(z)
    v_flow = float(ksd_squared(x, s, kernel=IMQ(bandwidth="med"), diffusion=FlowDiffusion(flow)))
    # M = J^{-T} instead of J^{-1}
    transposed = lambda p: jacobian_inverse(flow)(p).T  # noqa: E731
    v_transposed = float(jnp.mean(_x_space_gram(flow, A, transposed, x, s)))
    assert abs(v_transposed - v_flow) > 1e-3 * v_flow
    # dropping the log-det term of Lemma 3.1: latent score J^{-T} s_p alone
    J = vmap(jax.jacfwd(flow))(x)
    no_logdet = jnp.linalg.solve(jnp.swapaxes(J, 1, 2), s[..., None])[..., 0]
    v_no_logdet = float(ksd_squared(z, no_logdet, kernel=IMQ(bandwidth="med")))
    assert abs(v_no_logdet - v_flow) > 1e-3 * v_flow


def test_covariance_law_3_6(x64, setup):
    """General M: k0 with (p, M, k_z o T) equals k0 with (T#p, M_z = J M, k_z) at T(x)."""
    flow, x, s = setup
    A = jnp.eye(D)

    def M_fn(p):
        return jnp.eye(D) * (1.0 + 0.2 * jnp.tanh(p)) + 0.1 * jnp.outer(jnp.sin(p), p)

    K_x = _x_space_gram(flow, A, M_fn, x, s)

    def M_z(z):
        p = flow.inv(z)
        return jax.jacfwd(flow)(p) @ M_fn(p)

    z, s_z = _latent_reference(flow, x)
    K_z = stein_matrix(z, s_z, kernel=IMQ(bandwidth=A), diffusion=PositionDependent(M_z))
    np.testing.assert_allclose(K_z, K_x, rtol=1e-9, atol=1e-12 * np.abs(K_x).max())


def test_stein_kernel_pair_in_latent_space_matches(x64, setup):
    """Theorem 3.5 at random pairs, with the package's own pair formula in z."""
    flow, x, s = setup
    z, s_z = _latent_reference(flow, x)
    A = jnp.eye(D)
    K_x = _x_space_gram(flow, A, jacobian_inverse(flow), x, s)
    eye = jnp.eye(D)
    for i, j in [(0, 1), (3, 7), (5, 5), (11, 2)]:
        k = stein_kernel_pair(IMQ().profile, A, z[i], z[j], s_z[i], s_z[j], eye, eye)
        np.testing.assert_allclose(k, K_x[i, j], rtol=1e-10)


@pytest.mark.parametrize("bandwidth", [None, "med", np.diag([0.5, 2.0, 1.0, 3.0])])
def test_affine_flow_is_constant_diffusion(x64, setup, bandwidth):
    """docs/math.md §3.7: T(x) = L^{-1}(x - c) gives M = L, kernel bandwidth L Gamma_z L^T."""
    _, x, s = setup
    L = jnp.tril(jax.random.normal(jax.random.key(9), (D, D))) + 2.0 * jnp.eye(D)
    c = jnp.arange(D, dtype=x.dtype)
    flow = FlowDiffusion.from_generator(LowerCholeskyAffine(c, L))
    z = jnp.linalg.solve(L, (x - c).T).T
    gamma_z = jnp.linalg.inv(IMQ(bandwidth=bandwidth).bandwidth_matrix(z))
    expected = ksd(x, s, kernel=IMQ(bandwidth=L @ gamma_z @ L.T), diffusion=Constant(L))
    np.testing.assert_allclose(
        ksd(x, s, kernel=IMQ(bandwidth=bandwidth), diffusion=flow), expected, rtol=1e-10
    )
    # the same flow given in the data-to-latent direction (Jacobian route)
    same = FlowDiffusion(LowerCholeskyAffine(c, L).inv)
    np.testing.assert_allclose(
        ksd(x, s, kernel=IMQ(bandwidth=bandwidth), diffusion=same), expected, rtol=1e-10
    )


def test_elementwise_numpyro_transform(x64, setup):
    """An elementwise NumPyro transform (log-det per coordinate) is summed over the event."""
    _, x, s = setup
    scale = jnp.array([2.0, 0.5, 1.0, 3.0])
    flow = FlowDiffusion(AffineTransform(1.0, scale))  # z = 1 + scale * x, M = diag(1/scale)
    expected = ksd(
        x, s, kernel=IMQ(bandwidth=np.diag(1 / scale**2)), diffusion=Constant(jnp.diag(1 / scale))
    )
    got = ksd(x, s, kernel=IMQ(), diffusion=flow)  # Gamma_z = I, i.e. Gamma_x = diag(1/scale^2)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def _iaf(d, key):
    init, apply = AutoregressiveNN(d, [8, 8], permutation=jnp.arange(d))
    _, params = init(key, (d,))
    params = jax.tree.map(lambda a: 0.5 * a, params)
    return InverseAutoregressiveTransform(lambda v: apply(params, v))


def test_numpyro_iaf_generator(x64, setup):
    """A NumPyro IAF as the generator (as AutoIAFNormal's get_transform gives it)."""
    _, x, s = setup
    G = _iaf(D, jax.random.key(4))
    by_vjp = FlowDiffusion.from_generator(G)
    z, s_z = by_vjp.latent(x, s)

    def log_push(z):
        xg = G(z)
        return log_p(xg) + G.log_abs_det_jacobian(z, xg)

    np.testing.assert_allclose(vmap(G)(z), x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(s_z, vmap(jax.grad(log_push))(z), rtol=1e-9, atol=1e-10)
    by_jacobian = FlowDiffusion(G.inv)  # jacfwd through the IAF's sequential inverse
    np.testing.assert_allclose(by_jacobian.latent(x, s)[1], s_z, rtol=1e-9, atol=1e-10)


def test_bnaf_generator_has_no_inverse(setup):
    init, apply = BlockNeuralAutoregressiveNN(D, [4])
    _, params = init(jax.random.key(0), (D,))
    bnaf = BlockNeuralAutoregressiveTransform(lambda v: apply(params, v))
    x = np.asarray(setup[1], dtype=np.float32)
    with pytest.raises(ValueError, match="no inverse.*AutoIAFNormal"):
        FlowDiffusion.from_generator(bnaf).latent(x, -x)
    # as the data-to-latent map T a BNAF needs no inverse
    assert np.isfinite(float(ksd(x, -x, diffusion=FlowDiffusion(bnaf))))


def test_jit_matches_eager(x64, setup):
    flow, x, s = setup
    diffusion = FlowDiffusion(flow)
    eager = ksd(x, s, diffusion=diffusion)
    jitted = jax.jit(lambda a, b: ksd(a, b, diffusion=diffusion))(x, s)
    np.testing.assert_allclose(jitted, eager, rtol=1e-12)


class _Cube:
    """T(x) = x**3: a bijection whose Jacobian is singular at 0."""

    def transform_and_log_det(self, x):
        return x**3, jnp.sum(jnp.log(3 * x**2))

    def inverse_and_log_det(self, z):
        x = jnp.cbrt(z)
        return x, -jnp.sum(jnp.log(3 * x**2))


class _WrongInverse(_Cube):
    def inverse_and_log_det(self, z):
        return z, jnp.zeros(())


class TestBadInput:
    def test_dimension_mismatch(self, setup):
        x = np.zeros((5, D - 1), np.float32)
        with pytest.raises(ValueError, match="dimension d=3"):
            ksd(x, x, diffusion=FlowDiffusion(setup[0]))

    def test_singular_jacobian(self):
        x = np.array([[1.0, 2.0], [0.0, 1.0], [1.5, -1.0]], np.float32)
        with pytest.raises(ValueError, match="latent score.*1 of 3 rows.*row 1.*singular"):
            ksd(x, -x, diffusion=FlowDiffusion(_Cube()))

    def test_inverse_that_does_not_invert(self):
        x = np.array([[1.0, 2.0], [0.5, 1.0], [1.5, -1.0]], np.float32)
        with pytest.raises(NotInvertibleError, match="not invertible at 3 of 3"):
            ksd(x, -x, diffusion=FlowDiffusion.from_generator(Inverse(_WrongInverse())))

    def test_not_a_flow(self):
        with pytest.raises(ValueError, match="Cannot use .* as a flow"):
            FlowDiffusion(lambda x: x)


def test_float64_flow_with_float32_draws(x64, setup):
    """A flow with float64 parameters applied to float32 draws computes in the draws' dtype."""
    flow, x, s = setup
    x32, s32 = np.asarray(x, np.float32), np.asarray(s, np.float32)
    for diffusion in (FlowDiffusion(flow), FlowDiffusion.from_generator(Inverse(flow))):
        z, s_z = diffusion.latent(x32, s32)
        assert z.dtype == s_z.dtype == np.float32
        np.testing.assert_allclose(s_z, diffusion.latent(x, s)[1], rtol=1e-4, atol=1e-4)
