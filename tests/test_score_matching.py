"""Diffusion score matching (docs/math.md §1.3, Theorem 3.4): oracles 8, 9 and 12, in float64.

Monte Carlo checks use exact draws and compare with four standard errors computed from the
per-draw terms; every such test also asserts that the standard error is small next to the
quantity tested, so that the check has power. Pushed-forward scores are computed independently,
by autodiff of :math:`\\log T_\\#p(z) = \\log p(G(z)) + \\log|\\det\\nabla G(z)|` through the flow's
analytic inverse.
"""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _flows import CouplingFlow

from numpyro_dsd import Constant, FlowDiffusion, Identity, PositionDependent
from numpyro_dsd.flows.score_matching import dsm, implicit_dsm, map_points, matrix_field

D = 3
STEPS = 600


# --- densities, flows and helpers ------------------------------------------------------------


def gaussian(mu: np.ndarray, cov: np.ndarray):
    """Unnormalised log density of N(mu, cov), for one point."""
    prec = jnp.asarray(np.linalg.inv(cov))

    def log_density(x):
        r = x - mu
        return -0.5 * r @ prec @ r

    return log_density


def banana(x):
    """A non-Gaussian log density (twisted in the first two coordinates)."""
    return (
        -0.5 * x[0] ** 2 / 2.0 - 0.5 * (x[1] - 0.5 * (x[0] ** 2 - 2.0)) ** 2 - 0.5 * x[2:] @ x[2:]
    )


def scores(log_density, x):
    return jax.jit(jax.vmap(jax.grad(log_density)))(jnp.asarray(x))


def pushforward(log_density, flow):
    """:math:`z \\mapsto \\log T_\\#p(z)` through the flow's inverse."""

    def log_push(z):
        x, logdet = flow.inverse_and_log_det(z)
        return log_density(x) + logdet

    return log_push


def latent_points(flow, x):
    return jax.jit(jax.vmap(flow))(jnp.asarray(x))


def jacobian_inverse(flow):
    return lambda x: jnp.linalg.inv(jax.jacfwd(flow)(x))


def within_4se(terms: np.ndarray, target: float, scale: float, power: float = 0.05) -> None:
    """|mean - target| < 4 SE, and SE < ``power * scale`` (so that the check means something)."""
    terms = np.asarray(terms)
    se = terms.std(ddof=1) / np.sqrt(terms.size)
    assert se < power * scale, (se, scale)
    assert abs(terms.mean() - target) < 4 * se, (terms.mean(), target, se)


def random_gaussian(rng: np.random.Generator, d: int, shift: float):
    a = rng.normal(size=(d, d))
    return shift + rng.normal(size=d), a @ a.T / d + 0.5 * np.eye(d)


def gaussian_dsm(mu_q, cov_q, mu_p, cov_p, M):
    """Oracle 8: tr(M^T B S_q B M) + |M^T S_p^-1 (mu_q - mu_p)|^2, B = S_q^-1 - S_p^-1."""
    B = np.linalg.inv(cov_q) - np.linalg.inv(cov_p)
    m = M.T @ np.linalg.solve(cov_p, mu_q - mu_p)
    return np.trace(M.T @ B @ cov_q @ B @ M) + m @ m


class Affine:
    """:math:`T(x) = Ax + c`, the bijection interface."""

    def __init__(self, A: np.ndarray, c: np.ndarray):
        self.A, self.c = jnp.asarray(A), jnp.asarray(c)
        self.logdet = jnp.linalg.slogdet(self.A)[1]

    def transform_and_log_det(self, x):
        return self.A @ x + self.c, self.logdet

    def inverse_and_log_det(self, z):
        return jnp.linalg.solve(self.A, z - self.c), -self.logdet


def cayley_rotation(x):
    """An orthogonal R(x) = (I - S)^-1 (I + S), S(x) skew."""
    a = jnp.outer(jnp.sin(x), jnp.cos(2.0 * x[::-1])) + jnp.outer(x, jnp.ones_like(x))
    S = a - a.T
    eye = jnp.eye(x.shape[0])
    return jnp.linalg.solve(eye - S, eye + S)


def m_fn(x):
    """A non-constant, non-symmetric diffusion matrix."""
    d = x.shape[0]
    base = jnp.eye(d) + 0.3 * jnp.outer(jnp.sin(x), jnp.cos(x[::-1]))
    return base * (1.0 + 0.2 * jnp.tanh(x @ x)) + 0.1 * jnp.triu(jnp.ones((d, d)), 1)


