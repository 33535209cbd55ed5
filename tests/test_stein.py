"""The diffusion Stein kernel and KSD estimators: docs/math.md §7 oracles 2, 3, 4, 5 and 12,
agreement with stein-thinning, blocked evaluation, weights and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from stein_thinning.kernel import make_precon, vfk0_imq

from numpyro_dsd import (
    IMQ,
    Constant,
    Gaussian,
    Identity,
    PositionDependent,
    ksd,
    ksd_squared,
    stein_matrix,
)
from numpyro_dsd.stein.engine import prepare, stein_kernel_pair

D = 3


def log_p(x):
    """A non-Gaussian target: quartic tails and a correlation."""
    return -0.25 * jnp.sum(x**4) - 0.5 * x @ x - 0.3 * x[0] * x[1]


def m_fn(x):
    """A non-constant, non-symmetric diffusion matrix."""
    d = x.shape[0]
    base = jnp.eye(d) + 0.3 * jnp.outer(jnp.sin(x), jnp.cos(x[::-1]))
    return base * (1.0 + 0.2 * jnp.tanh(x @ x)) + 0.1 * jnp.triu(jnp.ones((d, d)), 1)


def _gamma(d: int) -> np.ndarray:
    a = np.random.default_rng(7).normal(size=(d, d))
    return a @ a.T + d * np.eye(d)


def _autodiff_stein_kernel(kernel, A, x, y):
    """The definition of docs/math.md §2.3:
    (p(x)p(y))^-1 sum_il d_xi d_yl [p(x)p(y)(M(x)M(y)^T)_il k(x,y)]."""

    def F(a, b):
        return jnp.exp(log_p(a) + log_p(b)) * (m_fn(a) @ m_fn(b).T) * kernel(a, b, A)

    def G(a, b):  # G_i = sum_l d_{b_l} F_il
        return jnp.einsum("ill->i", jax.jacfwd(F, 1)(a, b))

    return jnp.trace(jax.jacfwd(G, 0)(x, y)) / jnp.exp(log_p(x) + log_p(y))


@pytest.mark.parametrize(
    "kernel",
    [IMQ(c=0.8, beta=-0.3, bandwidth=_gamma(D)), IMQ(), Gaussian(bandwidth=_gamma(D))],
    ids=["imq-general", "imq-default", "gaussian"],
)
def test_position_dependent_matches_autodiff_definition(x64, kernel):
    """Oracle 2: the boxed closed form, blocked, equals the autodiff double divergence."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, D))
    K = stein_matrix(x, log_prob=log_p, kernel=kernel, diffusion=PositionDependent(m_fn))
    A = kernel.bandwidth_matrix(x)
    pairs = jax.jit(
        jax.vmap(jax.vmap(_autodiff_stein_kernel, (None, None, None, 0)), (None, None, 0, None)),
        static_argnums=0,
    )
    ref = np.asarray(pairs(kernel, A, x, x))
    np.testing.assert_allclose(K, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    # the pair formula (reference implementation) agrees too
    diff = PositionDependent(m_fn)
    s = jax.vmap(jax.grad(log_p))(x)
    f = diff.features(jnp.asarray(x), s)
    pair = stein_kernel_pair(kernel.profile, A, f.x[0], f.x[1], f.b[0], f.b[1], f.M[0], f.M[1])
    np.testing.assert_allclose(pair, ref[0, 1], rtol=1e-10)


@pytest.mark.parametrize("name", ["id", "med", "sclmed", "smpcov"])
@pytest.mark.parametrize("c", [1.0, 1.7])
def test_agrees_with_stein_thinning(x64, name, c):
    rng = np.random.default_rng(1)
    n, d = 120, 4
    x = rng.normal(size=(n, d)) * [1.0, 3.0, 0.3, 1.0] + 2.0
    s = -(x - 2.0) / np.array([1.0, 3.0, 0.3, 1.0]) ** 2 + 0.2 * rng.normal(size=(n, d))
    kernel = IMQ(c=c, bandwidth=None if name == "id" else name)
    ii, jj = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    # stein-thinning writes c where docs/math.md writes c^2
    ref = vfk0_imq(x[ii], x[jj], s[ii], s[jj], make_precon(x, name), c=c**2).reshape(n, n)
    K = stein_matrix(x, s, kernel=kernel)
    np.testing.assert_allclose(K, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    v = ksd_squared(x, s, kernel=kernel, block_size=32)
    np.testing.assert_allclose(v, ref.mean(), rtol=1e-10)


@pytest.mark.parametrize(
    "diffusion",
    [
        Identity(),
        Constant(np.array([[1.0, 0.3, 0.0], [0.0, 0.5, 0.2], [0.1, 0.0, 2.0]])),
        PositionDependent(m_fn),
    ],
    ids=["identity", "constant", "position"],
)
@pytest.mark.parametrize("bandwidth", [None, "med", "smpcov"])
def test_structure(x64, diffusion, bandwidth):
    """Oracle 3: symmetric, positive semi-definite, diagonal formula; V and U from the matrix."""
    x = np.random.default_rng(2).normal(size=(40, D))
    kernel = IMQ(bandwidth=bandwidth)
    K = np.asarray(stein_matrix(x, log_prob=log_p, kernel=kernel, diffusion=diffusion))
    np.testing.assert_allclose(K, K.T, rtol=1e-12, atol=1e-12 * np.abs(K).max())
    assert np.linalg.eigvalsh(K).min() >= -1e-8 * np.abs(K).max()
    sk = prepare(x, log_prob=log_p, kernel=kernel, diffusion=diffusion)
    f = diffusion.features(jnp.asarray(x), jax.vmap(jax.grad(log_p))(x))
    A = kernel.bandwidth_matrix(f.x)
    M = jnp.broadcast_to(jnp.eye(D) if f.M is None else f.M, (40, D, D))
    diag = [  # k0(x, x) = c^{2 beta} |b|^2 - 2 beta c^{2 beta - 2} tr(M^T A M)
        jnp.sum(b**2) + jnp.trace(Mx.T @ A @ Mx) for b, Mx in zip(f.b, M, strict=True)
    ]
    np.testing.assert_allclose(np.diag(K), diag, rtol=1e-12)
    np.testing.assert_allclose(sk.diag, diag, rtol=1e-12)
    n = len(x)
    v = ksd_squared(x, log_prob=log_p, kernel=kernel, diffusion=diffusion, block_size=16)
    u = ksd_squared(x, log_prob=log_p, kernel=kernel, diffusion=diffusion, statistic="u")
    np.testing.assert_allclose(v, K.mean(), rtol=1e-11)
    np.testing.assert_allclose(u, (K.sum() - np.trace(K)) / (n * (n - 1)), rtol=1e-10)
    np.testing.assert_allclose(v, (n - 1) / n * u + np.trace(K) / n**2, rtol=1e-10)


def test_constant_equals_position_dependent_and_cholesky(x64):
    """Oracle 3: Constant(M) = PositionDependent(x -> M) (two code paths) = Constant(chol(MM^T))."""
    rng = np.random.default_rng(3)
    M = rng.normal(size=(D, D)) + 2 * np.eye(D)
    x = rng.normal(size=(50, D))
    for kernel in (IMQ(bandwidth="smpcov"), IMQ(c=0.5, beta=-0.7), Gaussian(bandwidth="med")):
        ref = stein_matrix(x, log_prob=log_p, kernel=kernel, diffusion=Constant(M))
        pos = stein_matrix(
            x, log_prob=log_p, kernel=kernel, diffusion=PositionDependent(lambda _: jnp.asarray(M))
        )
        chol = stein_matrix(
            x, log_prob=log_p, kernel=kernel, diffusion=Constant(np.linalg.cholesky(M @ M.T))
        )
        scale = np.abs(ref).max()
        np.testing.assert_allclose(pos, ref, rtol=1e-10, atol=1e-12 * scale)
        np.testing.assert_allclose(chol, ref, rtol=1e-10, atol=1e-12 * scale)


@pytest.mark.parametrize("n, block", [(1000, 256), (777, 128), (300, 512), (33, 8)])
def test_blocked_sum_equals_gram_matrix(x64, n, block):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(n, D))
    w = rng.uniform(size=n)
    w /= w.sum()
    for diffusion in (Identity(), PositionDependent(m_fn)):
        K = np.asarray(stein_matrix(x, log_prob=log_p, diffusion=diffusion))
        v = ksd_squared(x, log_prob=log_p, diffusion=diffusion, block_size=block, weights=w)
        np.testing.assert_allclose(v, w @ K @ w, rtol=1e-11)


def test_weighted_v_equals_repeated_points(x64):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, D))
    counts = rng.integers(1, 4, size=30)
    rep = np.repeat(x, counts, axis=0)
    v_rep = ksd_squared(rep, log_prob=log_p, kernel=IMQ())
    v_w = ksd_squared(x, log_prob=log_p, kernel=IMQ(), weights=counts / counts.sum())
    np.testing.assert_allclose(v_w, v_rep, rtol=1e-12)
    uniform = np.full(30, 1 / 30)
    np.testing.assert_allclose(
        ksd_squared(x, log_prob=log_p, statistic="u", weights=uniform),
        ksd_squared(x, log_prob=log_p, statistic="u"),
        rtol=1e-12,
    )


