"""ArviZ containers: Stein inputs, diagnostics groups, netCDF round trips, the summary table.

Runs against whichever ArviZ line is installed (0.x InferenceData or 1.x DataTree)."""

import importlib.util

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from numpyro_dsd import arviz as arviz_io
from numpyro_dsd.arviz import (
    add_diagnostics,
    add_stein_inputs,
    arviz_1,
    convert,
    from_stein_inputs,
    is_inference_data,
    load,
    posterior_dict,
    read_stein_inputs,
    save,
    stein_summary,
)

needs_netcdf4 = pytest.mark.skipif(
    not any(importlib.util.find_spec(m) for m in ("h5netcdf", "netCDF4")),
    reason="netCDF-4 groups need h5netcdf (with h5py) or netCDF4 installed",
)

N_CHAIN, N_DRAW, D = 3, 60, 4


def _posterior(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "mu": rng.normal(size=(N_CHAIN, N_DRAW)),
        "theta": rng.normal(size=(N_CHAIN, N_DRAW, 3)),
    }


def _diagnostic() -> xr.Dataset:
    m = np.array([10, 20, 40, N_DRAW])
    trace = np.stack([m**-0.5, np.full(m.size, 0.4), 2 * m**-0.5])
    return xr.Dataset(
        {
            "ksd": ("chain", trace[:, -1]),
            "pvalue": ("chain", [0.6, 0.001, 0.2]),
            "n": ("chain", np.full(N_CHAIN, N_DRAW)),
            "ksd_pooled": 0.15,
            "pvalue_pooled": 0.004,
            "ksd_trace": (("chain", "prefix"), trace),
        },
        coords={"chain": np.arange(N_CHAIN), "prefix": m},
        attrs={
            "kernel": "IMQ",
            "c": 1.0,
            "beta": -0.5,
            "diffusion": "Identity",
            "bandwidth": "med",
            "num_bootstrap": 200,
        },
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def data(rng: np.random.Generator):
    return convert._from_posterior(_posterior(rng))


@pytest.fixture
def stein(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(N_CHAIN, N_DRAW, D))
    return x, -x


def test_container_type_matches_line(data) -> None:
    assert is_inference_data(data)
    assert isinstance(data, xr.DataTree) == arviz_1()
    assert not is_inference_data(xr.Dataset())


def test_posterior_dict_shapes_and_copies(data) -> None:
    post = posterior_dict(data)
    assert {k: v.shape for k, v in post.items()} == {
        "mu": (N_CHAIN, N_DRAW),
        "theta": (N_CHAIN, N_DRAW, 3),
    }
    post["mu"][:] = 0.0
    assert not np.all(posterior_dict(data)["mu"] == 0.0)


def test_posterior_dict_without_posterior_raises(stein) -> None:
    with pytest.raises(ValueError, match="posterior"):
        posterior_dict(from_stein_inputs(*stein))


def test_non_container_raises() -> None:
    with pytest.raises(TypeError, match="InferenceData or xarray.DataTree"):
        posterior_dict({"mu": np.zeros((1, 2))})


def test_add_stein_inputs_new_object(data, stein) -> None:
    x, s = stein
    new = add_stein_inputs(data, x, s, site_names=("mu", "theta"))
    assert type(new) is type(data)
    assert read_stein_inputs(data) is None  # input untouched
    ds = arviz_io.get_group(new, "stein_inputs")
    assert ds["x"].dims == ("chain", "draw", "stein_dim")
    assert ds.attrs == {"site_names": "mu,theta", "space": "unconstrained"}
    post = arviz_io.get_group(new, "posterior")
    np.testing.assert_array_equal(ds["chain"], post["chain"])
    np.testing.assert_array_equal(ds["draw"], post["draw"])
    xs, scores, names = read_stein_inputs(new)
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_array_equal(scores, s)
    assert names == ("mu", "theta")


def test_add_stein_inputs_copies_arrays(data, stein) -> None:
    x, s = stein
    new = add_stein_inputs(data, x, s)
    x[:] = 0.0
    assert not np.all(read_stein_inputs(new)[0] == 0.0)
    assert read_stein_inputs(new)[2] == ()


def test_stein_inputs_shape_checks(stein) -> None:
    x, s = stein
    with pytest.raises(ValueError, match="same shape"):
        from_stein_inputs(x, s[:, :-1])
    with pytest.raises(ValueError, match=r"\(chain, draw, d\)"):
        from_stein_inputs(x[0, 0], s[0, 0])
    one = read_stein_inputs(from_stein_inputs(x[0], s[0]))  # (draw, d): one chain
    assert one[0].shape == (1, N_DRAW, D)


def test_from_stein_inputs_with_posterior(rng, stein) -> None:
    post = _posterior(rng)
    data = from_stein_inputs(*stein, site_names=("mu", "theta"), posterior=post)
    assert is_inference_data(data)
    np.testing.assert_array_equal(posterior_dict(data)["theta"], post["theta"])
    assert read_stein_inputs(data)[2] == ("mu", "theta")


def test_add_diagnostics_new_object_and_replace(data) -> None:
    diag = _diagnostic()
    new = add_diagnostics(data, diag)
    assert arviz_io.get_group(data, "stein_diagnostics") is None
    xr.testing.assert_identical(arviz_io.get_group(new, "stein_diagnostics"), diag)
    again = add_diagnostics(new, diag.assign(ksd_pooled=0.3))
    assert float(arviz_io.get_group(again, "stein_diagnostics")["ksd_pooled"]) == 0.3
    assert float(arviz_io.get_group(new, "stein_diagnostics")["ksd_pooled"]) == 0.15
    other = add_diagnostics(data, diag, group="ksd_other")
    assert arviz_io.get_group(other, "ksd_other") is not None


def test_add_diagnostics_rejects_non_dataset(data) -> None:
    with pytest.raises(TypeError, match="Dataset"):
        add_diagnostics(data, {"ksd": 1.0})


@needs_netcdf4
def test_netcdf_round_trip(tmp_path, data, stein) -> None:
    diag = _diagnostic()
    full = add_diagnostics(add_stein_inputs(data, *stein, site_names=("mu", "theta")), diag)
    path = tmp_path / "run.nc"
    save(full, path)
    back = load(path)
    assert type(back) is type(full)
    path.unlink()  # fully loaded: the file is no longer needed
    xr.testing.assert_allclose(arviz_io.get_group(back, "stein_diagnostics"), diag)
    assert arviz_io.get_group(back, "stein_diagnostics").attrs["kernel"] == "IMQ"
    xs, scores, names = read_stein_inputs(back)
    np.testing.assert_array_equal(xs, stein[0])
    assert names == ("mu", "theta")
    for k, v in posterior_dict(data).items():
        np.testing.assert_array_equal(posterior_dict(back)[k], v)


@needs_netcdf4
def test_netcdf_round_trip_native_reader(tmp_path, data) -> None:
    """The file is ordinary ArviZ netCDF: the line's own reader sees the group."""
    path = tmp_path / "run.nc"
    add_diagnostics(data, _diagnostic()).to_netcdf(path)
    if arviz_1():
        with xr.open_datatree(path) as tree:
            assert "stein_diagnostics" in tree.children
    else:
        import arviz as az

        assert "stein_diagnostics" in az.from_netcdf(path).groups()


SUMMARY_COLUMNS = ["verdict", "ksd", "ksd_ratio", "pvalue", "r_hat", "ess_bulk", "n", "reason"]


@pytest.fixture(scope="module")
def run() -> tuple[dict[str, np.ndarray], xr.Dataset]:
    """Draws of 3 chains (chain 1 is 1.5 times too wide) and their ``ksd_diagnostic``."""
    import numpyro
    import numpyro.distributions as dist

    from numpyro_dsd import ksd_diagnostic

    def model():
        numpyro.sample("mu", dist.Normal(0.0, 1.0).expand([2]).to_event(1))

    x = np.random.default_rng(0).normal(size=(N_CHAIN, 400, 2))
    x[1] *= 1.5
    draws = {"mu": x}
    return draws, ksd_diagnostic(draws, model, num_bootstrap=200)


def _chains_then_pooled(ds: xr.Dataset, name: str) -> list:
    return [*ds[name].values.tolist(), ds[f"{name}_pooled"].values.item()]


def test_stein_summary_verdicts(run) -> None:
    ds = run[1]
    assert ds["verdict"].values.tolist() == ["pass", "fail", "pass"]
    table = stein_summary(ds, round_to=None)
    assert list(table.index) == ["chain 0", "chain 1", "chain 2", "pooled"]
    assert list(table.columns) == SUMMARY_COLUMNS
    assert table["verdict"].tolist() == _chains_then_pooled(ds, "verdict")
    assert table["reason"].tolist() == _chains_then_pooled(ds, "reason")
    for column, name in (("ksd", "ksd"), ("ksd_ratio", "ksd_ratio"), ("pvalue", "pvalue")):
        np.testing.assert_allclose(table[column], _chains_then_pooled(ds, name))
    np.testing.assert_allclose(table["r_hat"], _chains_then_pooled(ds, "rhat"))
    np.testing.assert_allclose(table["ess_bulk"], _chains_then_pooled(ds, "ess"))
    assert table.loc["pooled", "n"] == int(ds["n"].sum())
    # a bad chain stands out in the ratio, a good one sits near 1
    assert table.loc["chain 1", "ksd_ratio"] > 3 * table.loc["chain 0", "ksd_ratio"]
    rounded = stein_summary(ds)
    assert list(rounded.columns) == SUMMARY_COLUMNS
    assert rounded["verdict"].tolist() == table["verdict"].tolist()
    ratio = float(ds["ksd_ratio"][1])
    assert rounded.loc["chain 1", "ksd_ratio"] == float(f"{ratio:.3g}")
    assert rounded.loc["pooled", "ess_bulk"] == round(float(ds["ess_pooled"]))
    assert rounded.loc["chain 0", "r_hat"] == round(float(ds["rhat"][0]), 2)


def test_stein_summary_verdicts_with_data(run) -> None:
    draws, ds = run
    table = stein_summary(ds, convert._from_posterior(draws), round_to=None)
    assert list(table.columns) == [*SUMMARY_COLUMNS, "r_hat_max", "ess_bulk_min"]
    assert table["verdict"].tolist() == _chains_then_pooled(ds, "verdict")
    assert table["r_hat_max"].iloc[:-1].isna().all()
    assert table.loc["pooled", "r_hat_max"] >= 1.0
    assert np.all(table["ess_bulk_min"] > 0)


@needs_netcdf4
def test_stein_summary_verdicts_after_round_trip(tmp_path, run, data) -> None:
    """Verdicts stored in the ``stein_diagnostics`` group come back as the same table."""
    ds = run[1]
    path = tmp_path / "run.nc"
    save(add_diagnostics(data, ds), path)
    back = arviz_io.get_group(load(path), "stein_diagnostics")
    pd.testing.assert_frame_equal(stein_summary(back), stein_summary(ds), check_dtype=False)


def test_stein_summary_without_data() -> None:
    """A dataset written before the verdicts: the columns it has."""
    table = stein_summary(_diagnostic())
    assert isinstance(table, pd.DataFrame)
    assert list(table.index) == ["chain 0", "chain 1", "chain 2", "pooled"]
    assert list(table.columns) == ["ksd", "pvalue", "n"]
    assert table.loc["pooled", "n"] == N_CHAIN * N_DRAW
    assert table.loc["chain 1", "pvalue"] == 0.001
    assert table.loc["pooled", "ksd"] == 0.15


def test_stein_summary_with_data(data) -> None:
    import arviz as az

    table = stein_summary(_diagnostic(), data, round_to=None)
    assert list(table.columns) == ["ksd", "pvalue", "n", "r_hat_max", "ess_bulk_min"]
    assert table["r_hat_max"].iloc[:-1].isna().all()
    post = arviz_io.get_group(data, "posterior")
    rhat = az.rhat(post)
    assert table.loc["pooled", "r_hat_max"] == pytest.approx(
        max(float(rhat[v].max()) for v in rhat.data_vars)
    )
    ess0 = az.ess(post.isel(chain=[0]), method="bulk")
    assert table.loc["chain 0", "ess_bulk_min"] == pytest.approx(
        min(float(ess0[v].min()) for v in ess0.data_vars)
    )
    assert np.all(table["ess_bulk_min"] > 0)
    rounded = stein_summary(_diagnostic(), data)
    assert rounded.loc["pooled", "ess_bulk_min"] == round(table.loc["pooled", "ess_bulk_min"])
