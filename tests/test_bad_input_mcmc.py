"""Bad input to the MCMC layer (issue 17, items 1, 10 and 11): every case either gives the right
answer or a clear ``ValueError``/``TypeError`` naming the argument, and a property test feeds
``ksd_diagnostic`` and ``stein_thin`` random bad shapes, dtypes and non-finite values."""

from __future__ import annotations

import logging
import re
import warnings

import jax
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpyro.infer import MCMC, NUTS

from numpyro_dsd import ksd_diagnostic, ksd_test, ksd_trace, stein_summary, stein_thin
from numpyro_dsd.arviz import (
    add_diagnostics,
    from_stein_inputs,
    get_group,
    plot_ksd,
    plot_ksd_trace,
)
from numpyro_dsd.mcmc.bootstrap import sign_process
from numpyro_dsd.mcmc.diagnostic import diagnose_draws
from numpyro_dsd.mcmc.inputs import resolve_draws, with_stein_inputs
from numpyro_dsd.mcmc.prefix import prefix_points
from numpyro_dsd.stein.diffusion import Identity
from numpyro_dsd.vocabulary import rng_key_or_default

matplotlib.use("Agg")
pytestmark = pytest.mark.arviz

FAST = {"num_bootstrap": 100, "num_prefixes": 3}


def model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def other(y=None):
    """Another model of the same sites: a prior that puts mu near 5, far from the data's mean."""
    mu = numpyro.sample("mu", dist.Normal(5.0, 0.1))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def needs_data(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).normal(size=20)


@pytest.fixture(scope="module")
def run(data):
    """NUTS with the gradients recorded (``z_grad``), 2 chains."""
    m = MCMC(
        NUTS(model),
        num_warmup=100,
        num_samples=150,
        num_chains=2,
        progress_bar=False,
        chain_method="sequential",
    )
    m.run(jax.random.key(0), data, extra_fields=("z_grad",))
    return m


@pytest.fixture(scope="module")
def samples(run):
    return {k: np.asarray(v) for k, v in run.get_samples(group_by_chain=True).items()}


@pytest.fixture(scope="module")
def diagnostic(run):
    return ksd_diagnostic(run, **FAST)


# --- item 1: a model or arguments given are used, not NUTS's recorded gradients -----------------


def test_given_model_or_arguments_are_used_not_the_recorded_z_grad(run, samples, data):
    own = ksd_diagnostic(run, **FAST)
    with_other = ksd_diagnostic(run, model=other, **FAST)
    shifted = ksd_diagnostic(run, model_args=(data + 10,), **FAST)
    values = [float(ds.ksd_pooled) for ds in (own, with_other, shifted)]
    assert len(set(values)) == 3, values
    # each equals the diagnostic of the same draws with scores computed from what was given
    for ds, (m, args) in ((with_other, (other, (data,))), (shifted, (model, (data + 10,)))):
        expected = ksd_diagnostic(samples, m, args, **FAST)
        np.testing.assert_allclose(ds.ksd.values, expected.ksd.values, rtol=1e-4)
        np.testing.assert_allclose(float(ds.ksd_pooled), float(expected.ksd_pooled), rtol=1e-4)
    assert float(with_other.pvalue_pooled) < 0.05 < float(own.pvalue_pooled)


def test_the_mcmc_own_model_and_arguments_keep_its_gradients(run, samples, data):
    """Passing the MCMC's own model and argument objects is the same as passing nothing."""
    own = resolve_draws(run)
    again = resolve_draws(run, model, run._args)
    np.testing.assert_array_equal(own.scores, again.scores)
    recomputed = resolve_draws(samples, model, (data,))
    np.testing.assert_allclose(own.scores, recomputed.scores, rtol=1e-3, atol=1e-3)


def test_stein_thin_uses_the_given_model(run, samples, data):
    a = stein_thin(run, other, num_points=5, check=False)
    b = stein_thin(samples, other, (data,), num_points=5, check=False)
    np.testing.assert_array_equal(a.indices, b.indices)


def test_stored_stein_inputs_give_way_to_a_given_model(run, samples, data):
    """ArviZ data holding a ``stein_inputs`` group of one model, diagnosed with another model:
    the other model's scores are used (as for an MCMC's ``z_grad``), not the stored ones."""
    stored = with_stein_inputs(run)
    own = resolve_draws(stored)
    np.testing.assert_allclose(
        own.scores, resolve_draws(samples, model, (data,)).scores, rtol=1e-3, atol=1e-3
    )
    given = resolve_draws(stored, other, (data,))
    np.testing.assert_array_equal(given.scores, resolve_draws(samples, other, (data,)).scores)
    assert not np.allclose(given.scores, own.scores)