def test_u_statistic_unbiased_and_v_bias_under_p(x64):
    """Oracle 4: under q = p = N(mu, Sigma), E U = 0 and E V = E k0(x, x)/n (closed form)."""
    rng = np.random.default_rng(6)
    d, n, reps = 2, 60, 300
    mu = np.array([1.0, -2.0])
    sigma = np.array([[2.0, 0.6], [0.6, 0.5]])
    prec = np.linalg.inv(sigma)
    M = np.array([[1.0, 0.4], [-0.2, 0.8]])
    gamma = np.array([[1.5, 0.2], [0.2, 0.7]])
    kernel, c, beta = IMQ(c=1.3, beta=-0.5, bandwidth=gamma), 1.3, -0.5
    A = np.linalg.inv(gamma)
    expected_diag = c ** (2 * beta) * np.trace(M.T @ prec @ M) - 2 * beta * c ** (
        2 * beta - 2
    ) * np.trace(M.T @ A @ M)
    chol = np.linalg.cholesky(sigma)
    us, vs = [], []
    for _ in range(reps):
        x = mu + rng.normal(size=(n, d)) @ chol.T
        s = -(x - mu) @ prec
        us.append(ksd_squared(x, s, kernel=kernel, diffusion=Constant(M), statistic="u"))
        vs.append(ksd_squared(x, s, kernel=kernel, diffusion=Constant(M)))
    us, vs = np.array(us), np.array(vs)
    assert abs(us.mean()) < 4 * us.std(ddof=1) / np.sqrt(reps)
    assert abs(vs.mean() - expected_diag / n) < 4 * vs.std(ddof=1) / np.sqrt(reps)


