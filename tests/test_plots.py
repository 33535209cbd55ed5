"""KSD plots draw one mark per chain, in either ArviZ line (Axes in 0.x, PlotCollection in 1.x).

The verdict marks are checked on a real diagnostic (``ksd_diagnostic`` on draws of known
quality); the fallback for datasets written before the verdicts (p < level) on hand-built ones.
"""

import importlib.util

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from numpyro_dsd.arviz.convert import arviz_1  # noqa: E402
from numpyro_dsd.arviz.plots import (  # noqa: E402
    FLAG_COLOR,
    INCONCLUSIVE_COLOR,
    plot_ksd,
    plot_ksd_trace,
)

N_CHAIN = 4
#: Variables added with the verdicts; dropping them gives a dataset as earlier versions wrote it.
NEW_VARS = [
    f"{name}{suffix}"
    for name in ("verdict", "reason", "ksd_ratio", "rhat", "ess", "pvalue_stationarity")
    for suffix in ("", "_pooled")
]


def _diagnostic(pvalues=(0.6, 0.001, 0.2, 0.5), prefix_dim: str = "prefix") -> xr.Dataset:
    """A hand-built dataset as written before the verdicts (no ``verdict``, no ``ksd_ratio``)."""
    m = np.unique(np.geomspace(10, 2000, 12).astype(int))
    good = m**-0.5
    trace = np.stack([good, np.full(m.size, 0.4), 2 * good, 1.5 * good])
    return xr.Dataset(
        {
            "ksd": ("chain", trace[:, -1]),
            "pvalue": ("chain", list(pvalues)),
            "n": ("chain", np.full(N_CHAIN, m[-1])),
            "ksd_pooled": 0.12,
            "pvalue_pooled": 0.004,
            "ksd_trace": (("chain", prefix_dim), trace),
        },
        coords={"chain": np.arange(N_CHAIN), prefix_dim: m},
        attrs={"kernel": "IMQ", "diffusion": "Identity", "bandwidth": "med"},
    )


@pytest.fixture(scope="module")
def real() -> xr.Dataset:
    """``ksd_diagnostic`` of 4 chains: exact draws (0, 3), 1.5 times too wide (1: "fail") and
    an exact but strongly autocorrelated AR(1) chain (2: ESS about 10, "inconclusive")."""
    import numpyro
    import numpyro.distributions as dist

    from numpyro_dsd import ksd_diagnostic

    def model():
        numpyro.sample("mu", dist.Normal(0.0, 1.0).expand([2]).to_event(1))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_CHAIN, 400, 2))
    x[1] *= 1.5
    rho = 0.97
    noise = rng.normal(size=(400, 2)) * np.sqrt(1 - rho**2)
    x[2, 0] = rng.normal(size=2)
    for t in range(1, 400):
        x[2, t] = rho * x[2, t - 1] + noise[t]
    ds = ksd_diagnostic({"mu": x}, model, num_bootstrap=200)
    assert ds["verdict"].values.tolist() == ["pass", "fail", "inconclusive", "pass"]
    return ds


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _axes(out) -> Axes:
    """The matplotlib Axes behind a plot's return value, after checking its type."""
    if arviz_1():
        from arviz_plots import PlotCollection

        assert isinstance(out, PlotCollection)
        return out.viz["plot"].item()
    assert isinstance(out, Axes)
    return out


def _finite_offsets(collection) -> np.ndarray:
    """The drawn (finite) points of a scatter collection, shape (k, 2)."""
    xy = np.ma.filled(np.ma.asarray(collection.get_offsets(), float), np.nan)
    return xy[np.isfinite(xy).all(axis=1)]


def _n_points(ax: Axes) -> int:
    """Finite scatter points on ``ax`` (NaN or masked offsets are not drawn)."""
    return int(sum(len(_finite_offsets(c)) for c in ax.collections))


def _rings(ax: Axes, color: str) -> np.ndarray:
    """The points ringed in ``color``: hollow markers with that edge colour, shape (k, 2)."""
    rings = [
        _finite_offsets(c)
        for c in ax.collections
        if len(c.get_facecolor()) == 0
        and len(c.get_edgecolor())
        and np.allclose(c.get_edgecolor()[0], to_rgba(color))
    ]
    return np.concatenate(rings) if rings else np.empty((0, 2))


def _hlines(ax: Axes) -> list[float]:
    return [float(line.get_ydata()[0]) for line in ax.lines if np.ptp(line.get_ydata()) == 0]


def _title(ax: Axes) -> str:
    """The title with the line breaks of its wrapping taken out."""
    return ax.get_title().replace("\n", " ")


def _legend_labels(ax: Axes) -> list[str]:
    """Entries of the Axes' legend (ArviZ 0.x) or of the figure's legends (ArviZ 1.x)."""
    legends = [ax.get_legend(), *ax.figure.legends]
    return [t.get_text() for leg in legends if leg is not None for t in leg.get_texts()]


