"""The diagnostic the ArviZ way: :func:`~numpyro_dsd.diagnose` and the ``.stein`` xarray accessor.

``import numpyro_dsd`` registers an accessor named ``stein`` on :class:`xarray.DataTree` (the
ArviZ 1.x container, also readable under ArviZ 0.23) and :class:`xarray.Dataset` (a posterior
group, or the diagnostic's own result), as ``arviz_stats`` registers ``azstats``; nothing needs
to be called. ArviZ 0.23's :class:`arviz.InferenceData` has no accessor mechanism (and
registering one would import ArviZ on ``import numpyro_dsd``): there, call
``diagnose(idata, model)``, or use the accessor of its groups (``idata.posterior.stein``,
``idata.stein_diagnostics.stein``).

The accessor lives here, not in :mod:`numpyro_dsd.arviz`, because ``diagnose`` calls
:func:`~numpyro_dsd.mcmc.diagnostic.ksd_diagnostic` and the ArviZ layer imports no other
subpackage (docs/architecture.md).

Examples
--------
>>> import numpy as np, numpyro, numpyro.distributions as dist, xarray as xr
>>> def model():
...     numpyro.sample("mu", dist.Normal(0.0, 1.0))
>>> x = np.random.default_rng(0).normal(size=(2, 200))
>>> dt = xr.DataTree.from_dict({"posterior": xr.Dataset({"mu": (("chain", "draw"), x)})})
>>> ds = dt.stein.diagnose(model, num_bootstrap=100)
>>> ds.stein.summary()["verdict"].tolist()
['pass', 'pass', 'pass']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
import xarray as xr

from numpyro_dsd.arviz.convert import STEIN_DIAGNOSTICS
from numpyro_dsd.arviz.plots import plot_ksd, plot_ksd_trace
from numpyro_dsd.arviz.summary import stein_summary
from numpyro_dsd.mcmc.diagnostic import ksd_diagnostic

__all__ = ["ACCESSOR", "SteinAccessor", "diagnose"]

#: The name of the accessor: ``data.stein``.
ACCESSOR = "stein"


def diagnose(
    data: Any,
    model: Callable[..., Any] | None = None,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> xr.Dataset:
    """The KSD diagnostic of ArviZ data: :func:`~numpyro_dsd.ksd_diagnostic` of its posterior
    (or of its ``stein_inputs`` group) against ``model``.

    The ArviZ-style entry point, in the manner of ``arviz_stats.diagnose``; also reached as
    ``data.stein.diagnose(model)`` on a DataTree or Dataset. Store the result with
    :func:`~numpyro_dsd.arviz.convert.add_diagnostics`.

    Parameters
    ----------
    data : InferenceData, DataTree or xarray.Dataset
        ArviZ data with a ``posterior`` (or ``stein_inputs``) group, or a posterior group
        itself (variables over ``(chain, draw, ...)``). Anything else
        :func:`~numpyro_dsd.ksd_diagnostic` accepts (an ``MCMC``, a dict of draws) is passed on.
    model, model_args, model_kwargs
        The NumPyro model and its arguments (not needed with a ``stein_inputs`` group).
    **kwargs
        Passed to :func:`~numpyro_dsd.ksd_diagnostic` (``diffusion``, ``num_bootstrap``,
        ``alpha``, ``rng_key`` ...).

    Returns
    -------
    xarray.Dataset
        The diagnostic: ``verdict``, ``ksd``, ``ksd_ratio``, ``pvalue``, ``rhat``, ``ess`` ...
        over ``chain`` and as ``*_pooled`` scalars.

    Examples
    --------
    >>> import numpy as np, numpyro, numpyro.distributions as dist, xarray as xr
    >>> def model():
    ...     numpyro.sample("mu", dist.Normal(0.0, 1.0))
    >>> x = np.random.default_rng(0).normal(size=(2, 200))
    >>> post = xr.Dataset({"mu": (("chain", "draw"), x)})
    >>> str(diagnose(post, model, num_bootstrap=100)["verdict_pooled"].values)
    'pass'
    """
    if isinstance(data, xr.Dataset):
        if "verdict" in data or "ksd" in data:
            raise ValueError(
                "diagnose: this Dataset is already a diagnostic's result (it has `ksd`); pass "
                "the posterior group, or read the result with .stein.summary()."
            )
        data = xr.DataTree.from_dict({"posterior": data})
    return ksd_diagnostic(data, model, model_args, model_kwargs, **kwargs)


class SteinAccessor:
    """``data.stein``: the KSD diagnostic on a DataTree or Dataset.

    On ArviZ data (a DataTree with a ``posterior`` group) or a posterior Dataset,
    :meth:`diagnose` runs the diagnostic. On the diagnostic's Dataset, or ArviZ data holding it
    as group ``stein_diagnostics``, :meth:`summary`, :meth:`plot_ksd` and
    :meth:`plot_ksd_trace` report it, so the calls chain:
    ``dt.stein.diagnose(model).stein.summary()``.
    """

    def __init__(self, obj: xr.Dataset | xr.DataTree) -> None:
        self._obj = obj

    def diagnose(
        self,
        model: Callable[..., Any] | None = None,
        model_args: tuple = (),
        model_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> xr.Dataset:
        """:func:`diagnose` of this object."""
        return diagnose(self._obj, model, model_args, model_kwargs, **kwargs)

    def summary(self, **kwargs: Any) -> pd.DataFrame:
        """:func:`~numpyro_dsd.stein_summary` of this object (keywords passed on)."""
        return stein_summary(self._diagnostics(), **kwargs)

    def plot_ksd(self, **kwargs: Any) -> Any:
        """:func:`~numpyro_dsd.plot_ksd` of this object (keywords passed on)."""
        return plot_ksd(self._diagnostics(), **kwargs)

    def plot_ksd_trace(self, **kwargs: Any) -> Any:
        """:func:`~numpyro_dsd.plot_ksd_trace` of this object (keywords passed on)."""
        return plot_ksd_trace(self._diagnostics(), **kwargs)

    def _diagnostics(self) -> Any:
        """The object as the reporting functions take it: a DataTree node that holds the
        diagnostic itself (e.g. ``dt["stein_diagnostics"]``) is taken as its Dataset."""
        obj = self._obj
        if isinstance(obj, xr.DataTree) and STEIN_DIAGNOSTICS not in obj.children and "ksd" in obj:
            return obj.to_dataset()
        return obj


xr.register_dataset_accessor(ACCESSOR)(SteinAccessor)
xr.register_datatree_accessor(ACCESSOR)(SteinAccessor)
