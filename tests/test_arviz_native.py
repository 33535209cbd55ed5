"""ArviZ-native reporting: the ``.stein`` accessor and :func:`numpyro_dsd.diagnose` on
InferenceData (ArviZ 0.23) and DataTree (both lines), the summary table through them, and the
plots' shared chain colours, fitting titles and the hint on reading the KSD curve."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

import numpyro_dsd  # noqa: E402
from numpyro_dsd import diagnose, ksd_diagnostic, plot_ksd, plot_ksd_trace, stein_summary  # noqa: E402
from numpyro_dsd.arviz import add_diagnostics, arviz_1, convert, get_group  # noqa: E402
from numpyro_dsd.arviz.plots import TRACE_HINT  # noqa: E402
from numpyro_dsd.mcmc.accessor import SteinAccessor  # noqa: E402

pytestmark = pytest.mark.arviz

N_CHAIN, N_DRAW = 3, 300


def model():
    import numpyro
    import numpyro.distributions as dist

    numpyro.sample("mu", dist.Normal(0.0, 1.0).expand([2]).to_event(1))


@pytest.fixture(scope="module")
def draws() -> dict[str, np.ndarray]:
    """3 chains of N(0, I) draws, chain 1 1.5 times too wide."""
    x = np.random.default_rng(0).normal(size=(N_CHAIN, N_DRAW, 2))
    x[1] *= 1.5
    return {"mu": x}


@pytest.fixture(scope="module")
def reference(draws) -> xr.Dataset:
    """The diagnostic of the draws given as a dict."""
    return ksd_diagnostic(draws, model, num_bootstrap=200)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _datatree(draws: dict[str, np.ndarray]) -> xr.DataTree:
    post = xr.Dataset({k: (("chain", "draw", "mu_dim"), v) for k, v in draws.items()})
    return xr.DataTree.from_dict({"posterior": post})


def _same_diagnostic(ds: xr.Dataset, reference: xr.Dataset) -> None:
    assert ds["verdict"].values.tolist() == reference["verdict"].values.tolist()
    np.testing.assert_allclose(ds["ksd"], reference["ksd"], rtol=1e-5)
    np.testing.assert_allclose(ds["pvalue"], reference["pvalue"])


# --- the accessor and diagnose --------------------------------------------------------------


def test_import_registers_the_accessor() -> None:
    """``import numpyro_dsd`` alone registers ``.stein`` on DataTree and Dataset."""
    assert numpyro_dsd.diagnose is diagnose
    assert isinstance(xr.DataTree().stein, SteinAccessor)
    assert isinstance(xr.Dataset().stein, SteinAccessor)


def test_diagnose_installed_container(draws, reference) -> None:
    """``diagnose(idata, model)``: InferenceData under ArviZ 0.23, DataTree under 1.x."""
    data = convert._from_posterior(draws)
    assert type(data).__name__ == ("DataTree" if arviz_1() else "InferenceData")
    _same_diagnostic(diagnose(data, model, num_bootstrap=200), reference)


def test_datatree_accessor_diagnose(draws, reference) -> None:
    """``dt.stein.diagnose(model)`` in either line (xarray's DataTree reads in both)."""
    _same_diagnostic(_datatree(draws).stein.diagnose(model, num_bootstrap=200), reference)


def test_posterior_group_accessor_diagnose(draws, reference) -> None:
    """The accessor of a posterior group, ``idata.posterior.stein`` (how ArviZ 0.23's
    InferenceData, which has no accessors, reaches it)."""
    post = get_group(convert._from_posterior(draws), "posterior")
    _same_diagnostic(post.stein.diagnose(model, num_bootstrap=200), reference)


def test_diagnose_refuses_a_diagnostic(reference) -> None:
    with pytest.raises(ValueError, match="already a diagnostic"):
        reference.stein.diagnose(model)


def test_accessor_reports_a_diagnostic(reference) -> None:
    """``ds.stein.summary()`` / ``plot_ksd()`` / ``plot_ksd_trace()`` are the functions."""
    pd.testing.assert_frame_equal(reference.stein.summary(), stein_summary(reference))
    ax = reference.stein.plot_ksd()
    assert type(ax) is type(plot_ksd(reference))
    assert type(reference.stein.plot_ksd_trace()) is type(ax)


@pytest.mark.parametrize("container", ["installed", "datatree"])
def test_summary_of_stored_diagnostic(draws, reference, container) -> None:
    """``stein_summary`` of InferenceData (0.23) / DataTree holding the diagnostic adds ArviZ's
    R-hat and ESS of its posterior; the DataTree accessor and its group's accessor agree."""
    data = convert._from_posterior(draws) if container == "installed" else _datatree(draws)
    stored = add_diagnostics(data, reference)
    table = stein_summary(stored, round_to=None)
    assert list(table.index) == ["chain 0", "chain 1", "chain 2", "pooled"]
    assert table["verdict"].tolist()[:3] == ["pass", "fail", "pass"]
    assert list(table.columns[-2:]) == ["r_hat_max", "ess_bulk_min"]
    assert table.loc["pooled", "r_hat_max"] > 1.0
    if isinstance(stored, xr.DataTree):
        pd.testing.assert_frame_equal(stored.stein.summary(round_to=None), table)
        group = stored["stein_diagnostics"].stein.summary(round_to=None)
        pd.testing.assert_frame_equal(group, stein_summary(reference, round_to=None))


# --- the plots --------------------------------------------------------------------------------


def _axes(out) -> Axes:
    return out.viz["plot"].item() if arviz_1() else out


def _point_colors(ax: Axes, n: int) -> list[tuple]:
    """The colour of each chain's point in plot_ksd (one collection of n points in ArviZ 0.x,
    one collection per chain in 1.x; the rings are hollow)."""
    filled = [c for c in ax.collections if len(c.get_facecolor())]
    colors = [tuple(f) for c in filled for f in c.get_facecolor()]
    assert len(colors) == n
    return colors


def test_chain_colours_match_across_plots(reference) -> None:
    """Chain c has the same colour in plot_ksd and plot_ksd_trace, as drawn (outside ArviZ's
    style context), and the chains' colours differ."""
    n = reference.sizes["chain"]
    points = _point_colors(_axes(plot_ksd(reference)), n)
    lines = _axes(plot_ksd_trace(reference)).get_lines()[:n]
    curves = [to_rgba(line.get_color()) for line in lines]
    np.testing.assert_allclose(points, curves)
    assert len(set(points)) == n


@pytest.mark.parametrize("plot", [plot_ksd, plot_ksd_trace])
def test_titles_fit_the_figure(reference, plot) -> None:
    """The long titles (pooled reason, settings) are wrapped to stay inside the figure."""
    reason = str(reference["reason_pooled"].values)
    assert len(reason) > 40  # long enough to overflow one line unwrapped
    ax = _axes(plot(reference))
    fig = ax.figure
    fig.canvas.draw()
    box = ax.title.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, (box, fig.bbox)
    assert "\n" in ax.title.get_text()


def test_trace_says_how_to_read_the_curve(reference) -> None:
    ax = _axes(plot_ksd_trace(reference))
    legends = [ax.get_legend(), *ax.figure.legends]
    texts = [t.get_text() for leg in legends if leg is not None for t in leg.get_texts()]
    shown = " ".join([*texts, ax.title.get_text()]).replace("\n", " ")
    assert TRACE_HINT == "flat = biased"
    assert TRACE_HINT in shown
