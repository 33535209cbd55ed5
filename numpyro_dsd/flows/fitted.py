"""Fitted flows as values (docs/math.md §3): the architecture (:class:`FlowSpec`), the arrays
(:class:`FittedFlow`) and a fit's record (:class:`FlowFit`).

A :class:`FittedFlow` pickles, travels in an SVGD state, and rebuilds its NumPyro transforms
without the model; fitting lives in :mod:`numpyro_dsd.flows.fitting`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import xarray as xr
from jax.example_libraries import stax
from jax.typing import ArrayLike
from numpyro.distributions.flows import InverseAutoregressiveTransform
from numpyro.distributions.transforms import (
    AffineTransform,
    ComposeTransform,
    IndependentTransform,
    PermuteTransform,
    Transform,
)
from numpyro.infer.svi import SVIState
from numpyro.nn import AutoregressiveNN

from numpyro_dsd.flows.diffusion import FlowDiffusion

__all__ = ["FlowSpec", "FittedFlow", "FlowFit"]

_NONLINEARITIES = {"elu": stax.Elu, "relu": stax.Relu, "tanh": stax.Tanh}
_PREFIX = "auto"


class FlowSpec(NamedTuple):
    """Architecture of an autoregressive flow: ``num_flows`` IAF/MAF layers, each an
    ``AutoregressiveNN`` with ``hidden_dims``, the order reversed between layers (as
    ``AutoIAFNormal`` builds it).

    ``direction`` says what the stack of layers maps: ``"generator"`` (latent to data, fitted by
    :func:`~numpyro_dsd.fit_flow`) or ``"normalizer"`` (data to latent, fitted by
    :func:`~numpyro_dsd.fit_flow_to_samples`).
    ``order`` (generator only): the layers' output is the model's flat latent in the order the
    NumPyro autoguide flattens it (the order the model declares its sites), and
    ``output[order]`` is the sorted-site order of :func:`numpyro_dsd.model.targets.model_draws`;
    None is the identity.
    """

    dim: int
    num_flows: int
    hidden_dims: tuple[int, ...]
    skip_connections: bool
    nonlinearity: str
    direction: str
    order: tuple[int, ...] | None = None


class FittedFlow(NamedTuple):
    """A fitted flow as a value: :class:`FlowSpec`, parameters, and the affine standardisation
    :math:`(x - \\text{loc}) / \\text{scale}` on the data side of the layers
    (:func:`~numpyro_dsd.fit_flow`: :math:`G(\\varepsilon) = \\text{loc} + \\text{scale}\\odot
    \\text{layers}(\\varepsilon)`).

    Examples
    --------
    >>> import pickle, jax
    >>> x = jax.random.normal(jax.random.key(0), (100, 2))
    >>> from numpyro_dsd.flows.fitting import fit_flow_to_samples
    >>> fit = fit_flow_to_samples(x, num_steps=5, progress_bar=False)
    >>> flow = pickle.loads(pickle.dumps(fit.flow))
    >>> flow.transform()(x[0]).shape
    (2,)
    """

    spec: FlowSpec
    params: dict[str, Any]
    loc: jax.Array
    scale: jax.Array

    def _layers(self) -> list[Transform]:
        layers: list[Transform] = []
        for i in range(self.spec.num_flows):
            if i > 0:
                layers.append(PermuteTransform(jnp.arange(self.spec.dim)[::-1]))
            _, apply = _arn(self.spec)
            layers.append(InverseAutoregressiveTransform(_bind(apply, self.params[_arn_name(i)])))
        return layers

    def _standardise(self) -> Transform:
        return _affine(self.loc, self.scale).inv

    def transform(self) -> Transform:
        """:math:`T`, data (flat unconstrained latent) to latent: a NumPyro ``Transform``."""
        if self.spec.direction == "normalizer":
            return ComposeTransform([self._standardise(), *self._layers()])
        return self.generator().inv

    def generator(self) -> Transform:
        """:math:`G = T^{-1}`, latent to data: a NumPyro ``Transform``."""
        if self.spec.direction == "normalizer":
            return self.transform().inv
        parts = [*self._layers(), self._standardise().inv]
        if self.spec.order is not None:
            parts.append(PermuteTransform(jnp.asarray(self.spec.order)))
        return ComposeTransform(parts)

    def diffusion(self, record: Mapping[str, Any] | None = None) -> FlowDiffusion:
        """The :class:`~numpyro_dsd.FlowDiffusion` of this flow, through its cheap direction;
        ``record`` (how the flow was fitted) goes to its ``settings()``."""
        if self.spec.direction == "normalizer":
            diffusion = FlowDiffusion(self.transform(), record=record)
        else:
            diffusion = FlowDiffusion.from_generator(self.generator(), record=record)
        diffusion.fitted = self  # the diagnostic stores it with its result (to_dataset)
        return diffusion

    def to_dataset(self, prefix: str = "flow_") -> xr.Dataset:
        """The flow as an xarray Dataset of plain arrays and attributes (netCDF-safe, no
        pickle): ``{prefix}loc``, ``{prefix}scale`` (dim ``{prefix}dim``), one variable
        ``{prefix}param_{i}`` per parameter array (in :func:`jax.tree_util.tree_leaves` order of
        ``params``, sorted by layer name) and the :class:`FlowSpec` as attributes
        ``{prefix}spec_*``. :meth:`from_dataset` rebuilds it; the diagnostic stores it with its
        result so a later call, or a saved file, reuses the flow.

        Examples
        --------
        >>> import jax
        >>> from numpyro_dsd.flows.fitting import fit_flow_to_samples
        >>> x = jax.random.normal(jax.random.key(0), (100, 2))
        >>> flow = fit_flow_to_samples(x, num_steps=5, progress_bar=False).flow
        >>> again = FittedFlow.from_dataset(flow.to_dataset())
        >>> bool(jnp.allclose(again.transform()(x), flow.transform()(x)))
        True
        """
        leaves = jax.tree_util.tree_leaves(_sorted(self.params))
        data = {f"{prefix}loc": (f"{prefix}dim", np.asarray(self.loc))}
        data[f"{prefix}scale"] = (f"{prefix}dim", np.asarray(self.scale))
        for i, leaf in enumerate(leaves):
            leaf = np.asarray(leaf)
            data[f"{prefix}param_{i}"] = (
                [f"{prefix}param_{i}_{j}" for j in range(leaf.ndim)],
                leaf,
            )
        spec = self.spec._asdict()
        attrs = {f"{prefix}spec_{k}": json.dumps(v) for k, v in spec.items()}
        attrs[f"{prefix}num_params"] = len(leaves)
        return xr.Dataset(data, attrs=attrs)

    @classmethod
    def from_dataset(cls, ds: xr.Dataset, prefix: str = "flow_") -> FittedFlow:
        """The flow stored by :meth:`to_dataset` (e.g. in a diagnostic's result, or its
        ``stein_diagnostics`` group read back from netCDF)."""
        if f"{prefix}spec_dim" not in ds.attrs:
            raise ValueError(
                "This dataset holds no flow (no flow_spec_* attributes): pass a diagnostic result "
                "computed with a flow diffusion, or fit one with fit_flow(model, ...)."
            )
        fields = {k: json.loads(ds.attrs[f"{prefix}spec_{k}"]) for k in FlowSpec._fields}
        fields["hidden_dims"] = tuple(fields["hidden_dims"])
        fields["order"] = None if fields["order"] is None else tuple(fields["order"])
        spec = FlowSpec(**fields)
        template = _sorted(
            {
                _arn_name(i): _arn(spec)[0](jax.random.key(0), (spec.dim,))[1]
                for i in range(spec.num_flows)
            }
        )
        count = int(ds.attrs[f"{prefix}num_params"])
        leaves = [jnp.asarray(ds[f"{prefix}param_{i}"].values) for i in range(count)]
        params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)
        loc, scale = (jnp.asarray(ds[f"{prefix}{k}"].values) for k in ("loc", "scale"))
        return cls(spec, dict(params), loc, scale)

    def log_prob(self, x: ArrayLike) -> jax.Array:
        """Flow log density :math:`\\log\\mathcal N(T(x); 0, I) + \\log|\\det J(x)|`, x (..., d)."""
        return _TransformedNormal(self.transform(), self.spec.dim).log_prob(jnp.asarray(x))


class FlowFit(NamedTuple):
    """Result of :func:`~numpyro_dsd.fit_flow` / :func:`~numpyro_dsd.fit_flow_to_samples`.

    Attributes
    ----------
    flow : FittedFlow
        The flow, to save and reuse (``flow.diffusion()`` for :func:`~numpyro_dsd.ksd`).
    state : SVIState
        Optimiser state; ``init_state=fit.state`` continues the run exactly.
    losses : (num_steps,)
        Per step: the negative ELBO (:func:`~numpyro_dsd.fit_flow`), or the negative log-likelihood
        per draw of the minibatch, an estimate of :math:`-\\frac1n\\sum_i\\log q(x_i)`
        (:func:`~numpyro_dsd.fit_flow_to_samples`).
    params : dict
        All SVI parameters (for :func:`~numpyro_dsd.fit_flow`, the model's own ``numpyro.param``
        sites too).
    khat : float
        Pareto :math:`\\hat k` of the flow as an importance proposal for the posterior
        (:func:`numpyro_dsd.flows.quality.flow_khat`; :func:`~numpyro_dsd.fit_flow` only, NaN
        otherwise): below 0.5 good, above 0.7 the flow misses mass the posterior has.
    num_nonfinite : int
        Steps whose loss was not finite (skipped: the parameters stayed where they were).
    step_scale : float
        The factor on the default step size the fit ended with (1, or less after a back-off
        from a diverging run; 1 with a user's ``optim``).
    """

    flow: FittedFlow
    state: SVIState
    losses: jax.Array
    params: dict[str, Any]
    khat: float = float("nan")
    num_nonfinite: int = 0
    step_scale: float = 1.0

    def summary(self) -> dict[str, float]:
        """The fit's health in numbers: steps, non-finite steps, the median loss over the first
        and the last tenth of the steps, :math:`\\hat k` and the step-size factor.

        Examples
        --------
        >>> import jax
        >>> from numpyro_dsd.flows.fitting import fit_flow_to_samples
        >>> x = jax.random.normal(jax.random.key(0), (200, 2))
        >>> fit = fit_flow_to_samples(x, num_steps=50, progress_bar=False)
        >>> sorted(fit.summary())  # doctest: +NORMALIZE_WHITESPACE
        ['khat', 'loss_first', 'loss_last', 'num_nonfinite', 'num_steps', 'step_scale']
        """
        losses = np.asarray(self.losses, dtype=np.float64)
        tenth = max(1, losses.size // 10)
        return {
            "num_steps": int(losses.size),
            "num_nonfinite": int(self.num_nonfinite),
            "loss_first": _finite_median(losses[:tenth]),
            "loss_last": _finite_median(losses[-tenth:]),
            "khat": float(self.khat),
            "step_scale": float(self.step_scale),
        }


def _sorted(params: dict[str, Any]) -> dict[str, Any]:
    return {k: params[k] for k in sorted(params)}


def _finite_median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")


def _affine(loc: jax.Array, scale: jax.Array) -> Transform:
    """:math:`u \\mapsto \\text{loc} + \\text{scale}\\odot u` on flat vectors."""
    return IndependentTransform(AffineTransform(loc, scale), 1)


def _arn_name(i: int) -> str:
    return f"{_PREFIX}_arn__{i}$params"


def _bind(apply: Callable, params: Any) -> Callable:
    return lambda x: apply(params, x)


def _arn(spec: FlowSpec) -> tuple[Callable, Callable]:
    return AutoregressiveNN(
        spec.dim,
        list(spec.hidden_dims),
        permutation=jnp.arange(spec.dim),
        skip_connections=spec.skip_connections,
        nonlinearity=_NONLINEARITIES[spec.nonlinearity],
    )


def _check_nonlinearity(nonlinearity: str) -> None:
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(
            f"nonlinearity must be one of {sorted(_NONLINEARITIES)}; got {nonlinearity!r}."
        )


def _spec(
    dim: int,
    num_flows: int,
    hidden_dims: Sequence[int] | None,
    skip_connections: bool,
    nonlinearity: str,
    direction: str,
) -> FlowSpec:
    if dim < 2:
        raise ValueError(
            f"Autoregressive flows need d >= 2 latent dimensions; got d={dim}. In one dimension "
            "use a Constant diffusion (a scale) instead."
        )
    _check_nonlinearity(nonlinearity)
    if num_flows < 1:
        raise ValueError(f"num_flows must be >= 1; got {num_flows}.")
    hidden = tuple(hidden_dims) if hidden_dims is not None else (max(2 * dim, 16),) * 2
    return FlowSpec(dim, num_flows, hidden, skip_connections, nonlinearity, direction)


class _TransformedNormal(dist.Distribution):
    """:math:`x` with :math:`T(x) \\sim \\mathcal N(0, I)`: density by one pass of :math:`T`."""

    support = dist.constraints.real_vector

    def __init__(self, T: Transform, dim: int):
        self.T = T
        super().__init__(batch_shape=(), event_shape=(dim,))

    def log_prob(self, value: jax.Array) -> jax.Array:
        z = self.T(value)
        normal = -0.5 * jnp.sum(z**2, -1) - 0.5 * z.shape[-1] * jnp.log(2 * jnp.pi)
        return normal + self.T.log_abs_det_jacobian(value, z)
