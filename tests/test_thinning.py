"""Greedy Stein thinning (docs/math.md §2.8): agreement with stein-thinning, the greedy objective,
flow diffusions (Theorem 3.5), position-dependent diffusions against a brute-force greedy on the
Stein matrix, O(n) memory, bad input, and the MCMC-facing wrapper."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions.transforms import AffineTransform, LowerCholeskyAffine
from stein_thinning.thinning import thin

from numpyro_dsd import IMQ, FlowDiffusion, PositionDependent, ksd, stein_matrix
from numpyro_dsd.mcmc.thinning import ThinningResult, stein_thin
from numpyro_dsd.stein.engine import prepare
from numpyro_dsd.stein.kernels import default_kernel
from numpyro_dsd.stein.thinning import _greedy_scan, greedy_stein, thin_indices, thinned_ksd


def gaussian_draws(n: int = 300, d: int = 3, scale: float = 1.3, seed: int = 0):
    """Draws of N(0, scale^2 I) scored against the target N(0, I): a slightly wrong scale."""
    x = scale * np.random.default_rng(seed).standard_normal((n, d))
    return x, -x


def burn_in_chain(n: int = 600, d: int = 2, start: float = 6.0, rho: float = 0.9, seed: int = 1):
    """An AR(1) chain with stationary law N(0, I) started far out, scored against N(0, I)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, d))
    x[0] = start
    for t in range(1, n):
        x[t] = rho * x[t - 1] + np.sqrt(1 - rho**2) * rng.standard_normal(d)
    return x, -x


def m_fn(x):
    """A non-constant, non-symmetric diffusion matrix (as in test_stein)."""
    d = x.shape[0]
    base = jnp.eye(d) + 0.3 * jnp.outer(jnp.sin(x), jnp.cos(x[::-1]))
    return base * (1.0 + 0.2 * jnp.tanh(x @ x)) + 0.1 * jnp.triu(jnp.ones((d, d)), 1)


def brute_force_greedy(K: np.ndarray, m: int) -> np.ndarray:
    """pi_t = argmin_i [K_ii / 2 + sum_{j<t} K_{pi_j, i}] on a full Stein matrix."""
    objective = 0.5 * np.diag(K).copy()
    idx = []
    for _ in range(m):
        i = int(np.argmin(objective))
        idx.append(i)
        objective += K[i]
    return np.array(idx)


@pytest.mark.parametrize("bandwidth", ["id", "med", "sclmed", "smpcov"])
def test_agrees_with_stein_thinning(x64, bandwidth):
    x, s = gaussian_draws()
    expected = thin(x, s, 40, standardize=False, preconditioner=bandwidth)
    kernel = IMQ(c=1.0, beta=-0.5, bandwidth=None if bandwidth == "id" else bandwidth)
    got = thin_indices(x, s, 40, kernel=kernel)
    assert got.shape == (40,)
    np.testing.assert_array_equal(np.asarray(got), expected.astype(np.int64))


def test_default_kernel_is_med(x64):
    """The default is the package's one KSD kernel, default_kernel() = IMQ(bandwidth="med"):
    stein-thinning with preconditioner="med" (its own default is "sclmed")."""
    x, s = gaussian_draws(seed=3)
    expected = thin(x, s, 25, standardize=False, preconditioner="med")
    np.testing.assert_array_equal(np.asarray(thin_indices(x, s, 25)), expected.astype(np.int64))


def test_log_prob_gives_the_same_indices(x64):
    x, s = gaussian_draws(seed=4)
    by_scores = thin_indices(x, s, 20)
    by_log_prob = thin_indices(x, num_points=20, log_prob=lambda p: -0.5 * p @ p)
    np.testing.assert_array_equal(np.asarray(by_scores), np.asarray(by_log_prob))


