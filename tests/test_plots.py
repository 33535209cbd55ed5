"""KSD plots draw one mark per chain, in either ArviZ line (Axes in 0.x, PlotCollection in 1.x)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from numpyro_dsd.arviz.convert import arviz_1  # noqa: E402
from numpyro_dsd.arviz.plots import plot_ksd, plot_ksd_trace  # noqa: E402

N_CHAIN = 4


def _diagnostic(pvalues=(0.6, 0.001, 0.2, 0.5), prefix_dim: str = "prefix") -> xr.Dataset:
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


def _n_points(ax: Axes) -> int:
    """Finite scatter points on ``ax`` (NaN or masked offsets are not drawn)."""
    offsets = [np.ma.filled(np.ma.asarray(c.get_offsets(), float), np.nan) for c in ax.collections]
    return int(sum(np.isfinite(o).all(axis=1).sum() for o in offsets))


def test_plot_ksd_draws_points_reference_and_pvalues() -> None:
    ds = _diagnostic()
    ax = _axes(plot_ksd(ds))
    assert _n_points(ax) == N_CHAIN + 1  # one per chain, one ring for the flagged chain
    hlines = [line for line in ax.lines if np.ptp(line.get_ydata()) == 0]
    assert any(np.allclose(line.get_ydata(), 0.12) for line in hlines)
    texts = [t.get_text() for t in ax.texts]
    assert sum(t.startswith(("p = ", "p < ")) for t in texts) == N_CHAIN
    assert "IMQ" in ax.get_title()


def test_plot_ksd_no_flag_no_ring() -> None:
    ax = _axes(plot_ksd(_diagnostic(pvalues=(0.6, 0.3, 0.2, 0.5))))
    assert _n_points(ax) == N_CHAIN


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


def test_plots_on_given_axes() -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2)
    ds = _diagnostic()
    assert _axes(plot_ksd(ds, ax=ax1)) is ax1
    assert _axes(plot_ksd_trace(ds, ax=ax2)) is ax2
    assert len(ax2.lines) == N_CHAIN + 1


def test_plots_leave_global_style_alone() -> None:
    before = dict(matplotlib.rcParams)
    plot_ksd(_diagnostic())
    plot_ksd_trace(_diagnostic())
    assert dict(matplotlib.rcParams) == before
