"""An ArviZ-style summary table of the KSD diagnostic beside R-hat and ESS (:func:`stein_summary`).

ArviZ is imported on first use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from numpyro_dsd.arviz.convert import Data, _az, _posterior

__all__ = ["stein_summary"]


def _reduce(stat: xr.Dataset, fn: Any) -> float:
    """``fn`` (np.nanmax / np.nanmin) over every variable and element of ``stat``."""
    values = [np.ravel(v.values) for v in stat.data_vars.values()]
    values = [v for v in values if v.size]
    return float(fn(np.concatenate(values))) if values else float("nan")


def _ess_bulk(post: xr.Dataset) -> xr.Dataset:
    """Bulk ESS per variable (``az.ess`` takes and returns a Dataset in both lines)."""
    return _az().ess(post, method="bulk")


def _chain_subset(post: xr.Dataset, label: Any, position: int) -> xr.Dataset:
    """One chain of ``post``, by label when the labels match, otherwise by position."""
    if label in post["chain"].values:
        return post.sel(chain=[label])
    return post.isel(chain=[position])


def stein_summary(
    ds: xr.Dataset, data: Data | None = None, round_to: int | None = 3
) -> pd.DataFrame:
    """A table of the KSD diagnostic in the style of :func:`arviz.summary`.

    Parameters
    ----------
    ds : xarray.Dataset
        The diagnostic: ``ksd``, ``pvalue``, ``n`` over ``chain`` and ``ksd_pooled``,
        ``pvalue_pooled``.
    data : InferenceData or DataTree, optional
        With a posterior group: adds ``r_hat_max`` (pooled row only: rank-normalised
        :math:`\\hat R` over all chains, maximum over variables) and ``ess_bulk_min`` (bulk ESS,
        minimum over variables; per chain from that chain alone, pooled over all chains).
    round_to : int or None
        Significant digits of ``ksd`` and decimals of ``pvalue``/``r_hat_max``
        (``ess_bulk_min`` is rounded to an integer value); None keeps full precision.

    Returns
    -------
    pandas.DataFrame
        Index ``"chain <label>"`` for each chain, then ``"pooled"``.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset(
    ...     {"ksd": ("chain", [0.0123456, 0.2]), "pvalue": ("chain", [0.51234, 0.001]),
    ...      "n": ("chain", [100, 100]), "ksd_pooled": 0.1, "pvalue_pooled": 0.02},
    ...     coords={"chain": [0, 1]})
    >>> stein_summary(ds)
                ksd  pvalue    n
    chain 0  0.0123   0.512  100
    chain 1  0.2000   0.001  100
    pooled   0.1000   0.020  200
    """
    labels = list(ds["chain"].values)
    n = np.asarray(ds["n"].values, dtype=int)
    table = pd.DataFrame(
        {
            "ksd": [*np.asarray(ds["ksd"].values, float), float(ds["ksd_pooled"])],
            "pvalue": [*np.asarray(ds["pvalue"].values, float), float(ds["pvalue_pooled"])],
            "n": [*n, int(n.sum())],
        },
        index=[f"chain {c}" for c in labels] + ["pooled"],
    )
    if data is not None:
        post = _posterior(data)
        chains = [_chain_subset(post, c, i) for i, c in enumerate(labels)]
        ess = [_reduce(_ess_bulk(p), np.nanmin) for p in chains]
        table["r_hat_max"] = [np.nan] * len(labels) + [_reduce(_az().rhat(post), np.nanmax)]
        table["ess_bulk_min"] = ess + [_reduce(_ess_bulk(post), np.nanmin)]
    return table if round_to is None else _round(table, round_to)


def _round(table: pd.DataFrame, digits: int) -> pd.DataFrame:
    out = table.copy()
    out["ksd"] = [float(f"{v:.{digits}g}") for v in out["ksd"]]
    out["pvalue"] = out["pvalue"].round(digits)
    if "r_hat_max" in out:
        out["r_hat_max"] = out["r_hat_max"].round(max(digits - 1, 2))
        out["ess_bulk_min"] = out["ess_bulk_min"].round(0)
    return out
