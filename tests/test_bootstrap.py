"""Wild-bootstrap KSD test (docs/math.md §2.6): blocked products, replicates, sign process, flip
probability, and a small calibration check (the full study is benchmarks/bootstrap_calibration.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_dsd import IMQ, Constant, PositionDependent, ksd_squared
from numpyro_dsd.mcmc.bootstrap import (
    DEFAULT_KAPPA,
    _jumps_cheaper,
    chain_signs,
    flip_probability,
    ksd_test,
    memory_factor,
    memory_series,
    sign_process,
    stein_row_means,
    wild_bootstrap,
)
from numpyro_dsd.stein.engine import prepare
from numpyro_dsd.stein.tiling import pair_matvec, pair_quadratic_jumps, sign_jumps

KERNEL = IMQ()  # c = 1, beta = -1/2, bandwidth 1 (Gamma = I): frozen


def ar1(rho: float, n: int, d: int, seed: int, reps: int | None = None) -> np.ndarray:
    """Stationary AR(1) chain(s) on N(0, I): (n, d), or (reps, n, d)."""
    rng = np.random.default_rng(seed)
    shape = (n, d) if reps is None else (n, reps, d)
    eps = rng.standard_normal(shape)
    x = np.empty_like(eps)
    x[0] = eps[0]
    for t in range(1, n):
        x[t] = rho * x[t - 1] + np.sqrt(1.0 - rho**2) * eps[t]
    return x if reps is None else np.moveaxis(x, 1, 0)


def m_fn(x):
    """A position-dependent, non-symmetric M(x)."""
    d = x.shape[0]
    return (1.0 + 0.3 * jnp.tanh(x @ x)) * jnp.eye(d) + 0.2 * jnp.outer(jnp.sin(x), x)


def max_rel_err(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# --- blocked products ------------------------------------------------------------------------


@pytest.mark.usefixtures("x64_class")
class TestFloat64:
    """Blocked products and replicates against dense algebra (one float64 switch for all)."""

    @pytest.mark.parametrize(
        "diffusion", [Constant(np.array([[1.2, 0.3], [-0.1, 0.8]])), PositionDependent(m_fn)]
    )
    @pytest.mark.parametrize("block", [8, 12])  # divides n = 40, does not
    def test_pair_matvec_equals_dense(self, diffusion, block):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((40, 2)) * np.array([1.0, 1.5])
        s = -x / np.array([1.0, 2.25]) + 0.1
        sk = prepare(x, s, kernel=KERNEL, diffusion=diffusion)
        K = sk.matrix()
        w = jnp.asarray(rng.standard_normal((40, 5)))
        args = (sk.tile_fn, sk.feats, sk.consts, sk.diag, w)
        devs = tuple(jax.local_devices())
        full = pair_matvec(*args, block=block, devices=devs)
        lower = pair_matvec(*args, block=block, devices=devs, lower=True)
        assert full.dtype == jnp.float64 and full.shape == (40, 5)
        assert max_rel_err(full, K @ w) < 1e-12
        assert max_rel_err(lower, jnp.tril(K, -1) @ w) < 1e-12

    @pytest.mark.parametrize(
        "diffusion", [Constant(np.array([[1.2, 0.3], [-0.1, 0.8]])), PositionDependent(m_fn)]
    )
    @pytest.mark.parametrize("block", [8, 12])  # divides n = 48, does not
    def test_jump_form_equals_dense(self, diffusion, block):
        """Quadratic forms from the sign changes alone (docs/math.md §2.6) against dense algebra:
        three stacked chains' sign processes (changes at chain boundaries too), one column that
        never changes and one that changes at every row."""
        rng = np.random.default_rng(6)
        x = rng.standard_normal((48, 2)) * np.array([1.0, 1.5])
        s = -x / np.array([1.0, 2.25]) + 0.1
        sk = prepare(x, s, kernel=KERNEL, diffusion=diffusion)
        keys = jax.random.split(jax.random.key(7), 3)
        w = np.concatenate([np.asarray(sign_process(k, 16, 20, 0.1)) for k in keys])
        alternating = np.where(np.arange(48) % 2 == 0, 1, -1).astype(np.int8)[:, None]
        w = np.concatenate([np.ones((48, 1), np.int8), w, alternating], axis=1)
        jumps = sign_jumps(w, block)
        assert jumps.num_pairs == np.sum((np.count_nonzero(np.diff(w, axis=0), axis=0) + 1) ** 2)
        args = (sk.tile_fn, sk.feats, sk.consts, sk.diag, jumps)
        q = pair_quadratic_jumps(*args, block=block, devices=tuple(jax.local_devices()))
        dense = np.einsum("ic,ij,jc->c", w, np.asarray(sk.matrix()), w)
        assert q.dtype == jnp.float64 and q.shape == (22,)
        assert max_rel_err(q, dense) < 1e-12

    def test_wild_bootstrap_methods_agree(self):
        rng = np.random.default_rng(8)
        x = rng.standard_normal((60, 2))
        sk = prepare(x, -x * 1.1, kernel=KERNEL)
        signs = sign_process(jax.random.key(9), 60, 40, 0.05)
        dense = wild_bootstrap(sk, signs, block_size=16, method="dense")
        jumps = wild_bootstrap(sk, signs, block_size=16, method="jumps")
        np.testing.assert_allclose(jumps.statistic, dense.statistic, rtol=1e-12)
        np.testing.assert_allclose(jumps.replicates, dense.replicates, rtol=1e-12)
        assert float(jumps.pvalue) == float(dense.pvalue)

    def test_statistic_and_replicates_equal_dense(self):
        rng = np.random.default_rng(1)
        x = rng.standard_normal((40, 2))
        s = -x
        sk = prepare(x, s, kernel=KERNEL)
        signs = sign_process(jax.random.key(2), 40, 30, 0.2)
        res = wild_bootstrap(sk, signs, block_size=12)
        v = ksd_squared(x, s, kernel=KERNEL)
        np.testing.assert_allclose(res.statistic, 40 * v, rtol=1e-12)
        K = np.asarray(sk.matrix())
        w = np.asarray(signs, dtype=np.float64)
        dense = np.einsum("im,ij,jm->m", w, K, w) / 40
        assert res.replicates.shape == (30,)
        np.testing.assert_allclose(res.replicates, dense, rtol=1e-12)


# --- float32 tests share one shape (n = 500 points, 200 replicates): one compilation -----------

N, N_BOOT = 500, 200


def test_pvalue_formula():
    x = np.random.default_rng(3).standard_normal((N, 2)).astype(np.float32)
    for xs in (x, 1.5 * x):  # a null and a badly biased sample
        res = ksd_test(xs, -xs, kernel=KERNEL, num_bootstrap=N_BOOT, flip_prob=0.5)
        expected = (1 + np.sum(np.asarray(res.replicates) >= float(res.statistic))) / (N_BOOT + 1)
        assert float(res.pvalue) == pytest.approx(expected)
        assert 0.0 < float(res.pvalue) <= 1.0
    assert float(res.pvalue) == pytest.approx(1 / (N_BOOT + 1))  # 50% too wide: none reach it


def test_ksd_test_is_prepare_signs_bootstrap():
    """``ksd_test`` = ``chain_signs`` + ``prepare`` on the pooled draws + ``wild_bootstrap``
    (the shortcut benchmarks/bootstrap_calibration.py takes)."""
    x = jnp.asarray(ar1(0.8, N // 4, 2, seed=4, reps=4), dtype=jnp.float32)  # 4 chains
    key = jax.random.key(5)
    res = ksd_test(x, -x, kernel=KERNEL, num_bootstrap=N_BOOT, rng_key=key)
    sk = prepare(x.reshape(-1, 2), -x.reshape(-1, 2), kernel=KERNEL)
    # the pooled Stein row means beside the draws
    series = memory_series(sk, x.reshape(-1, 2)).reshape(4, N // 4, 3)
    signs, probs = chain_signs(key, series, N_BOOT, "auto", DEFAULT_KAPPA)
    ref = wild_bootstrap(sk, signs)
    assert res.flip_prob == probs and len(probs) == 4
    np.testing.assert_allclose(res.replicates, ref.replicates, rtol=1e-5)
    assert float(res.pvalue) == float(ref.pvalue)
    np.testing.assert_allclose(
        res.statistic,
        N * ksd_squared(x.reshape(-1, 2), -x.reshape(-1, 2), kernel=KERNEL),
        rtol=1e-5,
    )


# --- sign process and flip probability ---------------------------------------------------------


@pytest.mark.parametrize("a", [0.5, 0.1, 0.01])
def test_sign_process_lag_one_correlation(a):
    n, n_boot = 20001, 4
    w = np.asarray(sign_process(jax.random.key(6), n, n_boot, a))
    assert w.shape == (n, n_boot)
    assert set(np.unique(w)) == {-1, 1}
    prod = w[1:] * w[:-1]  # i.i.d. +-1 steps with mean 1 - 2a
    se = np.sqrt(4 * a * (1 - a) / prod.size)
    assert abs(prod.mean() - (1 - 2 * a)) < 4 * se


def test_sign_process_columns_independent_and_centred():
    w = np.asarray(sign_process(jax.random.key(7), 2, 4000, 0.5), dtype=float)
    assert abs(w[0].mean()) < 4 / np.sqrt(4000)  # W_1 = +-1 uniformly
    w = np.asarray(sign_process(jax.random.key(8), 200, 2000, 0.05), dtype=float)
    assert abs(np.mean(w[:, 0] * w[:, 1])) < 4 / np.sqrt(200) * 3  # loose: columns independent
    assert abs(np.mean(w[-1])) < 4 / np.sqrt(2000)


@pytest.mark.parametrize("a", [0.0, -0.1, 0.51, 1.0])
def test_sign_process_bad_flip_prob(a):
    with pytest.raises(ValueError, match="flip_prob"):
        sign_process(jax.random.key(0), 10, 2, a)


@pytest.mark.parametrize("kappa", [1.0, 2.0, 4.0])
def test_flip_probability_ar1(kappa):
    rho = 0.9
    x = ar1(rho, 20000, 2, seed=9)
    tau = (1 + rho) / (1 - rho)
    a = flip_probability(np.concatenate([x, -x], axis=1), kappa)
    # a is estimated from the chain's ESS, so this fails if tau (or the min over coordinates
    # of draws and scores) is estimated badly: a should be 1/(2 kappa tau) within 50%.
    assert 1 / 1.5 < a * (2 * kappa * tau) < 1.5


def test_memory_factor_is_andrews_bandwidth():
    """kappa tau = 2^(1/3) (n alpha)^(1/3), alpha = 4 rho^2 / (1 - rho^2)^2 with rho the AR(1)
    coefficient of that tau; about (n / 2 tau)^(1/3) for slow chains; 1 (Rademacher signs) for
    independent draws."""
    for tau, n in [(3.0, 1000), (19.0, 1000), (19.0, 10_000), (199.0, 20_000)]:
        rho = (tau - 1) / (tau + 1)
        alpha = 4 * rho**2 / (1 - rho**2) ** 2
        assert memory_factor(tau, n) * tau == pytest.approx((2 * n * alpha) ** (1 / 3), rel=1e-12)
    assert memory_factor(199.0, 10**6) == pytest.approx((10**6 / (2 * 199.0)) ** (1 / 3), rel=1e-4)
    assert memory_factor(1.0, 10**6) == 1.0
    assert memory_factor(0.5, 100) == 1.0  # tau below 1 (anticorrelated) counts as 1
    ns = [500, 1000, 4000, 10_000, 100_000]
    assert np.all(np.diff([memory_factor(19.0, n) for n in ns]) > 0)


def test_flip_probability_auto_ar1():
    """``kappa="auto"`` (the default) on an AR(1) rho = 0.9 chain of 20,000 draws: a is
    1 / (2 kappa tau) with kappa = memory_factor(tau, n), within the 50% of tau's estimate."""
    rho, n = 0.9, 20000
    x = ar1(rho, n, 2, seed=9)
    tau = (1 + rho) / (1 - rho)
    a = flip_probability(np.concatenate([x, -x], axis=1))
    assert a == flip_probability(np.concatenate([x, -x], axis=1), "auto")
    assert 1 / 1.5 < a * 2 * memory_factor(tau, n) * tau < 1.5
    assert a < flip_probability(np.concatenate([x, -x], axis=1), 3.0)  # kappa about 8 here


