"""Bad input to the Stein layer (issue 17, items 2, 3, 4 and the Stein parts of 11): every call
either returns the right finite value or raises a ``ValueError``/``TypeError`` that names the
argument, the problem and the fix. Never a silent NaN, never a silent perfect fit."""

from __future__ import annotations

import pickle
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpyro.distributions.transforms import AffineTransform

from numpyro_dsd import (
    IMQ,
    Constant,
    FlowDiffusion,
    Gaussian,
    PositionDependent,
    ksd,
    ksd_squared,
    stein_matrix,
)
from numpyro_dsd.stein.thinning import thin_indices

OVERFLOW = r"overflows in float32.*jax_enable_x64"


def _draws(n: int = 40, d: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def _scaled_m(p: jax.Array) -> jax.Array:
    """A module-level (picklable) position-dependent M(x)."""
    return (1.0 + p @ p) ** 0.5 * jnp.eye(p.shape[0])


# --- item 2: compute in at least float32, detect overflow --------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    """float16 overflowed at a data scale of about 300 (squared distances > 65504): NaN."""
    x = _draws() * 300.0
    xh, sh = jnp.asarray(x, dtype), jnp.asarray(-x / 300.0**2, dtype)  # draws of N(0, 300^2 I)
    value = ksd(xh, sh)
    assert value.dtype == jnp.float32
    expected = ksd(np.asarray(xh, np.float32), np.asarray(sh, np.float32))
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    assert np.isfinite(value)


def test_float32_overflow_names_the_cause():
    """At a data scale of 1e19 float32 squares overflow: the median heuristic reported "the
    median pairwise distance is 0" and a fixed bandwidth returned NaN."""
    x = (_draws() * 1e19).astype(np.float32)
    with pytest.raises(ValueError, match="median pairwise distance of the points " + OVERFLOW):
        ksd(x, -x / 1e38)
    with pytest.raises(ValueError, match="KSD of x and scores " + OVERFLOW):
        ksd(x, np.ones_like(x), kernel=IMQ())
    with pytest.raises(ValueError, match=OVERFLOW):
        stein_matrix(x[:5], np.ones_like(x[:5]), kernel=IMQ())
    with pytest.raises(ValueError, match=OVERFLOW):
        thin_indices(x, np.ones_like(x), 3, kernel=IMQ())


def test_overflowing_scores_are_reported():
    x = _draws().astype(np.float32)
    with pytest.raises(ValueError, match="x and scores " + OVERFLOW):
        ksd(x, 1e20 * x)
    with pytest.raises(ValueError, match="x and scores " + OVERFLOW):
        ksd_squared(x, 1e20 * x, statistic="u")


def test_overflow_in_float64_says_rescale(x64):
    x = _draws() * 1e160
    with pytest.raises(ValueError, match="overflows in float64.*rescale the data") as info:
        ksd(x, np.ones_like(x), kernel=IMQ())
    assert "jax_enable_x64" not in str(info.value)


def test_cast_to_float32_overflow_is_not_called_nan():
    """Finite 1e150 float64 draws with x64 off were reported as "NaN or inf"."""
    x = _draws()
    with pytest.raises(ValueError, match="^x " + OVERFLOW):
        ksd(x * 1e150, -x)
    with pytest.raises(ValueError, match="^scores " + OVERFLOW):
        ksd(x, -x * 1e150)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="x contains NaN or inf.*row 3"):
        ksd(x, np.ones_like(x))


def test_integer_draws_use_the_default_float():
    x = np.arange(10).reshape(5, 2)
    value = ksd(x, -x)
    assert value.dtype == jnp.result_type(float)
    np.testing.assert_allclose(value, ksd(x.astype(np.float32), -x.astype(np.float32)))


# --- item 3: degenerate settings raise instead of reporting KSD = 0 ----------------------------


@pytest.mark.parametrize(
    "M", [np.zeros((2, 2)), np.ones((2, 2)), np.diag([1.0, 1e-20])], ids=["zero", "rank1", "cond"]
)
def test_singular_constant_raises(M):
    with pytest.raises(ValueError, match=r"Constant\(M\): M is singular.*invertible"):
        Constant(M)


def test_invertible_constant_still_works():
    x = _draws()
    assert float(ksd(x, -x, diffusion=Constant(np.array([[1.0, 0.3], [0.0, 0.5]])))) > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"c": np.inf}, r"IMQ\(c=...\) must be finite"),
        ({"beta": -np.inf}, r"IMQ\(beta=...\) must be finite"),
        ({"c": np.nan}, r"IMQ\(c=...\) must be finite"),
        ({"beta": np.nan}, r"IMQ\(beta=...\) must be finite"),
    ],
)
def test_non_finite_imq_parameters_raise(kwargs, match):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # beta=-inf used to warn and then return NaN
        with pytest.raises(ValueError, match=match):
            IMQ(**kwargs)


def test_position_dependent_zero_matrix_raises():
    x = _draws()
    with pytest.raises(ValueError, match=r"M\(x\) at 40 of 40 points.*singular \(rank 0 of 2\)"):
        ksd(x, -x, diffusion=PositionDependent(lambda p: jnp.zeros((2, 2))))