def test_ksd_decays_like_root_n_under_p(x64):
    """Oracle 4: the log-log slope of sqrt(V) against n is about -1/2 for exact samples."""
    rng = np.random.default_rng(8)
    ns = np.array([100, 400, 1600, 6400])
    vals = []
    for n in ns:
        x = rng.normal(size=(n, 2))
        vals.append(float(ksd(x, -x, kernel=IMQ())))  # the unit-bandwidth IMQ, fixed across n
    slope = np.polyfit(np.log(ns), np.log(vals), 1)[0]
    assert -0.6 < slope < -0.4


def _ksd2_gaussian_shift(
    kernel_name: str, d: int, delta: np.ndarray, M, sigma, A, c=1.0, beta=-0.5
):
    """Oracle 5: KSD^2 = |M^T Sigma^-1 dmu|^2 E k(x, y), x, y ~ q iid."""
    drift = np.sum((M.T @ np.linalg.solve(sigma, delta)) ** 2)
    if kernel_name == "gaussian":
        return drift / np.sqrt(np.linalg.det(np.eye(d) + 2 * sigma @ A))
    a = A[0, 0]  # isotropic: r^T A r = 2 a W with W ~ chi2_d when Sigma = I
    ek, _ = integrate.quad(lambda w: (c**2 + 2 * a * w) ** beta * stats.chi2.pdf(w, d), 0, np.inf)
    return drift * ek


@pytest.mark.parametrize("kernel_name", ["gaussian", "imq"])
def test_gaussian_mean_shift_closed_form(x64, kernel_name):
    """Oracle 5: U-statistics over replicates average to the closed-form KSD^2 (within 4 SE)."""
    rng = np.random.default_rng(9)
    d, n, reps = 3, 200, 60
    mu_p, delta = np.zeros(d), np.array([0.6, -0.3, 0.2])
    if kernel_name == "gaussian":
        sigma = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.1], [0.0, 0.1, 0.5]])
        gamma = np.diag([0.8, 1.5, 1.2])
        kernel, M = Gaussian(bandwidth=gamma), np.array([[1.0, 0.2, 0], [0, 0.7, 0], [0.3, 0, 1.2]])
        c = beta = None
    else:
        sigma, gamma = np.eye(d), 2.0 * np.eye(d)
        c, beta = 1.2, -0.4
        kernel, M = IMQ(c=c, beta=beta, bandwidth=gamma), np.eye(d)
    A = np.linalg.inv(gamma)
    truth = _ksd2_gaussian_shift(kernel_name, d, -delta, M, sigma, A, c, beta)
    chol, prec = np.linalg.cholesky(sigma), np.linalg.inv(sigma)
    us = []
    for _ in range(reps):
        x = mu_p + delta + rng.normal(size=(n, d)) @ chol.T
        s = -(x - mu_p) @ prec
        us.append(ksd_squared(x, s, kernel=kernel, diffusion=Constant(M), statistic="u"))
    us = np.array(us)
    assert abs(us.mean() - truth) < 4 * us.std(ddof=1) / np.sqrt(reps)
    assert truth > 10 * us.std(ddof=1) / np.sqrt(reps)  # the test can tell truth from zero