def test_thinned_set_has_small_ksd(x64):
    """Greedy selection beats the first m draws and random m draws by a wide margin."""
    x, s = burn_in_chain()
    m = 30
    kernel = IMQ(bandwidth="sclmed").frozen(x)

    def ksd_of(idx):
        return float(ksd(x[idx], s[idx], kernel=kernel))

    thinned = ksd_of(np.asarray(thin_indices(x, s, m, kernel=kernel)))
    first = ksd_of(np.arange(m))
    rng = np.random.default_rng(0)
    random = np.mean([ksd_of(rng.choice(len(x), m, replace=False)) for _ in range(5)])
    every_kth = ksd_of(np.arange(0, len(x), len(x) // m)[:m])
    assert thinned < 0.2 * first
    assert thinned < 0.5 * random
    assert thinned < 0.5 * every_kth


def test_gains_give_the_thinned_ksd(x64):
    """sqrt(2/m^2 sum_t g_t) is the V-statistic KSD of the selection (repeats counted)."""
    x, s = burn_in_chain(n=200)
    kernel = IMQ(bandwidth="sclmed").frozen(x)
    idx, gains = greedy_stein(prepare(x, s, kernel=kernel), 40)
    direct = ksd(x[np.asarray(idx)], s[np.asarray(idx)], kernel=kernel)
    np.testing.assert_allclose(float(thinned_ksd(gains)), float(direct), rtol=1e-10)


@pytest.mark.parametrize(
    "transform",
    [
        AffineTransform(jnp.array([0.5, -1.0, 2.0]), jnp.array([3.0, 0.2, 1.0])),
        LowerCholeskyAffine(
            jnp.array([0.5, -1.0, 2.0]),
            jnp.array([[2.0, 0.0, 0.0], [1.5, 0.3, 0.0], [-0.4, 0.8, 1.2]]),
        ),
    ],
    ids=["diagonal", "lower-cholesky"],
)
def test_flow_thinning_is_latent_thinning(x64, transform):
    """Theorem 3.5: with a flow diffusion, thinning x is thinning T(x) with the identity."""
    x, s = burn_in_chain(n=300, d=3)
    transform = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), transform)
    flow = FlowDiffusion(transform)
    z, s_z = flow.latent(jnp.asarray(x), jnp.asarray(s))
    via_flow = np.asarray(thin_indices(x, s, 40, diffusion=flow))
    in_latent = np.asarray(thin_indices(z, s_z, 40))
    np.testing.assert_array_equal(via_flow, in_latent)
    assert via_flow.max() < len(x)  # indices of the original draws
    # the flow changes the answer: the preconditioned geometry is not the identity one
    assert not np.array_equal(via_flow, np.asarray(thin_indices(x, s, 40)))


def test_position_dependent_matches_brute_force(x64):
    x, s = gaussian_draws(n=80, d=3, seed=5)
    diffusion = PositionDependent(m_fn)
    kernel = IMQ(bandwidth="med")
    K = np.asarray(stein_matrix(x, s, kernel=kernel, diffusion=diffusion))
    got = thin_indices(x, s, 30, kernel=kernel, diffusion=diffusion)
    np.testing.assert_array_equal(np.asarray(got), brute_force_greedy(K, 30))


def test_identity_matches_brute_force_with_repeats(x64):
    """m > n is allowed: the greedy then repeats points, exactly as on the full matrix."""
    x, s = gaussian_draws(n=7, d=2, seed=6)
    K = np.asarray(stein_matrix(x, s, kernel=IMQ()))
    got = np.asarray(thin_indices(x, s, 20, kernel=IMQ()))
    np.testing.assert_array_equal(got, brute_force_greedy(K, 20))
    assert len(np.unique(got)) < len(got)


def test_large_n_runs_in_linear_memory():
    """n = 20000: the compiled scan's scratch memory is O(n), far below one n x n matrix."""
    n, d, m = 20000, 2, 5
    x = jax.random.normal(jax.random.key(0), (n, d))
    idx = thin_indices(x, -x, m)
    assert idx.shape == (m,) and int(idx.max()) < n
    sk = prepare(x, -x, kernel=default_kernel())
    compiled = _greedy_scan.lower(sk.tile_fn, sk.feats, sk.consts, sk.diag, m).compile()
    analysis = compiled.memory_analysis()
    if analysis is not None:
        assert analysis.temp_size_in_bytes < 100 * n * 4  # an n x n matrix would be 1.6 GB


@pytest.mark.parametrize(
    "m, error",
    [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError), (None, ValueError)],
)
def test_bad_m(m, error):
    x, s = gaussian_draws(n=10, d=2)
    with pytest.raises(error, match="num_points"):
        thin_indices(x, s, m)


@pytest.mark.parametrize("where", ["x", "scores"])
def test_nan_input(where):
    x, s = gaussian_draws(n=10, d=2)
    (x if where == "x" else s)[3, 1] = np.nan
    with pytest.raises(ValueError, match=rf"{where}.*NaN.*first at row 3"):
        thin_indices(x, s, 4)


def test_shape_mismatch():
    x, s = gaussian_draws(n=10, d=2)
    with pytest.raises(ValueError, match="shape"):
        thin_indices(x, s[:, :1], 4)


# --- the MCMC-facing wrapper (needs numpyro_dsd.mcmc.inputs) --------------------------------------