def test_position_dependent_singular_at_one_point_names_the_row():
    x = _draws()
    x[5, 0] = 0.0
    diffusion = PositionDependent(lambda p: jnp.diag(jnp.array([1.0, p[0]])))
    with pytest.raises(ValueError, match=r"at 1 of 40 points \(first at row 5\).*rank 1 of 2"):
        ksd(x, -x, diffusion=diffusion)


@pytest.mark.parametrize("c", [1e30, 1e-30])
def test_kernel_degenerate_in_float32_is_not_a_perfect_fit(c):
    """IMQ(c=1e30) in float32: c**2 overflows, every kernel value is 0, and the KSD was 0;
    with c=1e-30 it underflows and the KSD was inf."""
    x = _draws()
    with pytest.raises(ValueError, match=r"kernel IMQ\(c=1e.30.*degenerate in float32.*c\*\*2"):
        ksd(x, -x, kernel=IMQ(c=c))


# --- item 4: complex input and nested lists -----------------------------------------------------


def test_complex_input_is_refused():
    x = _draws()
    with pytest.raises(TypeError, match=r"^x is complex.*x\.real"):
        ksd(x + 1j, -x)
    with pytest.raises(TypeError, match=r"^scores is complex"):
        ksd(x, -x + 0j)
    with pytest.raises(TypeError, match=r"^weights is complex"):
        ksd(x, -x, weights=np.full(40, 1 / 40, dtype=complex))
    with pytest.raises(TypeError, match=r"Constant\(M\): M is complex"):
        Constant(np.eye(2) + 0j)
    with pytest.raises(TypeError, match="bandwidth matrix is complex"):
        IMQ(bandwidth=np.eye(2) + 0j)


def test_nested_lists_are_accepted():
    x = [[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]
    s = [[-0.0, -1.0], [-1.0, -0.0], [-2.0, -2.0]]
    np.testing.assert_allclose(ksd(x, s), ksd(np.array(x), np.array(s)), rtol=1e-6)


def test_bad_nested_lists_do_not_print_the_data():
    ragged = [[123.456, 1.0], [2.0]] * 50
    with pytest.raises(ValueError, match="x must be a rectangular numeric array") as info:
        ksd(ragged, ragged)
    assert "123.456" not in str(info.value)
    deep = [[[123.456, 1.0]]] * 50
    with pytest.raises(ValueError, match=r"x must be a 2-D.*shape \(50, 1, 2\)") as info:
        ksd(deep, deep)
    assert "123.456" not in str(info.value)
    good = [[123.456, 1.0]] * 50
    with pytest.raises(ValueError, match="scores must be a rectangular") as info:
        ksd(good, ragged)
    assert "123.456" not in str(info.value)
    with pytest.raises(TypeError, match="x must be a real numeric array.*dtype <U") as info:
        ksd([["123.456", "a"]] * 3, good[:3])
    assert "123.456" not in str(info.value)


# --- item 11 (Stein layer): errors that name the parameter --------------------------------------


@pytest.mark.parametrize("block_size", [1.5, True, "8", np.float64(16.0)])
def test_block_size_must_be_an_integer(block_size):
    x = _draws()
    with pytest.raises(TypeError, match="^block_size must be a positive integer"):
        ksd(x, -x, block_size=block_size)


def test_block_size_accepts_numpy_integers():
    x = _draws()
    np.testing.assert_allclose(ksd(x, -x, block_size=np.int64(8)), ksd(x, -x), rtol=1e-6)
    with pytest.raises(ValueError, match="^block_size must be a positive integer; got 0"):
        ksd(x, -x, block_size=0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"c": "1"}, "c"),
        ({"c": None}, "c"),
        ({"c": np.array([1.0, 2.0])}, "c"),
        ({"c": True}, "c"),
        ({"beta": "-0.5"}, "beta"),
        ({"beta": 1j}, "beta"),
    ],
)
def test_imq_parameter_types(kwargs, name):
    with pytest.raises(TypeError, match=rf"^IMQ\({name}=...\) must be a real number"):
        IMQ(**kwargs)


def test_imq_accepts_numpy_and_zero_d_parameters():
    k = IMQ(c=np.float32(2.0), beta=jnp.asarray(-0.5))
    assert k.profile == (2.0, -0.5)
    assert isinstance(k.profile.c, float)


@pytest.mark.parametrize("kernel", [IMQ, Gaussian])
@pytest.mark.parametrize(
    "bandwidth, error, match",
    [
        (np.full((2, 2), np.nan), ValueError, "bandwidth matrix contains NaN or inf"),
        (np.array([[1.0, np.inf], [np.inf, 1.0]]), ValueError, "contains NaN or inf"),
        (2.0, ValueError, r"square \(d, d\).*s \* jnp.eye\(d\)"),
        ({"a": 1}, TypeError, "bandwidth matrix must be a real numeric array"),
        (np.eye(2).astype(object), TypeError, "bandwidth matrix must be a real numeric array"),
    ],
)
def test_bad_bandwidth_matrix_is_named(kernel, bandwidth, error, match):
    """A NaN bandwidth matrix (the old ``precond``) was reported as "must be symmetric"."""
    with pytest.raises(error, match=match):
        kernel(bandwidth=bandwidth)


