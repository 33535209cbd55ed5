"""Plots of the KSD diagnostic with the ArviZ look.

Both plots take the :class:`xarray.Dataset` of the KSD diagnostic (coords ``chain`` and
``prefix``; ``ksd``, ``pvalue`` over ``chain``, ``ksd_pooled``, ``pvalue_pooled`` and the prefix
curves ``ksd_trace`` over ``(chain, prefix)``, the ``prefix`` coordinate holding the prefix
lengths m) and follow the conventions of the installed ArviZ line:

* ArviZ 0.x: drawn with matplotlib in the ``arviz-darkgrid`` style (global rcParams untouched),
  the :class:`matplotlib.axes.Axes` is returned;
* ArviZ 1.x: built on :class:`arviz_plots.PlotCollection` (matplotlib backend), chains mapped
  to the colour aesthetic, the collection is returned (its ``viz`` tree holds the visuals).

Neither calls ``plt.show()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from numpyro_dsd.arviz.convert import SVGD_TRACE, arviz_1, get_group, is_inference_data
from numpyro_dsd.vocabulary import DRAW, PREFIX

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_ksd", "plot_ksd_trace", "plot_svgd_trace"]

#: Edge colour of the ring marking chains whose test rejects (p < level).
FLAG_COLOR = "crimson"
_STYLE = "arviz-darkgrid"


def _title(ds: xr.Dataset, what: str) -> str:
    """``what`` followed by the kernel / bandwidth / diffusion / preconditioner found in the
    attributes (``preconditioner``: SVGD's, or the bandwidth in files written before it was
    called ``bandwidth``)."""
    keys = ("kernel", "bandwidth", "diffusion", "preconditioner")
    parts = [f"{k}: {ds.attrs[k]}" for k in keys if k in ds.attrs]
    return what if not parts else f"{what}\n({', '.join(parts)})"


def _pvalue_label(p: float) -> str:
    """ "p = 0.23", or "p < 0.001" at the bootstrap's resolution 1/(1 + N_boot) and below."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}" if p < 0.01 else f"p = {p:.3f}"


def _flagged(ds: xr.Dataset, level: float) -> np.ndarray:
    """Boolean mask over chains: the test rejects at ``level``."""
    return np.asarray(ds["pvalue"].values) < level


def _reference(ds: xr.Dataset) -> np.ndarray:
    """:math:`\\mathrm{KSD}_{m_0} \\sqrt{m_0 / m}` anchored at the first chain's first point."""
    m = np.asarray(ds[PREFIX].values, dtype=float)
    k0 = float(ds["ksd_trace"].isel({"chain": 0, PREFIX: 0}))
    return k0 * np.sqrt(m[0] / m)


