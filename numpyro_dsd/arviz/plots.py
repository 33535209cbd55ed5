"""Plots of the KSD diagnostic with the ArviZ look.

Both plots take the :class:`xarray.Dataset` of the KSD diagnostic (coords ``chain`` and
``prefix``; ``verdict``, ``reason``, ``ksd``, ``ksd_ratio``, ``pvalue`` over ``chain``, their
``*_pooled`` scalars, the level in the ``alpha`` attribute, and the prefix curves ``ksd_trace``
over ``(chain, prefix)``, the ``prefix`` coordinate holding the prefix lengths m), or ArviZ data
holding it as group ``stein_diagnostics``, and follow the conventions of the installed ArviZ
line:

* ArviZ 0.x: drawn with matplotlib in the ``arviz-darkgrid`` style (global rcParams untouched),
  the :class:`matplotlib.axes.Axes` is returned;
* ArviZ 1.x: built on :class:`arviz_plots.PlotCollection` (matplotlib backend), chains mapped
  to the colour aesthetic, the collection is returned (its ``viz`` tree holds the visuals).

A chain has the same colour in both plots (the ``arviz-darkgrid`` cycle in 0.x, the colour
aesthetic's cycle in 1.x), and long titles are wrapped to the width of the plot.

Chains are marked by their verdict: "fail" in ``FLAG_COLOR``, "inconclusive" in
``INCONCLUSIVE_COLOR``. Datasets written before the verdicts existed (no ``verdict``) are
still read: there a chain is marked "fail" when its ``pvalue`` is below the level (0.05 unless
given).

Neither calls ``plt.show()``.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from numpyro_dsd.arviz.convert import (
    SVGD_TRACE,
    arviz_1,
    diagnostics_dataset,
    get_group,
    is_inference_data,
)
from numpyro_dsd.vocabulary import DRAW, PREFIX

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_ksd", "plot_ksd_trace", "plot_svgd_trace"]

#: Colour of the marks of chains whose verdict is "fail" (or, in datasets without verdicts,
#: whose test rejects: p < level).
FLAG_COLOR = "crimson"
#: Colour of the marks of chains whose verdict is "inconclusive".
INCONCLUSIVE_COLOR = "darkorange"
#: Level of datasets without an ``alpha`` attribute (written before the verdicts existed).
DEFAULT_LEVEL = 0.05
_STYLE = "arviz-darkgrid"
#: Mark colour and prefix-curve line style of each marked verdict.
_MARK_COLOR = {"fail": FLAG_COLOR, "inconclusive": INCONCLUSIVE_COLOR}
_MARK_LINESTYLE = {"fail": "--", "inconclusive": ":"}
#: Line style of the m^(-1/2) reference of plot_ksd_trace (dotted is taken by "inconclusive").
_REFERENCE_LINESTYLE = "-."
_LINESTYLE_NAME = {"--": "dashed", ":": "dotted"}
#: How to read plot_ksd_trace's curves, in its legend (ArviZ 0.x) or title (1.x).
TRACE_HINT = "flat = biased"
#: Average width of a title character in ems (DejaVu Sans is about 0.55), a little generous.
_CHAR_EM = 0.6


def _title(ds: xr.Dataset, what: str) -> str:
    """``what`` followed by the kernel / bandwidth / diffusion / preconditioner found in the
    attributes (``preconditioner``: SVGD's, or the bandwidth in files written before it was
    called ``bandwidth``)."""
    keys = ("kernel", "bandwidth", "diffusion", "preconditioner")
    parts = [f"{k}: {ds.attrs[k]}" for k in keys if k in ds.attrs]
    return what if not parts else f"{what}\n({', '.join(parts)})"


def _fit_title(ax: Axes, text: str, size: float) -> str:
    """``text`` with each line wrapped (at spaces) to the width of ``ax`` in characters of
    ``size`` points, so that the title does not run past the axes."""
    width = ax.get_position().width * ax.figure.get_figwidth() * 72
    chars = max(20, int(width / (_CHAR_EM * size)))
    lines = (textwrap.fill(line, chars, break_long_words=False) for line in text.split("\n"))
    return "\n".join(lines)


def _title_size() -> float:
    """The title font size, in points: "large" of the current style (arviz-darkgrid: 12 pt;
    its own title size, 16 pt, leaves room for too few characters of the long titles)."""
    from matplotlib.font_manager import FontProperties

    return float(FontProperties(size="large").get_size_in_points())


def _chain_colors(n: int) -> list[Any]:
    """The colours of ``n`` chains, from the current style's colour cycle, as RGBA: resolved
    inside the style, so that both plots give a chain the same colour whenever they are drawn
    ("C0" strings would be looked up in the global cycle at drawing time)."""
    import matplotlib as mpl
    from matplotlib.colors import to_rgba

    cycle = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    return [to_rgba(cycle[i % len(cycle)]) for i in range(n)]


def _pvalue_label(p: float) -> str:
    """ "p = 0.23", or "p < 0.001" at the bootstrap's resolution 1/(1 + N_boot) and below."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}" if p < 0.01 else f"p = {p:.3f}"


