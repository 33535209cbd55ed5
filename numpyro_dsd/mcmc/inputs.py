"""What the diagnostic and Stein thinning accept, turned into unconstrained draws and scores.

``data`` may be

- a NumPyro :class:`~numpyro.infer.MCMC` after ``run`` (model and arguments taken from it, and
  NUTS's recorded ``z_grad`` reused when ``extra_fields=("z_grad",)`` was asked for);
- constrained draws ``{site: (chains, draws, ...)}`` as ``mcmc.get_samples(group_by_chain=True)``
  returns them (or ``{site: (draws, ...)}``, one chain), with the model;
- an ArviZ InferenceData (0.23) or DataTree (1.x) with a ``posterior`` group, with the model; or
  one holding a ``stein_inputs`` group (draws and scores written by
  :func:`numpyro_dsd.arviz.convert.add_stein_inputs`), with no model at all.

Every path ends in :class:`Draws`: unconstrained draws and scores of shape ``(chains, draws, d)``
(:func:`numpyro_dsd.model.targets.model_draws`). The caller's objects are only read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from numpyro.infer import MCMC

from numpyro_dsd import arviz as arviz_io
from numpyro_dsd.flows.diffusion import FlowDiffusion
from numpyro_dsd.flows.fitted import FittedFlow, FlowFit
from numpyro_dsd.model.layout import ModelLayout, is_autoguide
from numpyro_dsd.model.targets import latent_sites, model_draws
from numpyro_dsd.stein.diffusion import Constant, Diffusion, Identity
from numpyro_dsd.vocabulary import DIFFUSIONS, rng_key_or_default, warn_renamed

__all__ = [
    "DIFFUSIONS",
    "Draws",
    "canonical_diffusion",
    "resolve_draws",
    "resolve_diffusion",
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
) -> Draws:
    """Unconstrained draws and scores, ``(chains, draws, d)``, from any accepted ``data``.

    Parameters
    ----------
    data : MCMC, dict, InferenceData or DataTree
        See the module docstring.
    model : callable, optional
        The NumPyro model (not needed for an ``MCMC`` or for ``stein_inputs``).
    model_args, model_kwargs : tuple, dict, optional
        Its arguments (taken from an ``MCMC`` when not given).

    Returns
    -------
    Draws

    Raises
    ------
    ValueError
        An MCMC that was not run, no model where one is needed, discrete latent sites,
        non-finite draws or scores, or chains with fewer than 2 draws.

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("mu", dist.Normal(0.0, 1.0))
    >>> draws = resolve_draws({"mu": np.zeros((2, 10))}, model)
    >>> draws.x.shape, draws.site_names
    ((2, 10, 1), ('mu',))
    """
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
    if draws.num_draws < 2:
        raise ValueError(
            f"each chain needs at least 2 draws for a KSD; got {draws.num_draws}. Run the "
            "sampler longer (num_samples)."
        )
    return draws


def with_stein_inputs(
    data: Any,
    model: Model | None = None,
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """ArviZ data (InferenceData under ArviZ 0.x, DataTree under 1.x) holding the draws and a
    ``stein_inputs`` group with their unconstrained values and scores, so that the diagnostic
    (and ``numpyro-dsd diagnose FILE.nc``) runs later without the model.

    ``data`` as for :func:`resolve_draws`: an ``MCMC`` becomes ``az.from_numpyro(mcmc)``, ArviZ
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
    model = model or getattr(mcmc.sampler, "model", None)
    if model is None:
        raise ValueError(
            "the MCMC sampler was built from a potential_fn, not a model; pass model=... "
            "(the KSD needs the model's scores in unconstrained space)."
        )
    args = args or tuple(mcmc._args)
    kwargs = dict(mcmc._kwargs) if kwargs is None else kwargs
    extra = mcmc.get_extra_fields(group_by_chain=True)
    return _from_samples(
        mcmc.get_samples(group_by_chain=True), model, args, kwargs, extra.get("z_grad")
    )


def _from_inference_data(
    data: Any, model: Model | None, args: tuple, kwargs: Mapping[str, Any] | None
) -> Draws:
    stored = arviz_io.read_stein_inputs(data)
    if stored is not None:
        x, scores, names = stored
        return _checked(Draws(jnp.asarray(x), jnp.asarray(scores), None, names))
    samples = arviz_io.posterior_dict(data)
    return _from_samples(samples, model, args, kwargs, None)


def _from_samples(
    samples: dict[str, Any],
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
    shapes = latent_sites(model, args, kwargs)
    samples = {name: np.asarray(samples[name]) for name in shapes if name in samples}
    if samples and all(v.ndim == len(shapes[k]) + 1 for k, v in samples.items()):
        samples = {k: v[None] for k, v in samples.items()}  # one chain
        z_grad = None if z_grad is None else {k: np.asarray(v)[None] for k, v in z_grad.items()}
    md = model_draws(model, samples, args, kwargs, z_grad=z_grad)
    if md.x.ndim != 3:
        raise ValueError(
            f"draws must be grouped by chain, (chains, draws, ...); got batch shape "
            f"{md.x.shape[:-1]}. Use mcmc.get_samples(group_by_chain=True)."
        )
    return Draws(md.x, md.scores, samples, md.site_names, model, tuple(args), kwargs)


def _checked(draws: Draws) -> Draws:
    x, s = draws.x, draws.scores
    if x.ndim != 3 or x.shape != s.shape:
        raise ValueError(
            f"stein_inputs must hold x and score of one shape (chain, draw, d); got "
            f"{x.shape} and {s.shape}."
        )
    for name, a in (("draws", x), ("scores", s)):
        if not bool(jnp.all(jnp.isfinite(a))):
            raise ValueError(f"the stored {name} contain NaN or inf; drop the diverged draws.")
    return draws


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