@pytest.fixture(scope="class")
def flow(x64_class):
    return CouplingFlow(D, key=1)


@pytest.fixture(scope="class")
def q_draws(x64_class):
    """Exact draws of q = N(mu_q, cov_q) and the two targets' parameters."""
    rng = np.random.default_rng(0)
    mu_q, cov_q = random_gaussian(rng, D, 0.0)
    mu_p, cov_p = random_gaussian(rng, D, 0.5)
    x = rng.multivariate_normal(mu_q, cov_q, size=8000)
    return x, (mu_q, cov_q), (mu_p, cov_p)


# --- oracle 8: Gaussians, constant and affine diffusions ---------------------------------------


@pytest.mark.usefixtures("x64_class")
class TestGaussian:
    M = np.array([[1.0, 0.4, 0.0], [-0.3, 0.8, 0.2], [0.1, 0.0, 1.5]])

    def test_explicit_matches_closed_form(self, q_draws):
        """Oracle 8: Monte Carlo within 4 SE; exactly (1e-10) the same quadratic form with the
        draws' mean and (1/n) covariance in place of mu_q, S_q."""
        x, (mu_q, cov_q), (mu_p, cov_p) = q_draws
        sq, sp = scores(gaussian(mu_q, cov_q), x), scores(gaussian(mu_p, cov_p), x)
        exact = gaussian_dsm(mu_q, cov_q, mu_p, cov_p, self.M)
        for diffusion in (Constant(self.M), self.M, PositionDependent(lambda _: self.M)):
            terms = dsm(x, sq, sp, diffusion, pointwise=True)
            within_4se(terms, exact, exact)
        # the integrand is |M^T (c - B x)|^2: its mean over any points is the same closed form
        m, cov = x.mean(0), np.cov(x.T, bias=True)
        B = np.linalg.inv(cov_q) - np.linalg.inv(cov_p)
        mt_delta = self.M.T @ (np.linalg.solve(cov_p, mu_q - mu_p) - B @ (m - mu_q))
        empirical = np.trace(self.M.T @ B @ cov @ B @ self.M) + mt_delta @ mt_delta
        np.testing.assert_allclose(dsm(x, sq, sp, Constant(self.M)), empirical, rtol=1e-10)
        # M = I: plain score matching; None, Identity() and the identity matrix agree
        sm = gaussian_dsm(mu_q, cov_q, mu_p, cov_p, np.eye(D))
        within_4se(dsm(x, sq, sp, pointwise=True), sm, sm)
        np.testing.assert_allclose(dsm(x, sq, sp, Identity()), dsm(x, sq, sp, np.eye(D)), 1e-13)

    def test_implicit_gaussian_integrand_and_constant(self, q_draws):
        """Implicit DSM for a Gaussian p and constant M: the integrand is exactly
        |M^T S_p^-1 (x - mu_p)|^2 - 2 tr(M M^T S_p^-1) (1e-10); adding E_q|M^T s_q|^2 gives the
        closed form DSM (oracle 9, Monte Carlo within 4 SE)."""
        x, (mu_q, cov_q), (mu_p, cov_p) = q_draws
        prec_p = np.linalg.inv(cov_p)
        terms = implicit_dsm(x, gaussian(mu_p, cov_p), diffusion=Constant(self.M), pointwise=True)
        r = (x - mu_p) @ prec_p @ self.M
        ref = np.sum(r**2, 1) - 2 * np.trace(self.M @ self.M.T @ prec_p)
        np.testing.assert_allclose(terms, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
        c_q = np.sum(np.asarray(scores(gaussian(mu_q, cov_q), x) @ self.M) ** 2, 1)
        exact = gaussian_dsm(mu_q, cov_q, mu_p, cov_p, self.M)
        within_4se(np.asarray(terms) + c_q, exact, exact)

    def test_affine_flow_is_sm_of_pushforwards(self, q_draws):
        """Oracle 8: T(x) = Ax + c, M = A^-1: DSM = SM(N(A mu + c, A S A^T), ...) in closed form
        (1e-10), and on the draws the flow, Constant(A^-1) and latent SM agree pointwise."""
        x, (mu_q, cov_q), (mu_p, cov_p) = q_draws
        rng = np.random.default_rng(1)
        A, c = rng.normal(size=(D, D)) + 2 * np.eye(D), rng.normal(size=D)
        push = [(A @ mu + c, A @ cov @ A.T) for mu, cov in ((mu_q, cov_q), (mu_p, cov_p))]
        ref = gaussian_dsm(*push[0], *push[1], np.eye(D))
        np.testing.assert_allclose(
            gaussian_dsm(mu_q, cov_q, mu_p, cov_p, np.linalg.inv(A)), ref, rtol=1e-10
        )
        sq, sp = scores(gaussian(mu_q, cov_q), x), scores(gaussian(mu_p, cov_p), x)
        z = x @ A.T + c
        latent = dsm(
            z, scores(gaussian(*push[0]), z), scores(gaussian(*push[1]), z), pointwise=True
        )
        for diffusion in (Affine(A, c), FlowDiffusion(Affine(A, c)), Constant(np.linalg.inv(A))):
            terms = dsm(x, sq, sp, diffusion, pointwise=True)
            np.testing.assert_allclose(terms, latent, rtol=1e-10)
        within_4se(latent, ref, ref)
        # matrix_field of the flow is J^-1 = A^-1, by solves
        M = matrix_field(Affine(A, c))(jnp.asarray(x[0]))
        np.testing.assert_allclose(M, np.linalg.inv(A), rtol=1e-12, atol=1e-14)

    def test_fitting_gaussian_by_gradient_steps(self):
        """Implicit DSM is an objective in the model's parameters: gradient descent on it,
        jax.grad through implicit_dsm, recovers the draws' mean and (1/n) precision, for M = I
        and for a constant M (the minimiser does not depend on M)."""
        rng = np.random.default_rng(2)
        x = rng.multivariate_normal([1.0, -0.5], [[1.0, 0.4], [0.4, 0.6]], size=300)
        mean, prec = x.mean(0), np.linalg.inv(np.cov(x.T, bias=True))

        def objective(theta, M):
            mu, L = theta
            P = L @ L.T

            def log_p(y):
                return -0.5 * (y - mu) @ P @ (y - mu)

            return implicit_dsm(x, log_p, diffusion=M)

        for M in (None, np.array([[1.2, 0.3], [-0.2, 0.7]])):

            def step(_, theta, M=M):
                grads = jax.grad(objective)(theta, M)
                return jax.tree.map(lambda a, g: a - 0.1 * g, theta, grads)

            fit = jax.jit(lambda theta, step=step: jax.lax.fori_loop(0, STEPS, step, theta))
            mu, L = fit((jnp.zeros(2), jnp.eye(2)))
            np.testing.assert_allclose(mu, mean, atol=1e-8)
            np.testing.assert_allclose(L @ L.T, prec, atol=1e-8)


# --- Theorem 3.4 with a nonlinear flow ---------------------------------------------------------


@pytest.fixture(scope="class")
def flow_terms(flow, q_draws):
    """Every per-draw term the flow tests compare, computed once (each call compiles).

    Two targets: a Gaussian p and the banana, against the Gaussian q of ``q_draws``.
    """
    x, (mu_q, cov_q), (mu_p, cov_p) = q_draws
    n = len(x)
    log_q, log_ps = gaussian(mu_q, cov_q), (gaussian(mu_p, cov_p), banana)
    sq = scores(log_q, x)
    sp = [scores(log_p, x) for log_p in log_ps]
    # explicit terms for both p, and the C_q terms |J^-T s_q|^2, in one call on stacked copies
    tile = np.tile(x, (3, 1)), np.tile(sq, (3, 1)), np.concatenate([*sp, 0 * sq])
    stacked = np.asarray(dsm(*tile, flow, pointwise=True))
    pushed = jax.jit(
        lambda z: [jax.vmap(jax.grad(pushforward(f, flow)))(z) for f in (log_q, *log_ps)]
    )(latent_points(flow, x))

    def implicit(log_p, latent=False):
        return np.asarray(implicit_dsm(x, log_p, diffusion=flow, latent=latent, pointwise=True))

    def implicit_and_grad(latent):
        """Gaussian-p integrands, and the gradient of their sum in the mean of p."""

        def total(mu):
            terms = implicit_dsm(
                x, gaussian(mu, cov_p), diffusion=flow, latent=latent, pointwise=True
            )
            return terms.sum(), terms

        (_, terms), grad = jax.jit(jax.value_and_grad(total, has_aux=True))(jnp.asarray(mu_p))
        return np.asarray(terms), np.asarray(grad)

    (implicit_g, grad_x), (latent_g, grad_z) = implicit_and_grad(False), implicit_and_grad(True)
    return SimpleNamespace(
        x=x,
        log_ps=log_ps,
        sq=sq,
        sp=sp,
        explicit=stacked[: 2 * n].reshape(2, n),
        c_q=stacked[2 * n :],
        implicit=[implicit_g, implicit(banana)],
        latent=[latent_g, implicit(banana, latent=True)],
        grads=(grad_x, grad_z),
        c_t=implicit(lambda y: flow.transform_and_log_det(y)[1]),
        s_tq=np.asarray(pushed[0]),
        s_tp=[np.asarray(s) for s in pushed[1:]],
    )


@pytest.mark.usefixtures("x64_class")
@pytest.mark.slow
class TestFlow:
    def test_explicit_equals_latent_sm_pointwise(self, flow, flow_terms):
        """Theorem 3.4: |J^-T (s_q - s_p)|^2 at x = |s_{T#q} - s_{T#p}|^2 at T(x) (1e-10), for
        a Gaussian and a banana p, latent scores by autodiff through the inverse. Negative
        control: M = J^-T gives a different value."""
        t = flow_terms
        for explicit, s_tp in zip(t.explicit, t.s_tp, strict=True):
            np.testing.assert_allclose(explicit, np.sum((t.s_tq - s_tp) ** 2, 1), rtol=1e-10)
        inv_j, few = jacobian_inverse(flow), slice(0, 100)
        transposed = PositionDependent(lambda y: inv_j(y).T)
        wrong = dsm(t.x[few], t.sq[few], t.sp[1][few], transposed, pointwise=True)
        assert np.median(np.abs(wrong / t.explicit[1][few] - 1)) > 0.05

    def test_implicit_plus_constant_equals_explicit(self, flow, flow_terms):
        """Oracle 9 with the non-constant M = J^-1, in x and in latent space: the implicit
        integrand plus |J^-T s_q|^2 (resp. |s_{T#q}|^2) has the explicit DSM as mean (paired
        per-draw terms, within 4 SE). Negative control: holding M constant in the divergence
        (dropping div(J^-1 J^-T) . s_p) misses by more than 8 SE."""
        t = flow_terms
        latent_c_q = np.sum(t.s_tq**2, 1)
        for k in range(2):
            scale = t.explicit[k].mean()
            within_4se(t.implicit[k] + t.c_q - t.explicit[k], 0.0, scale)
            within_4se(t.latent[k] + latent_c_q - t.explicit[k], 0.0, scale)
        frozen = map_points(lambda y: _frozen_m_integrand(flow, t.log_ps[0], y), t.x)
        wrong = np.asarray(frozen) + t.c_q - t.explicit[0]
        assert abs(wrong.mean()) > 8 * wrong.std(ddof=1) / np.sqrt(wrong.size)

    def test_x_and_latent_implicit_differ_by_flow_only_function(self, flow_terms):
        """x-space minus latent implicit integrand is, pointwise, c_T(x) = |J^-T grad l|^2 +
        2 div(G^-1 grad l), l = log|det J|, G = J^T J: the same for two different p (1e-8), and
        the x-space integrand of p = |det J| (whose pushforward is flat). Its mean is
        E_{T#q}|s_{T#q}|^2 - E_q|J^-T s_q|^2 (within 4 SE): the q-only constant of Theorem 3.4."""
        t = flow_terms
        diffs = [h - lat for h, lat in zip(t.implicit, t.latent, strict=True)]
        atol = 1e-8 * np.abs(diffs[0]).max()
        np.testing.assert_allclose(diffs[0], diffs[1], rtol=0, atol=atol)
        np.testing.assert_allclose(diffs[1], t.c_t, rtol=0, atol=atol)
        latent_c_q = np.sum(t.s_tq**2, 1)
        within_4se(diffs[0] - (latent_c_q - t.c_q), 0.0, latent_c_q.mean())

    def test_x_and_latent_objectives_have_equal_parameter_gradients(self, flow_terms):
        """Because that difference depends on the flow only, jax.grad in the parameters of p (here
        the mean of the Gaussian p) of the x-space and the latent implicit objectives agree
        exactly on any draws (1e-10): both are valid score matching objectives for fitting p."""
        grad_x, grad_z = flow_terms.grads
        np.testing.assert_allclose(grad_x, grad_z, rtol=1e-10)
        assert np.abs(grad_x).min() > 1.0  # not at a stationary point


def _frozen_m_integrand(flow, log_p, x):
    """|J^-T s_p|^2 + 2 tr(J^-1 J^-T grad s_p): the divergence with M held constant (wrong)."""
    J = jax.jacfwd(flow)(x)
    s, H = jax.grad(log_p)(x), jax.hessian(log_p)(x)
    v = jnp.linalg.solve(J.T, s)
    return v @ v + 2 * jnp.trace(jnp.linalg.solve(J, jnp.linalg.solve(J.T, H)))


# --- oracle 12: M -> M R(x) --------------------------------------------------------------------


def test_invariant_under_orthogonal_right_factor(x64):
    """Oracle 12: DSM is unchanged under M -> M R(x), R(x) orthogonal, M(x) non-constant and
    non-symmetric (1e-10); M -> R(x) M changes it (negative control)."""
    x = jnp.asarray(np.random.default_rng(4).normal(size=(30, D)))
    sq, sp = scores(gaussian(np.zeros(D), np.eye(D)), x), scores(banana, x)
    R = jax.jit(jax.vmap(cayley_rotation))(x)
    np.testing.assert_allclose(
        R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(D), R.shape), atol=1e-12
    )
    base = PositionDependent(m_fn)
    rotated = PositionDependent(lambda y: m_fn(y) @ cayley_rotation(y))
    ref = dsm(x, sq, sp, base, pointwise=True)
    np.testing.assert_allclose(dsm(x, sq, sp, rotated, pointwise=True), ref, rtol=1e-10)
    left = PositionDependent(lambda y: cayley_rotation(y) @ m_fn(y))
    assert np.median(np.abs(dsm(x, sq, sp, left, pointwise=True) / ref - 1)) > 0.05