def _level(ds: xr.Dataset, level: float | None) -> float:
    """``level``, or the dataset's own ``alpha`` attribute, or :data:`DEFAULT_LEVEL`."""
    return float(ds.attrs.get("alpha", DEFAULT_LEVEL)) if level is None else float(level)


def _marks(ds: xr.Dataset, level: float | None) -> tuple[np.ndarray, dict[str, str]]:
    """Per chain ``"fail"``, ``"inconclusive"`` or ``""`` (not marked), and the legend text of
    each mark.

    The ``verdict`` decides; in datasets without it a chain is ``"fail"`` when its ``pvalue`` is
    below the level (:func:`_level`), with the legend text ``"p < level"``.
    """
    if "verdict" in ds:
        verdict = np.array([str(v) for v in np.ravel(ds["verdict"].values)])
        marks = np.where(np.isin(verdict, list(_MARK_COLOR)), verdict, "")
        return marks, {k: k for k in _MARK_COLOR}
    if "pvalue" not in ds:
        return np.full(ds.sizes["chain"], ""), {}
    alpha = _level(ds, level)
    fail = np.asarray(ds["pvalue"].values, dtype=float) < alpha
    return np.where(fail, "fail", ""), {"fail": f"p < {alpha:g}"}


def _point_labels(ds: xr.Dataset) -> list[str]:
    """The text above each chain's point: its verdict and p-value (only the p-value in
    datasets without verdicts; only the verdict where there is no p-value)."""
    p = np.asarray(ds["pvalue"].values, dtype=float)
    if "verdict" not in ds:
        return [_pvalue_label(v) for v in p]
    verdict = [str(v) for v in np.ravel(ds["verdict"].values)]
    return [
        v if not np.isfinite(q) else f"{v}\n{_pvalue_label(q)}"
        for v, q in zip(verdict, p, strict=True)
    ]


def _uses_ratio(ds: xr.Dataset) -> bool:
    """Plot ``ksd_ratio``: where the dataset has it and it was computed (not with test=False)."""
    if "ksd_ratio" not in ds or "ksd_ratio_pooled" not in ds:
        return False
    return bool(np.isfinite(np.asarray(ds["ksd_ratio"].values, dtype=float)).any())


def _ksd_values(ds: xr.Dataset) -> tuple[xr.DataArray, float, bool]:
    """Per-chain values to plot, the pooled one, and whether they are the KSD ratio."""
    ratio = _uses_ratio(ds)
    name = "ksd_ratio" if ratio else "ksd"
    return ds[name].astype(float), float(ds[f"{name}_pooled"]), ratio


def _pooled_label(ds: xr.Dataset, ratio: bool) -> str:
    """Legend text of the pooled line: its verdict (where present) and p-value."""
    parts = [str(ds["verdict_pooled"].values)] if "verdict_pooled" in ds else []
    p = float(ds["pvalue_pooled"])
    parts += [_pvalue_label(p)] if np.isfinite(p) else []
    what = "pooled KSD ratio" if ratio else "pooled KSD"
    return f"{what} ({', '.join(parts)})" if parts else what


def _pooled_text(ds: xr.Dataset) -> str:
    """Text beside the pooled line (ArviZ 1.x, no legend): its verdict, or its p-value."""
    if "verdict_pooled" in ds:
        return f"pooled: {ds['verdict_pooled'].values}"
    return f"pooled ({_pvalue_label(float(ds['pvalue_pooled']))})"


