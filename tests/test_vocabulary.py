"""One vocabulary (numpyro_dsd.vocabulary): every renamed argument still works for one release,
warns, and gives the same result as its new name; the new names do not warn; every KSD entry
point has the one default kernel; results record the key they used."""

from __future__ import annotations

import ast
import contextlib
import inspect
import pickle
import warnings
from pathlib import Path

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from numpyro_dsd import (
    IMQ,
    Gaussian,
    ksd,
    ksd_diagnostic,
    ksd_squared,
    ksd_test,
    ksd_trace,
    stein_matrix,
    stein_thin,
    thin_indices,
    vocabulary,
)
from numpyro_dsd.mcmc.bootstrap import sign_process
from numpyro_dsd.mcmc.diagnostic import diagnose_draws
from numpyro_dsd.mcmc.inputs import resolve_diffusion, resolve_draws
from numpyro_dsd.mcmc.prefix import prefix_points
from numpyro_dsd.stein import kernels
from numpyro_dsd.stein.diffusion import Identity
from numpyro_dsd.stein.engine import prepare
from numpyro_dsd.stein.kernels import bandwidth_matrix, default_kernel, svgd_kernel
from numpyro_dsd.stein.thinning import greedy_stein

RENAMED = r"deprecated and will be removed in the next release"


