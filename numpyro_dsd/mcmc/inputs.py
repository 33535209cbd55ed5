"""What the diagnostic and Stein thinning accept, turned into unconstrained draws and scores.

``data`` may be

- a NumPyro :class:`~numpyro.infer.MCMC` after ``run`` (model and arguments taken from it, and
  NUTS's recorded ``z_grad`` reused when ``extra_fields=("z_grad",)`` was asked for, but only for
  the MCMC's own model and arguments: a ``model`` or ``model_args``/``model_kwargs`` given that
  differ from the run's objects get their scores computed from what was given);
- constrained draws ``{site: (chains, draws, ...)}`` as ``mcmc.get_samples(group_by_chain=True)``
  returns them, with the model (``{site: (draws, ...)}``, without the chain axis, is taken as one
  chain, with a ``UserWarning``: ``mcmc.get_samples()`` of several chains looks the same);
- an ArviZ InferenceData (0.23) or DataTree (1.x) with a ``posterior`` group, with the model; or
  one holding a ``stein_inputs`` group (draws and scores written by
  :func:`numpyro_dsd.arviz.convert.add_stein_inputs`), with no model at all.

Every path ends in :class:`Draws`: unconstrained draws and scores of shape ``(chains, draws, d)``
(:func:`numpyro_dsd.model.targets.model_draws`). The caller's objects are only read.
"""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from numpyro.infer import MCMC

from numpyro_dsd import arviz as arviz_io
from numpyro_dsd._validation import cast_finite, check_finite, float_dtype, real_dtype
from numpyro_dsd.flows.diffusion import FlowDiffusion
from numpyro_dsd.flows.fitted import FittedFlow, FlowFit
from numpyro_dsd.model.layout import ModelLayout, is_autoguide
from numpyro_dsd.model.targets import latent_sites, model_draws
from numpyro_dsd.stein.diffusion import Constant, Diffusion, Identity
from numpyro_dsd.vocabulary import DIFFUSIONS, describe, rng_key_or_default, warn_renamed

__all__ = [
    "DIFFUSIONS",
    "Draws",
    "canonical_diffusion",
    "check_num_draws",
    "resolve_draws",
    "resolve_diffusion",
    "signature_mismatch",
    "with_stein_inputs",
]

Model = Callable[..., Any]


