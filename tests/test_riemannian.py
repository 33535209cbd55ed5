"""The Riemannian view of a flow (docs/math.md §4, §7 oracle 13), in float64.

References are computed independently of the library: Jacobians by ``jax.jacfwd`` of the flow,
inverses and determinants by ``numpy.linalg``/``jnp.linalg``, pushed-forward densities by
autodiff through the flow's analytic inverse.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _flows import CouplingFlow
from numpyro.distributions.transforms import AffineTransform, LowerCholeskyAffine

from numpyro_dsd.flows.riemannian import (
    laplace_beltrami,
    log_density_wrt_volume,
    metric,
    riemannian_gradient,
    riemannian_hyvarinen,
    riemannian_norm,
)
from numpyro_dsd.flows.score_matching import dsm, implicit_dsm

D = 4


def log_p(x):
    """A non-Gaussian log density: correlated core, quartic tails, a twist."""
    P = jnp.eye(D) + 0.3 * jnp.diag(jnp.ones(D - 1), 1) + 0.3 * jnp.diag(jnp.ones(D - 1), -1)
    return -0.5 * x @ P @ x - 0.05 * jnp.sum(x**4) + 0.3 * jnp.sin(x[0] * x[1])


def log_q(x):
    return -0.5 * jnp.sum((x - 0.3) ** 2 / 1.4)


def f_test(x):
    """A scalar test function for the Laplace-Beltrami operator."""
    return jnp.sin(x[0]) * x[1] + 0.2 * jnp.sum(x**3) + jnp.exp(0.3 * x[-1])


def laplace_beltrami_definition(flow, f, x):
    """|G|^-1/2 d_i(|G|^1/2 G^ij d_j f) with |G| = det(J^T J) and G^-1 = inv(J^T J)."""

    def flux(y):
        J = jax.jacfwd(flow)(y)
        G = J.T @ J
        return jnp.sqrt(jnp.linalg.det(G)) * jnp.linalg.inv(G) @ jax.grad(f)(y)

    J = jax.jacfwd(flow)(x)
    return jnp.trace(jax.jacfwd(flux)(x)) / jnp.sqrt(jnp.linalg.det(J.T @ J))


def latent_hyvarinen(flow, log_density, x):
    """|s|^2 + 2 div_z s at z = T(x), s the score of log T#p(z) = log p(G(z)) + log|det dG(z)|."""

    def log_push(z):
        xg, logdet = flow.inverse_and_log_det(z)
        return log_density(xg) + logdet

    s = jax.grad(log_push)
    z = flow(x)
    return s(z) @ s(z) + 2 * jnp.trace(jax.jacfwd(s)(z))


def relative_error(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b) / (np.abs(b) + 1e-300))


@pytest.fixture(scope="class")
def setup(x64_class):
    flow = CouplingFlow(D, key=5)
    x = 1.2 * jax.random.normal(jax.random.key(0), (8, D))
    J = np.asarray(jax.jit(jax.vmap(jax.jacfwd(flow)))(x))
    return flow, x, J