# --- item 10: the model's arguments, the plots' input, flat draws, one chain ------------------


def test_forgotten_model_args_are_named(samples):
    with pytest.raises(ValueError, match=r"without arguments.*model_args"):
        ksd_diagnostic(samples, model, **FAST)
    with pytest.raises(TypeError, match=r"model_args.*needs_data.*'y'"):
        ksd_diagnostic(samples, needs_data, **FAST)


def test_draws_of_another_model_are_named(samples, data):
    def renamed(y=None):
        theta = numpyro.sample("theta", dist.Normal(0.0, 10.0))
        numpyro.sample("y", dist.Normal(theta, 1.0), obs=y)

    with pytest.raises(ValueError, match=r"data lacks the latent site\(s\) 'theta'.*has 'mu'"):
        ksd_diagnostic(samples, renamed, (data,), **FAST)


@pytest.mark.parametrize("args", ["array", "scalar", "dict"])
def test_model_args_that_are_not_a_tuple(samples, data, args):
    value = {"array": data, "scalar": 1.0, "dict": {"y": data}}[args]
    with pytest.raises(TypeError, match=r"model_args must be a tuple.*model_args=\(y,\)"):
        ksd_diagnostic(samples, model, value, **FAST)
    with pytest.raises(TypeError, match=r"model_args must be a tuple"):
        stein_thin(samples, model, value, num_points=3)


def test_model_args_as_a_list_and_kwargs_that_are_not_a_mapping(samples, data):
    by_list = resolve_draws(samples, model, [data])
    by_tuple = resolve_draws(samples, model, (data,))
    np.testing.assert_array_equal(by_list.scores, by_tuple.scores)
    with pytest.raises(TypeError, match=r"model_kwargs must be a dict"):
        ksd_diagnostic(samples, model, (), [("y", data)], **FAST)


@pytest.mark.parametrize("plot", [plot_ksd, plot_ksd_trace])
def test_plots_of_arviz_data(run, diagnostic, plot):
    import arviz as az

    idata = az.from_numpyro(run)
    with pytest.raises(ValueError, match=r"no `stein_diagnostics` group.*ksd_diagnostic.*add_"):
        plot(idata)
    with pytest.raises(ValueError, match=r"ds.*not a ksd_diagnostic result"):
        plot(get_group(idata, "posterior"))
    with pytest.raises(TypeError, match=r"ds must be"):
        plot({"ksd": [0.1]})
    assert plot(add_diagnostics(idata, diagnostic)) is not None
    import matplotlib.pyplot as plt

    plt.close("all")


def test_stein_summary_of_arviz_data(run, diagnostic):
    import arviz as az

    idata = add_diagnostics(az.from_numpyro(run), diagnostic)
    table = stein_summary(idata)  # the group, and the posterior beside it
    expected = stein_summary(diagnostic, idata)
    assert table.equals(expected)
    with pytest.raises(ValueError, match=r"no `stein_diagnostics` group"):
        stein_summary(az.from_numpyro(run))