def _ksd_title(ds: xr.Dataset, ratio: bool) -> str:
    """Title of plot_ksd: what is plotted, the pooled verdict and its reason, the settings."""
    if ratio:
        what = "KSD ratio per chain (KSD / median of bootstrap null)"
    else:
        what = "Kernel Stein discrepancy per chain"
    if "verdict_pooled" in ds:
        reason = f" ({ds['reason_pooled'].values})" if "reason_pooled" in ds else ""
        what += f"\npooled: {ds['verdict_pooled'].values}{reason}"
    return _title(ds, what)


def _log_limits(values: np.ndarray) -> tuple[float, float]:
    """Log-axis limits around ``values`` and the reference 1, with room above for the labels."""
    v = np.asarray(values, dtype=float)
    v = np.append(v[np.isfinite(v) & (v > 0)], 1.0)
    return float(v.min()) / 2, float(v.max()) * 4


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
    ds: xr.Dataset, ax: Axes | None = None, *, level: float | None = None, figsize: Any = None
) -> Any:
    """Per-chain KSD ratio (or KSD) with the pooled value as a line, marked by verdict.

    With ``ksd_ratio`` in ``ds`` (the statistic over the median of its bootstrap null) the
    ratios are plotted on a log axis with a reference line at 1, the value of exact draws: a
    good run sits near 1, a bad one far above, and the pooled ratio is comparable with the
    chains' (the raw pooled KSD, of more draws, is smaller than every chain's). Without it
    (older datasets, or ``test=False``) the raw KSD is plotted on a linear axis.

    Chains whose verdict is "fail" are ringed in ``FLAG_COLOR``, "inconclusive" ones in
    ``INCONCLUSIVE_COLOR``; each point is labelled with its verdict and p-value, and the
    title gives the pooled verdict and its reason.

    Parameters
    ----------
    ds : xarray.Dataset, InferenceData or DataTree
        The KSD diagnostic: ``verdict``, ``ksd``, ``ksd_ratio`` and ``pvalue`` over ``chain``
        and their ``*_pooled`` scalars, ``reason_pooled``; or ArviZ data holding it as group
        ``stein_diagnostics`` (:func:`~numpyro_dsd.arviz.convert.add_diagnostics`). Datasets
        without ``verdict`` or ``ksd_ratio`` (written by earlier versions) are read too.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.
    level : float, optional
        Used only for datasets without ``verdict``: chains with ``pvalue < level`` are ringed
        in ``FLAG_COLOR``. None means the dataset's ``alpha`` attribute, or 0.05.
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
    ...     {"verdict": ("chain", ["pass", "fail"]), "ksd": ("chain", [0.05, 0.4]),
    ...      "ksd_ratio": ("chain", [1.1, 12.0]), "pvalue": ("chain", [0.6, 0.001]),
    ...      "verdict_pooled": "fail", "reason_pooled": "KSD test p=0.01",
    ...      "ksd_pooled": 0.2, "ksd_ratio_pooled": 6.0, "pvalue_pooled": 0.01},
    ...     coords={"chain": [0, 1]}, attrs={"alpha": 0.05})
    >>> out = plot_ksd(ds)
    """
    ds = diagnostics_dataset(ds, "plot_ksd", needs=("ksd", "pvalue"))
    if arviz_1():
        return _plot_ksd_pc(ds, ax, level, figsize)
    import arviz as az
    import matplotlib.pyplot as plt

    with az.style.context(_STYLE):
        ax = plt.subplots(figsize=figsize)[1] if ax is None else ax
        _draw_ksd(ax, ds, level)
    return ax


def plot_ksd_trace(
    ds: xr.Dataset, ax: Axes | None = None, *, level: float | None = None, figsize: Any = None
) -> Any:
    """KSD of the first m draws of each chain against m, log-log, with an m^(-1/2) reference.

    For exact draws the V-statistic decays like :math:`m^{-1/2}`; a curve that flattens out
    above the reference is a chain that does not converge to the target. The reference is
    drawn dash-dotted and labelled with ``TRACE_HINT`` ("flat = biased": in the legend
    under ArviZ 0.x, in the title under 1.x); chains whose verdict is "fail" are drawn dashed
    and "inconclusive" ones dotted, both marked so in the legend.

    Parameters
    ----------
    ds : xarray.Dataset, InferenceData or DataTree
        The KSD diagnostic: ``ksd_trace`` over ``(chain, prefix)`` (the ``prefix`` coordinate
        holds the prefix lengths m) and ``verdict`` over ``chain``; or ArviZ data holding it as
        group ``stein_diagnostics``. Curves over
        ``(chain, draw)`` and datasets without ``verdict`` (``pvalue`` only), as earlier
        versions wrote them, are read too.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure otherwise.
    level : float, optional
        Used only for datasets without ``verdict``: chains with ``pvalue < level`` are drawn
        dashed and marked in the legend. None means the dataset's ``alpha`` attribute, or 0.05.
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
    ...      "verdict": ("chain", ["pass", "fail"]), "pvalue": ("chain", [0.5, 0.0])},
    ...     coords={"chain": [0, 1], "prefix": m})
    >>> out = plot_ksd_trace(ds)
    """
    ds = _with_prefix_dim(diagnostics_dataset(ds, "plot_ksd_trace", needs=("ksd_trace",)))
    if arviz_1():
        return _plot_trace_pc(ds, ax, level, figsize)
    import arviz as az
    import matplotlib.pyplot as plt

    with az.style.context(_STYLE):
        ax = plt.subplots(figsize=figsize)[1] if ax is None else ax
        _draw_trace(ax, ds, level)
    return ax