@contextlib.contextmanager
def no_renamed_warning():
    """Fail on any of the package's own deprecation warnings inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=f".*{RENAMED}.*", category=DeprecationWarning)
        yield


def deprecated(old: str, new: str):
    return pytest.warns(DeprecationWarning, match=rf"'{old}' is {RENAMED}; use '{new}'")


def model():
    numpyro.sample("mu", dist.Normal(0.0, 1.0).expand([2]).to_event(1))


@pytest.fixture(scope="module")
def draws():
    return {"mu": np.random.default_rng(0).normal(size=(2, 120, 2))}


@pytest.fixture(scope="module")
def points():
    x = np.random.default_rng(1).normal(size=(200, 2)) * [1.0, 3.0]
    return x, -x / np.array([1.0, 9.0])


def same_dataset(a, b):
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert a.ksd_trace.dims == b.ksd_trace.dims
    np.testing.assert_array_equal(a["prefix"].values, b["prefix"].values)


# --- the module itself --------------------------------------------------------------------------


def test_vocabulary_imports_nothing_from_the_package():
    tree = ast.parse(Path(vocabulary.__file__).read_text())
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ] + [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [m for m in imported if m and m.startswith("numpyro_dsd")], imported


def test_renamed_arguments_refuses_both_names():
    with pytest.raises(TypeError, match="pass 'num_bootstrap' only"):
        ksd_test(np.zeros((10, 1)), np.zeros((10, 1)), n_boot=5, num_bootstrap=5)
    with pytest.raises(TypeError, match="pass 'bandwidth' only"):
        IMQ(precond="med", bandwidth="med")


def test_signatures_show_only_the_new_names():
    for fn, new in [
        (ksd_diagnostic, ("num_bootstrap", "num_prefixes")),
        (ksd_test, ("num_bootstrap",)),
        (stein_thin, ("num_points",)),
        (thin_indices, ("num_points",)),
        (ksd_trace, ("prefixes",)),
        (IMQ, ("bandwidth",)),
        (Gaussian, ("bandwidth",)),
    ]:
        params = inspect.signature(fn).parameters
        assert set(new) <= set(params), fn
        assert not {"n_boot", "trace_points", "m", "points", "precond"} & set(params), fn
    assert list(inspect.signature(stein_thin).parameters)[:4] == [
        "data",
        "model",
        "model_args",
        "model_kwargs",
    ]


# --- kernels: bandwidth, formerly precond ---------------------------------------------------------


@pytest.mark.parametrize("spec", [None, "med", "sclmed", "smpcov", "svgd", np.diag([2.0, 0.5])])
def test_precond_is_bandwidth(points, spec):
    x, s = points
    for cls in (IMQ, Gaussian):
        with deprecated("precond", "bandwidth"):
            old = cls(precond=spec)
        with no_renamed_warning():
            new = cls(bandwidth=spec)
            np.testing.assert_array_equal(ksd(x, s, kernel=old), ksd(x, s, kernel=new))
            assert repr(old) == repr(new) and "bandwidth=" in repr(new)
            expected = new.bandwidth_matrix(x)
            np.testing.assert_array_equal(bandwidth_matrix(spec, x), expected)
        with deprecated("precondition_matrix", "bandwidth_matrix"):
            np.testing.assert_array_equal(old.precondition_matrix(x), expected)
        with deprecated("precondition_matrix", "bandwidth_matrix"):
            np.testing.assert_array_equal(kernels.precondition_matrix(spec, x), expected)
        with deprecated("precond", "bandwidth"):
            assert old.precond is old.bandwidth


def test_precond_attribute_can_still_be_set(points):
    x, _ = points
    k = IMQ()
    with deprecated("precond", "bandwidth"):
        k.precond = "med"
    assert k.bandwidth == "med" and k.settings()["bandwidth"] == "med"
    with deprecated("precond", "bandwidth"), pytest.raises(ValueError, match="Unknown bandwidth"):
        k.precond = "bogus"


def test_kernels_pickled_with_precond_still_load():
    """A kernel pickled when the bandwidth was the ``precond`` attribute unpickles with it."""
    fresh = pickle.loads(pickle.dumps(IMQ(c=2.0, bandwidth="sclmed")))
    old = IMQ.__new__(IMQ)
    old.__setstate__({"profile": fresh.profile, "precond": "sclmed"})  # the old pickled state
    assert old.bandwidth == fresh.bandwidth == "sclmed" and repr(old) == repr(fresh)


def test_warning_points_at_the_caller():
    with pytest.warns(DeprecationWarning) as caught:
        IMQ(precond="med")
    assert caught[0].filename == __file__


# --- one default kernel --------------------------------------------------------------------------


def test_default_kernels_are_stated_once():
    assert repr(default_kernel()) == "IMQ(c=1.0, beta=-0.5, bandwidth='med')"
    assert repr(svgd_kernel()) == "Gaussian(bandwidth='svgd')"
    assert default_kernel() is not default_kernel()  # a fresh object: freezing one is safe


def test_every_ksd_entry_point_uses_the_default_kernel(points):
    x, s = points
    k = default_kernel()
    with no_renamed_warning():
        np.testing.assert_array_equal(ksd(x, s), ksd(x, s, kernel=k))
        np.testing.assert_array_equal(ksd_squared(x, s), ksd_squared(x, s, kernel=k))
        np.testing.assert_array_equal(
            stein_matrix(x[:20], s[:20]), stein_matrix(x[:20], s[:20], kernel=k)
        )
        assert prepare(x, s).settings == prepare(x, s, kernel=k).settings
        assert prepare(x, s).settings["bandwidth"] == "med"
        a, b = ksd_test(x, s, num_bootstrap=20), ksd_test(x, s, kernel=k, num_bootstrap=20)
        np.testing.assert_array_equal(a.replicates, b.replicates)
        np.testing.assert_array_equal(ksd_trace(x, s).ksd, ksd_trace(x, s, kernel=k).ksd)
        np.testing.assert_array_equal(thin_indices(x, s, 10), thin_indices(x, s, 10, kernel=k))


def test_diagnostic_and_thinning_default_kernel(draws):
    with no_renamed_warning():
        ds = ksd_diagnostic(draws, model, num_bootstrap=20)
        res = stein_thin(draws, model, num_points=5)
    for settings in (ds.attrs, res.settings):
        assert (settings["kernel"], settings["bandwidth"]) == ("IMQ", "med")


# --- renamed arguments of the MCMC layer ----------------------------------------------------------


def test_ksd_diagnostic_renames(draws):
    key = jax.random.key(3)
    with no_renamed_warning():
        new = ksd_diagnostic(draws, model, rng_key=key, num_bootstrap=30, num_prefixes=4)
    with deprecated("n_boot", "num_bootstrap"), deprecated("trace_points", "num_prefixes"):
        old = ksd_diagnostic(draws, model, rng_key=key, n_boot=30, trace_points=4)
    same_dataset(old, new)
    assert old.attrs == new.attrs and new.attrs["num_bootstrap"] == 30
    assert new.ksd_trace.dims == (vocabulary.CHAIN, vocabulary.PREFIX)
    assert new.sizes[vocabulary.PREFIX] == 4


def test_diffusion_precond_is_covariance(draws):
    key = jax.random.key(4)
    with no_renamed_warning():
        new = ksd_diagnostic(draws, model, diffusion="covariance", rng_key=key, num_bootstrap=30)
    with deprecated("precond", "covariance") as caught:
        old = ksd_diagnostic(draws, model, diffusion="precond", rng_key=key, num_bootstrap=30)
    assert caught[0].filename == __file__
    same_dataset(old, new)
    assert old.attrs["diffusion"] == new.attrs["diffusion"] == "covariance"
    resolved = resolve_draws(draws, model)
    with deprecated("precond", "covariance"):
        old_diff = resolve_diffusion("precond", resolved)
    np.testing.assert_array_equal(old_diff.M, resolve_diffusion("covariance", resolved).M)
    with deprecated("precond", "covariance"):
        thinned = stein_thin(draws, model, num_points=5, diffusion="precond")
    with no_renamed_warning():
        expected = stein_thin(draws, model, num_points=5, diffusion="covariance")
    np.testing.assert_array_equal(thinned.indices, expected.indices)


def test_diagnose_draws_renames(draws):
    resolved = resolve_draws(draws, model)
    key = jax.random.key(5)
    with no_renamed_warning():
        new = diagnose_draws(resolved, Identity(), rng_key=key, num_bootstrap=25, num_prefixes=3)
    with deprecated("n_boot", "num_bootstrap"), deprecated("trace_points", "num_prefixes"):
        old = diagnose_draws(resolved, Identity(), rng_key=key, n_boot=25, trace_points=3)
    same_dataset(old, new)


def test_ksd_test_and_sign_process_renames(points):
    x, s = points
    key = jax.random.key(6)
    with no_renamed_warning():
        new = ksd_test(x, s, num_bootstrap=40, rng_key=key)
        w = sign_process(rng_key=key, num_draws=7, num_bootstrap=3, flip_prob=0.2)
    with deprecated("n_boot", "num_bootstrap"):
        old = ksd_test(x, s, n_boot=40, rng_key=key)
    np.testing.assert_array_equal(old.replicates, new.replicates)
    assert old.pvalue == new.pvalue
    with pytest.warns(DeprecationWarning) as caught:
        w_old = sign_process(key=key, n=7, n_boot=3, flip_prob=0.2)
    assert sorted(str(c.message).split("'")[1] for c in caught) == ["key", "n", "n_boot"]
    np.testing.assert_array_equal(w_old, w)


def test_thinning_renames(draws, points):
    x, s = points
    with no_renamed_warning():
        new = thin_indices(x, s, num_points=12)
        new_greedy = greedy_stein(prepare(x, s), num_points=12)[0]
        res = stein_thin(draws, model, num_points=8)
    np.testing.assert_array_equal(new, new_greedy)
    with deprecated("m", "num_points"):
        np.testing.assert_array_equal(thin_indices(x, s, m=12), new)
    with deprecated("m", "num_points"):
        np.testing.assert_array_equal(greedy_stein(prepare(x, s), m=12)[0], new)
    with deprecated("m", "num_points"):
        np.testing.assert_array_equal(stein_thin(draws, model, m=8).indices, res.indices)
    old_order = r"stein_thin\(data, m, model, \.\.\.\) is deprecated"
    for call in (
        lambda: stein_thin(draws, 8, model),
        lambda: stein_thin(draws, 8, model=model),
        lambda: stein_thin(draws, 8, model, ()),
    ):
        with pytest.warns(DeprecationWarning, match=old_order) as caught:
            np.testing.assert_array_equal(call().indices, res.indices)
        assert caught[0].filename == __file__
    with pytest.warns(DeprecationWarning, match=old_order), pytest.raises(TypeError, match="model"):
        stein_thin(draws, 8, model, model=model)
    with pytest.raises(TypeError, match="num_points"):
        stein_thin(draws, model)


def test_ksd_trace_renames(points):
    x, s = points
    with no_renamed_warning():
        new = ksd_trace(x, s, prefixes=5)
        lengths = prefix_points(num_draws=200, num_prefixes=5)
    assert isinstance(new, tuple) and new.prefix is new[0] and new.ksd is new[1]
    np.testing.assert_array_equal(new.prefix, lengths)
    with deprecated("points", "prefixes"):
        old = ksd_trace(x, s, points=5)
    np.testing.assert_array_equal(old.prefix, new.prefix)
    np.testing.assert_array_equal(old.ksd, new.ksd)
    with deprecated("num", "num_prefixes"):
        np.testing.assert_array_equal(prefix_points(200, num=5), lengths)
    m, v = new  # unpacks as before
    assert m.shape == v.shape == (len(lengths),)


# --- the key rule ---------------------------------------------------------------------------------


def test_default_key_is_recorded_and_equals_the_default_seed(draws, points):
    x, s = points
    default = vocabulary.describe_rng_key(None)
    assert default == f"jax.random.key({vocabulary.DEFAULT_SEED}) (default: rng_key=None)"
    explicit = jax.random.key(vocabulary.DEFAULT_SEED)

    ds = ksd_diagnostic(draws, model, num_bootstrap=30)
    again = ksd_diagnostic(draws, model, num_bootstrap=30, rng_key=explicit)
    same_dataset(ds, again)
    assert ds.attrs["rng_key"].startswith(default)
    assert again.attrs["rng_key"].startswith("key_data [0, 0] (given)")

    res = ksd_test(x, s, num_bootstrap=30)
    assert res.rng_key == default
    assert ksd_test(x, s, num_bootstrap=30, rng_key=jax.random.key(9)).rng_key == (
        "key_data [0, 9] (given)"
    )
    np.testing.assert_array_equal(
        res.replicates, ksd_test(x, s, num_bootstrap=30, rng_key=explicit).replicates
    )

    resolved = resolve_draws(draws, model)
    assert diagnose_draws(resolved, Identity(), num_bootstrap=10).attrs["rng_key"] == default
    assert stein_thin(draws, model, num_points=3).settings["rng_key"] == default
    legacy = jax.random.PRNGKey(2)  # raw uint32 keys are recorded too
    assert vocabulary.describe_rng_key(legacy) == "key_data [0, 2] (given)"


def test_one_sub_key_per_purpose(draws):
    """ksd_diagnostic splits its key into (flow fit, bootstrap signs): the signs come from the
    second sub-key, never from the key itself."""
    key = jax.random.key(11)
    ds = ksd_diagnostic(draws, model, rng_key=key, num_bootstrap=40)
    resolved = resolve_draws(draws, model)
    _, k_boot = jax.random.split(key)
    by_subkey = diagnose_draws(resolved, Identity(), rng_key=k_boot, num_bootstrap=40)
    by_key = diagnose_draws(resolved, Identity(), rng_key=key, num_bootstrap=40)
    np.testing.assert_array_equal(ds.pvalue.values, by_subkey.pvalue.values)
    # the statistic over the median replicate is continuous in the signs: p-values (counts out
    # of 41) can coincide under other signs by chance, these cannot
    np.testing.assert_array_equal(ds.ksd_ratio.values, by_subkey.ksd_ratio.values)
    assert not np.any(ds.ksd_ratio.values == by_key.ksd_ratio.values)
    assert ds.attrs["rng_key"].endswith("split into (flow fit, bootstrap signs)")
