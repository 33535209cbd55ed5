"""Base kernels: closed forms against autodiff, bandwidths against stein-thinning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stein_thinning.kernel import make_precon

from numpyro_dsd import IMQ, Gaussian
from numpyro_dsd.stein.kernels import bandwidth_matrix, kernel_derivatives


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + d * np.eye(d)


@pytest.mark.parametrize(
    "kernel",
    [IMQ(), IMQ(c=0.7, beta=-0.3), IMQ(c=2.0, beta=-0.9), Gaussian()],
    ids=["imq-default", "imq-c0.7-b-0.3", "imq-c2-b-0.9", "gaussian"],
)
def test_closed_form_derivatives_match_autodiff(x64, kernel):
    rng = np.random.default_rng(1)
    d = 4
    A = np.linalg.inv(_spd(rng, d))
    for _ in range(5):
        x, y = rng.normal(size=d), rng.normal(size=d)
        k, g1, g2, H = kernel_derivatives(kernel, x, y, A)
        f = lambda a, b: kernel(a, b, A)  # noqa: E731
        np.testing.assert_allclose(k, f(x, y), rtol=1e-13)
        np.testing.assert_allclose(g1, jax.grad(f, 0)(x, y), rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(g2, jax.grad(f, 1)(x, y), rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(H, jax.jacfwd(jax.grad(f, 0), 1)(x, y), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["id", "med", "sclmed", "smpcov"])
@pytest.mark.parametrize("n", [50, 1500])
def test_bandwidth_matches_stein_thinning(x64, name, n):
    x = np.random.default_rng(2).normal(size=(n, 3)) * [1.0, 2.0, 0.5] + 4.0
    ours = bandwidth_matrix(None if name == "id" else name, x)
    np.testing.assert_allclose(ours, make_precon(x, name), rtol=1e-10, atol=1e-14)


def test_matrix_bandwidth_is_inverted(x64):
    gamma = _spd(np.random.default_rng(3), 3)
    A = bandwidth_matrix(gamma, np.zeros((5, 3)))
    np.testing.assert_allclose(A @ gamma, np.eye(3), atol=1e-12)


def test_beta_must_be_negative():
    with pytest.raises(ValueError, match="beta < 0"):
        IMQ(beta=0.5)
    with pytest.raises(ValueError, match="beta < 0"):
        IMQ(beta=0.0)
    with pytest.raises(ValueError, match="c > 0"):
        IMQ(c=0.0)


def test_beta_below_minus_one_warns():
    with pytest.warns(UserWarning, match="does not control weak convergence"):
        IMQ(beta=-1.5)


@pytest.mark.parametrize(
    "bandwidth, match",
    [("bogus", "Unknown bandwidth"), (np.ones((2, 3)), "square"), (np.ones(3), "square")],
)
def test_bad_bandwidth_spec(bandwidth, match):
    with pytest.raises(ValueError, match=match):
        IMQ(bandwidth=bandwidth)


def test_bad_bandwidth_values():
    x = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match="positive definite"):
        bandwidth_matrix(np.array([[1.0, 0.0], [0.0, -1.0]]), x)
    with pytest.raises(ValueError, match="symmetric"):
        bandwidth_matrix(np.array([[1.0, 0.5], [0.0, 1.0]]), x)
    with pytest.raises(ValueError, match="d=2"):
        bandwidth_matrix(np.eye(3), x)
    with pytest.raises(ValueError, match="too few unique"):
        bandwidth_matrix("med", np.ones((10, 2)))
    with pytest.raises(ValueError, match="more points than dimensions"):
        bandwidth_matrix("smpcov", x[:2])


def test_settings_describe_the_kernel():
    assert IMQ(c=2.0, bandwidth="med").settings() == {
        "kernel": "IMQ",
        "c": 2.0,
        "beta": -0.5,
        "bandwidth": "med",
    }
    assert Gaussian(bandwidth=np.eye(2)).settings()["bandwidth"] == "matrix"
    assert jnp.isclose(IMQ()(jnp.zeros(2), jnp.ones(2)), 3**-0.5)


def test_traced_median_is_numpy_median():
    from numpyro_dsd.stein.kernels import traced_median

    rng = np.random.default_rng(0)
    fn = jax.jit(traced_median)
    for trial in range(60):
        m = int(rng.integers(1, 80))
        v = rng.normal(size=m) * 10.0 ** rng.integers(-3, 4)
        if trial % 3 == 0:  # ties
            v = rng.integers(0, 4, size=m).astype(float)
        v32 = v.astype(np.float32)
        np.testing.assert_allclose(float(fn(jnp.asarray(v32))), np.median(v32), rtol=1e-6)


def test_traced_median_float64(x64):
    from numpyro_dsd.stein.kernels import traced_median

    v = np.random.default_rng(1).normal(size=4951)
    assert float(jax.jit(traced_median)(jnp.asarray(v))) == np.median(v)
    assert float(jax.jit(traced_median)(jnp.asarray(v[:-1]))) == np.median(v[:-1])