def plot_svgd_trace(data: Any, ax: Axes | None = None, *, figsize: Any = None) -> Any:
    """SVGD's KSD² in the run's fixed frame, its per-step KSD² and RMS Stein force, log scale.

    The fixed-frame KSD (:func:`numpyro_dsd.svgd.monitor_ksd`, measured after every chunk and
    joined by lines) uses one kernel in one coordinate system for the whole run: judge
    convergence by it (docs/svgd.md, "Is the run converging?"). The per-step KSD²
    (:math:`\\frac1n\\sum_i\\mathcal A_p\\phi(z_i)`, docs/math.md §6.2) comes free with each step
    but uses the step's own kernel and, with a preconditioner, its current latent space, so it
    can fall while the particles get worse.

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
    series, names = [ds["ksd_squared"], ds["stein_force"]], ["KSD² (step's kernel)", "RMS force"]
    if "ksd" in ds:  # the fixed frame's checks, joined by lines
        fixed = np.interp(ds["step"], ds["ksd_step"], ds["ksd"].values ** 2)
        series.insert(0, xr.DataArray(fixed, coords={"step": ds["step"]}, dims="step"))
        names.insert(0, "KSD² (fixed frame)")
    long = xr.concat(series, dim="quantity").assign_coords(quantity=names)
    long = long.to_dataset(name="svgd")
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


def _draw_ksd(ax: Axes, ds: xr.Dataset, level: float | None) -> None:
    labels = ds["chain"].values
    pos = np.arange(labels.size)
    y_da, pooled, ratio = _ksd_values(ds)
    y = np.asarray(y_da.values)
    marks, names = _marks(ds, level)
    ax.scatter(pos, y, c=_chain_colors(labels.size), s=60, zorder=3)
    ring = {"s": 220, "facecolors": "none", "linewidths": 2, "zorder": 3}
    for mark, color in _MARK_COLOR.items():
        on = marks == mark
        if on.any():
            ax.scatter(pos[on], y[on], edgecolors=color, label=names[mark], **ring)
    if np.isfinite(pooled):
        ax.axhline(pooled, color="0.4", linestyle="--", label=_pooled_label(ds, ratio))
    if ratio:
        ax.axhline(1.0, color="0.55", linestyle=":", linewidth=1.2, label="exact draws")
    for i, text in enumerate(_point_labels(ds)):
        ax.annotate(
            text,
            (i, y[i]),
            xytext=(0, 9),
            textcoords="offset points",
            ha="center",
            color=_MARK_COLOR.get(str(marks[i]), "0.2"),
            fontsize="small",
        )
    ax.set_xticks(pos, [str(c) for c in labels])
    ax.set_xlim(-0.5, labels.size - 0.5)
    if ratio:
        ax.set_yscale("log")
        ax.set_ylim(*_log_limits(np.append(y, pooled)))
        ax.set_ylabel("KSD / median of bootstrap null")
    else:
        ax.set_ylim(bottom=0, top=1.2 * np.nanmax(np.append(y, pooled)))
        ax.set_ylabel("KSD")
    ax.set_xlabel("chain")
    size = _title_size()
    ax.set_title(_fit_title(ax, _ksd_title(ds, ratio), size), fontsize=size)
    ax.legend(loc="best", fontsize="small")


def _draw_trace(ax: Axes, ds: xr.Dataset, level: float | None) -> None:
    m = np.asarray(ds[PREFIX].values)
    marks, names = _marks(ds, level)
    colors = _chain_colors(ds.sizes["chain"])
    for i, c in enumerate(ds["chain"].values):
        y = ds["ksd_trace"].sel(chain=c).values
        mark = str(marks[i])
        label = f"chain {c}" + (f" ({names[mark]})" if mark else "")
        linestyle = _MARK_LINESTYLE.get(mark, "-")
        ax.plot(m, y, color=colors[i], linestyle=linestyle, label=label)
    label = rf"$\propto m^{{-1/2}}$: exact draws ({TRACE_HINT})"
    ref = {"color": "0.4", "linestyle": _REFERENCE_LINESTYLE, "label": label}
    ax.plot(m, _reference(ds), **ref)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("first m draws")
    ax.set_ylabel("KSD")
    size = _title_size()
    ax.set_title(_fit_title(ax, _title(ds, "KSD of the first m draws"), size), fontsize=size)
    ax.legend(loc="best", fontsize="small")


# --- ArviZ 1.x: PlotCollection ---------------------------------------------------------------


def _collection(
    data: xr.Dataset, ax: Axes | None, figsize: Any, by: str = "chain", **values: list[Any]
) -> Any:
    """A one-plot PlotCollection over ``data`` with ``by`` (chains) mapped to colour.

    ``values`` maps further aesthetics to ``by`` with the values given (e.g.
    ``linestyle=["-", "--"]``). With ``ax`` the collection is built around it (its ``viz`` tree
    as ``PlotCollection.wrap`` would make it for a single plot).
    """
    from arviz_plots import PlotCollection

    aes = {"color": [by]} | {name: [by] for name in values}
    if ax is None:
        # constrained layout: a title of several lines stays inside the figure
        figure_kwargs: dict[str, Any] = {"layout": "constrained"}
        if figsize is not None:
            figure_kwargs["figsize"] = figsize
        return PlotCollection.wrap(
            data, cols=[], backend="matplotlib", figure_kwargs=figure_kwargs, aes=aes, **values
        )
    fig, plot = np.empty((), dtype=object), np.empty((), dtype=object)
    fig[()], plot[()] = ax.figure, ax
    viz = xr.Dataset({"figure": fig, "plot": plot, "row_index": 0, "col_index": 0})
    return PlotCollection(data, xr.DataTree(viz), backend="matplotlib", aes=aes, **values)


#: Title font size of the ArviZ 1.x plots, in points.
_PC_TITLE_SIZE = 10


def _decorate(pc: Any, data: xr.Dataset, xlabel: str, ylabel: str, title: str) -> None:
    """Axis labels and title (wrapped to the plot's width), once per plot (no aesthetics)."""
    from arviz_plots.visuals import labelled_title, labelled_x, labelled_y

    title = _fit_title(pc.viz["plot"].item(), title, _PC_TITLE_SIZE)
    pc.map(labelled_x, "xlabel", data=data, ignore_aes="all", text=xlabel)
    pc.map(labelled_y, "ylabel", data=data, ignore_aes="all", text=ylabel)
    pc.map(labelled_title, "title", data=data, ignore_aes="all", text=title, size=_PC_TITLE_SIZE)


def _xy(x: xr.DataArray, y: xr.DataArray, name: str) -> xr.Dataset:
    """``x`` and ``y`` stacked along ``plot_axis``, the layout of arviz_plots' ``*_xy`` visuals."""
    xy = xr.concat([x.astype(float), y.astype(float)], dim="plot_axis", coords="minimal")
    return xy.assign_coords(plot_axis=["x", "y"]).to_dataset(name=name)


def _plot_ksd_pc(ds: xr.Dataset, ax: Axes | None, level: float | None, figsize: Any) -> Any:
    from arviz_plots.visuals import (
        annotate_xy,
        hline,
        scatter_xy,
        set_xlim,
        set_xticks,
        set_ylim,
        set_yscale,
    )

    labels = ds["chain"].values
    pos = xr.DataArray(np.arange(labels.size, dtype=float), dims="chain", coords={"chain": labels})
    y, pooled_value, ratio = _ksd_values(ds)
    points = _xy(pos, y, "ksd")
    marks, _ = _marks(ds, level)
    marks = xr.DataArray(marks, coords=pos.coords)
    values = np.append(y.values, pooled_value)
    if ratio:
        limits = _log_limits(values)
        text_y = y * 1.15
    else:
        limits = (0.0, 1.2 * float(np.nanmax(values)))
        text_y = y + 0.03 * limits[1]
    pooled = xr.Dataset({"ksd": xr.DataArray(pooled_value)})
    text = {"size": 9, "vertical_align": "bottom"}

    pc = _collection(points, ax, figsize)
    pc.map(scatter_xy, "ksd", data=points, size=60, zorder=3)
    ring = {"size": 220, "facecolor": "none", "width": 2}
    for mark, color in _MARK_COLOR.items():
        if (marks == mark).any():
            label = "flagged" if mark == "fail" else f"flagged_{mark}"
            data = points.where(marks == mark)
            pc.map(scatter_xy, label, data=data, ignore_aes="all", edgecolor=color, **ring)
    pc.map(hline, "pooled", data=pooled, ignore_aes="all", color="B2", linestyle="--")
    if ratio:
        one = xr.Dataset({"ksd": xr.DataArray(1.0)})
        pc.map(hline, "exact", data=one, ignore_aes="all", color="B2", linestyle=":", width=1.2)
    point_labels = _point_labels(ds)
    for mark, color in ({"": "B1"} | _MARK_COLOR).items():
        # the chain's position as data, NaN where another mark applies (skipped by map)
        which = xr.Dataset({"ksd": pos.where(marks == mark)})
        pc.map(
            annotate_xy,
            f"{mark or 'pvalue'}_text",
            data=which,
            x=pos,
            y=text_y,
            color=color,
            text=lambda i: point_labels[int(i)],
            **text,
        )
    pc.map(
        annotate_xy,
        "pooled_text",
        data=pooled,
        x=labels.size - 0.55,
        y=pooled_value,
        ignore_aes="all",
        color="B2",
        horizontal_align="right",
        text=_pooled_text(ds),
        **text,
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
    if ratio:
        pc.map(set_yscale, "yscale", data=pooled, ignore_aes="all", store_artist=False, scale="log")
    pc.map(set_ylim, "ylim", data=pooled, ignore_aes="all", store_artist=False, limits=limits)
    xlim = (-0.5, labels.size - 0.5)
    pc.map(set_xlim, "xlim", data=pooled, ignore_aes="all", store_artist=False, limits=xlim)
    ylabel = "KSD / median of bootstrap null\n(dotted at 1: exact draws)" if ratio else "KSD"
    _decorate(pc, pooled, "chain", ylabel, _ksd_title(ds, ratio))
    return pc


def _plot_trace_pc(ds: xr.Dataset, ax: Axes | None, level: float | None, figsize: Any) -> Any:
    from arviz_base.labels import BaseLabeller
    from arviz_plots.visuals import line, set_xscale, set_yscale

    curves = ds[["ksd_trace"]]
    marks, names = _marks(ds, level)
    chains = ds["chain"].values.tolist()
    suffix = {c: f" ({names[m]})" for c, m in zip(chains, marks, strict=True) if m}

    class _Marked(BaseLabeller):
        """Legend entries "<chain> (fail)" / "<chain> (inconclusive)" for marked chains."""

        def dim_coord_to_str(self, dim: Any, coord_val: Any, coord_idx: Any) -> str:
            return f"{coord_val}{suffix.get(coord_val, '')}"

    linestyle = [_MARK_LINESTYLE.get(str(m), "-") for m in marks]
    ref = xr.Dataset({"ksd_trace": (PREFIX, _reference(ds))}, coords={PREFIX: ds[PREFIX]})
    pc = _collection(curves, ax, figsize, linestyle=linestyle)
    pc.map(line, "ksd_trace", data=curves, xname=PREFIX)
    reference = {"color": "B2", "linestyle": _REFERENCE_LINESTYLE}
    pc.map(line, "reference", data=ref, xname=PREFIX, ignore_aes="all", **reference)
    for func, label, scale in ((set_xscale, "xscale", "log"), (set_yscale, "yscale", "log")):
        pc.map(func, label, data=ref, ignore_aes="all", store_artist=False, scale=scale)
    styles = [f"dash-dot: m^(-1/2), exact draws ({TRACE_HINT})"]
    styles += [f"{_LINESTYLE_NAME[_MARK_LINESTYLE[m]]}: {names[m]}" for m in names]
    title = _title(ds, "KSD of the first m draws") + f"\n({'; '.join(styles)})"
    _decorate(pc, ref, "first m draws", "KSD", title)
    pc.add_legend("chain", labeller=_Marked())
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
