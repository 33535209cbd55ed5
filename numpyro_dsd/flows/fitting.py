"""Learning a normalizing flow for the flow diffusion (docs/math.md §3, §6.5).

Two ways to get a flow :math:`z = T(x)` that makes the posterior look like a standard normal:

- :func:`fit_flow` (NeuTra, Hoffman et al. 2019): stochastic variational inference on the NumPyro
  model with an ``AutoIAFNormal`` guide, whose transform :math:`G` maps standard-normal noise
  to the model's flat unconstrained latent :math:`x`; :math:`T = G^{-1}`.
- :func:`fit_flow_to_samples`: maximum likelihood on draws :math:`x_{1:n}` (MCMC warm-up, a first
  chain), for when no model is at hand. The same autoregressive layers are used in the other
  direction (a masked autoregressive flow): :math:`T` is one network pass, so the density
  :math:`\\log q(x) = \\log\\mathcal N(T(x); 0, I) + \\log|\\det J(x)|` is cheap to train.

Both return a :class:`FlowFit`; its ``flow`` is a :class:`FittedFlow`, a plain value (the
architecture and the parameter arrays) that pickles, and rebuilds NumPyro transforms without the
model: ``FittedFlow.diffusion()`` is the :class:`~numpyro_dsd.FlowDiffusion` for
:func:`~numpyro_dsd.ksd`. Both fits run NumPyro's :class:`~numpyro.infer.SVI` loop (progress bar,
``numpyro.optim`` or optax optimizers) and resume exactly from ``init_state=fit.state``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from jax.typing import ArrayLike
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoIAFNormal
from numpyro.infer.svi import SVIState

from numpyro_dsd._validation import as_points
from numpyro_dsd.flows.fitted import (
    _NONLINEARITIES,
    _PREFIX,
    FittedFlow,
    FlowFit,
    FlowSpec,
    _affine,
    _arn,
    _arn_name,
    _check_nonlinearity,
    _spec,
    _TransformedNormal,
)
from numpyro_dsd.model.layout import ModelLayout
from numpyro_dsd.vocabulary import rng_key_or_default

__all__ = [
    "default_optim",
    "fit_flow",
    "fit_flow_to_samples",
    "gaussian_start",
    "standardization",
]


def default_optim() -> optax.GradientTransformation:
    """Adam with the step size decaying exponentially from 1e-2 to 1e-4 over 2000 steps, then
    constant.

    A constant step size leaves the last iterate of a noisy ELBO far from the optimum: on a 2-d
    banana and a 5-d funnel, Adam(5e-3) for 2000 steps ended at KL 2.2 and 0.22, this schedule at
    0.04 and 0.03 (``docs/benchmarks.md``). The schedule depends on the step count only, so a run
    continued with ``init_state`` follows it exactly.
    """
    return optax.adam(optax.exponential_decay(1e-2, 2000, 1e-2, end_value=1e-4))


def fit_flow(
    model: Callable,
    *model_args: Any,
    num_flows: int = 2,
    hidden_dims: Sequence[int] | None = None,
    skip_connections: bool = False,
    nonlinearity: str = "elu",
    num_steps: int = 2000,
    optim: Any = None,
    num_particles: int = 4,
    rng_key: jax.Array | None = None,
    progress_bar: bool = True,
    init_state: SVIState | None = None,
    standardize: bool = False,
    **model_kwargs: Any,
) -> FlowFit:
    """NeuTra: fit an inverse autoregressive flow to a NumPyro model's posterior by SVI.

    Maximises the ELBO of the guide :math:`x = G(\\varepsilon) = m + L\\,
    \\mathrm{IAF}(\\varepsilon)` (:math:`L` diagonal), :math:`\\varepsilon \\sim \\mathcal N(0, I)`
    (``AutoIAFNormal`` layers), where :math:`x` is the model's flat unconstrained latent (sites
    flattened in sorted order, as :func:`numpyro_dsd.model.targets.model_draws` does). The flow
    diffusion then uses :math:`T = G^{-1}`.

    With ``standardize=True``, :math:`(m, L)` is first found by :func:`standardization`
    (a mean-field Gaussian fitted by deterministic ADVI with L-BFGS, and Laplace marginal
    scales), so the layers start at the posterior's location and scales; without it
    :math:`m = 0, L = I` (the default) and the
    layers must travel there by SVI: slow or stuck for posteriors far from the origin or
    with scales far from 1 (a regression with an uncentred predictor: posteriordb's kidiq and blr,
    docs/validation.md). Standardising hurts heavy-tailed hierarchical shapes: on a 5-d funnel
    (1000 steps) the final loss is 3.2 against 0.28 without it, hence the default.

    Parameters
    ----------
    model : callable
        NumPyro model with continuous latent sites (at least two latent dimensions).
    *model_args, **model_kwargs
        Passed to the model.
    num_flows, hidden_dims, skip_connections, nonlinearity
        Architecture (:class:`FlowSpec`); default two layers with hidden widths
        ``max(2d, 16)``.
    num_steps : int
        SVI steps (default 2000).
    optim : numpyro.optim optimizer or optax ``GradientTransformation``
        Default :func:`default_optim` (Adam, step size decaying from 1e-2 to 1e-4
        over 2000 steps).
    num_particles : int
        ELBO particles per step.
    rng_key : jax.random key, optional
        None means ``jax.random.key(0)`` (:mod:`numpyro_dsd.vocabulary`'s key rule).
    progress_bar : bool
        NumPyro's progress bar.
    init_state : SVIState, optional
        ``fit.state`` of an earlier fit (same model and architecture) to continue it exactly.
    standardize : bool
        Fit :math:`(m, L)` first (default False). Deterministic: the same model gives the same
        :math:`(m, L)`, so a resumed fit continues exactly.

    Returns
    -------
    FlowFit

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("a", dist.Normal(0, 1))
    ...     numpyro.sample("b", dist.Normal(0, 2))
    >>> fit = fit_flow(model, num_steps=10, progress_bar=False)
    >>> fit.losses.shape, fit.flow.spec.dim
    ((10,), 2)
    """
    layout = ModelLayout(model, model_args, model_kwargs)
    d, order = layout.dim, layout.declared_permutation()
    loc, scale = standardization(layout.log_prob, d) if standardize else (jnp.zeros(d), jnp.ones(d))
    inv = np.argsort(order)  # the guide's affine acts in the guide's (declaration) order
    guide_kwargs = dict(num_flows=num_flows, skip_connections=skip_connections)
    optim = default_optim() if optim is None else optim
    svi, guide = _model_svi(
        model, guide_kwargs, hidden_dims, nonlinearity, optim, num_particles, (loc[inv], scale[inv])
    )
    result = _run(svi, rng_key, num_steps, model_args, model_kwargs, progress_bar, init_state)
    spec = _spec(
        guide.latent_dim, num_flows, guide._hidden_dims, skip_connections, nonlinearity, "generator"
    )
    identity = bool(np.all(order == np.arange(d)))
    spec = spec._replace(order=None if identity else tuple(int(i) for i in order))
    arn_params = {k: v for k, v in result.params.items() if k.startswith(f"{_PREFIX}_arn__")}
    flow = FittedFlow(spec, arn_params, loc[inv], scale[inv])
    return FlowFit(flow, result.state, result.losses, result.params)


def standardization(
    log_prob: Callable[[jax.Array], jax.Array], dim: int, *, max_hessian_dim: int = 500
) -> tuple[jax.Array, jax.Array]:
    """Location and scales to standardise a posterior before fitting a flow to it.

    :math:`m` is the mean of :func:`gaussian_start`'s mean-field Gaussian; the scales are the
    Laplace marginal sds at :math:`m`, :math:`s_j = \\sqrt{(|H|^{-1})_{jj}}` with
    :math:`H = -\\nabla^2\\log p(m)` made positive definite by absolute eigenvalues (floored at
    1e-6 of the largest, after scaling by the mean-field sds), or the mean-field sds where that
    fails or ``dim > max_hessian_dim``.
    Marginal, not the mean-field's conditional sds: on a strongly correlated posterior those are
    too small along the ridge, and the flow's layers then start far from it.

    Returns
    -------
    (loc, scale) : ((dim,), (dim,))

    Examples
    --------
    >>> cov = jnp.array([[25.0, 0.1], [0.1, 0.0005]])  # correlation 0.89, scales 5 and 0.02
    >>> log_prob = lambda x: -0.5 * (x - 30.0) @ jnp.linalg.solve(cov, x - 30.0)
    >>> loc, scale = standardization(log_prob, 2)
    >>> [round(float(v), 2) for v in scale]
    [5.0, 0.02]
    """
    loc, mean_field = gaussian_start(log_prob, dim)
    if dim > max_hessian_dim:
        return loc, mean_field
    # scaled by the mean-field sds first: H_ij s_i s_j is O(1) on its diagonal, so float32 and
    # the eigenvalue floor see the correlations, not the scales
    H = -jax.hessian(log_prob)(loc) * jnp.outer(mean_field, mean_field)
    lam, V = jnp.linalg.eigh(0.5 * (H + H.T))
    lam = jnp.maximum(jnp.abs(lam), 1e-6 * jnp.max(jnp.abs(lam)))
    sd = mean_field * jnp.sqrt(jnp.einsum("ij,j,ij->i", V, 1.0 / lam, V))
    ok = jnp.all(jnp.isfinite(sd)) & jnp.all(sd > 0)
    return loc, jnp.where(ok, sd, mean_field)


def gaussian_start(
    log_prob: Callable[[jax.Array], jax.Array],
    dim: int,
    *,
    full_rank: bool = False,
    num_draws: int | None = None,
    num_steps: int = 500,
) -> tuple[jax.Array, jax.Array]:
    """A Gaussian :math:`N(m, LL^\\top)` fitted to ``log_prob`` by deterministic ADVI.

    Maximises the sample-average ELBO with fixed base draws :math:`\\varepsilon_{1:K}`
    (Giordano, Ingram & Broderick 2023),

    .. math::
        L(m, L) = \\frac1K\\sum_{k=1}^K \\log p(m + L\\varepsilon_k) + \\log|\\det L|,

    by L-BFGS (optax, zoom line search) from :math:`m = 0, L = I`: a smooth deterministic
    objective, so it converges where stochastic SVI crawls (locations far from 0, scales far from
    1). :math:`L` is diagonal (mean field), or lower triangular with a positive diagonal (full
    rank: in float32 it can stall on posteriors with scales far below 1). The base draws use a
    fixed key, so the result depends on the target only.

    Parameters
    ----------
    log_prob : callable
        :math:`\\log p` of a flat vector ``(dim,)``.
    dim : int
        Dimension.
    full_rank : bool
        Fit a lower-triangular :math:`L` (default: diagonal).
    num_draws : int, optional
        :math:`K`; default 32, at least ``2 * dim`` for full rank.
    num_steps : int
        L-BFGS iterations.

    Returns
    -------
    (loc, scale) : ((dim,), (dim, dim) or (dim,))
        :math:`m` and :math:`L` (a vector of scales when diagonal); ``(0, I)`` where the fit does
        not end finite.

    Examples
    --------
    >>> cov = jnp.array([[25.0, 0.1], [0.1, 0.0005]])  # correlation 0.89, scales 5 and 0.02
    >>> log_prob = lambda x: -0.5 * (x - 30.0) @ jnp.linalg.solve(cov, x - 30.0)
    >>> loc, L = gaussian_start(log_prob, 2, full_rank=True)
    >>> sd = jnp.sqrt(jnp.diag(cov))  # within the 32 fixed draws' sampling error:
    >>> bool(jnp.all(jnp.abs(loc - 30.0) < 0.05 * sd)), bool(jnp.allclose(L @ L.T, cov, rtol=0.3))
    (True, True)
    """
    k = num_draws or (max(32, 2 * dim) if full_rank else 32)
    eps = jax.random.normal(jax.random.key(0), (k, dim))
    lower = jnp.tril(jnp.ones((dim, dim)), -1)

    def factor(raw: jax.Array) -> jax.Array:
        if not full_rank:
            return jnp.exp(raw)
        return raw * lower + jnp.diag(jnp.exp(jnp.diag(raw)))

    def loss(params: tuple[jax.Array, jax.Array]) -> jax.Array:
        m, raw = params
        L = factor(raw)
        x = m + (eps @ L.T if full_rank else eps * L)
        log_det = jnp.sum(jnp.diag(raw)) if full_rank else jnp.sum(raw)
        value = -(jnp.mean(jax.vmap(log_prob)(x)) + log_det)
        return jnp.where(jnp.isfinite(value), value, jnp.inf)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry: Any, _: Any) -> tuple[Any, None]:
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(params, updates), state), None

    init = (jnp.zeros(dim), jnp.zeros((dim, dim) if full_rank else dim))
    (params, _), _ = jax.lax.scan(step, (init, opt.init(init)), None, length=num_steps)
    m, L = params[0], factor(params[1])
    ok = jnp.all(jnp.isfinite(m)) & jnp.all(jnp.isfinite(L))
    eye = jnp.eye(dim) if full_rank else jnp.ones(dim)
    return jnp.where(ok, m, 0.0), jnp.where(ok, L, eye)


def _run(
    svi: SVI,
    rng_key: jax.Array | None,
    num_steps: int,
    args: tuple,
    kwargs: dict[str, Any],
    progress_bar: bool,
    init_state: SVIState | None,
) -> Any:
    """``svi.run``, resumable on a new ``SVI`` object: NumPyro's ``run(init_state=...)`` only
    works on the object that made the state, so set this one up (a trace, no steps) first."""
    key, _ = rng_key_or_default(rng_key)
    if init_state is not None:
        svi.init(key, *args, **kwargs)
    return svi.run(
        key, num_steps, *args, progress_bar=progress_bar, init_state=init_state, **kwargs
    )


def _model_svi(
    model: Callable,
    guide_kwargs: dict[str, Any],
    hidden_dims: Sequence[int] | None,
    nonlinearity: str,
    optim: Any,
    num_particles: int,
    standardise: tuple[jax.Array, jax.Array],
) -> tuple[SVI, AutoIAFNormal]:
    _check_nonlinearity(nonlinearity)
    loc, scale = standardise

    class _Guide(AutoIAFNormal):
        def _get_posterior(self) -> dist.Distribution:
            if self._hidden_dims is None:  # our default width, known once latent_dim is
                self._hidden_dims = _spec(self.latent_dim, 1, None, False, "elu", "").hidden_dims
            affine = _affine(loc, scale)
            return dist.TransformedDistribution(super()._get_posterior(), affine)

    guide = _Guide(
        model,
        prefix=_PREFIX,
        hidden_dims=hidden_dims,
        nonlinearity=_NONLINEARITIES[nonlinearity],
        **guide_kwargs,
    )
    return SVI(
        model,
        guide,
        optim,
        Trace_ELBO(num_particles=num_particles),
    ), guide


def fit_flow_to_samples(
    x: ArrayLike,
    *,
    num_flows: int = 2,
    hidden_dims: Sequence[int] | None = None,
    skip_connections: bool = False,
    nonlinearity: str = "elu",
    num_steps: int = 2000,
    batch_size: int | None = 256,
    optim: Any = None,
    rng_key: jax.Array | None = None,
    progress_bar: bool = True,
    init_state: SVIState | None = None,
) -> FlowFit:
    """Fit a masked autoregressive flow to draws by maximum likelihood.

    Maximises :math:`\\frac1n\\sum_i \\log q(x_i)`,
    :math:`\\log q(x) = \\log\\mathcal N(T(x); 0, I) + \\log|\\det J(x)|`, with
    :math:`T = \\text{layers} \\circ \\text{standardise}`, by minibatch stochastic gradients.

    Parameters
    ----------
    x : (n, d)
        Draws (e.g. flat unconstrained MCMC draws, ``model_draws(...).x.reshape(-1, d)``).
    num_flows, hidden_dims, skip_connections, nonlinearity
        Architecture (:class:`FlowSpec`); default two layers with hidden widths ``max(2d, 16)``.
    num_steps : int
        Optimisation steps (default 2000).
    batch_size : int or None
        Minibatch size; ``None`` uses all draws every step.
    optim : numpyro.optim optimizer or optax ``GradientTransformation``
        Default :func:`default_optim` (Adam, step size decaying from 1e-2 to 1e-4
        over 2000 steps).
    rng_key, progress_bar, init_state
        As in :func:`fit_flow`.

    Returns
    -------
    FlowFit

    Examples
    --------
    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (500, 2)) * jax.numpy.array([1.0, 5.0])
    >>> fit = fit_flow_to_samples(x, num_steps=200, progress_bar=False)
    >>> bool(fit.losses[-20:].mean() < fit.losses[:20].mean())
    True
    """
    x = as_points(x)
    n, d = x.shape
    spec = _spec(d, num_flows, hidden_dims, skip_connections, nonlinearity, "normalizer")
    loc, scale = jnp.mean(x, axis=0), jnp.std(x, axis=0)
    if not bool(jnp.all(scale > 0)):
        raise ValueError(
            "Some coordinates of x are constant across draws; a flow cannot be fitted to a "
            "degenerate sample. Drop those coordinates or check the sampler."
        )
    batch = None if batch_size is None or batch_size >= n else int(batch_size)
    svi = SVI(
        _likelihood_model,
        lambda *a, **k: None,
        default_optim() if optim is None else optim,
        Trace_ELBO(),
    )
    args = (x, spec, loc, scale, batch)
    result = _run(svi, rng_key, num_steps, args, {}, progress_bar, init_state)
    flow = FittedFlow(spec, {k: v for k, v in result.params.items()}, loc, scale)
    return FlowFit(flow, result.state, result.losses / n, result.params)


def _likelihood_model(
    x: jax.Array, spec: FlowSpec, loc: jax.Array, scale: jax.Array, batch: int | None
) -> None:
    params = {}
    for i in range(spec.num_flows):
        init, _ = _arn(spec)
        params[_arn_name(i)] = numpyro.param(
            _arn_name(i), lambda key, init=init: init(key, (spec.dim,))[1]
        )
    T = FittedFlow(spec, params, loc, scale).transform()
    with numpyro.plate("draws", x.shape[0], subsample_size=batch) as idx:
        numpyro.sample("x", _TransformedNormal(T, spec.dim), obs=x[idx])
