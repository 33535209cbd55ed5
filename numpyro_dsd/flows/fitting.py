"""Learning a normalizing flow for the flow diffusion (docs/math.md §3, §6.5).

Two ways to get a flow :math:`z = T(x)` that makes the posterior look like a standard normal:

- :func:`fit_flow` (NeuTra, Hoffman et al. 2019): stochastic variational inference on the NumPyro
  model with an ``AutoIAFNormal`` guide, whose transform :math:`G` maps standard-normal noise
  to the model's flat unconstrained latent :math:`x`; :math:`T = G^{-1}`.
- :func:`fit_flow_to_samples`: maximum likelihood on draws :math:`x_{1:n}` (MCMC warm-up, a first
  chain), for when no model is at hand. The same autoregressive layers are used in the other
  direction (a masked autoregressive flow): :math:`T` is one network pass, so the density
  :math:`\\log q(x) = \\log\\mathcal N(T(x); 0, I) + \\log|\\det J(x)|` is cheap to train.

Both return a :class:`~numpyro_dsd.flows.FlowFit`; its ``flow`` is a
:class:`~numpyro_dsd.flows.FittedFlow`, a plain value (the
architecture and the parameter arrays) that pickles, and rebuilds NumPyro transforms without the
model: ``FittedFlow.diffusion()`` is the :class:`~numpyro_dsd.FlowDiffusion` for
:func:`~numpyro_dsd.ksd`. Both fits run NumPyro's :class:`~numpyro.infer.SVI` loop (progress bar,
``numpyro.optim`` or optax optimizers) and resume exactly from ``init_state=fit.state``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import partial
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
from numpyro_dsd.flows.quality import (
    KHAT_WARN,
    FlowFitError,
    FlowQualityWarning,
    flow_khat,
    loss_problem,
)
from numpyro_dsd.model.layout import ModelLayout
from numpyro_dsd.vocabulary import rng_key_or_default, warn_renamed

__all__ = [
    "BACKOFF",
    "FlowFitError",
    "default_optim",
    "fit_flow",
    "fit_flow_to_samples",
    "gaussian_start",
    "standardization",
]


def default_optim(dim: int | None = None, *, scale: float = 1.0) -> optax.GradientTransformation:
    """Adam with a step size that warms up, decays, and shrinks with the dimension.

    Peak step :math:`\\eta = 10^{-2}\\,\\min(1, 8/d)\\cdot` ``scale``, reached linearly from
    :math:`\\eta/100` over the first 100 steps, then decaying exponentially to :math:`\\eta/100`
    2000 steps later and constant after that.

    - The decay: a constant step size leaves the last iterate of a noisy ELBO far from the
      optimum (2-d banana and 5-d funnel, 2000 steps: KL 2.2 and 0.22 with Adam(5e-3), 0.04 and
      0.03 with the decay; docs/benchmarks.md).
    - :math:`\\min(1, 8/d)`: Adam moves every weight by about :math:`\\eta` per step, so a
      layer of width :math:`2d` moves its outputs by about :math:`2d\\eta`; with
      :math:`\\eta = 10^{-2}` at any d, the horseshoe regression (d = 66) and the stochastic
      volatility model (d = 302) diverged to NaN within a few steps (docs/validation.md).
    - The warm-up: the first Adam steps use a poor estimate of the gradients' scale.

    The schedule depends on the step count only, so a run continued with ``init_state`` follows
    it exactly.

    Parameters
    ----------
    dim : int, optional
        The flow's dimension d (None: as d <= 8).
    scale : float
        Factor on the step size (:func:`fit_flow` backs off by 10 after a divergence).

    Examples
    --------
    >>> opt = default_optim(66)
    >>> state = opt.init(jnp.zeros(3))
    >>> step = opt.update(jnp.ones(3), state)[0]  # the warm-up's first: 1e-2 * (8 / 66) / 100
    >>> bool(jnp.all(jnp.abs(step) < 1e-4))
    True
    """
    peak = 1e-2 * scale * (1.0 if dim is None else min(1.0, 8.0 / dim))
    warm = optax.linear_schedule(peak / 100, peak, _WARMUP)
    decay = optax.exponential_decay(peak, 2000, 1e-2, end_value=peak / 100)
    return optax.adam(optax.join_schedules([warm, decay], [_WARMUP]))


_WARMUP = 100
#: Step-size factors tried in turn by :func:`fit_flow` when a fit with the default optimiser
#: diverges.
BACKOFF = (1.0, 0.1, 0.01)


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
    start: str | tuple[ArrayLike, ArrayLike] = "mean_field",
    standardize: bool | None = None,
    num_khat_draws: int = 1000,
    **model_kwargs: Any,
) -> FlowFit:
    """NeuTra: fit an inverse autoregressive flow to a NumPyro model's posterior by SVI.

    Maximises the ELBO of the guide :math:`x = G(\\varepsilon) = m + L\\,
    \\mathrm{IAF}(\\varepsilon)` (:math:`L` diagonal), :math:`\\varepsilon \\sim \\mathcal N(0, I)`
    (``AutoIAFNormal`` layers), where :math:`x` is the model's flat unconstrained latent (sites
    flattened in sorted order, as :func:`numpyro_dsd.model.targets.model_draws` does). The flow
    diffusion then uses :math:`T = G^{-1}`.

    The default is built to converge on real models without tuning (docs/validation.md, "Flow
    fits on real models"):

    - the start :math:`(m, L)` (``start``): by default the mean-field Gaussian of
      :func:`~numpyro_dsd.flows.fitting.gaussian_start` (deterministic ADVI), and the layers start
      at the identity (their
      output layers zeroed), so the first guide is that Gaussian, not a random network;
    - the step size shrinks with the dimension and warms up
      (:func:`~numpyro_dsd.flows.fitting.default_optim`);
    - steps whose loss or update is not finite are skipped (NumPyro's ``stable_update``);
    - a run that diverges anyway (:func:`numpyro_dsd.flows.quality.loss_problem`) is restarted
      with the step size divided by 10, twice at most, and then raises
      :class:`~numpyro_dsd.flows.quality.FlowFitError`, as does a fit whose loss is not finite
      at the start (the model's density is NaN where the guide puts its mass). With a user's
      ``optim`` or ``init_state`` there is no restart: a divergence raises.

    Every fit reports its Pareto :math:`\\hat k` (``fit.khat``,
    :func:`~numpyro_dsd.flows.quality.flow_khat`) and warns above 0.7.

    Parameters
    ----------
    model : callable
        NumPyro model with continuous latent sites (at least two latent dimensions).
    *model_args, **model_kwargs
        Passed to the model.
    num_flows, hidden_dims, skip_connections, nonlinearity
        Architecture (:class:`~numpyro_dsd.flows.FlowSpec`); default two layers with hidden widths
        ``max(2d, 16)``.
    num_steps : int
        SVI steps (default 2000).
    optim : numpyro.optim optimizer or optax ``GradientTransformation``
        Default :func:`~numpyro_dsd.flows.fitting.default_optim` for the model's dimension.
    num_particles : int
        ELBO particles per step.
    rng_key : jax.random key, optional
        None means ``jax.random.key(0)`` (:mod:`numpyro_dsd.vocabulary`'s key rule).
    progress_bar : bool
        NumPyro's progress bar.
    init_state : SVIState, optional
        ``fit.state`` of an earlier fit (same model, architecture and ``start``) to continue it
        exactly.
    start : {"mean_field", "laplace", "none"} or (loc, scale)
        The affine :math:`(m, L)` the layers act through: ``"mean_field"`` (default),
        :func:`~numpyro_dsd.flows.fitting.standardization`'s Laplace marginal scales at the
        mean-field mean
        (``"laplace"``: right for near-Gaussian posteriors, poor where the mode is degenerate:
        eight schools, funnels, horseshoe), ``"none"`` (:math:`m = 0, L = I`), or two (d,)
        arrays in the model's flat sorted layout (e.g. the mean and sd of MCMC draws).
    standardize : bool, optional
        Deprecated: ``True`` is ``start="laplace"``, ``False`` is ``start="none"``.
    num_khat_draws : int
        Draws of the flow for :math:`\\hat k` (0 skips it: ``khat`` is NaN).

    Returns
    -------
    FlowFit

    Raises
    ------
    FlowFitError
        The fit diverged (with the default optimiser: at every step size tried) or its loss is
        not finite at the start.

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("a", dist.Normal(0, 1))
    ...     numpyro.sample("b", dist.Normal(0, 2))
    >>> fit = fit_flow(model, num_steps=10, progress_bar=False)
    >>> fit.losses.shape, fit.flow.spec.dim, bool(fit.khat < 0.7)
    ((10,), 2, True)
    """
    layout = ModelLayout(model, model_args, model_kwargs)
    d, order = layout.dim, layout.declared_permutation()
    loc, scale = _start(_start_name(start, standardize), layout)
    inv = np.argsort(order)  # the guide's affine acts in the guide's (declaration) order
    guide_kwargs = dict(num_flows=num_flows, skip_connections=skip_connections)

    def make(opt: Any) -> tuple[SVI, AutoIAFNormal]:
        affine = (loc[inv], scale[inv])
        return _model_svi(
            model, guide_kwargs, hidden_dims, nonlinearity, opt, num_particles, affine
        )

    def run(made: tuple[SVI, AutoIAFNormal]) -> Any:
        args = (rng_key, num_steps, model_args, model_kwargs, progress_bar, init_state, True)
        return _run(made[0], *args)

    (_, guide), result, factor, problem = _run_with_backoff(make, run, d, optim, init_state)
    spec = _spec(
        guide.latent_dim, num_flows, guide._hidden_dims, skip_connections, nonlinearity, "generator"
    )
    identity = bool(np.all(order == np.arange(d)))
    spec = spec._replace(order=None if identity else tuple(int(i) for i in order))
    arn_params = {k: v for k, v in result.params.items() if k.startswith(f"{_PREFIX}_arn__")}
    flow = FittedFlow(spec, arn_params, loc[inv], scale[inv])
    nonfinite = int(np.sum(~np.isfinite(np.asarray(result.losses))))
    fit = FlowFit(flow, result.state, result.losses, result.params, float("nan"), nonfinite, factor)
    if problem is not None:
        raise FlowFitError(_fit_message(problem, optim is None and init_state is None), fit)
    if num_khat_draws:
        key, _ = rng_key_or_default(rng_key)
        khat = flow_khat(
            flow.generator(),
            layout.log_prob,
            d,
            num_draws=num_khat_draws,
            rng_key=jax.random.fold_in(key, 1),
        )
        fit = fit._replace(khat=khat)
        if khat > KHAT_WARN:
            warnings.warn(
                f"The fitted flow's Pareto k-hat is {khat:.2f} (> {KHAT_WARN}): it misses "
                "posterior mass, so its diffusion is a rough preconditioner (the KSD test stays "
                "valid). More steps (num_steps), more layers (num_flows) or a reparameterised "
                "model help.",
                FlowQualityWarning,
                stacklevel=2,
            )
    return fit


def _start_name(start: Any, standardize: bool | None) -> Any:
    if standardize is None:
        return start
    new = "start='laplace'" if standardize else "start='none'"
    warn_renamed(f"standardize={standardize}", new, "fit_flow", stacklevel=4)
    return "laplace" if standardize else "none"


def _start(start: Any, layout: ModelLayout) -> tuple[jax.Array, jax.Array]:
    """(m, L) in the model's flat sorted layout."""
    d = layout.dim
    if isinstance(start, str):
        if start == "mean_field":
            return gaussian_start(layout.log_prob, d)
        if start == "laplace":
            return standardization(layout.log_prob, d)
        if start == "none":
            return jnp.zeros(d), jnp.ones(d)
        raise ValueError(
            f"start must be 'mean_field', 'laplace', 'none' or (loc, scale); got {start!r}."
        )
    try:
        loc, scale = (jnp.asarray(v, dtype=jnp.result_type(float)) for v in start)
    except (TypeError, ValueError):
        raise ValueError(
            f"start must be 'mean_field', 'laplace', 'none' or (loc, scale); got {start!r}."
        ) from None
    if loc.shape != (d,) or scale.shape != (d,):
        raise ValueError(
            f"start=(loc, scale) must be two arrays of shape ({d},), the model's flat latent "
            f"dimension; got {loc.shape} and {scale.shape}."
        )
    if not bool(jnp.all(jnp.isfinite(loc)) & jnp.all(jnp.isfinite(scale)) & jnp.all(scale > 0)):
        raise ValueError(
            "start=(loc, scale) must be finite with every scale > 0 (a constant coordinate of the "
            "draws has sd 0: drop it or pass start='mean_field')."
        )
    return loc, scale


def _fit_message(problem: str, backed_off: bool) -> str:
    if problem.endswith("at the start"):
        return (
            f"The flow fit failed: {problem}. The model's log density is not finite where the "
            "start Gaussian puts its mass: check the model (NaN or inf in its data, a likelihood "
            "that overflows, a site whose support the guide cannot reach), or give a start near "
            "the posterior, start=(loc, scale) from draws."
        )
    tried = ", ".join(f"{f:g}" for f in BACKOFF)
    how = (
        f"at every step size tried (default times {tried})"
        if backed_off
        else "with the optimiser given"
    )
    return (
        f"The flow fit diverged {how}: {problem}. Pass a smaller step size (optim=optax.adam(1e-4) "
        "or default_optim(d, scale=1e-3)), more steps, or start=(loc, scale) from draws; "
        "fit.losses of the error's .fit show where it went wrong."
    )


def standardization(
    log_prob: Callable[[jax.Array], jax.Array], dim: int, *, max_hessian_dim: int = 500
) -> tuple[jax.Array, jax.Array]:
    """Location and scales to standardise a posterior before fitting a flow to it.

    :math:`m` is the mean of :func:`~numpyro_dsd.flows.fitting.gaussian_start`'s mean-field
    Gaussian; the scales are the
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
    identity_layers: bool = False,
) -> Any:
    """``svi.run`` with NumPyro's ``stable_update`` (non-finite steps skipped), resumable on a
    new ``SVI`` object: NumPyro's ``run(init_state=...)`` only works on the object that made the
    state, so set this one up (a trace, no steps) first. ``identity_layers``: a fresh run starts
    every autoregressive layer at the identity (output layer zeroed)."""
    key, _ = rng_key_or_default(rng_key)
    init_params = None
    if init_state is not None:
        svi.init(key, *args, **kwargs)
    elif identity_layers:
        params = svi.get_params(svi.init(key, *args, **kwargs))
        init_params = {
            k: _zero_output_layer(v) if k.startswith(f"{_PREFIX}_arn__") else v
            for k, v in params.items()
        }
    return svi.run(
        key,
        num_steps,
        *args,
        progress_bar=progress_bar,
        init_state=init_state,
        init_params=init_params,
        stable_update=True,
        **kwargs,
    )


def _zero_output_layer(params: list) -> list:
    """An ``AutoregressiveNN``'s parameters with its output zeroed: the IAF layer it drives is
    the identity (mean 0, log-scale 0) until the fit moves it. ``stax.serial`` lists
    ``[(W, b), (), ..., (W, b)]``; with skip connections ``[(), (main, W_skip), ()]``."""
    zero = partial(jax.tree_util.tree_map, jnp.zeros_like)
    if params and params[-1] == ():  # skip connections
        main, skip = params[1]
        return [params[0], ([*main[:-1], zero(main[-1])], zero(skip)), params[2]]
    return [*params[:-1], zero(params[-1])]


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
    As in :func:`fit_flow`: the layers start at the identity (so the first flow is the draws'
    standardisation), :func:`~numpyro_dsd.flows.fitting.default_optim` for d, non-finite steps
    skipped, a diverging run
    restarted at a 10 times smaller step, and :class:`~numpyro_dsd.flows.quality.FlowFitError`
    when that fails. No :math:`\\hat k` (it needs the target's density): ``khat`` is NaN.

    Parameters
    ----------
    x : (n, d)
        Draws (e.g. flat unconstrained MCMC draws, ``model_draws(...).x.reshape(-1, d)``).
    num_flows, hidden_dims, skip_connections, nonlinearity
        Architecture (:class:`~numpyro_dsd.flows.FlowSpec`); default two layers with hidden widths
        ``max(2d, 16)``.
    num_steps : int
        Optimisation steps (default 2000).
    batch_size : int or None
        Minibatch size; ``None`` uses all draws every step.
    optim : numpyro.optim optimizer or optax ``GradientTransformation``
        Default :func:`~numpyro_dsd.flows.fitting.default_optim` for d.
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
    args = (x, spec, loc, scale, batch)

    def make(opt: Any) -> SVI:
        return SVI(_likelihood_model, lambda *a, **k: None, opt, Trace_ELBO())

    def run(svi: SVI) -> Any:
        return _run(svi, rng_key, num_steps, args, {}, progress_bar, init_state, True)

    _, result, factor, problem = _run_with_backoff(make, run, d, optim, init_state)
    flow = FittedFlow(spec, {k: v for k, v in result.params.items()}, loc, scale)
    nonfinite = int(np.sum(~np.isfinite(np.asarray(result.losses))))
    fit = FlowFit(
        flow, result.state, result.losses / n, result.params, float("nan"), nonfinite, factor
    )
    if problem is not None:
        raise FlowFitError(_fit_message(problem, optim is None and init_state is None), fit)
    return fit


def _run_with_backoff(
    make: Callable[[Any], Any],
    run: Callable[[Any], Any],
    dim: int,
    optim: Any,
    init_state: SVIState | None,
) -> tuple[Any, Any, float, str | None]:
    """``run(make(optimiser))``; with the default optimiser on a fresh start, again at the
    step-size factors of :data:`BACKOFF` while :func:`~numpyro_dsd.flows.quality.loss_problem`
    finds a divergence. Returns (what ``make`` made, the run's result, the factor, the
    problem or None)."""
    factors = BACKOFF if optim is None and init_state is None else (1.0,)
    for factor in factors:
        made = make(default_optim(dim, scale=factor) if optim is None else optim)
        result = run(made)
        problem = loss_problem(result.losses)
        if problem is None or problem.endswith("at the start"):
            break
    return made, result, factor, problem


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