def test_detects_bias_and_bounded_away_from_zero(x64):
    """Oracle 14 (as a sanity check of the estimator): larger shift, larger KSD."""
    rng = np.random.default_rng(10)
    x = rng.normal(size=(3000, 2))
    # samples of N(t, I), scores of the target N(0, I): -(x + t)
    vals = [float(ksd(x + t, -(x + t))) for t in (0.0, 0.2, 0.5, 1.0)]
    assert all(a < b for a, b in zip(vals, vals[1:], strict=False))
    assert vals[-1] > 10 * vals[0]


@pytest.mark.parametrize("bandwidth", ["med", "sclmed", None])
def test_invariances(x64, bandwidth):
    """Oracle 12: translation, rotation (isotropic kernel), permutation."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(200, D))
    s = jax.vmap(jax.grad(log_p))(x)
    kernel = IMQ(bandwidth=bandwidth)
    base = ksd(x, s, kernel=kernel)
    shift = rng.normal(size=D) * 5
    np.testing.assert_allclose(ksd(x + shift, s, kernel=kernel), base, rtol=1e-10)
    R, _ = np.linalg.qr(rng.normal(size=(D, D)))
    np.testing.assert_allclose(ksd(x @ R.T, s @ R.T, kernel=kernel), base, rtol=1e-10)
    perm = rng.permutation(200)
    np.testing.assert_allclose(ksd(x[perm], s[perm], kernel=kernel), base, rtol=1e-10)
    # a full-covariance kernel is invariant under translation too
    np.testing.assert_allclose(
        ksd(x + shift, s, kernel=IMQ(bandwidth="smpcov")),
        ksd(x, s, kernel=IMQ(bandwidth="smpcov")),
        rtol=1e-10,
    )


def test_log_prob_equals_scores(x64):
    x = np.random.default_rng(12).normal(size=(50, D))
    s = jax.vmap(jax.grad(log_p))(x)
    np.testing.assert_allclose(ksd(x, log_prob=log_p), ksd(x, s), rtol=1e-14)


def test_float32_close_to_float64(x64):
    rng = np.random.default_rng(13)
    x = rng.normal(size=(3000, 5)) + 100.0  # far from the origin: the centring matters
    s = -(x - 100.0)
    ref = float(ksd(x, s, kernel=IMQ(bandwidth="med")))
    low = ksd(x.astype(np.float32), s.astype(np.float32), kernel=IMQ(bandwidth="med"))
    assert low.dtype == jnp.float32
    assert abs(float(low) - ref) < 1e-4 * ref


def test_default_dtype_follows_jax_config():
    x = np.random.default_rng(14).normal(size=(20, 2))
    assert ksd(x, -x).dtype == jnp.result_type(float)


class TestBadInput:
    x = np.random.default_rng(15).normal(size=(10, 2))

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_non_finite_points(self, bad):
        x = self.x.copy()
        x[3, 1] = bad
        with pytest.raises(
            ValueError, match="x contains NaN or inf in 1 of 10 rows .first at row 3"
        ):
            ksd(x, -self.x)

    def test_non_finite_scores(self):
        s = -self.x.copy()
        s[7, 0] = np.nan
        with pytest.raises(ValueError, match="scores contains NaN or inf.*row 7"):
            ksd(self.x, s)
        with pytest.raises(ValueError, match="scores computed from log_prob"):
            ksd(self.x, log_prob=lambda p: jnp.sum(jnp.sqrt(p)))  # grad nan at p < 0

    def test_shapes(self):
        with pytest.raises(ValueError, match=r"2-D \(n, d\).*x\[:, None\]"):
            ksd(self.x[:, 0], -self.x[:, 0])
        with pytest.raises(ValueError, match=r"grouped by chain.*reshape\(-1, d\)"):
            ksd(self.x.reshape(2, 5, 2), -self.x.reshape(2, 5, 2))
        with pytest.raises(ValueError, match="scores must have the shape of x"):
            ksd(self.x, -self.x[:, :1])
        with pytest.raises(ValueError, match="empty"):
            ksd(np.zeros((0, 2)), np.zeros((0, 2)))

    def test_scores_or_log_prob(self):
        with pytest.raises(ValueError, match="exactly one of scores"):
            ksd(self.x)
        with pytest.raises(ValueError, match="exactly one of scores"):
            ksd(self.x, -self.x, log_prob=lambda p: -p @ p / 2)

    def test_u_needs_two_points(self):
        with pytest.raises(ValueError, match="n >= 2"):
            ksd(self.x[:1], -self.x[:1], statistic="u")
        with pytest.raises(ValueError, match="'v' or 'u'"):
            ksd(self.x, -self.x, statistic="w")

    def test_diffusion_shapes(self):
        with pytest.raises(ValueError, match="square"):
            Constant(np.ones((2, 3)))
        with pytest.raises(ValueError, match="d=2"):
            ksd(self.x, -self.x, diffusion=Constant(np.eye(3)))
        with pytest.raises(ValueError, match=r"\(2, 2\) matrix.*\(3,\)"):
            ksd(self.x, -self.x, diffusion=PositionDependent(lambda p: jnp.ones(3)))
        with pytest.raises(ValueError, match="NaN or inf"):
            Constant(np.array([[1.0, np.nan], [0.0, 1.0]]))
        with pytest.raises(ValueError, match="effective score"):
            ksd(self.x, -self.x, diffusion=PositionDependent(lambda p: jnp.eye(2) * jnp.log(p[0])))

    def test_weights(self):
        with pytest.raises(ValueError, match="sum to one"):
            ksd(self.x, -self.x, weights=np.ones(10))
        with pytest.raises(ValueError, match="shape"):
            ksd(self.x, -self.x, weights=np.ones(3) / 3)
        with pytest.raises(ValueError, match="non-negative"):
            ksd(self.x, -self.x, weights=np.r_[-0.1, 1.1, np.zeros(8)])
        with pytest.raises(ValueError, match="at least two points"):
            ksd(self.x, -self.x, weights=np.r_[1.0, np.zeros(9)], statistic="u")


@pytest.mark.parametrize("bandwidth", [None, "med", "smpcov"])
def test_jit_matches_eager(x64, bandwidth):
    """Under jit the value checks are skipped and the median stays in JAX; same numbers."""
    x = np.random.default_rng(16).normal(size=(300, D))
    kernel = IMQ(bandwidth=bandwidth)
    for diffusion in (Identity(), PositionDependent(m_fn)):
        eager = ksd_squared(x, log_prob=log_p, kernel=kernel, diffusion=diffusion, statistic="u")
        jitted = jax.jit(
            lambda p, k=kernel, m=diffusion: ksd_squared(
                p, log_prob=log_p, kernel=k, diffusion=m, statistic="u"
            )
        )(x)
        np.testing.assert_allclose(jitted, eager, rtol=1e-12)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(2, 70),
    d=st.integers(1, 4),
    block=st.sampled_from([8, 16, 64]),
    seed=st.integers(0, 2**16),
    weighted=st.booleans(),
)
@pytest.mark.slow
def test_blocked_sum_property(x64, n, d, block, seed, weighted):
    """For any point set, tile size and weights: blocked V = w^T K w >= 0, and U from K."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 3.0, size=d)
    s = rng.normal(size=(n, d))
    w = rng.dirichlet(np.ones(n)) if weighted else np.full(n, 1.0 / n)
    K = np.asarray(stein_matrix(x, s, kernel=IMQ(bandwidth="sclmed" if n > 2 else None)))
    kw = {"kernel": IMQ(bandwidth="sclmed" if n > 2 else None), "block_size": block, "weights": w}
    v = float(ksd_squared(x, s, **kw))
    np.testing.assert_allclose(v, w @ K @ w, rtol=1e-10, atol=1e-14 * np.abs(K).max())
    assert v >= -1e-12 * np.abs(K).max()
    u = float(ksd_squared(x, s, statistic="u", **kw))
    off = w @ K @ w - np.sum(w**2 * np.diag(K))
    np.testing.assert_allclose(u, off / (1 - np.sum(w**2)), rtol=1e-9, atol=1e-12 * np.abs(K).max())