def _with_prefix_dim(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with the prefix curves over ``(chain, prefix)``: files written before the
    ``prefix`` dimension existed hold them over ``(chain, draw)``."""
    if PREFIX not in ds["ksd_trace"].dims and DRAW in ds["ksd_trace"].dims:
        return ds.rename({DRAW: PREFIX})
    return ds


def plot_ksd(
    ds: xr.Dataset, ax: Axes | None = None, *, level: float = 0.05, figsize: Any = None
) -> Any:
    """Per-chain KSD with the pooled KSD as a reference line and the p-values annotated.

    Parameters
    ----------
    ds : xarray.Dataset
        The KSD diagnostic: ``ksd`` and ``pvalue`` over ``chain``, ``ksd_pooled``,
        ``pvalue_pooled``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.
    level : float
        Chains with ``pvalue < level`` are ringed in :data:`FLAG_COLOR`.
    figsize : (float, float), optional
        Size of a new figure, in inches.

    Returns
    -------
    matplotlib.axes.Axes (ArviZ 0.x) or arviz_plots.PlotCollection (ArviZ 1.x)

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import xarray as xr
    >>> ds = xr.Dataset(
    ...     {"ksd": ("chain", [0.05, 0.4]), "pvalue": ("chain", [0.6, 0.001]),
    ...      "ksd_pooled": 0.2, "pvalue_pooled": 0.01}, coords={"chain": [0, 1]})
    >>> out = plot_ksd(ds)
    """
    if arviz_1():
        return _plot_ksd_pc(ds, ax, level, figsize)
    import arviz as az
    import matplotlib.pyplot as plt

    with az.style.context(_STYLE):
        ax = plt.subplots(figsize=figsize)[1] if ax is None else ax
        _draw_ksd(ax, ds, level)
    return ax


def plot_ksd_trace(
    ds: xr.Dataset, ax: Axes | None = None, *, level: float = 0.05, figsize: Any = None
) -> Any:
    """KSD of the first m draws of each chain against m, log-log, with an m^(-1/2) reference.

    For exact draws the V-statistic decays like :math:`m^{-1/2}`; a curve that flattens out
    above the reference is a chain that does not converge to the target.

    Parameters
    ----------
    ds : xarray.Dataset
        The KSD diagnostic: ``ksd_trace`` over ``(chain, prefix)`` (the ``prefix`` coordinate
        holds the prefix lengths m) and ``pvalue`` over ``chain``. Curves over
        ``(chain, draw)``, as files written by earlier versions hold them, are read too.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.
    level : float
        Chains with ``pvalue < level`` are drawn dashed and marked in the legend.
    figsize : (float, float), optional
        Size of a new figure, in inches.

    Returns
    -------
    matplotlib.axes.Axes (ArviZ 0.x) or arviz_plots.PlotCollection (ArviZ 1.x)

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, xarray as xr
    >>> m = np.array([10, 100, 1000])
    >>> ds = xr.Dataset(
    ...     {"ksd_trace": (("chain", "prefix"), [m**-0.5, [0.3, 0.3, 0.3]]),
    ...      "pvalue": ("chain", [0.5, 0.0])}, coords={"chain": [0, 1], "prefix": m})
    >>> out = plot_ksd_trace(ds)
    """
    ds = _with_prefix_dim(ds)
    if arviz_1():
        return _plot_trace_pc(ds, ax, level, figsize)
    import arviz as az
    import matplotlib.pyplot as plt

    with az.style.context(_STYLE):
        ax = plt.subplots(figsize=figsize)[1] if ax is None else ax
        _draw_trace(ax, ds, level)
    return ax


def plot_svgd_trace(data: Any, ax: Axes | None = None, *, figsize: Any = None) -> Any:
    """SVGD's per-step KSD² of the particles and RMS Stein force, log scale.

    The KSD² (:math:`\\frac1n\\sum_i\\mathcal A_p\\phi(z_i)`, docs/math.md §6.2) is measured with
    the step's own kernel and, with a preconditioner, in its latent space: compare it within a
    run (a re-estimated constant preconditioner changes the coordinates every ``every`` steps).

    Parameters
    ----------
    data : InferenceData, DataTree or xarray.Dataset
        :meth:`numpyro_dsd.SVGD.to_arviz` output (group ``svgd_trace``) or that group.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.
    figsize : (float, float), optional
        Size of a new figure, in inches.

    Returns
    -------
    matplotlib.axes.Axes (ArviZ 0.x) or arviz_plots.PlotCollection (ArviZ 1.x)

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, xarray as xr
    >>> steps = np.arange(1, 101)
    >>> ds = xr.Dataset({"ksd_squared": ("step", 1 / steps), "stein_force": ("step", steps**-0.5)},
    ...                 coords={"step": steps})
    >>> out = plot_svgd_trace(ds)
    """
    ds = data if isinstance(data, xr.Dataset) else _svgd_group(data)
    long = xr.concat([ds["ksd_squared"], ds["stein_force"]], dim="quantity")
    long = long.assign_coords(quantity=["KSD²", "RMS Stein force"]).to_dataset(name="svgd")
    if arviz_1():
        return _plot_svgd_pc(long, ax, figsize)
    import arviz as az
    import matplotlib.pyplot as plt

    with az.style.context(_STYLE):
        ax = plt.subplots(figsize=figsize)[1] if ax is None else ax
        for i, q in enumerate(long["quantity"].values):
            ax.plot(long["step"], long["svgd"].sel(quantity=q), color=f"C{i}", label=q)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title("SVGD: KSD² of the particles and Stein force per step")
        ax.legend(loc="best", fontsize="small")
    return ax


def _svgd_group(data: Any) -> xr.Dataset:
    group = get_group(data, SVGD_TRACE) if is_inference_data(data) else None
    if group is None:
        raise ValueError(
            "plot_svgd_trace needs the `svgd_trace` group of SVGD.to_arviz(result), or that "
            "xarray.Dataset (ksd_squared and stein_force over `step`)."
        )
    return group


# --- ArviZ 0.x: matplotlib -----------------------------------------------------------------------


def _draw_ksd(ax: Axes, ds: xr.Dataset, level: float) -> None:
    labels = ds["chain"].values
    pos = np.arange(labels.size)
    ksd, pvalue = np.asarray(ds["ksd"].values), np.asarray(ds["pvalue"].values)
    flag = _flagged(ds, level)
    ax.scatter(pos, ksd, c=[f"C{i % 10}" for i in pos], s=60, zorder=3)
    if flag.any():
        ring = {"s": 220, "facecolors": "none", "edgecolors": FLAG_COLOR, "linewidths": 2}
        ax.scatter(pos[flag], ksd[flag], zorder=3, label=f"p < {level:g}", **ring)
    pooled = f"pooled KSD ({_pvalue_label(float(ds['pvalue_pooled']))})"
    ax.axhline(float(ds["ksd_pooled"]), color="0.4", linestyle="--", label=pooled)
    for i, (k, p) in enumerate(zip(ksd, pvalue, strict=True)):
        color = FLAG_COLOR if flag[i] else "0.2"
        ax.annotate(
            _pvalue_label(p),
            (i, k),
            xytext=(0, 9),
            textcoords="offset points",
            ha="center",
            color=color,
            fontsize="small",
        )
    ax.set_xticks(pos, [str(c) for c in labels])
    ax.set_xlim(-0.5, labels.size - 0.5)
    ax.set_ylim(bottom=0, top=1.2 * max(np.nanmax(ksd), float(ds["ksd_pooled"])))
    ax.set_xlabel("chain")
    ax.set_ylabel("KSD")
    ax.set_title(_title(ds, "Kernel Stein discrepancy per chain"))
    ax.legend(loc="best", fontsize="small")


def _draw_trace(ax: Axes, ds: xr.Dataset, level: float) -> None:
    m = np.asarray(ds[PREFIX].values)
    flag = _flagged(ds, level) if "pvalue" in ds else np.zeros(ds.sizes["chain"], bool)
    for i, c in enumerate(ds["chain"].values):
        y = ds["ksd_trace"].sel(chain=c).values
        label = f"chain {c}" + (f" (p < {level:g})" if flag[i] else "")
        ax.plot(m, y, color=f"C{i % 10}", linestyle="--" if flag[i] else "-", label=label)
    ax.plot(m, _reference(ds), color="0.4", linestyle=":", label=r"$\propto m^{-1/2}$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("first m draws")
    ax.set_ylabel("KSD")
    ax.set_title(_title(ds, "KSD of the first m draws"))
    ax.legend(loc="best", fontsize="small")


# --- ArviZ 1.x: PlotCollection ---------------------------------------------------------------


def _collection(data: xr.Dataset, ax: Axes | None, figsize: Any, by: str = "chain") -> Any:
    """A one-plot PlotCollection over ``data`` with ``by`` (chains) mapped to colour.

    With ``ax`` the collection is built around it (its ``viz`` tree as ``PlotCollection.wrap``
    would make it for a single plot).
    """
    from arviz_plots import PlotCollection

    aes = {"color": [by]}
    if ax is None:
        figure_kwargs = {} if figsize is None else {"figsize": figsize}
        return PlotCollection.wrap(
            data, cols=[], backend="matplotlib", figure_kwargs=figure_kwargs, aes=aes
        )
    fig, plot = np.empty((), dtype=object), np.empty((), dtype=object)
    fig[()], plot[()] = ax.figure, ax
    viz = xr.Dataset({"figure": fig, "plot": plot, "row_index": 0, "col_index": 0})
    return PlotCollection(data, xr.DataTree(viz), backend="matplotlib", aes=aes)


def _decorate(pc: Any, data: xr.Dataset, xlabel: str, ylabel: str, title: str) -> None:
    """Axis labels and title, once per plot (no aesthetics)."""
    from arviz_plots.visuals import labelled_title, labelled_x, labelled_y

    pc.map(labelled_x, "xlabel", data=data, ignore_aes="all", text=xlabel)
    pc.map(labelled_y, "ylabel", data=data, ignore_aes="all", text=ylabel)
    pc.map(labelled_title, "title", data=data, ignore_aes="all", text=title, size=10)


def _xy(x: xr.DataArray, y: xr.DataArray, name: str) -> xr.Dataset:
    """``x`` and ``y`` stacked along ``plot_axis``, the layout of arviz_plots' ``*_xy`` visuals."""
    xy = xr.concat([x.astype(float), y.astype(float)], dim="plot_axis", coords="minimal")
    return xy.assign_coords(plot_axis=["x", "y"]).to_dataset(name=name)


def _plot_ksd_pc(ds: xr.Dataset, ax: Axes | None, level: float, figsize: Any) -> Any:
    from arviz_plots.visuals import annotate_xy, hline, scatter_xy, set_xlim, set_xticks, set_ylim

    labels = ds["chain"].values
    pos = xr.DataArray(np.arange(labels.size), dims="chain", coords={"chain": labels})
    points = _xy(pos, ds["ksd"], "ksd")
    flag = xr.DataArray(_flagged(ds, level), coords=pos.coords)
    top = 1.2 * max(float(ds["ksd"].max()), float(ds["ksd_pooled"]))
    pooled = xr.Dataset({"ksd": ds["ksd_pooled"]})
    text = {"size": 9, "vertical_align": "bottom", "text": _pvalue_label}

    pc = _collection(points, ax, figsize)
    pc.map(scatter_xy, "ksd", data=points, size=60, zorder=3)
    if flag.any():
        ring = {"size": 220, "facecolor": "none", "edgecolor": FLAG_COLOR, "width": 2}
        pc.map(scatter_xy, "flagged", data=points.where(flag), ignore_aes="all", **ring)
    pc.map(hline, "pooled", data=pooled, ignore_aes="all", color="B2", linestyle="--")
    pvalues = xr.Dataset({"ksd": ds["pvalue"]})
    for label, mask, color in (("pvalue_text", ~flag, "B1"), ("flagged_text", flag, FLAG_COLOR)):
        pc.map(
            annotate_xy,
            label,
            data=pvalues.where(mask),
            x=pos,
            y=ds["ksd"] + 0.03 * top,
            color=color,
            **text,
        )
    pc.map(
        annotate_xy,
        "pooled_text",
        data=xr.Dataset({"ksd": ds["pvalue_pooled"]}),
        x=labels.size - 0.55,
        y=float(ds["ksd_pooled"]),
        ignore_aes="all",
        color="B2",
        horizontal_align="right",
        **(text | {"text": lambda p: f"pooled ({_pvalue_label(p)})"}),
    )
    pc.map(
        set_xticks,
        "xticks",
        data=pooled,
        ignore_aes="all",
        store_artist=False,
        values=pos.values,
        labels=[str(c) for c in labels],
    )
    pc.map(set_ylim, "ylim", data=pooled, ignore_aes="all", store_artist=False, limits=(0, top))
    xlim = (-0.5, labels.size - 0.5)
    pc.map(set_xlim, "xlim", data=pooled, ignore_aes="all", store_artist=False, limits=xlim)
    _decorate(pc, pooled, "chain", "KSD", _title(ds, "Kernel Stein discrepancy per chain"))
    return pc


def _plot_trace_pc(ds: xr.Dataset, ax: Axes | None, level: float, figsize: Any) -> Any:
    from arviz_plots.visuals import line, set_xscale, set_yscale

    curves = ds[["ksd_trace"]]
    flag = np.zeros(ds.sizes["chain"], bool) if "pvalue" not in ds else _flagged(ds, level)
    flag = xr.DataArray(flag, coords={"chain": ds["chain"]})
    ref = xr.Dataset({"ksd_trace": (PREFIX, _reference(ds))}, coords={PREFIX: ds[PREFIX]})
    pc = _collection(curves, ax, figsize)
    pc.map(line, "ksd_trace", data=curves.where(~flag), xname=PREFIX)
    if flag.any():
        pc.map(line, "flagged", data=curves.where(flag), xname=PREFIX, linestyle="--")
    pc.map(line, "reference", data=ref, xname=PREFIX, ignore_aes="all", color="B2", linestyle=":")
    for func, label, scale in ((set_xscale, "xscale", "log"), (set_yscale, "yscale", "log")):
        pc.map(func, label, data=ref, ignore_aes="all", store_artist=False, scale=scale)
    title = _title(ds, "KSD of the first m draws")
    title += f"\n(dotted: reference m^(-1/2); dashed: p < {level:g})"
    _decorate(pc, ref, "first m draws", "KSD", title)
    pc.add_legend("chain")
    return pc


def _plot_svgd_pc(long: xr.Dataset, ax: Axes | None, figsize: Any) -> Any:
    from arviz_plots.visuals import line, set_yscale

    pc = _collection(long, ax, figsize, by="quantity")
    pc.map(line, "svgd", data=long, xname="step")
    one = long.isel(quantity=0, drop=True)
    pc.map(set_yscale, "yscale", data=one, ignore_aes="all", store_artist=False, scale="log")
    _decorate(pc, one, "step", "", "SVGD: KSD² of the particles and Stein force per step")
    pc.add_legend("quantity")
    return pc
