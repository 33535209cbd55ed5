"""Continuous flows (docs/math.md §5, §7 oracle 11), in float64.

The velocity field is nonlinear and time dependent, :math:`v(z, t) = \\tanh(Wz + bt + c) - 0.3z`
in :math:`d = 3`. The ODE-carried quantities (:math:`J_t`, :math:`\\log|\\det J_t|`, the score,
:math:`\\delta_t`) are compared with the same quantities obtained by differentiating the solver
(``jax.jacfwd`` / ``jax.grad`` of ``transform_and_log_det``). With RK4, :math:`J_t` matches to
rounding (differentiating RK4 is RK4 on the variational equation); the others match to the
:math:`O(h^4)` solver error, so those tests also check the fourth-order decay when the step halves.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import cumulative_simpson

from numpyro_dsd.flows.bijections import Bijection
from numpyro_dsd.flows.continuous import ContinuousFlow, DSMPath, Trajectory, dsm_path

D = 3
_RNG = np.random.default_rng(0)
W = 1.5 * _RNG.normal(size=(D, D))
B, C = _RNG.normal(size=D), _RNG.normal(size=D)
X = 0.8 * _RNG.normal(size=(5, D))
S = np.array([[0.0, 1.5, -0.4], [-1.5, 0.0, 0.8], [0.4, -0.8, 0.0]])  # skew
GRID = np.linspace(0.0, 1.0, 65)


def velocity(z, t):
    return jnp.tanh(W @ z + B * t + C) - 0.3 * z


FLOW = ContinuousFlow(velocity)  # RK4, 32 steps; shared, so its compiled solver is reused
DOPRI = ContinuousFlow(velocity, solver="dopri5")  # rtol = atol = 1e-10


def log_p(x):
    """A non-Gaussian target."""
    return -0.25 * jnp.sum(x**4) - 0.5 * x @ x + 0.3 * x[0] * x[1]


def score_q(x):
    """The score of q = N(0.3, 0.8^2 I)."""
    return -(x - 0.3) / 0.64


def _through_solver(flow, x):
    """J (d, d), log|det J| and grad_x log|det J| by differentiating the solver."""
    fwd = flow.transform_and_log_det
    (J, grad_logdet), (_, logdet) = jax.jacfwd(lambda p: (fwd(p), fwd(p)), has_aux=True)(x)
    return J, logdet, grad_logdet


@partial(jax.jit, static_argnums=0)
def _oracle_errors(num_steps):
    """Max errors over the points X of the ODE-carried quantities against the solver's
    derivatives (docs/math.md §7 oracle 11), for RK4 with ``num_steps`` steps."""
    flow = ContinuousFlow(velocity, num_steps=num_steps)

    def one(x):
        s_p = jax.grad(log_p)(x)
        delta0 = score_q(x) - s_p
        tr = flow.trajectory(x, delta0=delta0, score0=s_p, jacobian=True)
        J, logdet, grad_logdet = _through_solver(flow, x)
        return {
            "J": jnp.abs(tr.J[-1] - J).max(),
            "log_det vs transform": jnp.abs(tr.log_det[-1] - logdet),
            "log_det vs slogdet": jnp.abs(tr.log_det[-1] - jnp.linalg.slogdet(J)[1]),
            "score vs Lemma 3.1": jnp.abs(
                tr.score[-1] - jnp.linalg.solve(J.T, s_p - grad_logdet)
            ).max(),
            "delta vs M^T delta0": jnp.abs(tr.delta[-1] - jnp.linalg.solve(J.T, delta0)).max(),
        }

    return jax.tree.map(jnp.max, jax.vmap(one)(jnp.asarray(X)))


@pytest.fixture(scope="class")
def errors(x64_class):
    return {n: jax.tree.map(float, _oracle_errors(n)) for n in (32, 64)}


@pytest.fixture(scope="class")
def sample(x64_class):
    """64 draws of q = N(0.3, 0.8^2 I) with their scores s_q and the target's s_p."""

    @jax.jit
    def draw(key):
        x = 0.3 + 0.8 * jax.random.normal(key, (64, D))
        return x, jax.vmap(score_q)(x), jax.vmap(jax.grad(log_p))(x)

    return draw(jax.random.key(1))