def test_nan_constant_matrix_is_not_called_asymmetric():
    with pytest.raises(ValueError, match=r"Constant\(M\): M contains NaN or inf"):
        Constant(np.full((2, 2), np.nan))


def test_flow_diffusion_pickles():
    x = _draws(10)
    for flow in (
        FlowDiffusion(AffineTransform(0.0, jnp.array([2.0, 0.5])), record={"steps": 3}),
        FlowDiffusion.from_generator(AffineTransform(1.0, jnp.array([2.0, 0.5])), batch_size=4),
    ):
        copy = pickle.loads(pickle.dumps(flow))
        assert (copy.method, copy.record, copy.batch_size) == (
            flow.method,
            flow.record,
            flow.batch_size,
        )
        np.testing.assert_allclose(ksd(x, -x, diffusion=copy), ksd(x, -x, diffusion=flow))


@pytest.mark.slow
def test_fitted_flow_diffusion_pickles():
    """A fitted flow's transforms close over its networks; its diffusion pickles through the
    ``FittedFlow`` (plain arrays)."""
    from numpyro_dsd.flows.fitting import fit_flow_to_samples

    x = _draws(100)
    diffusion = fit_flow_to_samples(x, num_steps=2, progress_bar=False).flow.diffusion({"k": 1})
    copy = pickle.loads(pickle.dumps(diffusion))
    assert copy.settings() == diffusion.settings()
    np.testing.assert_allclose(ksd(x, -x, diffusion=copy), ksd(x, -x, diffusion=diffusion))


def test_position_dependent_pickles():
    x = _draws(10)
    diffusion = PositionDependent(_scaled_m)
    copy = pickle.loads(pickle.dumps(diffusion))
    np.testing.assert_allclose(ksd(x, -x, diffusion=copy), ksd(x, -x, diffusion=diffusion))


# --- property: any bad input gives a finite value or an error naming an argument ---------------

_ARGUMENTS = re.compile(r"\b(x|scores|weights|block_size|statistic|kernel|bandwidth)\b")
_VALUES = st.sampled_from([0.0, 1.0, -2.5, 300.0, 1e19, 1e30, 1e150, np.nan, np.inf, -np.inf])
_DTYPES = st.sampled_from(
    [np.float64, np.float32, np.float16, jnp.bfloat16, np.int32, np.bool_, np.complex64, "list"]
)


@st.composite
def _array(draw: st.DrawFn, shape: tuple[int, ...]) -> object:
    """A random array of ``shape`` (sometimes another shape), dtype and values."""
    if draw(st.integers(0, 5)) == 0:
        shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    base = np.random.default_rng(draw(st.integers(0, 2**16))).normal(size=shape)
    scale = draw(st.sampled_from([1.0, 1.0, 300.0, 1e19, 1e150]))
    values = base * scale
    if values.size and draw(st.booleans()):
        flat = values.reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = draw(_VALUES)
    dtype = draw(_DTYPES)
    if dtype == "list":
        return values.tolist()
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(values).astype(dtype)


@st.composite
def _ksd_call(draw: st.DrawFn) -> dict[str, object]:
    n, d = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    kwargs: dict[str, object] = {"x": draw(_array((n, d))), "scores": draw(_array((n, d)))}
    if draw(st.booleans()):
        kwargs["weights"] = draw(_array((n,)))
    kwargs["kernel"] = draw(
        st.sampled_from(
            [None, IMQ(), IMQ(bandwidth="smpcov"), Gaussian(bandwidth="med"), IMQ(c=1e-30)]
        )
    )
    kwargs["statistic"] = draw(st.sampled_from(["v", "v", "u", "u", "w", None]))
    kwargs["block_size"] = draw(st.sampled_from([None, None, None, 8, 0, 1.5]))
    return kwargs


def _finite_or_named_error(fn, kwargs: dict[str, object]) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # float64 requested with x64 off
            value = fn(**kwargs)
    except (ValueError, TypeError) as err:
        assert _ARGUMENTS.search(str(err)), f"{type(err).__name__} names no argument: {err}"
        assert len(str(err)) < 600, f"message too long: {err}"
    else:
        assert np.isfinite(np.asarray(value)).all(), f"non-finite value {value} from {kwargs}"


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples in every run: CI is reproducible
    suppress_health_check=[HealthCheck.too_slow],
)
@given(call=_ksd_call())
def test_ksd_bad_input_property(call):
    """ksd, ksd_squared and stein_matrix: a finite value or a ValueError/TypeError naming an
    argument, for random shapes, dtypes (float16, bfloat16, int, bool, complex, nested lists),
    non-finite and overflowing values, weights, statistics and tile sizes."""
    _finite_or_named_error(ksd, call)
    _finite_or_named_error(ksd_squared, call)
    _finite_or_named_error(stein_matrix, {k: call[k] for k in ("x", "scores", "kernel")})