def test_flat_draws_warn_that_they_are_one_chain(run, data):
    flat = {k: np.asarray(v) for k, v in run.get_samples().items()}  # 2 chains, no chain axis
    with pytest.warns(UserWarning, match=r"no chain axis.*one chain of 300.*group_by_chain=True"):
        draws = resolve_draws(flat, model, (data,))
    assert draws.x.shape == (1, 300, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_draws({k: v[None] for k, v in flat.items()}, model, (data,))  # one chain: silent


def test_sites_that_disagree_on_the_chain_axes(data):
    def two():
        numpyro.sample("a", dist.Normal(0.0, 1.0))
        numpyro.sample("b", dist.Normal(0.0, 1.0).expand([3]).to_event(1))

    rng = np.random.default_rng(0)
    mixed = {"a": rng.normal(size=(2, 20)), "b": rng.normal(size=(40, 3))}
    with pytest.raises(ValueError, match=r"data.*disagree.*'a': \(2, 20\).*'b': \(40,\)"):
        ksd_diagnostic(mixed, two, **FAST)
    wrong = {"a": rng.normal(size=(2, 20)), "b": rng.normal(size=(2, 20, 4))}
    with pytest.raises(ValueError, match=r"data\['b'\] has shape \(2, 20, 4\).*\(3,\)"):
        ksd_diagnostic(wrong, two, **FAST)
    deep = {"a": rng.normal(size=(2, 2, 20)), "b": rng.normal(size=(2, 2, 20, 3))}
    with pytest.raises(ValueError, match=r"data.*\(chains, draws, \.\.\.\).*group_by_chain=True"):
        ksd_diagnostic(deep, two, **FAST)


def test_one_chain_summary_is_silent(samples, data, caplog):
    one = {k: v[:1] for k, v in samples.items()}
    ds = ksd_diagnostic(one, model, (data,), **FAST)
    idata = with_stein_inputs(one, model, (data,))  # the posterior group: one chain
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error")
        table = stein_summary(ds, idata)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert np.isnan(table.loc["pooled", "r_hat_max"])
    assert np.isfinite(table["ess_bulk_min"]).all()


# --- item 11: counts, keys and chain lengths --------------------------------------------------


def _draws(samples, n):
    return {k: v[:, :n] for k, v in samples.items()}


BAD_COUNTS = [(1.5, TypeError), ("100", TypeError), (True, TypeError), (0, ValueError)]


@pytest.mark.parametrize(("value", "error"), BAD_COUNTS)
def test_counts_are_checked_and_named(samples, data, value, error):
    few = _draws(samples, 20)
    calls = {
        "num_bootstrap": lambda v: ksd_diagnostic(few, model, (data,), num_bootstrap=v),
        "num_prefixes": lambda v: ksd_diagnostic(few, model, (data,), num_prefixes=v),
        "num_points": lambda v: stein_thin(few, model, (data,), num_points=v, check=False),
    }
    for name, call in calls.items():
        with pytest.raises(error, match=rf"{name} must be a positive integer"):
            call(value)
    x = np.random.default_rng(0).normal(size=(40, 2))
    with pytest.raises(error, match=r"num_bootstrap must be a positive integer"):
        ksd_test(x, -x, num_bootstrap=value)
    with pytest.raises(error, match=r"num_bootstrap must be a positive integer"):
        sign_process(jax.random.key(0), 10, value, 0.5)
    with pytest.raises(error, match=r"num_draws must be a positive integer"):
        sign_process(jax.random.key(0), value, 10, 0.5)
    with pytest.raises(error, match=r"num_prefixes must be a positive integer"):
        prefix_points(100, value)
    with pytest.raises(error, match=r"prefixes must be a positive integer"):
        ksd_trace(x, -x, prefixes=value)


def test_deprecated_count_names_are_checked_under_the_new_name(samples, data):
    few = _draws(samples, 20)
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="num_bootstrap"):
        ksd_diagnostic(few, model, (data,), n_boot=1.5)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="num_prefixes"):
        ksd_diagnostic(few, model, (data,), trace_points=0)


@pytest.mark.parametrize(
    ("key", "error", "what"),
    [
        (0, TypeError, "int"),
        (1.5, TypeError, "float"),
        ("0", TypeError, "str"),
        (np.zeros(3, np.uint32), ValueError, r"shape \(3,\)"),
        (np.zeros(2, np.float32), TypeError, "float32"),
        ("batch", ValueError, r"shape \(2,\)"),
    ],
)
def test_rng_key_is_checked_and_named(samples, data, key, error, what):
    if isinstance(key, str) and key == "batch":
        key = jax.random.split(jax.random.key(0))
    few = _draws(samples, 20)
    x = np.random.default_rng(0).normal(size=(40, 2))
    calls = [
        lambda: rng_key_or_default(key),
        lambda: ksd_diagnostic(few, model, (data,), rng_key=key, **FAST),
        lambda: stein_thin(few, model, (data,), num_points=3, rng_key=key),
        lambda: ksd_test(x, -x, num_bootstrap=10, rng_key=key),
    ]
    for call in calls:
        with pytest.raises(error, match=rf"rng_key must be a JAX random key.*{what}"):
            call()


def test_legacy_keys_are_accepted():
    key, record = rng_key_or_default(jax.random.PRNGKey(3))
    assert record == "key_data [0, 3] (given)"


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("alpha", 1.5, r"alpha must lie in \(0, 1\)"),
        ("min_ess", -1.0, "min_ess must be >= 0"),
        ("kappa", 0.5, "kappa must be 'auto' or a number >= 1"),
        ("kappa", "slow", "kappa must be 'auto' or a number >= 1"),
        ("flip_prob", 0.7, r"flip_prob must be 'auto' or a number in \(0, 0.5\]"),
        ("flip_prob", "fast", r"flip_prob must be 'auto' or a number in \(0, 0.5\]"),
    ],
)
def test_test_options_are_checked_before_any_work(samples, data, option, value, match):
    few = _draws(samples, 20)
    with pytest.raises(ValueError, match=match):
        ksd_diagnostic(few, model, (data,), **{option: value}, **FAST)


@pytest.mark.parametrize("n", [2, 3, 7])
def test_chains_too_short_for_the_diagnostic(samples, data, n):
    short = _draws(samples, n)
    for test in (True, False):
        with pytest.raises(ValueError, match=rf"at least 8 draws.*got {n}.*num_samples"):
            ksd_diagnostic(short, model, (data,), test=test, **FAST)
    with pytest.raises(ValueError, match=rf"at least 8 draws.*got {n}.*check=False"):
        stein_thin(short, model, (data,), num_points=2)