@pytest.mark.usefixtures("x64_class")
class TestOracle11:
    """ODE-carried quantities against the solver's own derivatives (RK4, 32 and 64 steps)."""

    def test_jacobian_ode_equals_jacfwd_of_solver(self, errors):
        """Measured 1e-16: exact, since jacfwd of RK4 is RK4 on dJ/dt = grad v J."""
        assert errors[64]["J"] < 1e-12

    def test_log_det_of_transform_is_the_trajectory_log_det(self, errors):
        """Same solver, same steps: equal to rounding (measured 0)."""
        assert errors[64]["log_det vs transform"] < 1e-13

    @pytest.mark.parametrize(
        ("key", "tol"),
        [("log_det vs slogdet", 5e-8), ("score vs Lemma 3.1", 5e-7), ("delta vs M^T delta0", 2e-7)],
    )
    def test_matches_to_fourth_order(self, errors, key, tol):
        """log|det J_t| = slogdet(J), the score ODE = Lemma 3.1, delta_t = M_t^T delta_0.

        Measured at 64 steps: 7e-9, 6e-8, 2e-8; the error ratio from 32 to 64 steps is 16-17,
        so the differences are RK4's O(h^4) error, not a wrong formula.
        """
        assert errors[64][key] < tol
        assert errors[32][key] / errors[64][key] > 12.0