def _model():
    import numpyro
    import numpyro.distributions as dist

    numpyro.sample("mu", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.sample("sigma", dist.HalfNormal(1.0))


def test_stein_thin_on_a_dict_of_draws():
    pytest.importorskip("numpyro_dsd.mcmc.inputs")
    rng = np.random.default_rng(0)
    chains, draws = 2, 150
    samples = {
        "mu": jnp.asarray(rng.standard_normal((chains, draws, 2)), jnp.float32),
        "sigma": jnp.asarray(np.abs(rng.standard_normal((chains, draws))), jnp.float32),
    }
    res = stein_thin(samples, model=_model, num_points=20)
    assert isinstance(res, ThinningResult)
    assert res.indices.shape == res.chain.shape == res.draw.shape == (20,)
    np.testing.assert_array_equal(res.indices, res.chain * draws + res.draw)
    np.testing.assert_allclose(
        res.samples["mu"], np.asarray(samples["mu"])[res.chain, res.draw], rtol=0
    )
    sigma = np.asarray(samples["sigma"])[res.chain, res.draw]
    np.testing.assert_allclose(res.x[:, 2], np.log(sigma), rtol=1e-5, atol=1e-6)
    assert res.x.shape == (20, 3) and float(res.ksd) > 0
    assert res.settings["bandwidth"] == "med"
    assert res.settings["num_points"] == 20 and res.settings["num_draws"] == chains * draws
    assert res.settings["rng_key"] == "jax.random.key(0) (default: rng_key=None)"


def test_stein_thin_on_mcmc():
    pytest.importorskip("numpyro_dsd.mcmc.inputs")
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(_model), num_warmup=50, num_samples=100, progress_bar=False)
    mcmc.run(jax.random.key(0), extra_fields=("z_grad",))
    res = stein_thin(mcmc, num_points=10)
    assert res.indices.shape == (10,) and set(res.samples) >= {"mu", "sigma"}
    assert res.samples["sigma"].shape == (10,)


def test_stein_thin_bad_m():
    with pytest.raises(ValueError, match="num_points"):
        stein_thin({}, num_points=0)


def test_stein_thin_matches_thin_indices_and_reports_the_ksd(x64):
    """The wrapper thins the chain-flattened unconstrained draws; its KSD is the V-statistic of
    the selection with the kernel resolved on all draws."""
    inputs = pytest.importorskip("numpyro_dsd.mcmc.inputs")
    rng = np.random.default_rng(1)
    samples = {
        "mu": 0.5 + rng.standard_normal((2, 100, 2)),
        "sigma": np.exp(0.3 * rng.standard_normal((2, 100))),
    }
    draws = inputs.resolve_draws(samples, _model)
    x = np.asarray(draws.x).reshape(-1, 3)
    s = np.asarray(draws.scores).reshape(-1, 3)
    flow = FlowDiffusion(AffineTransform(jnp.zeros(3), jnp.array([2.0, 1.0, 0.5])))
    for diffusion in ("identity", flow):
        res = stein_thin(samples, _model, num_points=15, diffusion=diffusion)
        expected = thin_indices(x, s, 15, diffusion=None if diffusion == "identity" else flow)
        np.testing.assert_array_equal(res.indices, expected)
    kernel = default_kernel().frozen(flow.latent(jnp.asarray(x), jnp.asarray(s))[0])
    idx = np.asarray(res.indices)
    direct = ksd(x[idx], s[idx], kernel=kernel, diffusion=flow)
    np.testing.assert_allclose(float(res.ksd), float(direct), rtol=1e-8)


def test_stein_thin_warns_on_draws_that_fail_the_diagnostic():
    """Thinning cannot restore missing mass: biased input draws get a FailedDiagnosticWarning
    naming the reason, good ones none; check=False skips the check."""
    from numpyro_dsd import FailedDiagnosticWarning

    rng = np.random.default_rng(2)
    good = {
        "mu": rng.standard_normal((2, 300, 2)),
        "sigma": np.abs(rng.standard_normal((2, 300))),
    }
    biased = {**good, "mu": good["mu"] + 1.0}  # every draw shifted by one posterior sd
    with pytest.warns(FailedDiagnosticWarning, match="cannot restore mass") as record:
        res = stein_thin(biased, _model, num_points=10)
    assert record[0].filename == __file__  # points at the caller
    assert res.settings["verdict"] == "fail" and "KSD test" in res.settings["reason"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FailedDiagnosticWarning)
        res = stein_thin(good, _model, num_points=10)
        assert res.settings["verdict"] == "pass"
        res = stein_thin(biased, _model, num_points=10, check=False)
    assert res.settings["verdict"] == "not checked"
