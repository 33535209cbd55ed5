"""Kernel Stein inputs and diagnostics in ArviZ containers, for both ArviZ lines.

ArviZ 0.23 stores a run in an :class:`arviz.InferenceData`; ArviZ 1.x (``arviz-base``,
Python >= 3.12) in an :class:`xarray.DataTree`. Both are a set of named groups of
:class:`xarray.Dataset`, and this module only converts and labels:

* ``stein_inputs``: the unconstrained draws ``x`` and their scores ``score``, dims
  ``(chain, draw, stein_dim)``, so that a saved file can be diagnosed without the model code;
* ``stein_diagnostics``: the :class:`xarray.Dataset` returned by the KSD diagnostic.

Readers accept either container in either line; writers return a new object of the input's
type (the input is never modified). The line is detected once (:func:`arviz_1`) and every
version branch lives in this module.

Examples
--------
>>> import numpy as np
>>> x = np.zeros((2, 5, 3))
>>> data = from_stein_inputs(x, -x, site_names=("mu", "tau"))
>>> xs, scores, names = read_stein_inputs(data)
>>> xs.shape, names
((2, 5, 3), ('mu', 'tau'))
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, TypeAlias

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike

from numpyro_dsd._validation import real_dtype

__all__ = [
    "get_group",
    "arviz_1",
    "add_diagnostics",
    "add_stein_inputs",
    "diagnostics_dataset",
    "from_stein_inputs",
    "from_svgd",
    "is_inference_data",
    "load",
    "posterior_dict",
    "read_stein_inputs",
    "save",
]


@cache
def _az() -> Any:
    """ArviZ, imported on first use: ``import numpyro_dsd`` does not load it."""
    return importlib.import_module("arviz")


@cache
def arviz_1() -> bool:
    """True with ArviZ 1.x (DataTree, ``arviz-base``/``arviz-stats``/``arviz-plots``), False
    with 0.x. ArviZ is imported by the first call."""
    return int(_az().__version__.split(".")[0]) >= 1


#: An ArviZ container: :class:`arviz.InferenceData` (0.x) or :class:`xarray.DataTree` (both).
Data: TypeAlias = Any

STEIN_INPUTS = "stein_inputs"
STEIN_DIAGNOSTICS = "stein_diagnostics"
SVGD_TRACE = "svgd_trace"
_STEIN_DIM = "stein_dim"


def is_inference_data(obj: object) -> bool:
    """Whether ``obj`` is an ArviZ container: an InferenceData (0.x) or an xarray DataTree.

    Examples
    --------
    >>> import xarray as xr
    >>> is_inference_data(xr.DataTree()), is_inference_data({})
    (True, False)
    """
    return isinstance(obj, xr.DataTree) or (not arviz_1() and isinstance(obj, _az().InferenceData))


# --- groups: the only place that knows the two containers ------------------------------------


def _check_data(data: object) -> None:
    if not is_inference_data(data):
        raise TypeError(
            f"Expected an arviz.InferenceData or xarray.DataTree, got {type(data).__name__}."
        )


def get_group(data: Data, name: str) -> xr.Dataset | None:
    """The group ``name`` of an InferenceData or DataTree as a Dataset, or None if absent.

    Examples
    --------
    >>> get_group(from_stein_inputs(np.zeros((1, 4, 2)), np.zeros((1, 4, 2))), "posterior") is None
    True
    """
    _check_data(data)
    if isinstance(data, xr.DataTree):
        return data[name].to_dataset() if name in data.children else None
    return data[name] if name in data.groups() else None


def _with_group(data: Data, name: str, ds: xr.Dataset) -> Data:
    """A copy of ``data`` with group ``name`` set to ``ds`` (replaced if present)."""
    _check_data(data)
    if isinstance(data, xr.DataTree):
        new = data.copy()
        new[name] = xr.DataTree(ds)
        return new
    new = data.copy()  # deep copy: add_groups and del act on the copy only
    if name in new.groups():
        del new[name]
    new.add_groups({name: ds})
    return new


def _empty() -> Data:
    """An empty container of the installed line."""
    return xr.DataTree() if arviz_1() else _az().InferenceData()


def _from_posterior(posterior: Mapping[str, ArrayLike]) -> Data:
    """A container with a posterior group built from ``{var: (chain, draw, *shape)}``."""
    arrays = {k: np.asarray(v) for k, v in posterior.items()}
    if arviz_1():
        return _az().from_dict({"posterior": arrays})
    return _az().from_dict(posterior=arrays)


def from_svgd(
    samples: Mapping[str, ArrayLike],
    trace: Mapping[str, ArrayLike] | None = None,
    attrs: Mapping[str, Any] | None = None,
    checks: tuple[ArrayLike, ArrayLike] | None = None,
) -> Data:
    """SVGD particles as ArviZ data: one chain, the particles on the ``draw`` axis.

    Parameters
    ----------
    samples : dict
        ``{site: (num_particles, ...)}`` (:meth:`numpyro_dsd.SVGD.get_samples`).
    trace : dict, optional
        Per-step series ``{name: (num_steps,)}`` (``ksd_squared``, ``stein_force``), stored in
        the group ``svgd_trace`` over the dim ``step`` (1, 2, ...).
    attrs : dict, optional
        Attributes of the ``svgd_trace`` group (kernel, preconditioner, optimizer).
    checks : (steps, values), optional
        The fixed-frame KSD (``SVGDRunResult.ksd_step``, ``.ksd``), stored as ``ksd`` over the
        dim ``ksd_step`` (the step counts) in the same group.

    Returns
    -------
    InferenceData (ArviZ 0.x) or DataTree (1.x)

    Examples
    --------
    >>> import numpy as np
    >>> data = from_svgd({"mu": np.zeros(5)}, {"ksd_squared": np.ones(3)})
    >>> dict(get_group(data, "posterior")["mu"].sizes), get_group(data, "svgd_trace").sizes["step"]
    ({'chain': 1, 'draw': 5}, 3)
    """
    data = _from_posterior({k: np.asarray(v)[None] for k, v in samples.items()})
    if trace is None:
        return data
    series = {k: ("step", np.asarray(v)) for k, v in trace.items()}
    steps = len(next(iter(series.values()))[1]) if series else 0
    ds = xr.Dataset(series, coords={"step": np.arange(1, steps + 1)})
    if checks is not None:
        ds["ksd"] = xr.DataArray(np.asarray(checks[1]), coords={"ksd_step": np.asarray(checks[0])})
    ds.attrs.update({k: str(v) for k, v in (attrs or {}).items()})
    return _with_group(data, SVGD_TRACE, ds)


# --- posterior ---------------------------------------------------------------------------------


def _posterior(data: Data) -> xr.Dataset:
    post = get_group(data, "posterior")
    if post is None:
        raise ValueError(
            "The data has no `posterior` group; pass the InferenceData/DataTree of an MCMC run "
            "(e.g. `az.from_numpyro(mcmc)`)."
        )
    return post


def posterior_dict(data: Data) -> dict[str, np.ndarray]:
    """The posterior group as ``{var: array}`` with leading ``(chain, draw)`` axes.

    Parameters
    ----------
    data : InferenceData or DataTree
        An ArviZ container with a ``posterior`` group.

    Returns
    -------
    dict of str to ndarray
        ``{var: (chain, draw, *event_shape)}``, copies (the input is not modified).

    Examples
    --------
    >>> import numpy as np
    >>> data = _from_posterior({"mu": np.zeros((2, 10)), "theta": np.ones((2, 10, 3))})
    >>> {k: v.shape for k, v in posterior_dict(data).items()}
    {'mu': (2, 10), 'theta': (2, 10, 3)}
    """
    post = _posterior(data)
    return {str(k): np.array(v.transpose("chain", "draw", ...).values) for k, v in post.items()}


# --- Stein inputs ------------------------------------------------------------------------------


def _as_chains(a: ArrayLike, name: str) -> np.ndarray:
    """``(chain, draw, d)`` from ``(chain, draw, d)`` or ``(draw, d)`` (one chain), real."""
    real_dtype(a, f"`{name}`")
    arr = np.asarray(a)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(
            f"`{name}` must have shape (chain, draw, d) or (draw, d), got {arr.shape}."
        )
    return arr


def _stein_dataset(
    x: ArrayLike, scores: ArrayLike, site_names: Sequence[str], like: xr.Dataset | None
) -> xr.Dataset:
    x, scores = _as_chains(x, "x"), _as_chains(scores, "scores")
    if x.shape != scores.shape:
        raise ValueError(f"`x` {x.shape} and `scores` {scores.shape} must have the same shape.")
    n_chain, n_draw, d = x.shape
    coords = {"chain": np.arange(n_chain), "draw": np.arange(n_draw), _STEIN_DIM: np.arange(d)}
    if like is not None and (like.sizes.get("chain"), like.sizes.get("draw")) == (n_chain, n_draw):
        coords |= {"chain": like["chain"].values, "draw": like["draw"].values}
    dims = ("chain", "draw", _STEIN_DIM)
    return xr.Dataset(
        {"x": (dims, x.copy()), "score": (dims, scores.copy())},
        coords=coords,
        attrs={"site_names": ",".join(site_names), "space": "unconstrained"},
    )


def add_stein_inputs(
    data: Data, x: ArrayLike, scores: ArrayLike, site_names: Sequence[str] = ()
) -> Data:
    """A new container with the unconstrained draws and scores as group ``stein_inputs``.

    Parameters
    ----------
    data : InferenceData or DataTree
        Left untouched; the result has its groups plus ``stein_inputs``.
    x, scores : array_like, (chain, draw, d) or (draw, d)
        Flat unconstrained draws and their scores :math:`\\nabla_x \\log p(x)` (e.g. from
        :func:`numpyro_dsd.model.targets.model_draws`).
    site_names : sequence of str
        Latent sites in flattening order, stored as the comma-joined attribute ``site_names``.

    Returns
    -------
    InferenceData or DataTree
        Same type as ``data``; variables ``x`` and ``score`` with dims
        ``(chain, draw, stein_dim)``, chain/draw coordinates taken from the posterior when its
        sizes match, attributes ``site_names`` and ``space="unconstrained"``.

    Examples
    --------
    >>> import numpy as np
    >>> data = _from_posterior({"mu": np.zeros((2, 10))})
    >>> new = add_stein_inputs(data, np.zeros((2, 10, 1)), np.zeros((2, 10, 1)), ("mu",))
    >>> get_group(new, "stein_inputs")["x"].dims, get_group(data, "stein_inputs") is None
    (('chain', 'draw', 'stein_dim'), True)
    """
    ds = _stein_dataset(x, scores, site_names, get_group(data, "posterior"))
    return _with_group(data, STEIN_INPUTS, ds)


def from_stein_inputs(
    x: ArrayLike,
    scores: ArrayLike,
    site_names: Sequence[str] = (),
    posterior: Mapping[str, ArrayLike] | None = None,
) -> Data:
    """A new container of the installed ArviZ line holding ``stein_inputs`` (and a posterior).

    Parameters
    ----------
    x, scores : array_like, (chain, draw, d) or (draw, d)
        Unconstrained draws and their scores.
    site_names : sequence of str
        Latent sites in flattening order.
    posterior : mapping of str to array_like, optional
        ``{var: (chain, draw, *shape)}`` constrained draws, stored as the ``posterior`` group.

    Returns
    -------
    InferenceData (ArviZ 0.x) or DataTree (ArviZ 1.x)

    Examples
    --------
    >>> import numpy as np
    >>> data = from_stein_inputs(np.zeros((1, 4, 2)), np.zeros((1, 4, 2)),
    ...                          posterior={"mu": np.zeros((1, 4, 2))})
    >>> is_inference_data(data), sorted(posterior_dict(data))
    (True, ['mu'])
    """
    data = _empty() if posterior is None else _from_posterior(posterior)
    return add_stein_inputs(data, x, scores, site_names)


def read_stein_inputs(data: Data) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]] | None:
    """The draws, scores and site names stored by :func:`add_stein_inputs`, or None.

    Returns
    -------
    (x, scores, site_names) or None
        ``x`` and ``scores`` of shape ``(chain, draw, d)`` (copies); None when ``data`` has no
        ``stein_inputs`` group.

    Examples
    --------
    >>> import numpy as np
    >>> read_stein_inputs(_from_posterior({"mu": np.zeros((1, 3))})) is None
    True
    """
    ds = get_group(data, STEIN_INPUTS)
    if ds is None:
        return None
    dims = ("chain", "draw", _STEIN_DIM)
    held = {k: ds[k].dims for k in ("x", "score") if k in ds}
    if any(set(held.get(k, ())) != set(dims) for k in ("x", "score")):
        raise ValueError(
            f"the `stein_inputs` group must hold `x` and `score` over {dims}; it holds {held}. "
            "Write it with add_stein_inputs(data, x, scores, site_names)."
        )
    x = np.array(ds["x"].transpose(*dims).values)
    scores = np.array(ds["score"].transpose(*dims).values)
    names = str(ds.attrs.get("site_names", ""))
    return x, scores, tuple(n for n in names.split(",") if n)


# --- diagnostics and files ----------------------------------------------------------------------


def diagnostics_dataset(ds: Any, where: str, needs: Sequence[str] = ("ksd",)) -> xr.Dataset:
    """The KSD diagnostic's Dataset from ``ds``: the Dataset itself, or the ``stein_diagnostics``
    group of an InferenceData / DataTree (as :func:`add_diagnostics` stores it).

    Parameters
    ----------
    ds : xarray.Dataset, InferenceData or DataTree
        What the caller ``where`` (e.g. ``"plot_ksd"``) was given as ``ds``.
    where : str
        The public function, named in the errors.
    needs : sequence of str
        Variables over ``chain`` the caller reads.

    Raises
    ------
    TypeError
        ``ds`` is neither a Dataset nor ArviZ data.
    ValueError
        ArviZ data without the group, or a Dataset that is not a diagnostic's result (e.g. the
        posterior group).

    Examples
    --------
    >>> diag = xr.Dataset({"ksd": ("chain", [0.1, 0.2])}, coords={"chain": [0, 1]})
    >>> data = add_diagnostics(_from_posterior({"mu": np.zeros((2, 10))}), diag)
    >>> diagnostics_dataset(data, "plot_ksd")["ksd"].values
    array([0.1, 0.2])
    """
    if is_inference_data(ds):
        group = get_group(ds, STEIN_DIAGNOSTICS)
        if group is None:
            raise ValueError(
                f"{where}: the {type(ds).__name__} given as ds has no `{STEIN_DIAGNOSTICS}` "
                "group. Pass the Dataset of ds = ksd_diagnostic(...), or store it first with "
                "add_diagnostics(data, ds)."
            )
        ds = group
    elif not isinstance(ds, xr.Dataset):
        raise TypeError(
            f"{where}: ds must be the xarray.Dataset of ksd_diagnostic, or ArviZ data holding it "
            f"as group `{STEIN_DIAGNOSTICS}`; got {type(ds).__name__}."
        )
    lacking = [name for name in needs if name not in ds or "chain" not in ds[name].dims]
    if lacking:
        raise ValueError(
            f"{where}: ds is not a ksd_diagnostic result: it lacks {lacking} over `chain` (it "
            f"holds {sorted(map(str, ds.data_vars))[:6]}). Pass the Dataset ksd_diagnostic "
            "returns."
        )
    return ds


def add_diagnostics(data: Data, ds: xr.Dataset, group: str = STEIN_DIAGNOSTICS) -> Data:
    """A new container with the diagnostic Dataset ``ds`` as group ``group`` (replaced if present).

    Parameters
    ----------
    data : InferenceData or DataTree
        Left untouched.
    ds : xarray.Dataset
        E.g. the result of the KSD diagnostic; its attributes must be netCDF-safe (numbers and
        strings) for :func:`save`.
    group : str
        Group name.

    Returns
    -------
    InferenceData or DataTree
        Same type as ``data``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> data = _from_posterior({"mu": np.zeros((2, 10))})
    >>> diag = xr.Dataset({"ksd": ("chain", [0.1, 0.2])}, coords={"chain": [0, 1]})
    >>> get_group(add_diagnostics(data, diag), "stein_diagnostics")["ksd"].values
    array([0.1, 0.2])
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"`ds` must be an xarray.Dataset, got {type(ds).__name__}.")
    return _with_group(data, group, ds.copy(deep=True))


def save(data: Data, path: str | os.PathLike) -> None:
    """Write ``data`` (every group) to a netCDF-4 file; read it back with :func:`load`.

    Needs a netCDF-4 engine (``h5netcdf`` or ``netCDF4``); ArviZ 0.x depends on ``h5netcdf``,
    ArviZ 1.x installs it with ``arviz[h5netcdf]``.
    """
    _check_data(data)
    data.to_netcdf(os.fspath(path))


def load(path: str | os.PathLike) -> Data:
    """Read a file written by :func:`save` (or ArviZ) into memory, in the installed line's type.

    Returns
    -------
    InferenceData (ArviZ 0.x) or DataTree (ArviZ 1.x)
        Fully loaded; the file is closed.
    """
    path = os.fspath(path)
    if arviz_1():
        return xr.load_datatree(path)
    with _az().rc_context({"data.load": "eager"}):
        return _az().from_netcdf(path)