def test_the_shortest_chains_accepted(samples, data):
    """8 draws per chain for the diagnostic; Stein thinning without the check takes 2."""
    assert ksd_diagnostic(_draws(samples, 8), model, (data,), **FAST).sizes["chain"] == 2
    thinned = stein_thin(_draws(samples, 2), model, (data,), num_points=2, check=False)
    assert thinned.x.shape == (2, 1)


def test_diagnose_draws_checks_its_chains(samples, data):
    draws = resolve_draws(_draws(samples, 3), model, (data,))
    with pytest.raises(ValueError, match=r"at least 8 draws"):
        diagnose_draws(draws, Identity(), **FAST)


# --- property test: random bad arrays ----------------------------------------------------------


def vector_model():
    numpyro.sample("theta", dist.Normal(0.0, 1.0).expand([2]).to_event(1))


#: Names of the arguments of ksd_diagnostic / stein_thin, or of the parts of ``data`` (the
#: kernel's: all-equal points leave the median-distance bandwidth undefined).
ARGUMENTS = re.compile(r"\b(data|x|score|scores|num_points|model|model_args|kernel)\b")

DTYPES = ["float32", "float64", "int32", "bool", "complex64", "<U3", "object"]
SHAPES = [(), (5,), (2, 9), (2, 9, 2), (1, 9, 2), (3, 8, 1), (2, 0, 2), (2, 9, 0), (2, 9, 3)]
SHAPES += [(2, 2, 9, 2), (2, 3)]


@st.composite
def bad_arrays(draw: st.DrawFn, n: int = 1) -> list[np.ndarray]:
    """``n`` arrays of one random shape and dtype from a continuous random law, some entries
    NaN or +-inf."""
    shape = draw(st.sampled_from(SHAPES))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    out = []
    for _ in range(n):
        a = rng.normal(size=shape) * draw(st.sampled_from([1.0, 1e3]))
        if dtype == "int32":  # mostly distinct values
            a = np.round(a * 1e3)
        if dtype == "bool":
            a = a > 0
        if a.size and draw(st.booleans()):
            bad = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            a.flat[draw(st.integers(0, a.size - 1))] = bad
        if dtype == "object":
            out.append(a.astype(object))
        else:
            with np.errstate(invalid="ignore"):
                out.append(a.astype(dtype))
    return out


def check_outcome(call) -> None:
    """``call()`` returns a result whose KSD is finite or raises a ValueError/TypeError that
    names an argument."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # flat draws: "treated as one chain"
            result = call()
    except (ValueError, TypeError) as err:
        assert ARGUMENTS.search(str(err)), f"{type(err).__name__} names no argument: {err}"
        return
    if isinstance(result, xr.Dataset):
        values = [result.ksd, result.ksd_pooled, result.pvalue_pooled]
    else:
        values = [result.ksd]
    assert all(np.all(np.isfinite(np.asarray(v, dtype=float))) for v in values), result


PROPERTY = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples in every run: CI is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.slow
@PROPERTY
@given(arrays=bad_arrays(n=1))
def test_ksd_diagnostic_and_stein_thin_on_bad_draws(arrays):
    """A dict of draws with the model: every outcome finite or a named error."""
    draws = {"theta": arrays[0]}
    check_outcome(lambda: ksd_diagnostic(draws, vector_model, num_bootstrap=20, num_prefixes=2))
    check_outcome(lambda: stein_thin(draws, vector_model, num_points=3, check=False))


@pytest.mark.slow
@PROPERTY
@given(arrays=bad_arrays(n=2))
def test_ksd_diagnostic_and_stein_thin_on_bad_stein_inputs(arrays):
    """Unconstrained draws and scores stored as ``stein_inputs`` (no model): every outcome
    finite or a named error, also when the group is written by hand (a file edited elsewhere)."""
    x, scores = arrays
    check_outcome(lambda: ksd_diagnostic(from_stein_inputs(x, scores), num_bootstrap=20))
    check_outcome(lambda: stein_thin(from_stein_inputs(x, scores), num_points=3, check=False))
    if np.ndim(x) == 3:
        dims = ("chain", "draw", "stein_dim")
        group = xr.Dataset({"x": (dims, x), "score": (dims, scores)})
        like = from_stein_inputs(np.zeros((1, 8, 1)), np.zeros((1, 8, 1)))
        stored = add_diagnostics(like, group, group="stein_inputs")
        check_outcome(lambda: ksd_diagnostic(stored, num_bootstrap=20))
