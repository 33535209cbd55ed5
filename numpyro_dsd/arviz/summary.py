"""An ArviZ-style summary table of the KSD diagnostic beside R-hat and ESS (:func:`stein_summary`).

ArviZ is imported on first use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from numpyro_dsd.arviz.convert import (
    Data,
    _az,
    _posterior,
    diagnostics_dataset,
    get_group,
    is_inference_data,
)

__all__ = ["stein_summary"]


def _reduce(stat: xr.Dataset, fn: Any) -> float:
    """``fn`` (np.max / np.min) over every non-NaN element of every variable of ``stat``; NaN
    (and no warning) when there is none."""
    values = np.concatenate([np.ravel(v.values) for v in stat.data_vars.values()] + [[]])
    values = values[~np.isnan(values.astype(float))]
    return float(fn(values)) if values.size else float("nan")


def _rhat_max(post: xr.Dataset) -> float:
    """ArviZ's rank-normalised R-hat over all chains, maximum over variables; NaN (and no
    ArviZ shape warning) for fewer than 2 chains, where no R-hat between chains exists."""
    if post.sizes.get("chain", 0) < 2:
        return float("nan")
    return _reduce(_az().rhat(post), np.max)


def _ess_bulk(post: xr.Dataset) -> xr.Dataset:
    """Bulk ESS per variable (``az.ess`` takes and returns a Dataset in both lines)."""
    return _az().ess(post, method="bulk")


def _chain_subset(post: xr.Dataset, label: Any, position: int) -> xr.Dataset:
    """One chain of ``post``, by label when the labels match, otherwise by position."""
    if label in post["chain"].values:
        return post.sel(chain=[label])
    return post.isel(chain=[position])


def _chain_and_pooled(ds: xr.Dataset, name: str, kind: type = float) -> list[Any] | None:
    """``name`` per chain followed by ``name_pooled``, or None where ``ds`` lacks either."""
    if name not in ds or f"{name}_pooled" not in ds:
        return None
    values = [*np.ravel(ds[name].values), np.asarray(ds[f"{name}_pooled"].values).item()]
    return [kind(v) for v in values]


def stein_summary(
    ds: xr.Dataset, data: Data | None = None, round_to: int | None = 3
) -> pd.DataFrame:
    """A table of the KSD diagnostic in the style of :func:`arviz.summary`: one row per chain
    and one for the pooled draws, with the verdict and its reason.

    Columns, where ``ds`` holds them (datasets written before the verdicts existed have only
    ``ksd``, ``pvalue`` and ``n``):

    - ``verdict``: ``"pass"``, ``"fail"`` or ``"inconclusive"`` at the level
      ``ds.attrs["alpha"]`` (:mod:`numpyro_dsd.mcmc.verdict`);
    - ``ksd``, and ``ksd_ratio``: the KSD over the median of its bootstrap null, about 1 for a
      good run and far above 1 for a bad one, comparable between chains and pooled (the raw
      pooled KSD, of more draws, is smaller than every chain's);
    - ``pvalue``: the KSD test;
    - ``r_hat`` and ``ess_bulk``: the diagnostic's own rank-normalised split-:math:`\\hat R`
      and bulk ESS of the Stein inputs (``rhat`` and ``ess`` of ``ds``), of each chain alone and
      of all chains;
    - ``n``: the number of draws;
    - ``reason``: what the verdict rests on, e.g. ``"KSD test p=0.003 ..."``,
      ``"not stationary: split-R̂ 1.090 ..."``, ``"ESS 4 < 100"``.

    Parameters
    ----------
    ds : xarray.Dataset, InferenceData or DataTree
        The diagnostic (:func:`numpyro_dsd.ksd_diagnostic`): ``verdict``, ``reason``, ``ksd``,
        ``ksd_ratio``, ``pvalue``, ``rhat``, ``ess``, ``n`` over ``chain`` and the ``*_pooled``
        scalars; or ArviZ data holding it as group ``stein_diagnostics``
        (:func:`~numpyro_dsd.arviz.convert.add_diagnostics`), whose posterior group is then
        the default ``data``.
    data : InferenceData or DataTree, optional
        With a posterior group: adds, after the columns above, ``r_hat_max`` (pooled row only:
        ArviZ's rank-normalised :math:`\\hat R` over all chains, maximum over the posterior's
        variables; NaN for one chain) and ``ess_bulk_min`` (ArviZ's bulk ESS, minimum over
        variables; per chain from that chain alone, pooled over all chains).
    round_to : int or None
        Significant digits of ``ksd`` and ``ksd_ratio``, decimals of ``pvalue``;
        ``r_hat``/``r_hat_max`` get one decimal fewer (at least 2) and ``ess_bulk``/
        ``ess_bulk_min`` are rounded to integer values. None keeps full precision.

    Returns
    -------
    pandas.DataFrame
        Index ``"chain <label>"`` for each chain, then ``"pooled"``; columns in the order
        ``verdict, ksd, ksd_ratio, pvalue, r_hat, ess_bulk, n, reason`` (those present), then
        ``r_hat_max, ess_bulk_min`` with ``data``.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset(
    ...     {"verdict": ("chain", ["pass", "fail"]), "verdict_pooled": "fail",
    ...      "ksd": ("chain", [0.0123456, 0.2]), "ksd_pooled": 0.1,
    ...      "ksd_ratio": ("chain", [1.0512, 14.2]), "ksd_ratio_pooled": 7.3,
    ...      "pvalue": ("chain", [0.51234, 0.001]), "pvalue_pooled": 0.02,
    ...      "rhat": ("chain", [1.0012, 1.0534]), "rhat_pooled": 1.031,
    ...      "ess": ("chain", [410.4, 380.6]), "ess_pooled": 790.2,
    ...      "n": ("chain", [500, 500]),
    ...      "reason": ("chain", ["KSD test p=0.51", "KSD test p=0.001"]),
    ...      "reason_pooled": "KSD test p=0.02"},
    ...     coords={"chain": [0, 1]}, attrs={"alpha": 0.05})
    >>> table = stein_summary(ds)
    >>> list(table.columns)
    ['verdict', 'ksd', 'ksd_ratio', 'pvalue', 'r_hat', 'ess_bulk', 'n', 'reason']
    >>> table[["verdict", "ksd", "ksd_ratio", "pvalue", "r_hat", "ess_bulk", "n"]]
            verdict     ksd  ksd_ratio  pvalue  r_hat  ess_bulk     n
    chain 0    pass  0.0123       1.05   0.512   1.00     410.0   500
    chain 1    fail  0.2000      14.20   0.001   1.05     381.0   500
    pooled     fail  0.1000       7.30   0.020   1.03     790.0  1000
    >>> table["reason"].tolist()
    ['KSD test p=0.51', 'KSD test p=0.001', 'KSD test p=0.02']
    """
    if data is None and is_inference_data(ds) and get_group(ds, "posterior") is not None:
        data = ds
    ds = diagnostics_dataset(ds, "stein_summary", needs=("ksd", "pvalue", "n"))
    labels = list(ds["chain"].values)
    n = np.asarray(ds["n"].values, dtype=int)
    columns: dict[str, list[Any] | None] = {
        "verdict": _chain_and_pooled(ds, "verdict", str),
        "ksd": _chain_and_pooled(ds, "ksd"),
        "ksd_ratio": _chain_and_pooled(ds, "ksd_ratio"),
        "pvalue": _chain_and_pooled(ds, "pvalue"),
        "r_hat": _chain_and_pooled(ds, "rhat"),
        "ess_bulk": _chain_and_pooled(ds, "ess"),
        "n": [*n, int(n.sum())],
        "reason": _chain_and_pooled(ds, "reason", str),
    }
    table = pd.DataFrame(
        {k: v for k, v in columns.items() if v is not None},
        index=[f"chain {c}" for c in labels] + ["pooled"],
    )
    if data is not None:
        post = _posterior(data)
        chains = [_chain_subset(post, c, i) for i, c in enumerate(labels)]
        ess = [_reduce(_ess_bulk(p), np.min) for p in chains]
        table["r_hat_max"] = [np.nan] * len(labels) + [_rhat_max(post)]
        table["ess_bulk_min"] = ess + [_reduce(_ess_bulk(post), np.min)]
    return table if round_to is None else _round(table, round_to)


def _significant(values: pd.Series, digits: int) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in values]


def _round(table: pd.DataFrame, digits: int) -> pd.DataFrame:
    out = table.copy()
    out["ksd"] = _significant(out["ksd"], digits)
    if "ksd_ratio" in out:
        out["ksd_ratio"] = _significant(out["ksd_ratio"], digits)
    out["pvalue"] = out["pvalue"].round(digits)
    for name in ("r_hat", "r_hat_max"):
        if name in out:
            out[name] = out[name].round(max(digits - 1, 2))
    for name in ("ess_bulk", "ess_bulk_min"):
        if name in out:
            out[name] = out[name].round(0)
    return out