@pytest.mark.usefixtures("x64_class")
class TestDSMPath:
    """D(t) = E_q |delta_t|^2 and dD/dt (docs/math.md §5)."""

    def test_integrated_rate_equals_D(self, sample):
        """D(0) = E|s_q - s_p|^2 (measured 2e-16 relative), and Simpson's rule on dD/dt over 65
        times equals D(t) - D(0) (2.5e-8 relative to D(0); D itself changes by 112%)."""
        x, s_q, s_p = sample
        path = dsm_path(FLOW, x, s_q, s_p, ts=GRID)
        assert isinstance(path, DSMPath) and path.D.shape == path.D_dot.shape == GRID.shape
        np.testing.assert_allclose(path.D[0], jnp.mean(jnp.sum((s_q - s_p) ** 2, -1)), rtol=1e-14)
        integral = cumulative_simpson(np.asarray(path.D_dot), x=np.asarray(path.t))
        change = np.asarray(path.D[1:] - path.D[0])
        np.testing.assert_allclose(integral, change, atol=1e-7 * float(path.D[0]))
        assert np.abs(change).max() > 0.1 * float(path.D[0])  # D does change

    def test_weights(self, sample):
        """Weights 2/n on the first half and 0 on the second equal the first half twice over
        (measured 7e-16 relative)."""
        half = [a[: a.shape[0] // 2] for a in sample]
        n = sample[0].shape[0]
        w = np.r_[np.full(n // 2, 2.0 / n), np.zeros(n - n // 2)]
        weighted = dsm_path(FLOW, *sample, ts=GRID, weights=w)
        twice = dsm_path(FLOW, *[jnp.concatenate([a, a]) for a in half], ts=GRID)
        np.testing.assert_allclose(weighted.D, twice.D, rtol=1e-13)
        np.testing.assert_allclose(weighted.D_dot, twice.D_dot, rtol=1e-12)

    def test_linear_contraction_closed_form(self, sample):
        """v = -lambda z: D(t) = e^{2 lambda t} D(0) (measured 9e-12 relative), and
        dD/dt = 2 lambda D (1e-15)."""
        lam = 0.7
        path = dsm_path(ContinuousFlow(lambda z, t: -lam * z, t1=2.0), *sample)
        np.testing.assert_allclose(path.D, path.D[0] * jnp.exp(2 * lam * path.t), rtol=1e-10)
        np.testing.assert_allclose(path.D_dot, 2 * lam * path.D, rtol=1e-13)

    def test_skew_field_keeps_D_constant(self, sample):
        """v = S z with S skew: D constant (measured 6e-12 relative), dD/dt = 0 (5e-17)."""
        path = dsm_path(ContinuousFlow(lambda z, t: S @ z, t1=2.0), *sample)
        np.testing.assert_allclose(path.D, path.D[0], rtol=1e-10)
        np.testing.assert_allclose(path.D_dot, 0.0, atol=1e-12 * float(path.D[0]))


def phi(flow, x):
    """A scalar function of (T(x), log|det J(x)|), for gradients."""
    z, logdet = flow.transform_and_log_det(x)
    return jnp.sin(z) @ jnp.arange(1.0, D + 1) + logdet


GRAD_PHI = {flow: jax.jit(jax.grad(partial(phi, flow))) for flow in (FLOW, DOPRI)}


@pytest.mark.usefixtures("x64_class")
class TestBijection:
    """The flow map as a bijection: inverse, jit/vmap, both autodiff modes, the dopri5 solver."""

    def test_is_a_bijection(self):
        assert isinstance(FLOW, Bijection)

    @pytest.mark.parametrize(
        "flow",
        [FLOW, ContinuousFlow(velocity, t1=-1.0), DOPRI],
        ids=["rk4", "rk4-backwards", "dopri5"],
    )
    def test_inverse_of_transform(self, flow):
        """T^-1(T(x)) = x and the log-dets cancel (measured with 32 RK4 steps: 3e-9 and 2e-8,
        backwards 2e-9; dopri5 at tolerance 1e-10: 5e-9 and 4e-9)."""
        z, logdet = jax.vmap(flow.transform_and_log_det)(X)
        x_back, logdet_inv = jax.vmap(flow.inverse_and_log_det)(z)
        np.testing.assert_allclose(x_back, X, atol=1e-7)
        np.testing.assert_allclose(logdet + logdet_inv, 0.0, atol=1e-7)
        assert np.abs(z - X).max() > 0.1  # it does move the points

    def test_jit_and_vmap_equal_eager(self):
        z, logdet = jax.jit(jax.vmap(FLOW.transform_and_log_det))(X)
        for i, x in enumerate(X):
            z_i, logdet_i = FLOW.transform_and_log_det(jnp.asarray(x))
            np.testing.assert_allclose(z[i], z_i, rtol=1e-13)
            np.testing.assert_allclose(logdet[i], logdet_i, rtol=1e-13, atol=1e-15)

    def test_forward_and_reverse_mode_agree(self):
        """grad and jacfwd of a scalar of (z, log|det J|) agree (measured 7e-16 relative)."""
        x = jnp.asarray(X[0])
        forward = jax.jit(jax.jacfwd(partial(phi, FLOW)))(x)
        np.testing.assert_allclose(GRAD_PHI[FLOW](x), forward, rtol=1e-12)

    def test_dopri5(self):
        """dopri5 (rtol = atol = 1e-10) equals RK4 with 32 steps up to RK4's error (measured
        6e-8), and so does its grad (reverse mode, 1e-8); on a grid not starting at t0,
        delta_t = M_t^T delta_0 (2e-9); jacfwd through it is a ValueError."""
        dopri, rk4 = (jax.vmap(f.transform_and_log_det)(X) for f in (DOPRI, FLOW))
        for a, b in zip(dopri, rk4, strict=True):
            np.testing.assert_allclose(a, b, atol=5e-7)
        x = jnp.asarray(X[0])
        np.testing.assert_allclose(GRAD_PHI[DOPRI](x), GRAD_PHI[FLOW](x), atol=5e-7)
        tr = DOPRI.trajectory(jnp.asarray(X[2]), [0.5, 1.0], delta0=jnp.ones(D), jacobian=True)
        assert isinstance(tr, Trajectory) and tr.score is None and tr.J.shape == (2, D, D)
        delta = jnp.linalg.solve(jnp.swapaxes(tr.J, -1, -2), jnp.ones((2, D, 1)))[..., 0]
        np.testing.assert_allclose(tr.delta, delta, atol=1e-8)
        with pytest.raises(ValueError, match="reverse-mode derivatives only"):
            jax.jacfwd(partial(phi, DOPRI))(x)

    def test_flow_diffusion(self):
        """``FlowDiffusion(FLOW)`` (jacfwd through the solver, Lemma 3.1) gives the latent
        points and the score ODE's scores (measured 1e-6: the RK4 error at 32 steps)."""
        from numpyro_dsd import FlowDiffusion

        s_p = jax.vmap(jax.grad(log_p))(X)
        ode = jax.vmap(lambda p, s: FLOW.trajectory(p, score0=s, log_det=False))(X, s_p)
        features = FlowDiffusion(FLOW).features(jnp.asarray(X), s_p)
        np.testing.assert_allclose(features.x, ode.z[:, -1], atol=1e-12)
        np.testing.assert_allclose(features.b, ode.score[:, -1], atol=1e-5)


def test_dtype_follows_input():
    """Without x64 everything stays float32."""
    flow = ContinuousFlow(lambda z, t: jnp.tanh(z) - z)
    z, logdet = flow.transform_and_log_det(jnp.ones(2))
    assert z.dtype == logdet.dtype == jnp.float32
    x = jnp.ones((4, 2))
    path = dsm_path(flow, x, -x, jnp.zeros_like(x))
    assert path.D.dtype == path.D_dot.dtype == path.t.dtype == jnp.float32


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ContinuousFlow(velocity, t1=0.0), "t1 equals t0"),
        (lambda: ContinuousFlow(velocity, solver="euler"), "solver must be one of"),
        (lambda: ContinuousFlow(velocity, num_steps=0), "num_steps must be a positive int"),
        (lambda: ContinuousFlow(velocity, t1=np.inf), "t1 must be finite"),
        (lambda: ContinuousFlow("v"), "needs a callable"),
        (
            lambda: ContinuousFlow(lambda z, t: z[:2]).transform_and_log_det(jnp.ones(3)),
            r"must return a \(3,\) velocity",
        ),
        (
            lambda: ContinuousFlow(velocity).transform_and_log_det(jnp.ones((2, 3))),
            "one point of shape",
        ),
        (
            lambda: ContinuousFlow(lambda z, t: z**2).transform_and_log_det(2.0 * jnp.ones(1)),
            "NaN or inf.*raise num_steps",
        ),
        (
            lambda: ContinuousFlow(velocity).trajectory(jnp.ones(3), [0.0, 1.0, 0.5]),
            "strictly from t0",
        ),
        (
            lambda: ContinuousFlow(velocity).trajectory(jnp.ones(3), delta0=jnp.ones(2)),
            r"delta0 must have shape \(3,\)",
        ),
        (
            lambda: dsm_path(
                ContinuousFlow(velocity), jnp.ones((4, 3)), jnp.ones((4, 2)), jnp.ones((4, 3))
            ),
            "scores_q: scores must have the shape",
        ),
        (lambda: dsm_path(velocity, jnp.ones((4, 3)), *2 * [jnp.ones((4, 3))]), "ContinuousFlow"),
    ],
    ids=[
        "empty-interval",
        "solver",
        "num-steps",
        "infinite-time",
        "not-callable",
        "velocity-shape",
        "batch-to-bijection",
        "blow-up",
        "grid-order",
        "delta0-shape",
        "score-shape",
        "not-a-flow",
    ],
)
def test_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()