class Draws(NamedTuple):
    """Unconstrained draws of every chain and their scores.

    Attributes
    ----------
    x, scores : (chains, draws, d)
        Flat unconstrained draws (sites in ``site_names`` order) and
        :math:`\\nabla_x \\log p(x)`.
    samples : dict or None
        The constrained draws ``{site: (chains, draws, ...)}``; None when only ``stein_inputs``
        were given.
    site_names : tuple of str
    model, model_args, model_kwargs
        The model and its arguments, when known (a flow diffusion is fitted to the model).
    """

    x: jax.Array
    scores: jax.Array
    samples: dict[str, np.ndarray] | None
    site_names: tuple[str, ...]
    model: Model | None = None
    model_args: tuple = ()
    model_kwargs: Mapping[str, Any] | None = None

    @property
    def num_chains(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_draws(self) -> int:
        return int(self.x.shape[1])


def resolve_draws(
    data: Any,
    model: Model | None = None,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    *,
    min_draws: int = 2,
    hint: str = "",
) -> Draws:
    """Unconstrained draws and scores, ``(chains, draws, d)``, from any accepted ``data``.

    Parameters
    ----------
    data : MCMC, dict, InferenceData or DataTree
        See the module docstring.
    model : callable, optional
        The NumPyro model (not needed for an ``MCMC`` or for ``stein_inputs``; when given with
        ArviZ data that holds a ``stein_inputs`` group, its scores at the posterior draws are
        used, not the stored ones).
    model_args, model_kwargs : tuple, dict, optional
        Its arguments (taken from an ``MCMC`` when not given; NUTS's recorded ``z_grad`` is
        reused only when neither a model nor arguments other than the run's own are given).
    min_draws : int
        The fewest draws per chain accepted (the diagnostic needs
        :data:`~numpyro_dsd.mcmc.stationarity.MIN_DRAWS`).
    hint : str
        Added to the advice of the error for too few draws (:func:`check_num_draws`).

    Returns
    -------
    Draws

    Raises
    ------
    TypeError
        ``model_args`` not a tuple (or list), ``model_kwargs`` not a mapping, arguments that do
        not fit the model's signature, draws that are not real numbers.
    ValueError
        An MCMC that was not run, no model where one is needed, draws that lack a latent site
        of the model (named, with the hint to pass ``model_args`` when none were given),
        discrete latent sites, draws of inconsistent shapes, non-finite draws or scores, or
        chains with fewer than ``min_draws`` draws.

    Warns
    -----
    UserWarning
        Draws without a chain axis (``mcmc.get_samples()``), taken as one chain.

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("mu", dist.Normal(0.0, 1.0))
    >>> draws = resolve_draws({"mu": np.zeros((2, 10))}, model)
    >>> draws.x.shape, draws.site_names
    ((2, 10, 1), ('mu',))
    """
    model_args, model_kwargs = _model_arguments(model_args, model_kwargs)
    if isinstance(data, MCMC):
        draws = _from_mcmc(data, model, model_args, model_kwargs)
    elif arviz_io.is_inference_data(data):
        draws = _from_inference_data(data, model, model_args, model_kwargs)
    elif isinstance(data, Mapping):
        draws = _from_samples(dict(data), model, model_args, model_kwargs, None)
    else:
        raise ValueError(
            f"data must be a NumPyro MCMC after run, a dict of draws, or an ArviZ "
            f"InferenceData/DataTree; got {type(data).__name__}."
        )
    check_num_draws(draws.num_draws, min_draws, hint)
    return draws


def check_num_draws(num_draws: int, minimum: int, hint: str = "") -> None:
    """``ValueError`` when the chains have fewer than ``minimum`` draws each, ``hint`` appended
    to the advice (e.g. ``", or pass check=False"``).

    Examples
    --------
    >>> check_num_draws(3, 8)
    Traceback (most recent call last):
    ...
    ValueError: each chain of data needs at least 8 draws; got 3. Run the sampler longer ...
    """
    if num_draws < minimum:
        raise ValueError(
            f"each chain of data needs at least {minimum} draws; got {num_draws}. Run the "
            f"sampler longer (num_samples){hint}."
        )


def _model_arguments(args: Any, kwargs: Any) -> tuple[tuple, Mapping[str, Any] | None]:
    """``model_args`` as a tuple (a list is accepted) and ``model_kwargs``, or a ``TypeError``
    naming the one that is not of its kind."""
    if isinstance(args, list):
        args = tuple(args)
    if not isinstance(args, tuple):
        raise TypeError(
            f"model_args must be a tuple of the model's positional arguments, as given to "
            f"mcmc.run; got {describe(args)}. For one argument write model_args=(y,)."
        )
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(
            f"model_kwargs must be a dict of the model's keyword arguments; got {describe(kwargs)}."
        )
    return args, kwargs


def with_stein_inputs(
    data: Any,
    model: Model | None = None,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """ArviZ data (InferenceData under ArviZ 0.x, DataTree under 1.x) holding the draws and a
    ``stein_inputs`` group with their unconstrained values and scores, so that the diagnostic
    (and ``numpyro-dsd diagnose FILE.nc``) runs later without the model.

    ``data`` as for :func:`~numpyro_dsd.mcmc.inputs.resolve_draws`: an ``MCMC`` becomes
    ``az.from_numpyro(mcmc)``, ArviZ
    data is copied, a dict of draws becomes the ``posterior`` group.

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("mu", dist.Normal(0.0, 1.0))
    >>> data = with_stein_inputs({"mu": np.zeros((2, 10))}, model)
    >>> [a.shape for a in arviz_io.read_stein_inputs(data)[:2]]
    [(2, 10, 1), (2, 10, 1)]
    """
    draws = resolve_draws(data, model, model_args, model_kwargs)
    args = (draws.x, draws.scores, draws.site_names)
    if isinstance(data, MCMC):
        import arviz as az

        return arviz_io.add_stein_inputs(az.from_numpyro(data), *args)
    if arviz_io.is_inference_data(data):
        return arviz_io.add_stein_inputs(data, *args)
    return arviz_io.from_stein_inputs(*args, posterior=draws.samples)


def _from_mcmc(
    mcmc: MCMC, model: Model | None, args: tuple, kwargs: Mapping[str, Any] | None
) -> Draws:
    if getattr(mcmc, "_states", None) is None:
        raise ValueError("the MCMC object has no draws: call mcmc.run(rng_key, *args) first.")
    own = getattr(mcmc.sampler, "model", None)
    if model is None and own is None:
        raise ValueError(
            "the MCMC sampler was built from a potential_fn, not a model; pass model=... "
            "(the KSD needs the model's scores in unconstrained space)."
        )
    own_args, own_kwargs = tuple(mcmc._args), dict(mcmc._kwargs)
    # NUTS's z_grad are the scores of the run's own model at its own arguments, nothing else
    same = (
        (model is None or model is own)
        and (not args or _same_objects(args, own_args))
        and (kwargs is None or _same_objects(kwargs, own_kwargs))
    )
    z_grad = mcmc.get_extra_fields(group_by_chain=True).get("z_grad") if same else None
    return _from_samples(
        mcmc.get_samples(group_by_chain=True),
        model or own,
        args or own_args,
        own_kwargs if kwargs is None else kwargs,
        z_grad,
    )


def _same_objects(given: tuple | Mapping[str, Any], own: tuple | Mapping[str, Any]) -> bool:
    """Whether ``given`` holds the very objects of ``own`` (identity, not equality: arrays)."""
    if isinstance(given, Mapping):
        return given.keys() == own.keys() and all(given[k] is own[k] for k in given)
    return len(given) == len(own) and all(a is b for a, b in zip(given, own, strict=True))


def _from_inference_data(
    data: Any, model: Model | None, args: tuple, kwargs: Mapping[str, Any] | None
) -> Draws:
    stored = arviz_io.read_stein_inputs(data)
    if stored is not None and model is None:
        return _stored(*stored)
    # a model given: its scores at the posterior's draws, not the stored ones (another model's?)
    if stored is not None and arviz_io.get_group(data, "posterior") is None:
        raise ValueError(
            "data holds a stein_inputs group but no posterior group, so the model given cannot "
            "be evaluated at its draws. Drop model= to use the stored scores, or pass the run's "
            "InferenceData/DataTree with its posterior."
        )
    samples = arviz_io.posterior_dict(data)
    return _from_samples(samples, model, args, kwargs, None)


def _from_samples(
    samples: Mapping[str, Any],
    model: Model | None,
    args: tuple,
    kwargs: Mapping[str, Any] | None,
    z_grad: Mapping[str, Any] | None,
) -> Draws:
    if model is None:
        raise ValueError(
            "pass the NumPyro model (model=...) that produced these draws: the KSD needs its "
            "scores. Or store draws and scores with numpyro_dsd.arviz.convert.add_stein_inputs."
        )
    _check_signature(model, args, kwargs)
    shapes = latent_sites(model, args, kwargs)
    missing = [name for name in shapes if name not in samples]
    if missing:
        raise _missing_sites(missing, list(samples), args, kwargs)
    arrays = _grouped_sites(samples, shapes)
    md = model_draws(model, arrays, args, kwargs, z_grad=z_grad)
    return Draws(md.x, md.scores, arrays, md.site_names, model, tuple(args), kwargs)


def signature_mismatch(model: Model, args: tuple, kwargs: Mapping[str, Any] | None) -> str | None:
    """Why ``model(*args, **kwargs)`` does not bind to the model's signature, as
    ``"name(signature): reason"``; None when it binds or the model has no signature to check
    (the model's own call will tell). The command line's ``--data`` check uses it too.

    Examples
    --------
    >>> def model(J, sigma, y=None): ...
    >>> signature_mismatch(model, (), {"J": 8})
    "model(J, sigma, y=None): missing a required argument: 'sigma'"
    """
    try:
        signature = inspect.signature(model)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*args, **dict(kwargs or {}))
    except TypeError as err:
        return f"{getattr(model, '__name__', type(model).__name__)}{signature}: {err}"
    return None


def _check_signature(model: Model, args: tuple, kwargs: Mapping[str, Any] | None) -> None:
    """A ``TypeError`` naming ``model_args`` when the model cannot be called with them."""
    mismatch = signature_mismatch(model, args, kwargs)
    if mismatch is not None:
        raise TypeError(
            f"model_args ({len(args)} positional) and model_kwargs ({sorted(kwargs or {})}) do "
            f"not fit the model {mismatch}. Pass the arguments it was sampled with, as given "
            "to mcmc.run."
        )


def _missing_sites(
    missing: list[str], given: list[str], args: tuple, kwargs: Mapping[str, Any] | None
) -> ValueError:
    names = ", ".join(repr(name) for name in missing)
    if not args and not kwargs:
        return ValueError(
            f"data lacks the latent site(s) {names} of the model called without arguments "
            "(model_args=(), model_kwargs=None): an observed site whose data is an argument of "
            "the model is latent then. Pass the arguments the model was sampled with, as given "
            "to mcmc.run: model_args=(...) or model_kwargs={...}."
        )
    has = ", ".join(repr(str(name)) for name in given) or "no sites"
    return ValueError(
        f"data lacks the latent site(s) {names} of the model (data has {has}): pass the model "
        "that produced these draws, with the model_args/model_kwargs it was sampled with."
    )


def _grouped_sites(
    samples: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """The model's latent sites of ``samples`` as real arrays ``(chains, draws, *site shape)``
    of finite values (finite in JAX's float dtype too): draws without a chain axis are taken as
    one chain, with a warning."""
    arrays = {name: _site_array(samples[name], name, shape) for name, shape in shapes.items()}
    lead = {name: a.shape[: a.ndim - len(shapes[name])] for name, a in arrays.items()}
    if len(set(lead.values())) > 1:
        each = ", ".join(f"{name!r}: {axes}" for name, axes in lead.items())
        raise ValueError(
            f"the sites of data disagree on their leading (chains, draws) axes: {each}. Give "
            "every site as mcmc.get_samples(group_by_chain=True) returns them."
        )
    axes = next(iter(lead.values()))
    if len(axes) == 1:
        warnings.warn(
            f"the draws in data have no chain axis ({axes[0]} draws per site): treated as one "
            f"chain of {axes[0]} draws. If they come from several chains, pass "
            "mcmc.get_samples(group_by_chain=True); for one chain, add the axis (a[None]).",
            UserWarning,
            stacklevel=_outside_package(),
        )
        arrays, axes = {name: a[None] for name, a in arrays.items()}, (1, *axes)
    if len(axes) != 2:
        raise ValueError(
            f"data must hold draws grouped by chain, (chains, draws, ...) per site; its sites "
            f"have leading axes {axes}. Use mcmc.get_samples(group_by_chain=True)."
        )
    if 0 in axes:
        raise ValueError(f"data holds no draws (leading axes {axes}).")
    for name, a in arrays.items():
        check_finite(a, f"data[{name!r}]", _NONFINITE, batch_ndim=2)  # names chain and draw
        cast_finite(a, f"data[{name!r}]", jnp.result_type(float), _NONFINITE)  # overflow
    return arrays


def _outside_package() -> int:
    """The ``stacklevel`` of a warning issued by the caller that points at the first frame
    outside ``numpyro_dsd`` (the user's call, whichever entry point led here)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _site_array(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``data[name]`` as a real array whose shape ends with the model's site shape."""
    real_dtype(value, f"data[{name!r}]")
    a = np.asarray(value)
    if a.ndim < len(shape) or a.shape[a.ndim - len(shape) :] != tuple(shape):
        raise ValueError(
            f"data[{name!r}] has shape {a.shape}, which does not end with the model's site "
            f"shape {tuple(shape)}: check that model_args are the ones used for sampling."
        )
    return a


_NONFINITE = "Fix or drop those draws (a diverged chain?)."


def _stored(x: np.ndarray, scores: np.ndarray, names: tuple[str, ...]) -> Draws:
    """Draws from a ``stein_inputs`` group, checked: real, (chain, draw, d) alike, finite."""
    for what, a in (("x", x), ("score", scores)):
        real_dtype(a, f"data's stein_inputs {what}")
    if x.ndim != 3 or x.shape != scores.shape or 0 in x.shape:
        raise ValueError(
            f"data's stein_inputs must hold x and score of one shape (chain, draw, d), none of "
            f"them 0; got {x.shape} and {scores.shape}."
        )
    dtype = float_dtype(x, scores)
    out = []
    for what, a in (("x", x), ("score", scores)):
        name = f"data's stein_inputs {what}"
        check_finite(a, name, _NONFINITE, batch_ndim=2)
        out.append(cast_finite(a, name, dtype, _NONFINITE))
    return Draws(out[0], out[1], None, names)


def canonical_diffusion(diffusion: str | Diffusion, *, stacklevel: int = 4) -> str | Diffusion:
    """``diffusion`` with a deprecated name replaced (``"precond"`` -> ``"covariance"``, with a
    ``DeprecationWarning``); objects and other names unchanged.

    Examples
    --------
    >>> canonical_diffusion("covariance")
    'covariance'
    """
    if isinstance(diffusion, str) and diffusion == "precond":
        warn_renamed("precond", "covariance", "diffusion", stacklevel=stacklevel)
        return "covariance"
    return diffusion


def resolve_diffusion(
    diffusion: str | Diffusion,
    draws: Draws,
    *,
    rng_key: jax.Array | None = None,
    flow_kwargs: Mapping[str, Any] | None = None,
) -> Diffusion:
    """The diffusion object for ``diffusion``.

    - ``"identity"``: :math:`M = I` (Langevin KSD).
    - ``"covariance"`` (deprecated name ``"precond"``): constant :math:`M = L`,
      :math:`LL^\\top = \\hat\\Sigma` the pooled sample covariance (the Langevin KSD of whitened
      draws, docs/math.md §2.4, §3.7).
    - ``"flow"``: :math:`M = J^{-1}` of a flow (docs/math.md §3): fitted to the model by NeuTra
      (:func:`numpyro_dsd.fit_flow`) when the model is known, otherwise to the pooled draws
      (:func:`numpyro_dsd.fit_flow_to_samples`); the
      fit's summary (:meth:`~numpyro_dsd.flows.FlowFit.summary`) is in the settings.
      ``flow_kwargs`` go to the fitting function, ``rng_key`` (None: ``jax.random.key(0)``,
      :mod:`numpyro_dsd.vocabulary`) to the fit.
    - a :class:`~numpyro_dsd.flows.FlowFit` or :class:`~numpyro_dsd.flows.FittedFlow` (from
      :func:`numpyro_dsd.fit_flow`): its flow diffusion, no refit;
    - an earlier diagnostic's result (the Dataset, or an InferenceData/DataTree with it as group
      ``stein_diagnostics``, e.g. loaded from netCDF) computed with a flow: the flow stored with
      it (:meth:`~numpyro_dsd.flows.FittedFlow.from_dataset`), no refit;
    - ``(guide, params)``: a fitted NumPyro autoguide with a transform (``AutoIAFNormal``), its
      generator permuted into the model's layout
      (:meth:`~numpyro_dsd.model.ModelLayout.autoguide_generator`; needs the model).
    - any object with ``features(x, scores)`` and ``settings()``: used as it is.

    Examples
    --------
    >>> x = jax.random.normal(jax.random.key(0), (1, 50, 2))  # one chain of 50 draws
    >>> resolve_diffusion("covariance", Draws(x, -x, None, ()))
    Constant(<matrix (2, 2)>)
    """
    if is_autoguide(diffusion):
        return _autoguide_diffusion(draws, *diffusion)
    if isinstance(diffusion, FlowFit | FittedFlow):
        return _given_flow(diffusion, draws.x.shape[-1])
    if not isinstance(diffusion, str):
        if hasattr(diffusion, "features"):
            return diffusion
        if isinstance(diffusion, xr.Dataset) or arviz_io.is_inference_data(diffusion):
            return _stored_flow(diffusion, draws.x.shape[-1])
        raise ValueError(
            f"diffusion must be 'identity', 'covariance', 'flow' or a diffusion object; got "
            f"{diffusion!r}."
        )
    diffusion = canonical_diffusion(diffusion)
    if diffusion == "identity":
        return Identity()
    pooled = draws.x.reshape(-1, draws.x.shape[-1])
    if diffusion == "covariance":
        return Constant(_covariance_factor(pooled))
    if diffusion == "flow":
        return _fit_flow(draws, pooled, rng_key, dict(flow_kwargs or {}))
    raise ValueError(
        f"diffusion must be 'identity', 'covariance', 'flow' or a diffusion object; got "
        f"{diffusion!r}."
    )


def _autoguide_diffusion(draws: Draws, guide: Any, params: Any) -> Diffusion:
    if draws.model is None:
        raise ValueError(
            "diffusion=(guide, params) needs the model, to put the guide's coordinates (the order "
            "the model declares its sites) in the draws' order: pass model= (and model_args), or "
            "pass FlowDiffusion.from_generator(ModelLayout(model, args).autoguide_generator(guide, "
            "params))."
        )
    layout = ModelLayout(draws.model, draws.model_args, draws.model_kwargs)
    return FlowDiffusion.from_generator(layout.autoguide_generator(guide, params))


def _covariance_factor(x: jax.Array) -> jax.Array:
    cov = jnp.atleast_2d(jnp.cov(x, rowvar=False))
    L = jnp.linalg.cholesky(cov)
    if not bool(jnp.all(jnp.isfinite(L))):
        raise ValueError(
            "the pooled sample covariance is singular (a coordinate is constant or chains are "
            "stuck); diffusion='covariance' needs it positive definite. Use 'identity'."
        )
    return L


def _fit_flow(
    draws: Draws, pooled: jax.Array, rng_key: jax.Array | None, kwargs: dict[str, Any]
) -> Diffusion:
    """Fit the flow of ``diffusion="flow"``: NeuTra on the model when it is known (from
    ``fit_flow``'s mean-field start: started at the draws' mean and sd instead, the fits on
    docs/validation.md's models had a worse Pareto k-hat on 5 of 7, e.g. horseshoe 9.5 against
    1.25), otherwise maximum likelihood on the draws under test. The fit's summary goes to the
    diffusion's settings."""
    from numpyro_dsd.flows.fitting import fit_flow, fit_flow_to_samples

    key, _ = rng_key_or_default(rng_key)
    kwargs.setdefault("progress_bar", False)
    if draws.model is not None:
        model_kwargs = dict(draws.model_kwargs or {})
        fit = fit_flow(draws.model, *draws.model_args, rng_key=key, **kwargs, **model_kwargs)
        how = "fit_flow(model)"
    else:
        fit = fit_flow_to_samples(pooled, rng_key=key, **kwargs)
        how = "fit_flow_to_samples(the draws under test): no model given"
    return fit.flow.diffusion(record={"fitted": how, **fit.summary()})


def _stored_flow(data: Any, dim: int) -> Diffusion:
    """The flow kept with an earlier diagnostic's result (a Dataset, or a container whose
    ``stein_diagnostics`` group holds one, e.g. read back from netCDF)."""
    ds = data if isinstance(data, xr.Dataset) else arviz_io.get_group(data, "stein_diagnostics")
    if ds is None:
        raise ValueError(
            "diffusion=<InferenceData/DataTree> needs a stein_diagnostics group with a stored flow "
            "(a diagnostic run with diffusion='flow', saved with add_diagnostics)."
        )
    skip = ("flow_spec_", "flow_num_params")
    record = {
        k.removeprefix("flow_"): v
        for k, v in ds.attrs.items()
        if k.startswith("flow_") and not k.startswith(skip)
    }
    record["fitted"] = f"stored with an earlier diagnostic ({record.get('fitted', 'given')})"
    return _given_flow(FittedFlow.from_dataset(ds), dim, record)


def _given_flow(
    flow: FlowFit | FittedFlow, dim: int, record: dict[str, Any] | None = None
) -> Diffusion:
    """The diffusion of a flow fitted earlier (a ``FlowFit`` or its ``FittedFlow``)."""
    if record is None:
        record = {"fitted": "given", **(flow.summary() if isinstance(flow, FlowFit) else {})}
    fitted = flow.flow if isinstance(flow, FlowFit) else flow
    if fitted.spec.dim != dim:
        raise ValueError(
            f"The flow given acts on {fitted.spec.dim} dimensions but the draws' flat "
            f"unconstrained latent has {dim}: fit it to this model (fit_flow(model, ...)) or "
            "pass diffusion='flow'."
        )
    return fitted.diffusion(record=record)