@pytest.mark.usefixtures("x64_class")
class TestFlowGeometry:
    def test_metric_gradient_norm(self, setup):
        """G = J^T J (1e-12); grad_G = J^-1 J^-T grad (1e-10); |v|_G = sqrt(v^T G v) (1e-12);
        one point and batches agree."""
        flow, x, J = setup
        G = np.einsum("nki,nkj->nij", J, J)
        np.testing.assert_allclose(metric(flow, x), G, rtol=1e-12)
        g = np.random.default_rng(1).normal(size=x.shape)
        inv = np.linalg.inv(J)
        ref = np.einsum("nij,nkj,nk->ni", inv, inv, g)
        out = riemannian_gradient(flow, x, g)
        np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
        np.testing.assert_allclose(riemannian_gradient(flow, x[2], g[2]), ref[2], rtol=1e-10)
        norm = riemannian_norm(flow, x, g)
        np.testing.assert_allclose(norm, np.sqrt(np.einsum("ni,nij,nj->n", g, G, g)), rtol=1e-12)
        # the norm of the gradient is the dual norm: |G^-1 g|_G^2 = g^T G^-1 g
        np.testing.assert_allclose(riemannian_norm(flow, x, out) ** 2, np.sum(g * ref, 1), 1e-10)

    def test_laplace_beltrami_matches_definition(self, setup):
        """The library's div u + grad log|det J| . u form equals the coordinate definition with
        |G|^1/2 = sqrt(det(J^T J)) and an explicit inverse (1e-9)."""
        flow, x, _ = setup
        ref = jax.jit(jax.vmap(lambda y: laplace_beltrami_definition(flow, f_test, y)))(x)
        out = laplace_beltrami(flow, f_test, x)
        assert relative_error(out, ref) < 1e-9

    def test_log_density_wrt_volume_is_pushforward(self, setup):
        """log p~ = log p - log|det J| equals log T#p(T(x)) through the inverse (1e-12)."""
        flow, x, _ = setup
        log_pt = log_density_wrt_volume(flow, log_p)

        def log_push(y):
            xg, logdet = flow.inverse_and_log_det(flow(y))
            return log_p(xg) + logdet

        out, ref = jax.jit(lambda y: (jax.vmap(log_pt)(y), jax.vmap(log_push)(y)))(x)
        np.testing.assert_allclose(out, ref, rtol=1e-12)

    def test_oracle_13_riemannian_hyvarinen_is_latent_hyvarinen(self, setup):
        """Oracle 13: |grad_G log p~|_G^2 + 2 Laplace-Beltrami(log p~) at x equals the latent
        integrand |s_{T#p}|^2 + 2 div_z s_{T#p} at T(x), by an independent autodiff reference
        and by implicit_dsm(latent=True) (1e-8 relative)."""
        flow, x, _ = setup
        out = riemannian_hyvarinen(flow, log_p, x)
        ref = jax.jit(jax.vmap(lambda y: latent_hyvarinen(flow, log_p, y)))(x)
        assert relative_error(out, ref) < 1e-8
        latent = implicit_dsm(x, log_p, diffusion=flow, latent=True, pointwise=True)
        assert relative_error(latent, ref) < 1e-8

    def test_dsm_is_riemannian_score_matching(self, setup):
        """The DSM_{J^-1} integrand is (s_q - s_p)^T G^-1 (s_q - s_p) and
        |grad_G log q~ - grad_G log p~|_G^2 (densities with respect to the Riemannian volume:
        the log-det cancels) (1e-10)."""
        flow, x, _ = setup
        sq, sp = (jax.jit(jax.vmap(jax.grad(f)))(x) for f in (log_q, log_p))
        delta = np.asarray(sq - sp)
        terms = dsm(x, sq, sp, flow, pointwise=True)
        grads = [
            jax.jit(jax.vmap(jax.grad(log_density_wrt_volume(flow, f))))(x) for f in (log_q, log_p)
        ]
        rgrad = riemannian_gradient(flow, x, grads[0] - grads[1])
        np.testing.assert_allclose(terms, np.sum(delta * rgrad, 1), rtol=1e-10)
        np.testing.assert_allclose(terms, riemannian_norm(flow, x, rgrad) ** 2, rtol=1e-10)


# --- affine flows, dtype and bad input ---------------------------------------------------------


def test_affine_flow_closed_forms():
    """T(x) = Lx + c: G = L^T L, Laplace-Beltrami = tr(G^-1 Hess f); float32 stays float32."""
    L = np.array([[2.0, 0.0], [0.5, 1.0]], dtype=np.float32)
    flow = LowerCholeskyAffine(np.ones(2, np.float32), L)
    x = np.array([[0.3, -0.2], [1.0, 2.0]], dtype=np.float32)
    G = metric(flow, x)
    assert G.dtype == jnp.float32
    np.testing.assert_allclose(G, np.broadcast_to(L.T @ L, (2, 2, 2)), rtol=1e-6)
    lb = laplace_beltrami(flow, f_test, x)
    hess = jax.vmap(jax.hessian(f_test))(x)
    ref = np.trace(np.linalg.solve(L.T @ L, hess), axis1=1, axis2=2)
    np.testing.assert_allclose(lb, ref, rtol=1e-5)


class TestBadInput:
    flow = AffineTransform(0.0, 2.0)
    x = np.ones((3, 2))

    def test_shapes(self):
        with pytest.raises(ValueError, match=r"one point \(d,\) or a batch"):
            metric(self.flow, np.ones((2, 3, 2)))
        with pytest.raises(ValueError, match="grad must have the shape of x"):
            riemannian_gradient(self.flow, self.x, np.ones((2, 2)))
        with pytest.raises(ValueError, match="v must have the shape of x"):
            riemannian_norm(self.flow, self.x[0], np.ones(3))
        with pytest.raises(ValueError, match="f must map a"):
            laplace_beltrami(self.flow, lambda y: y, self.x)
        wrong_d = LowerCholeskyAffine(np.zeros(3), np.eye(3))
        with pytest.raises(ValueError, match="dimension d=2"):
            riemannian_hyvarinen(wrong_d, lambda y: -y @ y, self.x)

    def test_nan_and_not_a_flow(self):
        bad = self.x.copy()
        bad[1, 0] = np.inf
        with pytest.raises(ValueError, match="x contains NaN or inf.*row 1"):
            metric(self.flow, bad)
        with pytest.raises(ValueError, match="grad contains NaN or inf"):
            riemannian_gradient(self.flow, self.x, bad)
        with pytest.raises(ValueError, match="is not a flow"):
            metric(lambda y: y, self.x)
        with pytest.raises(ValueError, match="log_p must be a callable"):
            log_density_wrt_volume(self.flow, 1.0)
