"""The Nyström KSD (numpyro_dsd.stein.nystrom; docs/scale.md): exact when every point is an
inducing point, a projection that never exceeds the V-statistic, its error at the default m,
the Nyström bootstrap against the dense one, and its argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_dsd import IMQ, Constant, PositionDependent, ksd, ksd_squared
from numpyro_dsd.mcmc.bootstrap import (
    ksd_test,
    memory_series,
    nystrom_bootstrap,
    sign_process,
    wild_bootstrap,
)
from numpyro_dsd.stein.engine import prepare
from numpyro_dsd.stein.nystrom import (
    default_num_inducing,
    inducing_matvec,
    nystrom,
    nystrom_squared,
    projected_quadratic,
)

DIFFUSIONS = {
    "identity": None,
    "constant": Constant(np.array([[1.0, 0.0, 0.0], [0.3, 0.8, 0.0], [0.0, -0.2, 1.5]])),
    "position": PositionDependent(lambda p: jnp.eye(3) * (1.0 + 0.1 * jnp.tanh(p @ p))),
}


def _draws(n: int = 300, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).standard_t(5, size=(n, d))
    return x, -x * (6 / 5) / (1 + x**2 / 5)  # scores of a product of t(5)... at 1.2 x scale


@pytest.mark.parametrize("name", DIFFUSIONS)
def test_every_point_inducing_gives_the_v_statistic(x64, name):
    x, s = _draws()
    exact = ksd_squared(x, s, diffusion=DIFFUSIONS[name])
    ny = ksd_squared(x, s, diffusion=DIFFUSIONS[name], estimator="nystrom", num_inducing=300)
    np.testing.assert_allclose(ny, exact, rtol=1e-7)


def test_inducing_matvec_is_the_dense_product(x64):
    x, s = _draws(257)
    sk = prepare(x, s)
    idx = jnp.array([0, 5, 17, 100, 256])
    w = np.random.default_rng(1).choice([-1, 1], size=(257, 4)).astype(np.int8)
    dense = sk.matrix()[idx] @ w.astype(np.float64)
    np.testing.assert_allclose(inducing_matvec(sk, idx, w, block_size=64), dense, rtol=1e-12)


def test_projection_never_exceeds_v_and_the_diagonal_closes_the_gap(x64):
    x = np.random.default_rng(2).normal(size=(3000, 4))
    sk = prepare(x, -x)
    w = jnp.full(3000, 1 / 3000)
    exact = float(w @ sk.matrix() @ w)
    errors = []
    for seed in range(20):
        ny = nystrom(sk, jax.random.key(seed), 200)
        proj = float(projected_quadratic(ny, inducing_matvec(sk, ny.indices, w[:, None]))[0])
        assert proj <= exact * (1 + 1e-9)
        errors.append((proj / exact - 1, float(nystrom_squared(sk, ny, w)) / exact - 1))
    errors = np.array(errors)
    # i.i.d. draws: the diagonal is most of V; the projection alone misses much of it (about
    # 5.5% here), and the sampled gap of the diagonal (64 rows) puts it back without bias: the
    # mean error over the 20 inducing sets within 3 standard errors of 0, the spread a third.
    assert np.all(errors[:, 0] < -0.03)
    corrected = errors[:, 1]
    assert abs(np.mean(corrected)) < 3 * np.std(corrected, ddof=1) / np.sqrt(len(corrected))
    assert np.mean(np.abs(corrected)) < np.mean(np.abs(errors[:, 0])) / 3


def test_default_m_error_on_a_biased_chain(x64):
    # an AR(1) rho = 0.9 chain 10% too wide: KSD well above n^{-1/2}
    rng = np.random.default_rng(3)
    n, d = 8000, 5
    x, e = np.zeros((n, d)), rng.standard_normal((n, d))
    for i in range(1, n):
        x[i] = 0.9 * x[i - 1] + np.sqrt(0.19) * e[i]
    x *= 1.1
    exact = float(ksd(x, -x))
    vals = [float(ksd(x, -x, estimator="nystrom", rng_key=jax.random.key(k))) for k in range(3)]
    assert default_num_inducing(n) == 358
    assert np.all(np.abs(np.array(vals) / exact - 1) < 0.03)


def test_same_key_same_value_other_key_other_inducing_points():
    x, s = _draws(500)
    a = ksd(x, s, estimator="nystrom", num_inducing=50, rng_key=jax.random.key(1))
    b = ksd(x, s, estimator="nystrom", num_inducing=50, rng_key=jax.random.key(1))
    c = ksd(x, s, estimator="nystrom", num_inducing=50, rng_key=jax.random.key(2))
    assert float(a) == float(b) and float(a) != float(c)


def test_nystrom_bootstrap_with_every_point_is_the_dense_bootstrap(x64):
    x, s = _draws(400)
    sk = prepare(x, s, kernel=IMQ().frozen(x))
    signs = sign_process(jax.random.key(3), 400, 60, 0.1)
    dense = wild_bootstrap(sk, signs, method="dense")
    ny = nystrom_bootstrap(sk, nystrom(sk, jax.random.key(0), 400), signs)
    np.testing.assert_allclose(ny.statistic, dense.statistic, rtol=1e-7)
    np.testing.assert_allclose(ny.replicates, dense.replicates, rtol=1e-6)
    assert float(ny.pvalue) == float(dense.pvalue)
    full = nystrom(sk, jax.random.key(0), 400)
    np.testing.assert_allclose(
        memory_series(sk, x, nystrom=full), memory_series(sk, x), rtol=1e-6, atol=1e-10
    )


def test_nystrom_test_rejects_a_wide_chain_and_records_its_key():
    x = np.random.default_rng(4).normal(size=(2, 1500, 3))
    good = ksd_test(x, -x, num_bootstrap=200, estimator="nystrom")
    bad = ksd_test(1.3 * x, -1.3 * x, num_bootstrap=200, estimator="nystrom")
    assert float(good.pvalue) > 0.01 and float(bad.pvalue) < 0.01
    assert good.rng_key.endswith("split into (signs, inducing points)")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"estimator": "fast"}, "estimator must be 'exact' or 'nystrom'"),
        ({"num_inducing": 10}, "num_inducing=10 is used only by estimator='nystrom'"),
        ({"estimator": "nystrom", "statistic": "u"}, "use statistic='v'"),
        ({"estimator": "nystrom", "num_inducing": 0}, "num_inducing"),
    ],
)
def test_bad_estimator_arguments_are_named(kwargs, match):
    x, s = _draws(50)
    with pytest.raises(ValueError, match=match):
        ksd_squared(x, s, **kwargs)


def _normal_model():
    import numpyro
    import numpyro.distributions as dist

    numpyro.sample("mu", dist.Normal(0.0, 1.0).expand([3]).to_event(1))


def test_diagnostic_with_every_point_inducing_has_the_exact_ksd_and_curve(x64):
    from numpyro_dsd import ksd_diagnostic

    draws = {"mu": np.random.default_rng(0).normal(size=(2, 300, 3))}
    opts = {"num_bootstrap": 200, "progress_bar": False}
    exact = ksd_diagnostic(draws, _normal_model, **opts)
    ny = ksd_diagnostic(draws, _normal_model, estimator="nystrom", num_inducing=600, **opts)
    np.testing.assert_allclose(ny.ksd, exact.ksd, rtol=1e-6)
    np.testing.assert_allclose(ny.ksd_trace, exact.ksd_trace, rtol=1e-6)
    np.testing.assert_allclose(ny.ksd_pooled, exact.ksd_pooled, rtol=1e-6)
    # the rest of the verdict is the same computation; the bootstrap's signs come from another
    # key (split off beside the inducing points), so its p-values agree within Monte Carlo error
    for name in ("pvalue_stationarity", "pvalue_moments", "flip_prob"):
        np.testing.assert_allclose(ny[name], exact[name], rtol=1e-6)
    p, b = exact.pvalue.values, opts["num_bootstrap"]
    assert np.all(np.abs(ny.pvalue.values - p) <= 3 * np.sqrt(2 * p * (1 - p) / b) + 2 / b)
    assert (ny.attrs["estimator"], ny.attrs["num_inducing"]) == ("nystrom", 300)
    assert ny.attrs["num_inducing_pooled"] == 600
    assert ny.attrs["rng_key"].endswith("(flow fit, bootstrap signs, inducing points)")


def test_diagnostic_nystrom_fails_the_shifted_chain():
    from numpyro_dsd import ksd_diagnostic

    x = np.random.default_rng(1).normal(size=(2, 2000, 3))
    x[1] += 0.5
    ds = ksd_diagnostic(
        {"mu": x}, _normal_model, num_bootstrap=200, progress_bar=False, estimator="nystrom"
    )
    assert list(ds.verdict.values) == ["pass", "fail"] and ds.verdict_pooled == "fail"
    assert ds.attrs["num_inducing"] == default_num_inducing(2000)


@pytest.mark.parametrize("estimator", ["exact", "nystrom"])
def test_untested_pooled_ksd_is_the_ksd_of_all_draws(x64, estimator):
    from numpyro_dsd import ksd_diagnostic
    from numpyro_dsd.stein.kernels import default_kernel

    x = np.random.default_rng(5).normal(size=(3, 200, 3))
    x[2] += 0.4  # a pooled KSD that differs from the first chain's
    extra = {"num_inducing": 600} if estimator == "nystrom" else {}
    ds = ksd_diagnostic(
        {"mu": x}, _normal_model, test=False, progress_bar=False, estimator=estimator, **extra
    )
    flat = x.reshape(-1, 3)
    pooled = ksd(flat, -flat, kernel=default_kernel().frozen(flat))
    np.testing.assert_allclose(ds.ksd_pooled, pooled, rtol=1e-6)