def test_flip_probability_iid_and_errors():
    x = np.random.default_rng(10).standard_normal((5000, 3))
    assert 0.4 < flip_probability(x, 1.0) <= 0.5
    assert flip_probability(x, 4.0) == pytest.approx(flip_probability(x, 1.0) / 4)
    with pytest.raises(ValueError, match="at least 8"):
        flip_probability(x[:7])
    with pytest.raises(ValueError, match="kappa"):
        flip_probability(x, 0.5)
    with pytest.raises(ValueError, match="kappa must be 'auto' or a number"):
        flip_probability(x, "fast")


def test_flip_probability_ignores_a_trend():
    """A drift along the chain does not push tau towards n (which would make every sign vector
    constant and the p-value about 1/2): the ESS is taken within the halves."""
    x = ar1(0.5, 2000, 1, seed=11)
    drift = x + np.linspace(0.0, 1.5, 2000)[:, None]
    tau = 3.0  # (1 + rho) / (1 - rho)
    assert flip_probability(drift, 1.0) > 1 / (2 * 3 * tau)


def test_stein_row_means_mean_is_the_v_statistic():
    x = jnp.asarray(ar1(0.5, 300, 2, seed=12))
    sk = prepare(x, -x, kernel=KERNEL)
    h = stein_row_means(sk, block_size=64)
    np.testing.assert_allclose(h, np.asarray(sk.matrix()).mean(axis=1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(jnp.mean(h), ksd_squared(x, -x, kernel=KERNEL), rtol=1e-4)


def test_chain_signs_fixed_flip_prob():
    x = np.zeros((3, 20, 2))
    signs, probs = chain_signs(jax.random.key(0), x, 7, 0.25, DEFAULT_KAPPA)
    assert signs.shape == (60, 7) and probs == (0.25, 0.25, 0.25)


# --- calibration (small; the full study is the benchmark) ----------------------------------------


def rejections(x: np.ndarray, flip_prob, scale: float = 1.0, level: float = 0.05) -> int:
    """How many of the chains x (R, N, d) the test rejects, draws scaled by ``scale`` and scored
    by N(0, I)."""
    count = 0
    for r, xr in enumerate(x):
        xr = (scale * xr).astype(np.float32)
        res = ksd_test(
            xr,
            -xr,
            kernel=KERNEL,
            num_bootstrap=N_BOOT,
            flip_prob=flip_prob,
            rng_key=jax.random.key(r),
        )
        count += int(float(res.pvalue) <= level)
    return count


def test_calibration_ar1_chains():
    """AR(1) rho = 0.9, n = 500 (tau = 19): the automatic sign process holds the level (within
    a 3-SE binomial bound), and the naive i.i.d. signs reject most of the same null chains."""
    R = 80
    x = ar1(0.9, N, 2, seed=11, reps=R)
    bound = 0.05 * R + 3 * np.sqrt(R * 0.05 * 0.95)
    assert rejections(x, "auto") <= bound
    assert rejections(x, 0.5) >= R / 2


def test_power_biased_chains():
    """Chains 30% too wide (AR(1) rho = 0.5, scores of N(0, I)) are rejected in most replicates.
    (With rho = 0.9 and n = 500, about 26 effective draws, 20% too wide is rejected rarely;
    see docs/benchmarks.md.)"""
    R = 20
    assert rejections(ar1(0.5, N, 2, seed=12, reps=R), "auto", scale=1.3) >= 0.8 * R


# --- input checks ------------------------------------------------------------------------------


def test_ksd_test_input_checks():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="shape"):
        ksd_test(x, np.zeros((10, 3)))
    with pytest.raises(ValueError, match="shape"):
        ksd_test(np.zeros((2, 10, 2)), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="shape"):
        ksd_test(np.zeros(10), np.zeros(10))
    for num_bootstrap in (0, -5):
        with pytest.raises(ValueError, match="num_bootstrap"):
            ksd_test(x, -x, num_bootstrap=num_bootstrap)
    sk = prepare(x + np.arange(10)[:, None], -x, kernel=KERNEL)
    with pytest.raises(ValueError, match="signs"):
        wild_bootstrap(sk, jnp.ones((9, 3)))


def test_method_choice_and_bad_method():
    """The jump form is chosen for many replicates of rarely flipping signs (a slowly mixing
    chain), the dense product for i.i.d. signs; an unknown method is refused."""
    slow = np.asarray(sign_process(jax.random.key(10), 20000, 1000, 1 / 1200))
    fast = np.asarray(sign_process(jax.random.key(10), 20000, 1000, 0.5))
    assert _jumps_cheaper(slow) and not _jumps_cheaper(fast)
    x = np.random.default_rng(11).standard_normal((N, 2)).astype(np.float32)
    sk = prepare(x, -x)
    with pytest.raises(ValueError, match="method must be"):
        wild_bootstrap(sk, sign_process(jax.random.key(0), N, 5, 0.5), method="fast")
    with pytest.raises(ValueError, match="flip too often"):  # n^2 / 2 pairs per replicate
        wild_bootstrap(sk, sign_process(jax.random.key(0), N, 5, 0.5), method="jumps")