def _positions(ds: xr.Dataset, verdict: str) -> list[int]:
    return [i for i, v in enumerate(ds["verdict"].values) if v == verdict]


# --- datasets with verdicts ------------------------------------------------------------------


def test_plot_ksd_ratio_rings_chains_by_verdict(real) -> None:
    ax = _axes(plot_ksd(real))
    assert ax.get_yscale() == "log"
    ratio = real["ksd_ratio"].values
    n_marked = len(_positions(real, "fail")) + len(_positions(real, "inconclusive"))
    assert _n_points(ax) == N_CHAIN + n_marked
    for verdict, color in (("fail", FLAG_COLOR), ("inconclusive", INCONCLUSIVE_COLOR)):
        ring = _rings(ax, color)
        where = _positions(real, verdict)
        np.testing.assert_array_equal(ring[:, 0], where)
        np.testing.assert_allclose(ring[:, 1], ratio[where])
    lines = _hlines(ax)
    assert any(np.isclose(y, float(real["ksd_ratio_pooled"])) for y in lines)  # pooled
    assert any(np.isclose(y, 1.0) for y in lines)  # exact draws
    texts = [t.get_text() for t in ax.texts]
    for v, p in zip(real["verdict"].values, real["pvalue"].values, strict=True):
        assert any(t.startswith(f"{v}\np ") for t in texts), (v, p, texts)
    pooled = f"pooled: {real['verdict_pooled'].values} ({real['reason_pooled'].values})"
    assert pooled in _title(ax)
    assert "IMQ" in ax.get_title()


def test_plot_ksd_verdict_overrides_level(real) -> None:
    """With verdicts the level plays no part: every p-value is below 0.99, no extra ring."""
    ax = _axes(plot_ksd(real, level=0.99))
    assert len(_rings(ax, FLAG_COLOR)) == len(_positions(real, "fail"))
    assert len(_rings(ax, INCONCLUSIVE_COLOR)) == len(_positions(real, "inconclusive"))


def test_plot_ksd_all_fail_on_wrong_scale() -> None:
    """Draws 1.5 times too wide in every chain: every chain ringed, ratios far above 1."""
    import numpyro
    import numpyro.distributions as dist

    from numpyro_dsd import ksd_diagnostic

    def model():
        numpyro.sample("mu", dist.Normal(0.0, 1.0).expand([2]).to_event(1))

    draws = 1.5 * np.random.default_rng(1).normal(size=(2, 300, 2))
    bad = ksd_diagnostic({"mu": draws}, model, num_bootstrap=200)
    assert bad["verdict"].values.tolist() == ["fail", "fail"]
    assert str(bad["verdict_pooled"].values) == "fail"
    ax = _axes(plot_ksd(bad))
    np.testing.assert_array_equal(_rings(ax, FLAG_COLOR)[:, 0], [0, 1])
    assert len(_rings(ax, INCONCLUSIVE_COLOR)) == 0
    assert np.all(bad["ksd_ratio"].values > 3)
    assert "pooled: fail (Stein moment test: spread ratio 2.2" in _title(ax)


def test_plot_ksd_without_ratio_plots_raw_ksd(real) -> None:
    """No ``ksd_ratio`` (or all NaN, as with test=False): the raw KSD on a linear axis."""
    for ds in (real.drop_vars(["ksd_ratio", "ksd_ratio_pooled"]), real.assign(ksd_ratio=np.nan)):
        ax = _axes(plot_ksd(ds))
        assert ax.get_yscale() == "linear"
        assert any(np.isclose(y, float(real["ksd_pooled"])) for y in _hlines(ax))
        ring = _rings(ax, FLAG_COLOR)
        np.testing.assert_allclose(ring[:, 1], real["ksd"].values[_positions(real, "fail")])
        plt.close("all")


def test_plot_ksd_trace_styles_chains_by_verdict(real) -> None:
    ax = _axes(plot_ksd_trace(real))
    assert len(ax.lines) == N_CHAIN + 1  # chains + reference
    expected = {"pass": "-", "fail": "--", "inconclusive": ":"}
    for c, v in zip(real["chain"].values, real["verdict"].values, strict=True):
        y = real["ksd_trace"].sel(chain=c).values
        (line,) = [ln for ln in ax.lines if np.allclose(ln.get_ydata(), y)]
        assert line.get_linestyle() == expected[v]
    m = real["prefix"].values
    reference = float(real["ksd_trace"][0, 0]) * np.sqrt(m[0] / m)
    (ref,) = [ln for ln in ax.lines if np.allclose(ln.get_ydata(), reference)]
    assert ref.get_linestyle() == "-."
    labels = _legend_labels(ax)
    assert sum(label.endswith("(fail)") for label in labels) == len(_positions(real, "fail"))
    n_inconclusive = len(_positions(real, "inconclusive"))
    assert sum(label.endswith("(inconclusive)") for label in labels) == n_inconclusive


