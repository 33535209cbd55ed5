"""Stein thinning at scale (docs/benchmarks.md, "Scale"): the same indices as stein-thinning's
greedy reference at n = 10^4, and 10^5 draws thinned to 10^3 in float32. Timing is the
benchmark's job (benchmarks/scale.py); these tests only check the answers."""

import time

import jax.numpy as jnp
import numpy as np
from stein_thinning.thinning import thin

from numpyro_dsd import IMQ, ksd
from numpyro_dsd.stein.thinning import thin_indices


def anisotropic_draws(n: int, d: int = 10, seed: int = 0, dtype=np.float64):
    """x ~ N(0, diag(sigma^2)), sigma geometric in [0.8, 1.25], scored against N(0, I): a
    slightly wrong target, as in benchmarks/scale.py's thinning runs."""
    rng = np.random.default_rng([seed, n, d])
    x = rng.standard_normal((n, d)) * np.geomspace(0.8, 1.25, d)
    return x.astype(dtype), (-x).astype(dtype)


def test_same_indices_as_stein_thinning_at_ten_thousand(x64):
    """n = 10^4, d = 10, m = 100: the greedy on the blocked engine and stein-thinning's greedy
    (numpy, one full kernel column per step) pick the same sequence, default kernel
    IMQ(bandwidth="med") matched by preconditioner="med" and no standardisation. stein-thinning
    takes about 0.3 s here, ours under 1 s with compilation."""
    x, s = anisotropic_draws(10_000)
    start = time.perf_counter()
    expected = thin(x, s, 100, standardize=False, preconditioner="med")
    assert time.perf_counter() - start < 20.0  # the reference stays affordable at this size
    got = np.asarray(thin_indices(x, s, 100))
    np.testing.assert_array_equal(got, np.asarray(expected).astype(np.int64))


def test_same_indices_sclmed_with_repeats(x64):
    """The "sclmed" bandwidth and m large enough that points repeat (m > distinct picks is
    allowed by the greedy rule): n = 500, m = 700, identical to stein-thinning."""
    x, s = anisotropic_draws(500, d=3, seed=1)
    expected = thin(x, s, 700, standardize=False, preconditioner="sclmed")
    got = np.asarray(thin_indices(x, s, 700, kernel=IMQ(bandwidth="sclmed")))
    np.testing.assert_array_equal(got, np.asarray(expected).astype(np.int64))
    assert np.unique(got).size < got.size


def test_hundred_thousand_to_thousand_float32():
    """10^5 draws -> 10^3 points in float32 (2 to 4 s on 2 cores, compilation included): valid
    int32 indices, and a thinned set far closer to the target than the first or random 10^3."""
    x, _ = anisotropic_draws(100_000, dtype=np.float32)
    x[:20_000] += 1.0  # a burn-in: the first fifth is shifted away from the target
    x, s = jnp.asarray(x), jnp.asarray(-x)
    idx = np.asarray(thin_indices(x, s, 1_000))
    assert idx.shape == (1_000,) and idx.dtype == np.int32
    assert idx.min() >= 0 and idx.max() < 100_000
    assert np.mean(idx < 20_000) < 0.1  # the shifted draws are mostly avoided
    kernel = IMQ(bandwidth="med").frozen(x)

    def ksd_of(rows: np.ndarray) -> float:
        return float(ksd(x[rows], s[rows], kernel=kernel))

    thinned = ksd_of(idx)
    rows = np.random.default_rng(0).choice(100_000, 1_000, replace=False)
    assert np.isfinite(thinned)
    assert thinned < 0.5 * ksd_of(rows)
    assert thinned < 0.2 * ksd_of(np.arange(1_000))