# --- dtype and bad input -----------------------------------------------------------------------


def test_float32_inputs_give_float32():
    x = np.random.default_rng(5).normal(size=(5, 2)).astype(np.float32)
    assert dsm(x, -x, -(x - 1), np.eye(2)).dtype == jnp.float32
    assert implicit_dsm(x, lambda y: -0.5 * y @ y).dtype == jnp.float32


class TestBadInput:
    x = np.random.default_rng(6).normal(size=(6, 2))

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match="scores_p must have the shape of x"):
            dsm(self.x, -self.x, -self.x[:5])
        with pytest.raises(ValueError, match="2-D"):
            dsm(self.x[0], -self.x[0], -self.x[0])
        with pytest.raises(ValueError, match=r"shape \(2, 2\) for points of dimension d=3"):
            dsm(np.ones((4, 3)), np.ones((4, 3)), np.ones((4, 3)), Constant(np.eye(2)))
        with pytest.raises(ValueError, match="dimension d=3"):
            implicit_dsm(np.ones((4, 3)), lambda y: -y @ y, diffusion=Affine(np.eye(2), np.ones(2)))
        with pytest.raises(ValueError, match=r"score_fn must map a \(2,\) point to shape \(2,\)"):
            implicit_dsm(self.x, score_fn=lambda y: y[0])

    def test_nan(self):
        bad = self.x.copy()
        bad[3, 1] = np.nan
        with pytest.raises(ValueError, match="x contains NaN or inf.*row 3"):
            dsm(bad, -self.x, -self.x)
        with pytest.raises(ValueError, match="scores_q contains NaN or inf.*row 3"):
            dsm(self.x, bad, -self.x)
        with pytest.raises(ValueError, match="implicit DSM terms contains NaN"):
            implicit_dsm(self.x, lambda y: jnp.sqrt(y[0]))  # negative draws: NaN score

    def test_wrong_arguments(self):
        with pytest.raises(ValueError, match="exactly one of log_p"):
            implicit_dsm(self.x)
        with pytest.raises(ValueError, match="exactly one of log_p"):
            implicit_dsm(self.x, lambda y: -y @ y, score_fn=lambda y: -y)
        with pytest.raises(ValueError, match="latent=True needs a flow"):
            implicit_dsm(self.x, lambda y: -y @ y, latent=True)
        with pytest.raises(ValueError, match="Cannot use str as a diffusion"):
            dsm(self.x, -self.x, -self.x, "identity")