@pytest.mark.skipif(
    not any(importlib.util.find_spec(m) for m in ("h5netcdf", "netCDF4", "scipy")),
    reason="writing netCDF needs h5netcdf, netCDF4 or scipy",
)
def test_plots_of_real_dataset_from_netcdf(tmp_path, real) -> None:
    """Verdicts read back from a file (fixed-width strings) mark the same chains."""
    path = tmp_path / "ksd.nc"
    real.to_netcdf(path)
    back = xr.load_dataset(path)
    ax = _axes(plot_ksd(back))
    np.testing.assert_array_equal(_rings(ax, FLAG_COLOR)[:, 0], _positions(real, "fail"))
    ax = _axes(plot_ksd_trace(back))
    assert sum(ln.get_linestyle() == ":" for ln in ax.lines) == 1


# --- datasets written before the verdicts: p < level --------------------------------------------


def test_plot_ksd_old_dataset_from_real_run(real) -> None:
    """The real run without its verdict variables: rings at p < 0.05, raw KSD."""
    old = real.drop_vars(NEW_VARS)
    del old.attrs["alpha"]
    ax = _axes(plot_ksd(old))
    assert ax.get_yscale() == "linear"
    flagged = np.flatnonzero(old["pvalue"].values < 0.05)
    assert flagged.size
    np.testing.assert_array_equal(_rings(ax, FLAG_COLOR)[:, 0], flagged)
    assert len(_rings(ax, INCONCLUSIVE_COLOR)) == 0
    assert "pooled:" not in ax.get_title()


def test_plot_ksd_old_dataset_level_from_alpha_attribute(real) -> None:
    old = real.drop_vars(NEW_VARS)
    old.attrs["alpha"] = 1e-4  # below every p-value (>= 1/201): nothing rings
    assert _n_points(_axes(plot_ksd(old))) == N_CHAIN
    assert _n_points(_axes(plot_ksd(old, level=0.05))) > N_CHAIN  # an explicit level wins


def test_plot_ksd_draws_points_reference_and_pvalues() -> None:
    ds = _diagnostic()
    ax = _axes(plot_ksd(ds))
    assert _n_points(ax) == N_CHAIN + 1  # one per chain, one ring for the flagged chain
    assert any(np.isclose(y, 0.12) for y in _hlines(ax))
    texts = [t.get_text() for t in ax.texts]
    assert sum(t.startswith(("p = ", "p < ")) for t in texts) == N_CHAIN
    assert "IMQ" in ax.get_title()


def test_plot_ksd_no_flag_no_ring() -> None:
    ax = _axes(plot_ksd(_diagnostic(pvalues=(0.6, 0.3, 0.2, 0.5))))
    assert _n_points(ax) == N_CHAIN


def test_plot_ksd_level_argument() -> None:
    ax = _axes(plot_ksd(_diagnostic(), level=0.3))  # p = 0.001 and 0.2
    np.testing.assert_array_equal(_rings(ax, FLAG_COLOR)[:, 0], [1, 2])


@pytest.mark.parametrize("prefix_dim", ["prefix", "draw"])  # "draw": files of earlier versions
def test_plot_ksd_trace_one_curve_per_chain_log_log(prefix_dim) -> None:
    ds = _diagnostic(prefix_dim=prefix_dim)
    ax = _axes(plot_ksd_trace(ds))
    assert len(ax.lines) == N_CHAIN + 1  # chains + reference
    assert ax.get_xscale() == ax.get_yscale() == "log"
    m = ds[prefix_dim].values
    expected = float(ds["ksd_trace"][0, 0]) * np.sqrt(m[0] / m)
    ref = [line for line in ax.lines if np.allclose(line.get_ydata(), expected)]
    assert ref, "no m^(-1/2) reference anchored at the first chain's first point"
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1  # the flagged chain
    assert sum(label.endswith("(p < 0.05)") for label in _legend_labels(ax)) == 1


def test_plots_on_given_axes(real) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2)
    for ds in (_diagnostic(), real):
        assert _axes(plot_ksd(ds, ax=ax1)) is ax1
        assert _axes(plot_ksd_trace(ds, ax=ax2)) is ax2
        assert len(ax2.lines) == N_CHAIN + 1
        ax1.clear()
        ax2.clear()


def test_plots_leave_global_style_alone(real) -> None:
    before = dict(matplotlib.rcParams)
    for ds in (_diagnostic(), real):
        plot_ksd(ds)
        plot_ksd_trace(ds)
    assert dict(matplotlib.rcParams) == before
